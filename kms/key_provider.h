// KeyProvider creates, unwraps, rotates and destroys per-volume data keys
// (DEKs) wrapped under a per-tenant KEK, and keeps the registry of volume
// records. Implementations: the embedded local provider (`local:DIR`) and
// Vault/OpenBao (`vault+https://...`). Thread-safe.
//
// Errors: NotFound (no such volume), AlreadyExists, PermissionDenied (the KMS
// refused), Unavailable / DeadlineExceeded (KMS down or slow; retryable),
// DataLoss (a wrapped key that does not unwrap), InvalidArgument.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"

namespace sealvol::kms {

// What a volume's record commits to about its image (docs/kms.md, "State
// commitments"; the registry form of io::VolumeState): the image's epoch,
// the root over its authenticated state (64 lowercase hex digits) and
// whether a session is open (begun and not yet committed as closed).
struct CommittedState {
  uint64_t epoch = 0;
  std::string root;
  bool open = false;

  bool operator==(const CommittedState&) const = default;
};

// "epoch E, root R, open|closed", for messages and audit records.
std::string DescribeState(const CommittedState& state);

// What a record is (JSON "kind"): a volume, or a snapshot of one. Both
// have their own DEK; a snapshot is never published to a pod.
enum class RecordKind { kVolume, kSnapshot };

// Where a copy (a snapshot, or a volume restored or cloned from a source)
// stands (docs/kms.md, "Snapshots and copies"). States only move forward:
// kPending -> kCut -> kReady, kPending|kCut -> kFailed (kPending -> kReady
// skips the cut of a source that needs none).
enum class CopyState {
  kNone,     // Not a copy, or a copy with no work (an empty source).
  kPending,  // The node that holds the source has not cut it yet.
  kCut,      // The point in time is fixed (the source's image was cut).
  kReady,    // The copy's image is complete.
  kFailed,   // The copy failed; `CopyJob::error` says why.
};

// "volume"|"snapshot" and "none"|"pending"|"cut"|"ready"|"failed": the JSON
// and message forms.
const char* RecordKindName(RecordKind kind);
const char* CopyStateName(CopyState state);
// InvalidArgument naming the value for an unknown name.
absl::StatusOr<RecordKind> ParseRecordKind(std::string_view name);
absl::StatusOr<CopyState> ParseCopyState(std::string_view name);

// The copy job of a record whose image is made from another's.
struct CopyJob {
  CopyState state = CopyState::kNone;
  uint64_t bytes_done = 0;   // Never goes back.
  uint64_t bytes_total = 0;  // 0 = not known yet.
  std::string error;         // Why it failed (kFailed only).
  int64_t updated_unix = 0;  // Last change (Unix seconds).
  // When the source was cut (the copy's point in time; Unix seconds, the
  // reporter's clock): set once, by the first update to kCut or kReady.
  // 0 = not cut (yet).
  int64_t cut_unix = 0;

  bool operator==(const CopyJob&) const = default;
};

// A copy job in words, for messages and audit records: "pending, 1048576 of
// 4194304 bytes (25%)" or "failed: <error>".
std::string DescribeCopy(const CopyJob& copy);

// What the registry keeps about a volume or a snapshot. Holds no plaintext
// key.
struct VolumeRecord {
  std::string volume_id;    // "sv-" + 32 hex digits of the 16-byte volume id.
  std::string name;         // CSI volume name (idempotency key); may be empty.
  std::string tenant;       // Kubernetes namespace that owns the volume.
  std::string key_name;     // KEK name, e.g. "sealvol-team-a".
  int64_t key_version = 0;  // KEK version the DEK is wrapped under.
  std::string wrapped_dek;  // Opaque provider ciphertext (e.g. "vault:v1:...").
  uint64_t capacity_bytes = 0;
  std::string node;         // Node the volume lives on; empty until known.
  std::map<std::string, std::string> parameters;  // StorageClass parameters.
  int64_t created_unix = 0;
  // Set once, when the volume's image is first formatted (ClaimFormat), and
  // never changed after: the image's format id (32 lowercase hex digits),
  // the node that formatted it and when. Empty/0 = never formatted (also
  // for records written before these fields existed).
  std::string format_id;
  std::string formatted_node;
  int64_t formatted_unix = 0;
  // The state the image must match at its next open (CommitState), with
  // the node that committed it and when. Unset = never committed (a volume
  // from before state commitments: its first open is not checked).
  std::optional<CommittedState> state;
  std::string state_node;
  int64_t state_unix = 0;
  // An operator's acceptance of a rolled-back image (AcceptRollback): while
  // pending, the next open is not checked and its commit may lower the
  // epoch; the commit clears `rollback_pending` and keeps who and when.
  bool rollback_pending = false;
  std::string rollback_accepted_by;
  int64_t rollback_accepted_unix = 0;
  // A snapshot, or a volume; a copy (a snapshot, a restore or a clone)
  // names its source, a volume or a snapshot id ("" = none), and carries
  // its copy job. Records written before these fields read as a volume
  // with no source and copy state kNone.
  RecordKind kind = RecordKind::kVolume;
  std::string source_volume_id;
  CopyJob copy;
};

// A node's report on a copy job (KeyProvider::UpdateCopy).
struct CopyUpdate {
  CopyState state = CopyState::kPending;
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;  // 0 = keep the record's.
  std::string error;         // Required for kFailed; at most kMaxCopyErrorBytes
                             // are kept.
  int64_t unix_time = 0;
};

inline constexpr size_t kMaxCopyErrorBytes = 1024;

// One commitment of a volume's state (KeyProvider::CommitState).
struct StateCommit {
  CommittedState state;
  std::string node;  // Who commits (a node name or the CLI's host).
  int64_t unix_time = 0;
  // Consumes a pending AcceptRollback: the epoch may then go back.
  // FailedPrecondition when none is pending.
  bool accept_rollback = false;
};

// A node's report that it formatted a volume's image (KeyProvider::ClaimFormat).
struct FormatClaim {
  std::string format_id;  // 32 lowercase hex digits (ValidateFormatId).
  std::string node;
  int64_t unix_time = 0;
  // The new image's first state, stored with the claim when the claim is
  // recorded (and the record holds no state yet). Unset: none.
  std::optional<CommittedState> state;
};

struct CreateVolumeKeyRequest {
  std::string volume_id;
  std::string name;
  std::string tenant;
  std::string key_name_template;  // Empty = provider default.
  uint64_t capacity_bytes = 0;
  std::string node;
  std::map<std::string, std::string> parameters;
  // A snapshot or a copy: its kind, its source (a volume or snapshot id,
  // required for a snapshot and for kPending) and the copy state it starts
  // in: kNone (not a copy), kPending (a node must copy the source) or kReady
  // (nothing to copy: the source was never formatted). A copy gets a fresh
  // DEK like any other record, never its source's.
  RecordKind kind = RecordKind::kVolume;
  std::string source_volume_id;
  CopyState initial_copy_state = CopyState::kNone;
};

struct RotationResult {
  std::string key_name;
  int64_t new_key_version = 0;
  int volumes_rewrapped = 0;
};

class KeyProvider {
 public:
  virtual ~KeyProvider() = default;

  // Creates a fresh DEK for the volume, wrapped under the tenant's KEK (the
  // KEK is created on first use), and stores the record. The plaintext DEK
  // is not returned. AlreadyExists if the volume id is taken.
  virtual absl::StatusOr<VolumeRecord> CreateVolumeKey(
      const CreateVolumeKeyRequest& request) = 0;

  // Unwraps the volume's DEK into locked memory (reads the record, then
  // UnwrapRecordKey).
  virtual absl::StatusOr<crypto::SecretBytes> UnwrapVolumeKey(
      std::string_view volume_id) = 0;

  // Unwraps the DEK that `record` (as GetVolume returned it) holds, without
  // reading the registry again: a caller that decided on a record (the
  // broker's policy check and audit record) gets the key of that record,
  // even if a rotation or an update replaced it since. `record` must come
  // from this provider. DataLoss if the wrapped key does not unwrap (also
  // when a rotation has retired its KEK version since it was read).
  virtual absl::StatusOr<crypto::SecretBytes> UnwrapRecordKey(
      const VolumeRecord& record) = 0;

  virtual absl::StatusOr<VolumeRecord> GetVolume(
      std::string_view volume_id) = 0;

  // Replaces a record's mutable fields (capacity, node, parameters); the
  // wrapped key, tenant, format, state, kind, source and copy fields are not
  // changed by this call.
  virtual absl::Status UpdateVolume(const VolumeRecord& record) = 0;

  // Compare-and-set of the format fields, atomic against concurrent calls:
  // when the record has no format id, stores `claim` durably; otherwise
  // leaves the record as it is. Returns the record as stored after the call;
  // the caller compares its format_id with the claim's. NotFound if there is
  // no such volume, InvalidArgument for a malformed format id.
  virtual absl::StatusOr<VolumeRecord> ClaimFormat(std::string_view volume_id,
                                                   const FormatClaim& claim) = 0;

  // Commits the state of the volume's image, durably and atomically
  // against concurrent calls (file lock or kv-v2 check-and-set). The epoch
  // never goes back: FailedPrecondition "state_epoch ..." when
  // `commit.state.epoch` is below the record's, or equal to it while the
  // record says that session was closed already (a session's start after
  // its own close) — unless `commit.accept_rollback` consumes a pending
  // AcceptRollback. InvalidArgument naming the field for a malformed root;
  // NotFound if there is no such volume. Returns the record as stored.
  virtual absl::StatusOr<VolumeRecord> CommitState(
      std::string_view volume_id, const StateCommit& commit) = 0;

  // Marks the record to accept the image as it is found at the next open
  // (an operator restoring an older image on purpose): sets
  // rollback_pending with `by` and `unix_time`. The next open is not
  // checked, and its CommitState with accept_rollback clears the mark.
  // NotFound if there is no such volume; InvalidArgument for an empty `by`.
  virtual absl::StatusOr<VolumeRecord> AcceptRollback(
      std::string_view volume_id, std::string_view by, int64_t unix_time) = 0;

  // Records the progress or the end of a copy job, durably and atomically
  // against concurrent calls (like CommitState), by the rules of
  // ApplyCopyUpdate. Returns the record as stored. NotFound if there is no
  // such record; FailedPrecondition naming both states for a move that is
  // not forward; InvalidArgument for a malformed update.
  virtual absl::StatusOr<VolumeRecord> UpdateCopy(
      std::string_view volume_id, const CopyUpdate& update) = 0;

  // All records (volumes and snapshots: callers filter by kind), or those
  // of one tenant when `tenant` is non-empty, ordered by volume id.
  virtual absl::StatusOr<std::vector<VolumeRecord>> ListVolumes(
      std::string_view tenant) = 0;

  // Crypto-shred: destroys every copy of the wrapped DEK and the record.
  // NotFound if there is no such volume.
  virtual absl::Status DestroyVolumeKey(std::string_view volume_id) = 0;

  // Rotates the tenant's KEK and rewraps all its volumes' DEKs without
  // exposing them.
  virtual absl::StatusOr<RotationResult> RotateTenantKey(
      std::string_view tenant) = 0;

  // OK when the KMS answers (for CSI Probe).
  virtual absl::Status Ping() = 0;

  // A short description without secrets, e.g. "local:/var/lib/sealvol/kms".
  virtual std::string Describe() const = 0;
};

// The registry's rules for a state commit, applied to `record` in memory by
// every provider under its own atomicity (one home for the rule): validates
// the root, refuses an epoch that goes back (see CommitState), consumes a
// pending rollback acceptance. Sets state, state_node and state_unix.
absl::Status ApplyStateCommit(VolumeRecord& record, const StateCommit& commit);

// The registry's rules for a copy update, applied to `record` in memory by
// every provider under its own atomicity:
// * the record must be a copy in progress (kPending or kCut), except that a
//   report of the state it already ended in (kReady, kFailed) is accepted
//   and changes nothing (a node retrying a report whose answer it lost);
// * the state only moves forward (see CopyState); FailedPrecondition naming
//   the stored and the reported state otherwise; kNone is never reported
//   (InvalidArgument);
// * kFailed needs an error (InvalidArgument); it is cut to
//   kMaxCopyErrorBytes;
// * bytes_done never goes back: a lower figure (a node resuming from its
//   last saved progress) keeps the stored one; bytes_done above a known
//   bytes_total is InvalidArgument;
// * the first move to kCut or kReady sets cut_unix.
absl::Status ApplyCopyUpdate(VolumeRecord& record, const CopyUpdate& update);

// The checks of CreateVolumeKeyRequest's copy fields that every provider
// makes before creating anything: InvalidArgument naming the field.
absl::Status ValidateCopyRequest(const CreateVolumeKeyRequest& request);

// What every provider's CreateVolumeKey checks before it touches its store:
// the volume id, the copy fields (ValidateCopyRequest), and the KEK name from
// the request's template, or `default_template` when it has none, for the
// request's tenant. Returns that KEK name; InvalidArgument naming the field.
absl::StatusOr<std::string> CheckNewVolumeKey(
    const CreateVolumeKeyRequest& request, std::string_view default_template);

// The record CreateVolumeKey stores for `request`, before its wrapped key:
// the request's fields, the KEK name and version, the creation time (now),
// and a copy's starting state stamped with that time. One home for what a
// new record holds, for every provider.
VolumeRecord NewVolumeRecord(const CreateVolumeKeyRequest& request,
                             std::string key_name, int64_t key_version);

// The KEK names a tenant's rotation rotates: `default_key` (the name new
// volumes get) and every name one of the tenant's records was wrapped
// under (a template changed since). One rule for every provider.
std::set<std::string> TenantKeyNames(const std::vector<VolumeRecord>& records,
                                     std::string_view tenant,
                                     const std::string& default_key);

// Opens a provider from a URI: "local:DIR" or "vault+https://HOST:PORT?...".
absl::StatusOr<std::unique_ptr<KeyProvider>> OpenKeyProvider(
    std::string_view uri);

}  // namespace sealvol::kms
