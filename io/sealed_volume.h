// SealedVolume is the sealed-volume engine: an AES-256-GCM encrypted,
// authenticated, crash-consistent block volume stored in a regular file or a
// block device, served asynchronously over io_uring. Thread-safe: Submit may
// be called from any thread; Grow and Close from one control thread.
//
// The format is described in docs/format.md. Properties P1-P6 of
// DESIGN.md section 5 hold for every volume this class serves.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/volume_id.h"
#include "crypto/secret_bytes.h"
#include "io/volume_io.h"
#include "io/volume_state.h"

namespace sealvol::io {

// The volume id and its one text rule live in base/volume_id.h.
using ::sealvol::ParseVolumeId;
using ::sealvol::VolumeId;
using ::sealvol::VolumeIdString;
// Drawn at random by every format and stored in the header (not secret): it
// salts the subkeys, so two formats of one volume never share a key, and the
// registry records it, so an image that was lost and re-created, or
// replaced, is recognised as not the one the volume was formatted with.
using FormatId = std::array<uint8_t, 16>;

// 32 lowercase hex digits.
std::string FormatIdString(const FormatId& id);
absl::StatusOr<FormatId> ParseFormatId(std::string_view text);

struct FormatOptions {
  std::string path;         // Image file (created sparse) or block device.
  uint64_t size_bytes = 0;  // Usable size; a positive multiple of 4096.
  VolumeId volume_id{};
  FormatId format_id{};     // All zero: the engine draws a random one.
};

struct OpenOptions {
  std::string path;
  bool read_only = false;
  int worker_threads = 0;  // 0 = engine default.
  // What the volume's registry record commits to. The image must match it
  // (FailedPrecondition, kind kRolledBack, "rolled back: ..." otherwise;
  // docs/security.md gives the rule). Unset: not checked; only `restore`
  // (which re-commits an image on purpose) and `upgrade` open that way.
  std::optional<VolumeState> expected_state;
  // Writable opens: called once the image's new epoch is durable and before
  // any write is accepted, with the state to commit (open = true). An error
  // fails the Open; the image is left as it was found, one epoch on.
  std::function<absl::Status(const VolumeState&)> commit_open;
  // The new epoch is at least min_epoch + 1. A restore on purpose (no
  // expected_state) passes the registry's epoch, so the restored image's new
  // epoch is past every epoch an older copy can carry.
  uint64_t min_epoch = 0;
};

// Header fields readable without a key (for `sealvol dump` and for finding
// which key to ask for). Nothing here is secret.
struct VolumeHeaderInfo {
  uint32_t format_version = 0;
  VolumeId volume_id{};
  FormatId format_id{};
  uint64_t size_bytes = 0;
  uint32_t block_size = 0;
  uint64_t generation = 0;
  bool clean = false;  // Closed cleanly (no recovery needed).
  // The state root fields (unauthenticated here: the engine checks them
  // with the key); has_state_root false for an image that predates them.
  bool has_state_root = false;
  uint64_t state_epoch = 0;
  StateRoot state_root{};
  // Layout fields as documented in docs/format.md.
  std::string layout_json;
};

// Reads the newest valid superblock copy without a key. Errors:
// NotFound (no such file), InvalidArgument "not a sealvol image",
// FailedPrecondition "unsupported format version N", OutOfRange "truncated".
absl::StatusOr<VolumeHeaderInfo> ReadHeader(const std::string& path);

class SealedVolume : public VolumeIo {
 public:
  // Creates a new volume. Fails with AlreadyExists if `path` already holds
  // a sealvol image. `dek` is the 32-byte volume data key.
  static absl::StatusOr<std::unique_ptr<SealedVolume>> Format(
      const FormatOptions& options, const crypto::SecretBytes& dek);

  // Opens an existing volume, taking an exclusive lock on the image
  // (FailedPrecondition "in use" if held), authenticating the superblock
  // (PermissionDenied "wrong key" when the key check value differs), and
  // running crash recovery over the regions marked dirty.
  static absl::StatusOr<std::unique_ptr<SealedVolume>> Open(
      const OpenOptions& options, const crypto::SecretBytes& dek);

  ~SealedVolume() override;

  // Grows the usable size online (P6); never shrinks. No data is rewritten.
  virtual absl::Status Grow(uint64_t new_size_bytes) = 0;

  // Flushes everything, marks the image clean, stops the workers and
  // zeroizes the keys. Further Submits complete with -EROFS.
  virtual absl::Status Close() = 0;

  // Read-only once the backing store has failed; front-ends report it.
  virtual bool failed() const = 0;
  virtual const VolumeId& volume_id() const = 0;
  virtual const FormatId& format_id() const = 0;
  // The state to commit: after Format, the new volume's; after a successful
  // Close, the one it closed with (open = false); in between, the state the
  // session started from (open = true).
  virtual VolumeState state() const = 0;

 protected:
  SealedVolume() = default;
};

}  // namespace sealvol::io
