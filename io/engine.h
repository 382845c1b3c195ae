// Engine exposes what SealedVolume hides, for tests, benchmarks and tools:
// format and open over any BackingStore (FaultStore in crash tests), engine
// tuning, a manual mode that runs requests deterministically in the calling
// thread, and a blocking I/O helper. Thread-safety as SealedVolume; in
// manual mode every call comes from one thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"
#include "io/backing_store.h"
#include "io/layout.h"
#include "io/recovery.h"
#include "io/sealed_volume.h"
#include "io/slot_codec.h"

namespace sealvol::io {

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
  // As OpenOptions (sealed_volume.h).
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

class Engine : public SealedVolume {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> FormatOn(
      std::unique_ptr<BackingStore> store, const FormatOptions& options,
      const crypto::SecretBytes& dek, const EngineOptions& engine);
  static absl::StatusOr<std::unique_ptr<Engine>> OpenOn(
      std::unique_ptr<BackingStore> store, const crypto::SecretBytes& dek,
      const EngineOptions& engine);
  // FormatOn and OpenOn over the image file or block device at a path
  // (OpenFileStore: created by FormatFile, opened read-only when
  // engine.read_only). FormatFile checks the size before creating anything.
  static absl::StatusOr<std::unique_ptr<Engine>> FormatFile(
      const FormatOptions& options, const crypto::SecretBytes& dek,
      const EngineOptions& engine);
  static absl::StatusOr<std::unique_ptr<Engine>> OpenFile(
      const std::string& path, const crypto::SecretBytes& dek,
      const EngineOptions& engine);

  // Manual mode: runs every queued request to completion.
  virtual void RunPending() = 0;
  // Submits one request and waits for it; returns 0 or a negative errno.
  virtual int Io(IoOp op, uint64_t offset, std::span<uint8_t> buffer,
                 bool fua = false) = 0;
  virtual const RecoveryStats& recovery_stats() const = 0;
  // Nonce sessions the workers have started since open (at least one each).
  virtual uint64_t sessions_started() const = 0;
  // The backing store; after Close only with keep_store_after_close.
  virtual BackingStore& store() = 0;
  // Groups whose tags did not match their authenticated digest since open
  // (ascending, at most 4096): every block of them fails with EIO.
  virtual std::vector<uint64_t> mismatched_groups() const = 0;
  // Writes a checkpoint now (docs/format.md): waits for running batches,
  // holds new ones meanwhile. Writable opens only.
  virtual absl::Status CheckpointNow() = 0;
  // Checkpoints written while open (not counting the one at close).
  virtual uint64_t checkpoints() const = 0;
  // The image's layout (as its superblock stores it).
  virtual const Layout& layout() const = 0;
};

}  // namespace sealvol::io
