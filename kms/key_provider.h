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
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"

namespace sealvol::kms {

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
};

// A node's report that it formatted a volume's image (KeyProvider::ClaimFormat).
struct FormatClaim {
  std::string format_id;  // 32 lowercase hex digits (ValidateFormatId).
  std::string node;
  int64_t unix_time = 0;
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

// Opens a provider from a URI: "local:DIR" or "vault+https://HOST:PORT?...".
absl::StatusOr<std::unique_ptr<KeyProvider>> OpenKeyProvider(
    std::string_view uri);

}  // namespace sealvol::kms
