// VolumeKeySource is where the node gets a volume's data key: the
// controller's KeyBroker, which releases it only for an attested pod. It is
// the node's network seam; BrokerKeySource is the real one. Implementations
// are thread-safe.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "crypto/secret_bytes.h"
#include "csi/committed_state.h"
#include "kms/broker/call_canceller.h"
#include "kms/broker/key_broker_client.h"
#include "kms/broker/key_broker_wire.h"

namespace sealvol::csi {

using PodIdentity = broker::PodIdentity;

class VolumeKeySource {
 public:
  virtual ~VolumeKeySource() = default;

  // The volume's 32-byte DEK, released for `pod` presenting `pod_token`,
  // and the registry's format id of its image ("" = never formatted).
  // PermissionDenied "<reason>: ..." when attestation fails, NotFound when
  // the volume's key is gone (crypto-shredded), Unavailable when the broker
  // cannot be reached.
  virtual absl::StatusOr<broker::ReleasedVolumeKey> ReleaseKey(
      const std::string& volume_id, const std::string& node_id,
      const std::string& pod_token, const PodIdentity& pod) = 0;

  // Records with the registry that this node formatted the volume's image
  // with `format_id` (KeyBroker.ClaimFormat), and `first_state` (when set)
  // as the new image's first state. OK when the registry holds that id;
  // FailedPrecondition with refusal reason "already_formatted" when it
  // holds another; Unavailable when the broker cannot be reached.
  virtual absl::Status ClaimFormat(
      const std::string& volume_id, const std::string& node_id,
      const std::string& format_id,
      const std::optional<kms::CommittedState>& first_state) = 0;

  // Commits the state of the volume's image (KeyBroker.CommitState): at a
  // session's start and after its close. FailedPrecondition with refusal
  // reason "state_regression" when the registry refuses it.
  virtual absl::Status CommitState(const std::string& volume_id,
                                   const std::string& node_id,
                                   const kms::CommittedState& state,
                                   bool accept_rollback) = 0;

  // Has the broker audit that this node refused the volume's image as
  // rolled back; `detail` is the engine's refusal.
  virtual absl::Status ReportRollback(const std::string& volume_id,
                                      const std::string& node_id,
                                      const std::string& detail) = 0;

  // Volume id -> whether the volume still exists at the controller (false:
  // deleted, its key destroyed). Asked with the node's own identity; no pod
  // is involved. Unavailable when the broker cannot be reached: the caller
  // then keeps everything.
  virtual absl::StatusOr<std::map<std::string, bool>> VolumesExist(
      const std::vector<std::string>& volume_ids, const std::string& node_id) = 0;

  // Copy jobs (snapshots, restores, clones; KeyBroker.CopyJobs,
  // ReleaseCopyKeys, ReportCopy), asked with the node's own identity:
  // the jobs this node must run, the two keys of one (refusals with their
  // reason: copy_not_active, node_not_owner, source_not_on_node, ...), and
  // its progress, cut and end (returns the job's state after the report).
  // CopyJobs with `wait` > 0 is a long poll (KeyBrokerClient::CopyJobs):
  // with no job for the node, the answer comes when one is created or
  // after up to `wait`; `cancel` (may be null) ends it early (Cancelled).
  virtual absl::StatusOr<std::vector<broker::CopyJob>> CopyJobs(
      const std::string& node_id, absl::Duration wait,
      broker::CallCanceller* cancel) = 0;
  virtual absl::StatusOr<broker::CopyKeys> ReleaseCopyKeys(
      const std::string& node_id, const std::string& target_id) = 0;
  virtual absl::StatusOr<kms::CopyState> ReportCopy(
      const std::string& node_id, const broker::CopyReport& report) = 0;
};

// The KeyBroker over gRPC (broker::KeyBrokerClient).
class BrokerKeySource final : public VolumeKeySource {
 public:
  explicit BrokerKeySource(std::unique_ptr<broker::KeyBrokerClient> client)
      : client_(std::move(client)) {}

  absl::StatusOr<broker::ReleasedVolumeKey> ReleaseKey(
      const std::string& volume_id, const std::string& node_id,
      const std::string& pod_token, const PodIdentity& pod) override {
    return client_->ReleaseVolumeKey({.volume_id = volume_id,
                                      .node_id = node_id,
                                      .pod_token = pod_token,
                                      .pod = pod});
  }

  absl::Status ClaimFormat(
      const std::string& volume_id, const std::string& node_id,
      const std::string& format_id,
      const std::optional<kms::CommittedState>& first_state) override {
    return client_->ClaimFormat(volume_id, node_id, format_id, first_state);
  }

  absl::Status CommitState(const std::string& volume_id,
                           const std::string& node_id,
                           const kms::CommittedState& state,
                           bool accept_rollback) override {
    return client_->CommitState(volume_id, node_id, state, accept_rollback);
  }

  absl::Status ReportRollback(const std::string& volume_id,
                              const std::string& node_id,
                              const std::string& detail) override {
    return client_->ReportRollback(volume_id, node_id, detail);
  }

  absl::StatusOr<std::map<std::string, bool>> VolumesExist(
      const std::vector<std::string>& volume_ids,
      const std::string& node_id) override {
    return client_->VolumesExist(node_id, volume_ids);
  }

  absl::StatusOr<std::vector<broker::CopyJob>> CopyJobs(
      const std::string& node_id, absl::Duration wait,
      broker::CallCanceller* cancel) override {
    return client_->CopyJobs(node_id, wait, cancel);
  }

  absl::StatusOr<broker::CopyKeys> ReleaseCopyKeys(
      const std::string& node_id, const std::string& target_id) override {
    return client_->ReleaseCopyKeys(node_id, target_id);
  }

  absl::StatusOr<kms::CopyState> ReportCopy(
      const std::string& node_id, const broker::CopyReport& report) override {
    return client_->ReportCopy(node_id, report);
  }

 private:
  std::unique_ptr<broker::KeyBrokerClient> client_;
};

}  // namespace sealvol::csi
