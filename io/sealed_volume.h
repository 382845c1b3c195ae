// SealedVolume is the sealed-volume engine: an AES-256-GCM encrypted,
// authenticated, crash-consistent block volume stored in a regular file or a
// block device, served asynchronously over io_uring. Thread-safe: Submit may
// be called from any thread; Grow, CheckpointNow and Close from one control
// thread. With EngineOptions::manual, every call comes from one thread.
//
// The format is described in docs/format.md. Properties P1-P6 of
// DESIGN.md section 5 hold for every volume this class serves.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"
#include "io/backing_store.h"
#include "io/layout.h"
#include "io/recovery.h"
#include "io/slot_codec.h"
#include "io/volume_header.h"
#include "io/volume_io.h"
#include "io/volume_state.h"

namespace sealvol::io {

struct FormatOptions {
  std::string path;         // Image file (created sparse) or block device.
  uint64_t size_bytes = 0;  // Usable size; a positive multiple of 4096.
  VolumeId volume_id{};
  FormatId format_id{};     // All zero: the engine draws a random one.
};

// What a service or a command opens an image file with (Open).
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

// Everything an open can be told, for tests, benchmarks and tools
// (FormatOn/OpenOn/FormatFile/OpenFile): any BackingStore, engine tuning,
// manual mode and test hooks. Open(OpenOptions) sets the first fields.
struct EngineOptions {
  bool read_only = false;
  int worker_threads = 2;
  // No threads: queued requests run, as batches, when RunPending() is called.
  bool manual = false;
  // Tag cache bound: groups per worker (64 KiB of tags each; a group covers
  // 4 MiB of data). Memory = workers * cache_groups * 64 KiB.
  size_t cache_groups = 128;
  // FormatOn only: the layout to write (tests use small groups).
  Layout format_layout = Layout::Default();
  // Blocks of ciphertext a worker batches at once (its bounce buffer).
  uint32_t batch_blocks = 2048;
  // Keep the BackingStore after Close (so a test can take its image);
  // otherwise Close releases it and its lock.
  bool keep_store_after_close = false;
  // Test hook: every block sealed, with its slot (session id, counter).
  SlotCodec::SealObserver seal_observer;
  // As OpenOptions.
  std::optional<VolumeState> expected_state;
  std::function<absl::Status(const VolumeState&)> commit_open;
  uint64_t min_epoch = 0;
  // Checkpoints while open (writable, threaded mode): when this many groups
  // have their write-intent bit set, or every checkpoint_seconds while any
  // has; they bound recovery after a crash to the groups written since.
  // 0 disables the trigger.
  uint64_t checkpoint_dirty_groups = 256;
  int checkpoint_seconds = 30;
  // Read-only opens of an image that predates the state root (no digest
  // table), for `sealvol upgrade`; any other open refuses it.
  bool allow_pre_state_root = false;
};

class SealedVolume;

// WriteHold keeps a volume's writes held (SealedVolume::HoldWrites) until it
// is released or destroyed. Move-only; must not outlive its volume.
class WriteHold {
 public:
  WriteHold() = default;
  WriteHold(WriteHold&& other) noexcept
      : volume_(std::exchange(other.volume_, nullptr)) {}
  WriteHold& operator=(WriteHold&& other) noexcept {
    if (this != &other) {
      Release();
      volume_ = std::exchange(other.volume_, nullptr);
    }
    return *this;
  }
  ~WriteHold() { Release(); }

  // Lets the held writes run, in their order of arrival. Idempotent.
  void Release();

 private:
  friend class SealedVolume;
  explicit WriteHold(SealedVolume* volume) : volume_(volume) {}
  SealedVolume* volume_ = nullptr;
};

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

  // Format and Open over any BackingStore (FaultStore in crash tests).
  static absl::StatusOr<std::unique_ptr<SealedVolume>> FormatOn(
      std::unique_ptr<BackingStore> store, const FormatOptions& options,
      const crypto::SecretBytes& dek, const EngineOptions& engine);
  static absl::StatusOr<std::unique_ptr<SealedVolume>> OpenOn(
      std::unique_ptr<BackingStore> store, const crypto::SecretBytes& dek,
      const EngineOptions& engine);
  // FormatOn and OpenOn over the image file or block device at a path
  // (OpenFileStore: created by FormatFile, opened read-only when
  // engine.read_only). FormatFile checks the size before creating anything.
  static absl::StatusOr<std::unique_ptr<SealedVolume>> FormatFile(
      const FormatOptions& options, const crypto::SecretBytes& dek,
      const EngineOptions& engine);
  static absl::StatusOr<std::unique_ptr<SealedVolume>> OpenFile(
      const std::string& path, const crypto::SecretBytes& dek,
      const EngineOptions& engine);

  // Closes the volume if Close was not called (its error is then lost).
  ~SealedVolume() override;
  SealedVolume(const SealedVolume&) = delete;
  SealedVolume& operator=(const SealedVolume&) = delete;

  // VolumeIo.
  uint64_t size_bytes() const override;
  void Submit(IoRequest* request) override;
  void SubmitInline(IoRequest* request) override;

  // Submits one request and waits for it; returns 0 or a negative errno.
  int Io(IoOp op, uint64_t offset, std::span<uint8_t> buffer,
         bool fua = false);
  // Manual mode: runs every queued request to completion.
  void RunPending();

  // Grows the usable size online (P6); never shrinks. No data is rewritten.
  absl::Status Grow(uint64_t new_size_bytes);

  // Writes a checkpoint now (docs/format.md): waits for running batches,
  // holds new ones meanwhile. Writable opens only.
  absl::Status CheckpointNow();

  // Stops the volume's writes at a point in time, for a cut (docs/format.md
  // "Copies"): from now on writes and discards are held (queued, not
  // failed) until the returned hold is released; reads and flushes go on;
  // checkpoints and grows are refused (Unavailable) meanwhile. Waits for
  // the writes in flight, at most `timeout`, then flushes: every write
  // completed before the call is then durable. Errors: FailedPrecondition
  // (closed, read-only, manual mode, or a hold in place); DeadlineExceeded
  // naming how many writes are still in flight, DataLoss for a failed
  // flush (both let the writes go on). Close releases a hold.
  absl::StatusOr<WriteHold> HoldWrites(std::chrono::milliseconds timeout);

  // Flushes everything, marks the image clean, stops the workers and
  // zeroizes the keys. Further Submits complete with -EROFS.
  absl::Status Close();

  // Read-only once the backing store has failed; front-ends report it.
  bool failed() const;
  const VolumeId& volume_id() const;
  const FormatId& format_id() const;
  // The image's layout (as its superblock stores it).
  const Layout& layout() const;
  // The state to commit: after Format, the new volume's; after a successful
  // Close, the one it closed with (open = false); in between, the state the
  // session started from (open = true).
  VolumeState state() const;

  // What the open found and did, for tests and tools.
  const RecoveryStats& recovery_stats() const;
  // Nonce sessions the workers have started since open (at least one each).
  uint64_t sessions_started() const;
  // Groups whose tags did not match their authenticated digest since open
  // (ascending, at most 4096): every block of them fails with EIO.
  std::vector<uint64_t> mismatched_groups() const;
  // Checkpoints written while open (not counting the one at close).
  uint64_t checkpoints() const;
  // The backing store; after Close only with keep_store_after_close.
  BackingStore& store();

 private:
  friend class WriteHold;
  void ReleaseWrites();

  class Impl;  // sealed_volume.cc
  explicit SealedVolume(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

}  // namespace sealvol::io
