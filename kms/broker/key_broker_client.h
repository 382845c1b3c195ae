// KeyBrokerClient is the node side of the KeyBroker: the CSI node calls
// ReleaseKey on NodePublishVolume with the pod's token and the pod info from
// the volume context, and gets the DEK in locked memory. Thread-safe: one
// client (one gRPC channel) serves every publish on the node.
//
// Errors: PermissionDenied "<reason>: <message>" (RefusalReason() gives the
// reason), ResourceExhausted "rate_limited: ...", Unavailable /
// DeadlineExceeded when the broker or its KMS cannot be reached, DataLoss if
// the broker returns a key of the wrong size.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "crypto/secret_bytes.h"
#include "kms/broker/call_canceller.h"
#include "kms/broker/key_broker_wire.h"
#include "kms/key_provider.h"
#include "proto/sealvol/keybroker.grpc.pb.h"

namespace sealvol::broker {

struct KeyBrokerClientOptions {
  // "unix:///path/to.sock", or "HOST:PORT" with TLS (ca_file required).
  std::string target;
  std::string ca_file;           // PEM CA that signed the broker's cert.
  std::string client_cert_file;  // Optional mTLS client certificate...
  std::string client_key_file;   // ...and its key.
  std::string tls_server_name;   // Override the name checked in the
                                 // broker's certificate (tests).
  // The node plugin's own projected service-account token (audience
  // sealvol); read on every call because the kubelet rotates it.
  std::string node_token_file;
  absl::Duration timeout = absl::Seconds(15);
};

// A released key and what the registry says of the volume's image.
struct ReleasedVolumeKey {
  crypto::SecretBytes dek;
  std::string format_id;  // Empty = never formatted (no claim recorded).
  // The state the image must match; unset = none committed yet. With
  // rollback_accepted only its epoch counts (the image is opened past it).
  std::optional<kms::CommittedState> expected_state;
  bool rollback_accepted = false;  // That acceptance is pending.
};

class KeyBrokerClient {
 public:
  static absl::StatusOr<std::unique_ptr<KeyBrokerClient>> Create(
      const KeyBrokerClientOptions& options);

  // The volume's 32-byte DEK. The protobuf's copy is wiped before return.
  absl::StatusOr<crypto::SecretBytes> ReleaseKey(const ReleaseRequest& params);
  // The DEK and the registry's format id of the volume's image. DataLoss if
  // the broker sends a format id that is not 32 lowercase hex digits.
  absl::StatusOr<ReleasedVolumeKey> ReleaseVolumeKey(
      const ReleaseRequest& params);

  // Reports that this node formatted the volume's image with `format_id`
  // (KeyBroker.ClaimFormat). OK when the registry now holds that id;
  // FailedPrecondition "already_formatted: ..." (RefusalReason) when it
  // holds another.
  // `state`, when set, is the new image's first state, recorded with it.
  absl::Status ClaimFormat(
      const std::string& volume_id, const std::string& node_id,
      const std::string& format_id,
      const std::optional<kms::CommittedState>& state = std::nullopt);

  // Commits the state of the volume's image (KeyBroker.CommitState).
  // FailedPrecondition "state_regression: ..." (RefusalReason) when the
  // registry refuses it; Unavailable when the broker cannot be reached.
  absl::Status CommitState(const std::string& volume_id,
                           const std::string& node_id,
                           const kms::CommittedState& state,
                           bool accept_rollback);

  // Has the broker audit this node's refusal of a rolled-back image.
  absl::Status ReportRollback(const std::string& volume_id,
                              const std::string& node_id,
                              const std::string& detail);

  // The copy jobs this node must run (KeyBroker.CopyJobs): targets placed
  // on it whose copy is pending or cut. DataLoss for an answer with a kind
  // or state this client does not know.
  //
  // With `wait` (whole seconds, rounded up), a long poll: while the node
  // has no job the broker holds its answer up to that long (its own cap is
  // kMaxCopyJobsWait) and answers when one is created; the call's deadline
  // is `wait` plus the usual timeout. A broker that predates the long poll
  // answers at once. `cancel`, when set, ends the call from another thread
  // (Cancelled; at once when it was cancelled before).
  absl::StatusOr<std::vector<CopyJob>> CopyJobs(
      const std::string& node_id, absl::Duration wait = absl::ZeroDuration(),
      CallCanceller* cancel = nullptr);

  // The two keys of the copy job of `target_id` (KeyBroker.ReleaseCopyKeys),
  // copied into locked memory; the protobuf's copies are wiped before
  // return. Refusals with their reason (RefusalReason): copy_not_active,
  // node_not_owner, source_not_on_node, volume_not_found, ... DataLoss when
  // the broker sends a key of the wrong size, or a malformed format id or
  // state root.
  absl::StatusOr<CopyKeys> ReleaseCopyKeys(const std::string& node_id,
                                           const std::string& target_id);

  // Reports progress, the cut or the end of a copy job (KeyBroker.ReportCopy);
  // returns the job's state after it. FailedPrecondition "copy_not_active:
  // ..." when the job has ended.
  absl::StatusOr<kms::CopyState> ReportCopy(const std::string& node_id,
                                            const CopyReport& report);

  // Volume id -> whether it still exists in the controller's registry
  // (false: deleted, its key destroyed). Asks in batches of at most
  // kMaxVolumeStatusIds; any failed batch fails the whole call.
  absl::StatusOr<std::map<std::string, bool>> VolumesExist(
      const std::string& node_id, const std::vector<std::string>& volume_ids);

 private:
  // The client context of one call: deadline and the node's own token.
  absl::Status PrepareContext(grpc::ClientContext& context) const;
  // Makes a channel that failed try to connect again now (see the .cc).
  void Reconnect() const;

  KeyBrokerClient(KeyBrokerClientOptions options,
                  std::shared_ptr<grpc::Channel> channel);

  const KeyBrokerClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::KeyBroker::Stub> stub_;
};

}  // namespace sealvol::broker
