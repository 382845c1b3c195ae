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

// What the registry keeps about a volume. Holds no plaintext key.
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
};

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
  // wrapped key, tenant and format fields are not changed by this call.
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

  // All records, or those of one tenant when `tenant` is non-empty, ordered
  // by volume id.
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

// Opens a provider from a URI: "local:DIR" or "vault+https://HOST:PORT?...".
absl::StatusOr<std::unique_ptr<KeyProvider>> OpenKeyProvider(
    std::string_view uri);

}  // namespace sealvol::kms
