// FixedKeySource stands in for the KeyBroker (csi::VolumeKeySource) in tests
// of the node: it releases one fixed key for every volume, or refuses, and
// counts the calls; it keeps format claims as the registry does (first id
// wins) and counts the refused ones, as the broker's audit log would show
// them; it keeps the registry's rule that a committed epoch never goes back.
// Thread-safe.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
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
  // Copy jobs as the broker keeps them: `copy_jobs` by target (listed while
  // pending or cut); the keys of a job in progress are the fixed key for the
  // source and CopyTargetKey() for the target; reports move a job on by the
  // registry's rule (forward only; the repeat of a ready report is
  // accepted), are kept in order in `copy_reports`, and a ready report
  // records the target's format and state as ClaimFormat does. CopyJobs
  // with a wait is a long poll as the broker's (unless `long_poll` is
  // false: an older broker that answers at once): with no job in progress
  // it answers when AddCopyJob adds one, at the end of the wait, or
  // Cancelled when `cancel` ends it.
  absl::StatusOr<std::vector<broker::CopyJob>> CopyJobs(
      const std::string& node_id, absl::Duration wait,
      broker::CallCanceller* cancel) override {
    (void)node_id;
    bool cancelled = false;  // Guarded by mu.
    broker::CallCanceller::Registration registration(cancel, [&] {
      std::lock_guard lock(mu);
      cancelled = true;
      copy_jobs_changed.notify_all();
    });
    if (!registration.ok()) return absl::CancelledError("copy jobs: cancelled");
    std::unique_lock lock(mu);
    ++copy_asks;
    if (!copy_error.ok()) return copy_error;
    if (!long_poll) wait = absl::ZeroDuration();
    const auto deadline =
        std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(wait);
    for (;;) {
      std::vector<broker::CopyJob> out;
      for (const auto& [id, job] : copy_jobs) {
        if (InProgress(job.state)) out.push_back(job);
      }
      if (!out.empty()) return out;
      if (cancelled) return absl::CancelledError("copy jobs: cancelled");
      if (copy_jobs_changed.wait_until(lock, deadline) ==
          std::cv_status::timeout) {
        return out;
      }
    }
  }
  // Adds a job as the controller creates one: a waiting CopyJobs answers.
  void AddCopyJob(const broker::CopyJob& job) {
    std::lock_guard lock(mu);
    copy_jobs[job.target_id] = job;
    copy_jobs_changed.notify_all();
  }
  int CopyAsks() {
    std::lock_guard lock(mu);
    return copy_asks;
  }
  absl::StatusOr<broker::CopyKeys> ReleaseCopyKeys(
      const std::string& node_id, const std::string& target_id) override {
    (void)node_id;
    std::lock_guard lock(mu);
    if (!copy_keys_error.ok()) return copy_keys_error;
    auto it = copy_jobs.find(target_id);
    if (it == copy_jobs.end() || !InProgress(it->second.state)) {
      return broker::RefusalStatus(broker::Reason::kCopyNotActive,
                                   "no copy in progress for " + target_id);
    }
    ++copy_key_releases;
    broker::CopyKeys keys;
    auto source = crypto::SecretBytes::Allocate(32);
    auto target = crypto::SecretBytes::Allocate(32);
    if (!source.ok()) return source.status();
    if (!target.ok()) return target.status();
    for (size_t i = 0; i < 32; ++i) {
      source->data()[i] = static_cast<uint8_t>(i * 7 + 1);
      target->data()[i] = static_cast<uint8_t>(i * 13 + 5);
    }
    keys.source_dek = *std::move(source);
    keys.target_dek = *std::move(target);
    keys.source_id = it->second.source_id;
    keys.kind = it->second.kind;
    keys.state = it->second.state;
    keys.source_format_id = formats[it->second.source_id];
    if (auto state = states.find(it->second.source_id); state != states.end()) {
      keys.source_expected_state = state->second;
    }
    keys.target_capacity_bytes = it->second.capacity_bytes;
    return keys;
  }
  absl::StatusOr<kms::CopyState> ReportCopy(
      const std::string& node_id, const broker::CopyReport& report) override {
    (void)node_id;
    std::lock_guard lock(mu);
    if (!report_error.ok()) return report_error;
    copy_reports.push_back(report);
    if (report.state == kms::CopyState::kReady && !ready_report_error.ok()) {
      return ready_report_error;
    }
    auto it = copy_jobs.find(report.target_id);
    if (it == copy_jobs.end()) {
      return broker::RefusalStatus(broker::Reason::kVolumeNotFound,
                                   "no volume " + report.target_id);
    }
    broker::CopyJob& job = it->second;
    const bool repeated_ready = job.state == kms::CopyState::kReady &&
                                report.state == kms::CopyState::kReady &&
                                formats[report.target_id] == report.format_id;
    if (!InProgress(job.state) && !repeated_ready) {
      return broker::RefusalStatus(broker::Reason::kCopyNotActive,
                                   "the copy of " + report.target_id + " ended");
    }
    if (static_cast<int>(report.state) < static_cast<int>(job.state)) {
      return broker::RefusalStatus(broker::Reason::kCopyNotActive,
                                   "the copy state goes back");
    }
    job.state = report.state;
    job.bytes_done = std::max(job.bytes_done, report.bytes_done);
    if (report.bytes_total != 0) job.bytes_total = report.bytes_total;
    if (report.state == kms::CopyState::kReady) {
      formats[report.target_id] = report.format_id;
      if (report.closed_state.has_value()) {
        states[report.target_id] = *report.closed_state;
      }
    }
    return job.state;
  }
  // The state a job's reports brought it to.
  kms::CopyState CopyStateOf(const std::string& target_id) {
    std::lock_guard lock(mu);
    return copy_jobs.at(target_id).state;
  }
  static bool InProgress(kms::CopyState state) {
    return state == kms::CopyState::kPending || state == kms::CopyState::kCut;
  }
  std::map<std::string, broker::CopyJob> copy_jobs;  // By target id.
  std::vector<broker::CopyReport> copy_reports;
  int copy_key_releases = 0;
  int copy_asks = 0;       // CopyJobs calls.
  bool long_poll = true;   // False: CopyJobs never waits (an older broker).
  std::condition_variable copy_jobs_changed;
  absl::Status copy_error;       // CopyJobs fails so when set.
  absl::Status copy_keys_error;  // ReleaseCopyKeys fails so when set.
  absl::Status report_error;     // ReportCopy fails so when set.
  absl::Status ready_report_error;  // Ready reports fail so (unapplied).

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
