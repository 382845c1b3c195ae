// AuditLog appends one JSON line per key-release decision to a hash-chained,
// append-only file (docs/audit.md): each record carries `prev`, the SHA-256
// of the previous record's line, and a `seq` that counts up by one, across
// rotated files too. Thread-safe: many threads may Append at once; records
// are totally ordered by one mutex and none is lost.
//
// Durability: Append returns only after the record is on stable storage
// (fdatasync). Concurrent appends share one fdatasync (group commit), so a
// crash loses no acknowledged record; at most the records still in
// Append (not yet acknowledged) can be lost or torn, and a torn last line is
// cut off when the log is reopened.
//
// Errors: a failed write or sync makes the log unusable, so a broker that
// requires a record for every grant fails closed. It is not final: the next
// Append or Health (at most every kRecoveryInterval) reopens the file, cuts
// off a torn line and resumes the chain, provided every acknowledged record
// is still there (DataLoss otherwise, until an operator steps in).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/mutex.h"
#include "base/unique_fd.h"

namespace sealvol::broker {

inline constexpr char kDecisionGrant[] = "grant";
inline constexpr char kDecisionRefuse[] = "refuse";
inline constexpr char kAttestationToken[] = "token";
inline constexpr char kAttestationApiServer[] = "api_server";
inline constexpr char kAttestationNone[] = "none";
// A copy job's key release: no pod; the node's own identity and the
// registry's job for that node.
inline constexpr char kAttestationCopyJob[] = "copy_job";

// One decision. Strings come from requests and claims; the log escapes them
// and clips each to 256 bytes. Never put a token or key here.
struct AuditRecord {
  std::string decision;  // kDecisionGrant or kDecisionRefuse.
  std::string reason;    // "granted" or a refusal reason (refusal.h).
  std::string volume;
  std::string tenant;
  std::string namespace_name;
  std::string pod;
  std::string pod_uid;
  std::string service_account;
  std::string node;
  std::string token_id;  // jti, or "sha256:<hex>" of the token.
  // How the pod was attested: kAttestationToken, kAttestationApiServer,
  // kAttestationNone (a release request with neither), kAttestationCopyJob
  // (a copy job's keys), or "" (no pod).
  std::string attestation;
  int64_t key_version = 0;
  std::string message;   // Human text without secrets.
};

struct AuditLogOptions {
  std::string path;
  // Rotate when the current file reaches this size; 0 = only on Rotate().
  uint64_t max_file_bytes = 64ull << 20;
  std::function<absl::Time()> now = [] { return absl::Now(); };
};

class AuditLog {
 public:
  // Opens or creates the log and resumes the chain from its last record (or
  // from the newest rotated file when the current one is empty).
  static absl::StatusOr<std::unique_ptr<AuditLog>> Open(AuditLogOptions options);
  ~AuditLog();

  // Appends and makes durable one record.
  absl::Status Append(const AuditRecord& record);

  // OK when records can be written; after a failure, tries to recover (see
  // above) and returns the failure while it persists. For readiness.
  absl::Status Health();

  static constexpr std::chrono::milliseconds kRecoveryInterval{500};

  // Renames the current file to "<path>.<20-digit seq of its last record>"
  // and starts a new one whose first record chains to that last record.
  // Call it on SIGHUP; size-based rotation calls it too.
  absl::Status Rotate();

  // Number of the last record written (0 when the chain is empty).
  int64_t last_seq() const;
  const std::string& path() const { return options_.path; }

 private:
  AuditLog(AuditLogOptions options, UniqueFd fd, int64_t last_seq,
           std::string last_hash, uint64_t file_bytes);
  // Both may release mu_ while waiting for a sync in progress.
  absl::Status RotateLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RecoverLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits until no fdatasync runs without the lock.
  void WaitForSyncLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const AuditLogOptions options_;
  mutable Mutex mu_;
  CondVar synced_;  // Signalled when a sync ends.
  UniqueFd fd_ ABSL_GUARDED_BY(mu_);
  int64_t last_seq_ ABSL_GUARDED_BY(mu_);
  std::string last_hash_ ABSL_GUARDED_BY(mu_);
  uint64_t file_bytes_ ABSL_GUARDED_BY(mu_);
  int64_t durable_seq_ ABSL_GUARDED_BY(mu_);
  bool sync_in_progress_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status broken_ ABSL_GUARDED_BY(mu_);
  std::chrono::steady_clock::time_point last_recovery_ ABSL_GUARDED_BY(mu_);
};

struct AuditVerifyResult {
  int64_t records = 0;
  int64_t first_seq = 0;
  int64_t last_seq = 0;
  std::string head_hash;  // SHA-256 of the last line: anchor it elsewhere.
};

struct AuditVerifyOptions {
  // Accept a chain that starts mid-way (older files deleted by retention):
  // the first record's seq and prev are taken as given.
  bool allow_partial_start = false;
};

// Verifies the chain across `files` in order. DataLoss naming the first bad
// line as "FILE:LINE: what is wrong" on any edit, deletion, insertion,
// reordering or torn record; NotFound if a file cannot be read.
absl::StatusOr<AuditVerifyResult> VerifyAuditFiles(
    const std::vector<std::string>& files, const AuditVerifyOptions& options);

}  // namespace sealvol::broker
