#include "csi/copy_job_runner.h"

#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/durable_file.h"
#include "base/injected_fault.h"
#include "base/status_macros.h"
#include "base/volume_id.h"
#include "csi/committed_state.h"
#include "io/copy_progress.h"
#include "io/volume_copy.h"
#include "kms/broker/refusal.h"
#include "spdlog/spdlog.h"

namespace sealvol::csi {
namespace {

constexpr char kPartialSuffix[] = ".partial";
// The progress record io::CopySealed keeps next to its target.
constexpr char kProgressSuffix[] = ".copy";

bool Exists(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0;
}

// Unlinks `path` durably; a missing file is fine.
absl::Status Remove(const std::string& path) {
  const std::string name = path.substr(path.find_last_of('/') + 1);
  absl::Status removed = RemoveFileDurably(ParentDirectory(path), name);
  return absl::IsNotFound(removed) ? absl::OkStatus() : removed;
}

// A failure that a later pass may not see: the job waits for it.
bool Transient(const absl::Status& status) {
  return absl::IsAborted(status) || absl::IsUnavailable(status) ||
         absl::IsDeadlineExceeded(status) || absl::IsResourceExhausted(status);
}

// Key-release refusals that no later pass changes: the job is failed.
bool FinalRefusal(const absl::Status& status) {
  const std::string reason = broker::RefusalReason(status);
  return reason == "node_not_owner" || reason == "source_not_on_node" ||
         reason == "volume_not_found" || reason == "namespace_mismatch";
}

std::string Describe(const broker::CopyJob& job) {
  return absl::StrCat(std::string(broker::CopyKindName(job.kind)), " ", job.target_id,
                      " of ", job.source_id);
}

}  // namespace

CopyJobRunner::CopyJobRunner(CopyJobRunnerOptions options,
                             VolumeKeySource* keys, DataPath* data_path,
                             const StageStore* stages, VolumeLocks* locks)
    : options_(std::move(options)),
      keys_(keys),
      data_path_(data_path),
      stages_(stages),
      locks_(locks) {}

CopyJobRunner::~CopyJobRunner() { Stop(); }

void CopyJobRunner::Start() {
  MutexLock lock(&mu_);
  if (thread_.joinable() || stop_) return;
  thread_ = std::thread([this] { Run(); });
}

void CopyJobRunner::Stop() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  cancel_.Cancel();
  wake_.SignalAll();
  if (thread_.joinable()) thread_.join();
}

void CopyJobRunner::Run() {
  for (;;) {
    {
      MutexLock lock(&mu_);
      if (stop_) return;
    }
    const auto asked = std::chrono::steady_clock::now();
    auto pass = RunOnce(options_.job_wait);
    // Every job it got is done: a job created meanwhile is asked for now.
    // Otherwise (nothing came, a job waits for something, the ask failed)
    // the next ask keeps poll_interval from this one; after a long poll
    // that waited that long, it comes at once.
    const bool all_done = pass.ok() && pass->later == 0 &&
                          pass->ready + pass->failed > 0;
    const auto next =
        all_done ? asked
                 : asked + absl::ToChronoNanoseconds(options_.poll_interval);
    bool stopping;
    {
      MutexLock lock(&mu_);
      stopping = stop_;
    }
    if (!pass.ok() && !stopping) {
      spdlog::warn("copy jobs: {}", std::string(pass.status().message()));
    }
    MutexLock lock(&mu_);
    while (!stop_ && wake_.WaitUntil(&mu_, next)) {
    }
  }
}

absl::StatusOr<CopyPass> CopyJobRunner::RunOnce(absl::Duration wait) {
  MutexLock pass_lock(&pass_mu_);
  auto jobs = keys_->CopyJobs(options_.node_id, wait,
                              wait > absl::ZeroDuration() ? &cancel_ : nullptr);
  if (!jobs.ok()) {
    return absl::UnavailableError(
        absl::StrCat("cannot ask the key broker for copy jobs: ",
                     jobs.status().message()));
  }
  CopyPass pass;
  for (const broker::CopyJob& job : *jobs) {
    {
      MutexLock lock(&mu_);
      if (stop_) break;
    }
    if (!IsWellFormedVolumeId(job.target_id) ||
        !IsWellFormedVolumeId(job.source_id)) {
      spdlog::warn("copy jobs: skipping a job with a malformed id ({} of {})",
                   job.target_id.substr(0, 64), job.source_id.substr(0, 64));
      ++pass.later;
      continue;
    }
    switch (RunJob(job)) {
      case Outcome::kReady: ++pass.ready; break;
      case Outcome::kFailed: ++pass.failed; break;
      case Outcome::kLater: ++pass.later; break;
    }
  }
  RemoveStaleFiles(*jobs);
  return pass;
}

CopyJobRunner::Outcome CopyJobRunner::RunJob(const broker::CopyJob& job) {
  const std::string what = Describe(job);
  auto later = [&](const absl::Status& status) {
    spdlog::info("copy {}: later: {}", what, std::string(status.message()));
    return Outcome::kLater;
  };
  VolumeLock target_lock(locks_, job.target_id);
  if (!target_lock.status().ok()) return later(target_lock.status());
  if (absl::Status s = stages_->CreateVolumeDir(job.target_id); !s.ok()) {
    return later(s);
  }

  // The point in time first: a snapshot's or clone's source is cut before
  // its keys are asked for (CreateSnapshot waits for the cut).
  if (job.kind != broker::CopyKind::kRestore) {
    absl::Status cut = EnsureCut(job);
    if (Transient(cut) || broker::RefusalReason(cut) == "copy_not_active") {
      return later(cut);
    }
    if (!cut.ok()) return Fail(job, std::string(cut.message()));
  }

  auto keys = keys_->ReleaseCopyKeys(options_.node_id, job.target_id);
  if (!keys.ok()) {
    if (FinalRefusal(keys.status())) {
      return Fail(job, absl::StrCat("the key broker refused the copy's keys: ",
                                    keys.status().message()));
    }
    // copy_not_active: the job ended meanwhile, or its source (a snapshot)
    // is not complete yet; unreachable: try again.
    return later(keys.status());
  }
  if (keys->source_id != job.source_id) {
    return Fail(job, absl::StrCat("the key broker names source ",
                                  keys->source_id, ", the job ", job.source_id));
  }

  io::CopyOptions copy;
  std::optional<VolumeLock> source_lock;
  if (job.kind == broker::CopyKind::kRestore) {
    // The snapshot's image is the source; its lock keeps the node's lazy
    // removal away while it is read.
    source_lock.emplace(locks_, job.source_id);
    if (!source_lock->status().ok()) return later(source_lock->status());
    copy.source_path = stages_->ImagePath(job.source_id);
    copy.source_kind = io::CopyOptions::SourceKind::kSnapshotImage;
    if (!Exists(copy.source_path)) {
      return Fail(job, absl::StrCat("snapshot ", job.source_id,
                                    " has no image on node ",
                                    options_.node_id));
    }
    if (keys->source_expected_state.has_value() &&
        !keys->source_rollback_accepted) {
      auto expected = ToVolumeState(*keys->source_expected_state);
      if (!expected.ok()) return Fail(job, std::string(expected.status().message()));
      copy.source_expected_state = *expected;
    }
  } else {
    copy.source_path = stages_->CutPath(job.target_id);
    copy.source_kind = io::CopyOptions::SourceKind::kCut;
  }
  copy.source_dek = &keys->source_dek;
  copy.target_dek = &keys->target_dek;
  copy.target_path = stages_->ImagePath(job.target_id);
  auto target_id = ParseVolumeId(job.target_id);
  if (!target_id.ok()) return Fail(job, std::string(target_id.status().message()));
  copy.target_volume_id = *target_id;
  copy.target_size_bytes = keys->target_capacity_bytes;
  copy.progress_interval_bytes = options_.progress_interval_bytes;
  const kms::CopyState progress_state = job.kind == broker::CopyKind::kRestore
                                            ? kms::CopyState::kPending
                                            : kms::CopyState::kCut;
  copy.on_progress = [&](uint64_t done, uint64_t total) {
    auto reported = keys_->ReportCopy(options_.node_id,
                                      {.target_id = job.target_id,
                                       .state = progress_state,
                                       .bytes_done = done,
                                       .bytes_total = total});
    if (!reported.ok()) {
      spdlog::warn("copy {}: progress {} of {} bytes not reported: {}", what,
                   done, total, std::string(reported.status().message()));
    }
    InjectedCrash("copy-progress");
  };
  auto result = io::CopySealed(copy);
  keys->source_dek.Wipe();
  keys->target_dek.Wipe();
  if (!result.ok()) {
    if (Transient(result.status())) return later(result.status());
    return Fail(job, std::string(result.status().message()));
  }
  InjectedCrash("copy-copied");

  auto reported = keys_->ReportCopy(
      options_.node_id,
      {.target_id = job.target_id,
       .state = kms::CopyState::kReady,
       .bytes_done = result->bytes_total,
       .bytes_total = result->bytes_total,
       .format_id = io::FormatIdString(result->format_id),
       .closed_state = ToCommittedState(result->state)});
  if (!reported.ok()) {
    // Not reported: the next pass finds the job again, and CopySealed gives
    // the same result from its record without copying.
    if (broker::RefusalReason(reported.status()) != "copy_not_active") {
      return later(reported.status());
    }
    spdlog::warn("copy {}: the job ended meanwhile: {}", what,
                 std::string(reported.status().message()));
    RemoveJobFiles(job.target_id, /*target_image=*/false);
    return Outcome::kLater;
  }
  // The record is only forgotten once ready is in the registry.
  RemoveJobFiles(job.target_id, /*target_image=*/false);
  spdlog::info("copy {}: ready ({} bytes{})", what, result->bytes_total,
               result->resumed ? ", resumed" : "");
  return Outcome::kReady;
}

absl::Status CopyJobRunner::EnsureCut(const broker::CopyJob& job) {
  const std::string cut = stages_->CutPath(job.target_id);
  const std::string partial = cut + kPartialSuffix;
  auto report_cut = [&]() -> absl::Status {
    auto reported = keys_->ReportCopy(
        options_.node_id,
        {.target_id = job.target_id, .state = kms::CopyState::kCut});
    return reported.status();
  };
  if (Exists(cut)) {
    // Cut before a restart whose report was lost: the point in time stands.
    if (job.state == kms::CopyState::kPending) return report_cut();
    return absl::OkStatus();
  }
  if (job.state == kms::CopyState::kCut) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the cut of ", job.source_id, " for ", job.target_id,
        " is gone from node ", options_.node_id,
        " (was the node's state directory replaced?); the copy cannot be "
        "completed"));
  }
  // Pending without a complete cut: a partial one (the node stopped while
  // writing it) is discarded and the source cut afresh.
  RETURN_IF_ERROR(Remove(partial));
  RETURN_IF_ERROR(CutSource(job.source_id, partial));
  InjectedCrash("copy-partial-cut");
  if (absl::Status renamed = ReplaceFileDurably(partial, cut); !renamed.ok()) {
    Remove(partial).IgnoreError();
    return renamed;
  }
  spdlog::info("copy {}: {} cut", Describe(job), job.source_id);
  InjectedCrash("copy-cut");
  return report_cut();
}

absl::Status CopyJobRunner::CutSource(const std::string& source_id,
                                      const std::string& partial) {
  // The source's lock keeps stage, publish and unstage out while the cut is
  // taken: the volume is either served (frozen and held below) or closed.
  VolumeLock lock(locks_, source_id);
  RETURN_IF_ERROR(lock.status());
  const std::string image = stages_->ImagePath(source_id);
  if (!Exists(image)) {
    return absl::FailedPreconditionError(
        absl::StrCat("volume ", source_id, " has no image on node ",
                     options_.node_id, " (", image, ")"));
  }
  if (!data_path_->Device(source_id).ok()) {
    // Not served: the closed image does not change under the lock.
    return io::CutImage(image, partial);
  }
  auto record = stages_->Load(source_id);
  if (!record.ok()) return record.status();
  // Freeze first, so the file system's last writes reach the engine; then
  // hold the engine's writes (in-flight ones done and durable); then cut.
  std::unique_ptr<FrozenFilesystem> frozen;
  if (!record->block) {
    ASSIGN_OR_RETURN(frozen, options_.freeze(record->staging_path));
  }
  // Without the hold nothing is cut; the file system is thawed either way.
  auto hold = data_path_->HoldWrites(source_id);
  absl::Status cut =
      hold.ok() ? io::CutImage(image, partial)
                : absl::Status(hold.status().code(),
                               absl::StrCat("volume ", source_id, " on node ",
                                            options_.node_id, ": ",
                                            hold.status().message()));
  if (hold.ok()) hold->reset();
  absl::Status thawed = frozen != nullptr ? frozen->Thaw() : absl::OkStatus();
  RETURN_IF_ERROR(cut);
  return thawed;
}

CopyJobRunner::Outcome CopyJobRunner::Fail(const broker::CopyJob& job,
                                           const std::string& error) {
  spdlog::warn("copy {}: failed: {}", Describe(job), error);
  auto reported = keys_->ReportCopy(
      options_.node_id,
      {.target_id = job.target_id,
       .state = kms::CopyState::kFailed,
       .error = error.substr(0, kms::kMaxCopyErrorBytes)});
  if (!reported.ok() &&
      broker::RefusalReason(reported.status()) != "copy_not_active") {
    // Kept as it is: the next pass meets the same failure and reports it.
    spdlog::warn("copy {}: the failure was not reported: {}", Describe(job),
                 std::string(reported.status().message()));
    return Outcome::kLater;
  }
  RemoveJobFiles(job.target_id, /*target_image=*/true);
  return Outcome::kFailed;
}

void CopyJobRunner::RemoveJobFiles(const std::string& target_id,
                                   bool target_image) {
  const std::string cut = stages_->CutPath(target_id);
  const std::string image = stages_->ImagePath(target_id);
  std::vector<std::string> paths = {cut, cut + kPartialSuffix};
  if (target_image) {
    paths.push_back(image);
    paths.push_back(image + kProgressSuffix);
  }
  for (const std::string& path : paths) {
    if (absl::Status s = Remove(path); !s.ok()) {
      spdlog::warn("copy {}: {}", target_id, std::string(s.message()));
    }
  }
  if (!target_image) {
    if (absl::Status s = io::ForgetCopyProgress(image); !s.ok()) {
      spdlog::warn("copy {}: {}", target_id, std::string(s.message()));
    }
  }
}

void CopyJobRunner::RemoveStaleFiles(const std::vector<broker::CopyJob>& jobs) {
  auto ids = stages_->VolumeIds();
  if (!ids.ok()) return;
  std::set<std::string> active;
  for (const broker::CopyJob& job : jobs) active.insert(job.target_id);
  for (const std::string& id : *ids) {
    if (active.count(id)) continue;
    const std::string cut = stages_->CutPath(id);
    const std::string image = stages_->ImagePath(id);
    const bool has_cut = Exists(cut) || Exists(cut + kPartialSuffix);
    const bool has_record = Exists(image + kProgressSuffix);
    if (!has_cut && !has_record) continue;
    VolumeLock lock(locks_, id);
    if (!lock.status().ok()) continue;  // Busy: the next pass.
    // A job that is no longer listed ended (or its target was deleted): its
    // cut is stale. A progress record of a finished copy is forgotten; one
    // of an unfinished copy marks a partial image, removed with it — never
    // served (the job failed, or the target is gone).
    bool partial_image = false;
    if (has_record) {
      auto progress = io::CopyProgressFile(image, kProgressSuffix, "copy").Load();
      partial_image = !progress.ok() ||
                      progress->phase != io::CopyProgress::Phase::kDone;
    }
    if (partial_image && stages_->Load(id).ok()) partial_image = false;
    spdlog::info("copy {}: removing what an ended job left ({}{})", id,
                 has_cut ? "cut" : "progress record",
                 partial_image ? " and a partial image" : "");
    RemoveJobFiles(id, partial_image);
  }
}

}  // namespace sealvol::csi
