// What the FUSE server and its two transports share (private to
// io/frontend): request buffers, the slot one request is served in, the
// channel its answer goes back through, and the server's side that the
// transports call (FuseServer::Impl).
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/check.h"
#include "base/mutex.h"
#include "base/unique_fd.h"
#include "io/frontend/fuse_abi.h"
#include "io/frontend/fuse_server.h"
#include "io/volume_io.h"

namespace sealvol::io::fuse {

inline constexpr uint32_t kMaxIo = 1u << 20;          // max_write, largest read.
inline constexpr uint16_t kMaxPages = kMaxIo / 4096;  // 256.
inline constexpr uint64_t kRootId = FUSE_ROOT_ID;
inline constexpr uint64_t kFileId = 2;

inline uint64_t AlignDown(uint64_t v) { return v & ~uint64_t{kBlockSize - 1}; }
inline uint64_t AlignUp(uint64_t v) { return AlignDown(v + kBlockSize - 1); }
inline bool Aligned(uint64_t v) { return (v & (kBlockSize - 1)) == 0; }

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<uint8_t[], FreeDeleter>;

inline AlignedBuffer AllocateAligned(size_t bytes) {
  void* p = std::aligned_alloc(kBlockSize, AlignUp(bytes));
  CHECK(p != nullptr);
  return AlignedBuffer(static_cast<uint8_t*>(p));
}

class Channel;

// One request being served. A transport owns its slots; the ops fill in the
// IoRequest and answer through the slot's channel.
struct Slot {
  Channel* channel = nullptr;
  FuseServer::Impl* server = nullptr;
  uint32_t index = 0;
  int reply_fd = -1;  // Dev transport: the clone that read the request.
  fuse_in_header in{};
  std::span<const uint8_t> arg;    // The per-opcode header (argument 0).
  std::span<uint8_t> payload;      // The rest: a name, or write data.
  std::span<uint8_t> out;          // Reply area, >= kMaxIo, 4 KiB aligned.
  IoRequest io;
  // Unaligned requests go through a bounce buffer (rare: loop is aligned).
  AlignedBuffer bounce;
  uint32_t bounce_skip = 0;
  uint32_t reply_bytes = 0;
  // Set by the transport: no other request arrived with this one, so if
  // nothing else is in flight the receiving thread may run it to completion
  // itself (VolumeIo::SubmitInline) instead of handing it to an engine
  // thread and taking the answer back.
  bool lone = false;
};

// Where a slot's answer goes: the /dev/fuse clone that read the request, or
// the io_uring queue whose entry holds it.
class Channel {
 public:
  virtual ~Channel() = default;
  // Sends the answer: `error` (0 or negative errno) and out[0, out_bytes).
  virtual void Reply(Slot* slot, int error, size_t out_bytes) = 0;
  // Finishes a request that takes no answer (FORGET, INTERRUPT).
  virtual void Drop(Slot* slot) = 0;
};

class DevTransport;
class UringTransport;

}  // namespace sealvol::io::fuse

namespace sealvol::io {

// The server: the INIT handshake, the operations and the ops table
// (fuse_server.cc). The transports hand it requests through Dispatch.
class FuseServer::Impl {
 public:
  Impl(UniqueFd fd, VolumeIo* volume, const FuseServerOptions& options);
  ~Impl();

  absl::Status Start();
  void Stop();
  void Wait();
  // Transport threads, when the kernel ends the connection.
  void MarkDisconnected();
  bool disconnected() const;

  // Serves one request that a transport received.
  void Dispatch(fuse::Slot* slot);

  int fd() const { return fd_.get(); }
  bool stopping() const { return stopping_flag_.load(); }

  FuseTransport transport_ = FuseTransport::kDev;
  std::string fallback_reason_;
  std::atomic<uint64_t> requests_dev_{0};
  std::atomic<uint64_t> requests_uring_{0};
  std::atomic<uint64_t> flushes_{0};

 private:
  using Slot = fuse::Slot;

  absl::StatusOr<bool> Handshake();

  void Submit(Slot* slot);
  static void OnIoDone(IoRequest* request, int result);
  int SyncIo(IoOp op, uint64_t offset, std::span<uint8_t> buffer);
  int ZeroPartialBlock(uint64_t block_start, uint64_t from, uint64_t to);

  void OpLookup(Slot* s);
  void OpGetattr(Slot* s);
  void OpSetattr(Slot* s);
  void OpOpen(Slot* s);
  void OpRead(Slot* s);
  void OpWrite(Slot* s);
  void OpFsync(Slot* s);
  void OpFallocate(Slot* s);
  void OpStatfs(Slot* s);
  void OpReaddir(Slot* s);
  void OpDestroy(Slot* s);
  void ReplyOk(Slot* s) { s->channel->Reply(s, 0, 0); }
  void ReplyError(Slot* s, int negative_errno) {
    s->channel->Reply(s, negative_errno, 0);
  }
  template <typename T>
  void ReplyStruct(Slot* s, const T& value) {
    std::memcpy(s->out.data(), &value, sizeof(value));
    s->channel->Reply(s, 0, sizeof(value));
  }
  fuse_attr Attr(uint64_t node) const;

  UniqueFd fd_;
  VolumeIo* volume_;
  FuseServerOptions options_;

  std::unique_ptr<fuse::DevTransport> dev_;
  std::unique_ptr<fuse::UringTransport> uring_;

  // Serializes read-modify-write of partial blocks (unaligned requests).
  Mutex rmw_mu_;
  std::atomic<int64_t> in_flight_{0};

  mutable Mutex state_mu_;
  CondVar state_cv_;
  bool disconnected_ ABSL_GUARDED_BY(state_mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(state_mu_) = false;
  std::atomic<bool> stopping_flag_{false};
  bool stopped_ = false;  // Control thread only.
};

}  // namespace sealvol::io
