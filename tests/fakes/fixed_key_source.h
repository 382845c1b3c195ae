// FixedKeySource stands in for the KeyBroker (csi::VolumeKeySource) in tests
// of the node: it releases one fixed key for every volume, or refuses, and
// counts the calls; it keeps format claims as the registry does (first id
// wins) and counts the refused ones, as the broker's audit log would show
// them; it keeps the registry's rule that a committed epoch never goes back.
// Thread-safe.
#pragma once

#include <atomic>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "csi/volume_key_source.h"
#include "kms/broker/refusal.h"

namespace sealvol::testing {

using csi::PodIdentity;

class FixedKeySource final : public csi::VolumeKeySource {
 public:
  absl::StatusOr<broker::ReleasedVolumeKey> ReleaseKey(
      const std::string& volume_id, const std::string& node_id,
      const std::string& pod_token, const PodIdentity& pod) override {
    ++calls;
    last_token = pod_token;
    last_pod = pod;
    last_node = node_id;
    if (!refusal.ok()) return refusal;
    auto key = crypto::SecretBytes::Allocate(32);
    if (!key.ok()) return key.status();
    for (size_t i = 0; i < key->size(); ++i) key->data()[i] = static_cast<uint8_t>(i * 7 + 1);
    std::lock_guard lock(mu);
    broker::ReleasedVolumeKey released{*std::move(key), formats[volume_id]};
    if (auto it = states.find(volume_id); it != states.end()) {
      released.expected_state = it->second;
    }
    return released;
  }
  absl::Status ClaimFormat(
      const std::string& volume_id, const std::string& node_id,
      const std::string& format_id,
      const std::optional<kms::CommittedState>& first_state) override {
    (void)node_id;
    std::lock_guard lock(mu);
    if (!claim_error.ok()) return claim_error;
    std::string& stored = formats[volume_id];
    if (stored.empty()) {
      stored = format_id;
      if (first_state.has_value()) states[volume_id] = *first_state;
    }
    if (stored != format_id) {
      ++refused_claims;
      return broker::RefusalStatus(broker::Reason::kAlreadyFormatted,
                                   "volume " + volume_id + " was formatted as " + stored);
    }
    return absl::OkStatus();
  }
  // Keeps the registry's rule: the epoch never goes back.
  absl::Status CommitState(const std::string& volume_id,
                           const std::string& node_id,
                           const kms::CommittedState& state,
                           bool accept_rollback) override {
    (void)node_id;
    (void)accept_rollback;
    std::lock_guard lock(mu);
    if (!commit_error.ok()) return commit_error;
    auto it = states.find(volume_id);
    if (it != states.end() && state.epoch < it->second.epoch) {
      return broker::RefusalStatus(broker::Reason::kStateRegression,
                                   "epoch goes back");
    }
    states[volume_id] = state;
    ++commits;
    return absl::OkStatus();
  }
  absl::Status ReportRollback(const std::string& volume_id,
                              const std::string& node_id,
                              const std::string& detail) override {
    (void)node_id;
    std::lock_guard lock(mu);
    rollback_reports.push_back(volume_id + ": " + detail);
    return absl::OkStatus();
  }
  std::string Format(const std::string& volume_id) {
    std::lock_guard lock(mu);
    return formats[volume_id];
  }
  // Every volume exists unless listed in `deleted`.
  absl::StatusOr<std::map<std::string, bool>> VolumesExist(
      const std::vector<std::string>& volume_ids,
      const std::string& node_id) override {
    (void)node_id;
    if (!status_error.ok()) return status_error;
    std::map<std::string, bool> out;
    for (const auto& id : volume_ids) out[id] = !deleted.count(id);
    return out;
  }
  std::set<std::string> deleted;
  absl::Status status_error;  // Broker unreachable when set.
  std::mutex mu;
  std::map<std::string, std::string> formats;  // Volume -> registry format id.
  std::map<std::string, kms::CommittedState> states;  // Volume -> committed.
  std::vector<std::string> rollback_reports;
  std::atomic<int> commits{0};
  absl::Status commit_error;  // CommitState fails so when set.
  int refused_claims = 0;
  absl::Status claim_error;  // ClaimFormat fails so when set.
  std::atomic<int> calls{0};
  std::string last_token;
  PodIdentity last_pod;
  std::string last_node;
  absl::Status refusal;
};

}  // namespace sealvol::testing
