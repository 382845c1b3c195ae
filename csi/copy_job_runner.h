// CopyJobRunner runs the node's part of snapshots, restores and clones: it
// asks the key broker for the copy jobs placed on this node, cuts the
// source at a point in time (a raw ciphertext copy of its image, taken with
// the file system frozen and the engine's writes held), reports the cut,
// releases the job's two keys, re-encrypts the cut (or, for a restore, the
// snapshot's image) into the target's image with io::CopySealed, and
// reports progress and the end (docs/csi.md, "Snapshots and clones").
//
// Files, all in the target's directory STATE_DIR/volumes/TARGET/ (so the
// node's lazy removal of deleted volumes takes them with it): the target
// image `image` (where a volume's image lives), its progress record
// `image.copy` (io/copy_progress.h), the cut `cut`, and `cut.partial`
// while a cut is being written (renamed to `cut` once durable: a `cut` is
// always complete).
//
// Restarts: a job in state cut resumes from its cut (and CopySealed from its
// progress record); a pending job whose cut is complete reports the cut and
// goes on; a pending job without one is cut afresh (a partial cut is
// discarded). A job in state cut whose cut is gone is failed. Ready is
// reported only with CopySealed's result, never for a half copy.
//
// Jobs take the node's volume locks (VolumeLocks): the target's for the
// whole job, the source's for the cut (a restore: the snapshot's for the
// copy). A volume busy with a CSI call is left for the next pass.
//
// Thread-safe: RunOnce may be called from any thread (passes are
// serialized); Start runs passes on the runner's own thread until Stop
// (which ends a waiting ask at once and waits for the job step in progress;
// a copy is resumable, so a kill of the node loses nothing). The thread
// asks with a long poll (job_wait): the broker answers as soon as a job for
// this node is created, so a new job starts at once rather than at the
// next poll. After a pass that ran every job it got, it asks again at
// once; after an empty answer, a pass that left jobs waiting or a failed
// ask, the next ask comes poll_interval after the previous one began (so a
// broker that does not wait, being older, is asked at that cadence).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/mutex.h"
#include "csi/data_path.h"
#include "csi/filesystem.h"
#include "csi/stage_store.h"
#include "csi/volume_key_source.h"
#include "csi/volume_locks.h"
#include "kms/broker/call_canceller.h"

namespace sealvol::csi {

struct CopyJobRunnerOptions {
  std::string node_id;
  // The least time from one ask to the next when the previous one found
  // nothing to do right away (see above).
  absl::Duration poll_interval = absl::Seconds(3);
  // How long one ask of the thread lets the broker wait for a job (the
  // broker caps it at broker::kMaxCopyJobsWait, 30 s). Zero: no long poll;
  // one ask every poll_interval.
  absl::Duration job_wait = absl::Seconds(30);
  // Bytes between two progress records and reports of a copy.
  uint64_t progress_interval_bytes = uint64_t{64} << 20;
  // Freezes the file system mounted at a path; null when nothing is
  // mounted there. Tests replace it.
  std::function<absl::StatusOr<std::unique_ptr<FrozenFilesystem>>(
      const std::string& mount_point)>
      freeze = FreezeFilesystem;
};

// What one pass did.
struct CopyPass {
  int ready = 0;   // Jobs reported ready.
  int failed = 0;  // Jobs reported failed.
  int later = 0;   // Jobs left for a later pass (busy, broker unreachable).
};

class CopyJobRunner {
 public:
  // Every pointer must outlive the runner; `locks` are the node service's.
  CopyJobRunner(CopyJobRunnerOptions options, VolumeKeySource* keys,
                DataPath* data_path, const StageStore* stages,
                VolumeLocks* locks);
  ~CopyJobRunner();  // Stop().
  CopyJobRunner(const CopyJobRunner&) = delete;
  CopyJobRunner& operator=(const CopyJobRunner&) = delete;

  // Starts the polling thread (once).
  void Start();
  // Stops it: ends its waiting ask and waits for the job step in progress.
  void Stop();

  // One pass: lists this node's jobs and runs each one as far as it can go
  // now, one job at a time; then removes the cuts and progress records of
  // jobs that ended. With `wait`, the ask is a long poll (the broker holds
  // an empty answer up to `wait` for a new job). Unavailable when the
  // broker cannot be asked (or the ask was ended by Stop).
  absl::StatusOr<CopyPass> RunOnce(absl::Duration wait = absl::ZeroDuration());

 private:
  enum class Outcome { kReady, kFailed, kLater };

  Outcome RunJob(const broker::CopyJob& job);
  // The cut of a snapshot's or clone's source, complete and reported:
  // OK, or the failure (the caller fails the job unless it is transient).
  absl::Status EnsureCut(const broker::CopyJob& job);
  // The raw cut of the source's image into `partial`, under its lock.
  absl::Status CutSource(const std::string& source_id,
                         const std::string& partial);
  // Reports the job failed and, once reported, removes its files.
  Outcome Fail(const broker::CopyJob& job, const std::string& error);
  // Removes what a job left in the target's directory: the cut (both
  // names), and with `target_image` the image and its progress record.
  void RemoveJobFiles(const std::string& target_id, bool target_image);
  // Cuts and progress records of jobs that are no longer listed.
  void RemoveStaleFiles(const std::vector<broker::CopyJob>& jobs);
  void Run();

  const CopyJobRunnerOptions options_;
  VolumeKeySource* const keys_;
  DataPath* const data_path_;
  const StageStore* const stages_;
  VolumeLocks* const locks_;

  Mutex pass_mu_;  // Serializes passes.
  Mutex mu_;
  CondVar wake_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // Ends the thread's waiting ask on Stop.
  broker::CallCanceller cancel_;
  std::thread thread_;
};

}  // namespace sealvol::csi
