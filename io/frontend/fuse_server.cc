// The FUSE front-end, top to bottom: buffers and request slots, the INIT
// handshake, the operations (one file in one directory), the classic
// /dev/fuse transport, the io_uring transport, and the ops table.
//
// Why our own protocol code: Debian's libfuse 3.14 cannot speak FUSE over
// io_uring, and a loop device needs only a dozen operations.
#include "io/frontend/fuse_server.h"

#include <dirent.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/falloc.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <mutex>
#include <semaphore>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "io/frontend/fuse_abi.h"
#include "spdlog/spdlog.h"

namespace sealvol::io {
namespace {

constexpr uint32_t kMaxIo = 1u << 20;          // max_write and largest read.
constexpr uint16_t kMaxPages = kMaxIo / 4096;  // 256.
constexpr uint64_t kRootId = FUSE_ROOT_ID;
constexpr uint64_t kFileId = 2;
constexpr int kDevSlotsDevMode = 48;
constexpr int kDevSlotsUringMode = 8;
// Dev slot: header area, then 4 KiB-aligned data (write payload or read reply).
constexpr size_t kDevSlotBytes = 4096 + kMaxIo + 8192;
constexpr const char* kUringParam = "/sys/module/fuse/parameters/enable_uring";

uint64_t AlignDown(uint64_t v) { return v & ~uint64_t{kBlockSize - 1}; }
uint64_t AlignUp(uint64_t v) { return AlignDown(v + kBlockSize - 1); }
bool Aligned(uint64_t v) { return (v & (kBlockSize - 1)) == 0; }

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<uint8_t[], FreeDeleter>;

AlignedBuffer AllocateAligned(size_t bytes) {
  void* p = std::aligned_alloc(kBlockSize, AlignUp(bytes));
  CHECK(p != nullptr);
  return AlignedBuffer(static_cast<uint8_t*>(p));
}

// The largest request the receiving thread runs itself (see Submit).
constexpr uint64_t kInlineMaxBytes = 64 * 1024;

class Transport;

// One request being served. A transport owns its slots; the ops fill in the
// IoRequest and answer through the transport.
struct Slot {
  Transport* transport = nullptr;
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

class Transport {
 public:
  virtual ~Transport() = default;
  // Sends the answer: `error` (0 or negative errno) and out[0, out_bytes).
  virtual void Reply(Slot* slot, int error, size_t out_bytes) = 0;
  // Finishes a request that takes no answer (FORGET, INTERRUPT).
  virtual void Drop(Slot* slot) = 0;
};

}  // namespace

absl::StatusOr<FuseTransport> ParseFuseTransport(const std::string& text) {
  if (text == "auto") return FuseTransport::kAuto;
  if (text == "uring") return FuseTransport::kUring;
  if (text == "dev") return FuseTransport::kDev;
  return absl::InvalidArgumentError(
      absl::StrCat("transport \"", text, "\": expected auto, uring or dev"));
}

const char* FuseTransportName(FuseTransport transport) {
  switch (transport) {
    case FuseTransport::kAuto: return "auto";
    case FuseTransport::kUring: return "uring";
    case FuseTransport::kDev: return "dev";
  }
  return "?";
}

absl::Status EnableFuseOverIoUring() {
  std::ifstream in(kUringParam);
  if (!in) {
    return absl::UnavailableError(absl::StrCat(
        "FUSE over io_uring: ", kUringParam,
        " does not exist (kernel older than 6.14 or built without it)"));
  }
  std::string value;
  in >> value;
  if (value == "Y" || value == "1") return absl::OkStatus();
  UniqueFd fd(::open(kUringParam, O_WRONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "open", kUringParam);
  if (::write(fd.get(), "Y", 1) != 1) {
    return ErrnoStatus(errno, "write", kUringParam);
  }
  return absl::OkStatus();
}

class FuseServer::Impl {
 public:
  Impl(UniqueFd fd, VolumeIo* volume, const FuseServerOptions& options)
      : fd_(std::move(fd)), volume_(volume), options_(options) {}
  ~Impl() { Stop(); }

  absl::Status Start();
  void Stop();
  void Wait() {
    std::unique_lock lock(state_mu_);
    state_cv_.wait(lock, [&] { return disconnected_ || stopping_; });
  }
  void MarkDisconnected() {
    // No logging here: this runs on transport threads, and the owner
    // reports the end of the connection (see disconnected()).
    std::lock_guard lock(state_mu_);
    disconnected_ = true;
    state_cv_.notify_all();
  }
  bool disconnected() const {
    std::lock_guard lock(state_mu_);
    return disconnected_;
  }

  // The operations (definitions below, in protocol order).
  void Dispatch(Slot* slot);

  int fd() const { return fd_.get(); }
  bool stopping() const { return stopping_flag_.load(); }

  FuseTransport transport_ = FuseTransport::kDev;
  std::string fallback_reason_;
  std::atomic<uint64_t> requests_dev_{0};
  std::atomic<uint64_t> requests_uring_{0};
  std::atomic<uint64_t> flushes_{0};

 private:
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
  void ReplyOk(Slot* s) { s->transport->Reply(s, 0, 0); }
  void ReplyError(Slot* s, int negative_errno) {
    s->transport->Reply(s, negative_errno, 0);
  }
  template <typename T>
  void ReplyStruct(Slot* s, const T& value) {
    std::memcpy(s->out.data(), &value, sizeof(value));
    s->transport->Reply(s, 0, sizeof(value));
  }
  fuse_attr Attr(uint64_t node) const;

  UniqueFd fd_;
  VolumeIo* volume_;
  FuseServerOptions options_;

  std::unique_ptr<Transport> dev_;
  std::unique_ptr<Transport> uring_;

  // Serializes read-modify-write of partial blocks (unaligned requests).
  std::mutex rmw_mu_;
  std::atomic<int64_t> in_flight_{0};

  mutable std::mutex state_mu_;
  std::condition_variable state_cv_;
  bool disconnected_ = false;  // GUARDED_BY(state_mu_)
  bool stopping_ = false;      // GUARDED_BY(state_mu_)
  std::atomic<bool> stopping_flag_{false};
  bool stopped_ = false;  // Control thread only.
};

namespace {

// ---------------------------------------------------------------------------
// Classic transport: reader threads on cloned /dev/fuse fds. A reader hands
// each request to the ops and goes back to read(); the engine's completion
// thread writes the answer, so one reader keeps many requests in flight.

class DevTransport final : public Transport {
 public:
  DevTransport(FuseServer::Impl* server, int threads, int slots)
      : server_(server), thread_count_(threads) {
    slots_.resize(slots);
    buffers_.reserve(slots);
    for (int i = 0; i < slots; ++i) {
      buffers_.push_back(AllocateAligned(kDevSlotBytes));
      slots_[i].transport = this;
      slots_[i].index = i;
      free_.push_back(i);
    }
  }

  ~DevTransport() override { Stop(); }

  absl::Status Start() {
    stop_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!stop_fd_) return ErrnoStatus(errno, "eventfd", "fuse dev transport");
    for (int i = 0; i < thread_count_; ++i) {
      UniqueFd fd;
      if (i == 0) {
        fd.reset(::dup(server_->fd()));
        if (!fd) return ErrnoStatus(errno, "dup", "/dev/fuse");
      } else {
        fd.reset(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
        if (!fd) return ErrnoStatus(errno, "open", "/dev/fuse");
        uint32_t session_fd = server_->fd();
        if (::ioctl(fd.get(), fuse_abi::kDevIocClone, &session_fd) != 0) {
          return ErrnoStatus(errno, "ioctl FUSE_DEV_IOC_CLONE", "/dev/fuse");
        }
      }
      const int flags = ::fcntl(fd.get(), F_GETFL);
      ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK);
      fds_.push_back(std::move(fd));
    }
    for (auto& fd : fds_) {
      threads_.emplace_back([this, f = fd.get()] { ReaderLoop(f); });
    }
    return absl::OkStatus();
  }

  void Stop() {
    if (stop_fd_) {
      uint64_t one = 1;
      (void)!::write(stop_fd_.get(), &one, sizeof(one));
      slots_cv_.notify_all();
    }
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

  void Reply(Slot* slot, int error, size_t out_bytes) override {
    fuse_out_header header{};
    header.len = sizeof(header) + (error == 0 ? out_bytes : 0);
    header.error = error;
    header.unique = slot->in.unique;
    iovec iov[2] = {{&header, sizeof(header)},
                    {slot->out.data(), error == 0 ? out_bytes : 0}};
    const ssize_t n = WriteReply(slot->reply_fd, iov, iov[1].iov_len ? 2 : 1);
    // ENOENT: the request was interrupted and is gone; nothing to do.
    if (n < 0 && errno != ENOENT && errno != ENODEV) {
      spdlog::warn("fuse: reply to request {} failed: {}", slot->in.unique,
                   std::strerror(errno));
    }
    Release(slot);
  }

  void Drop(Slot* slot) override { Release(slot); }

 private:
  // The reader fds are O_NONBLOCK (for the poll loop), and O_NONBLOCK holds
  // for writes too. /dev/fuse takes every answer at once, but a socket
  // standing in for it (the protocol test, the fuzz target) refuses with
  // EAGAIN while its peer has not read earlier answers: wait for room then,
  // or an answer (even the one the peer is waiting for) would be lost.
  // Returns what writev returned, with errno set on failure.
  ssize_t WriteReply(int fd, const iovec* iov, int count) {
    while (true) {
      const ssize_t n = ::writev(fd, iov, count);
      if (n >= 0 || (errno != EAGAIN && errno != EINTR)) return n;
      if (errno == EAGAIN) {
        if (server_->stopping()) return n;  // Stop() must not wait forever.
        pollfd p{fd, POLLOUT, 0};
        (void)::poll(&p, 1, 100);
      }
    }
  }

  Slot* Acquire() {
    std::unique_lock lock(slots_mu_);
    slots_cv_.wait(lock, [&] { return !free_.empty() || server_->stopping(); });
    if (free_.empty()) return nullptr;
    Slot* slot = &slots_[free_.back()];
    free_.pop_back();
    return slot;
  }

  void Release(Slot* slot) {
    slot->bounce.reset();
    std::lock_guard lock(slots_mu_);
    free_.push_back(slot->index);
    slots_cv_.notify_one();
  }

  void ReaderLoop(int fd) {
    while (!server_->stopping()) {
      Slot* slot = Acquire();
      if (slot == nullptr) return;
      pollfd fds[2] = {{fd, POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0 && errno != EINTR) {
        Release(slot);
        return;
      }
      if (fds[1].revents != 0) {
        Release(slot);
        return;
      }
      uint8_t* buf = buffers_[slot->index].get();
      const ssize_t n = ::read(fd, buf, kDevSlotBytes);
      if (n < 0) {
        const int err = errno;
        Release(slot);
        if (err == EAGAIN || err == EINTR || err == ENOENT) continue;
        if (err != ENODEV) {
          spdlog::error("fuse: read /dev/fuse: {}", std::strerror(err));
        }
        server_->MarkDisconnected();
        return;
      }
      if (static_cast<size_t>(n) < sizeof(fuse_in_header)) {
        Release(slot);
        continue;
      }
      std::memcpy(&slot->in, buf, sizeof(fuse_in_header));
      slot->reply_fd = fd;
      if (slot->in.len < sizeof(fuse_in_header)) {
        // Not from a sane kernel; the body length below would underflow.
        Reply(slot, -EINVAL, 0);
        continue;
      }
      const size_t body = std::min<size_t>(n, slot->in.len) -
                          sizeof(fuse_in_header);
      uint8_t* args = buf + sizeof(fuse_in_header);
      // Argument 0 is the opcode's header; what follows is the payload.
      size_t arg0 = body;
      if (slot->in.opcode == FUSE_WRITE) {
        arg0 = std::min(body, sizeof(fuse_write_in));
      } else if (slot->in.opcode == FUSE_LOOKUP) {
        arg0 = 0;
      }
      slot->arg = {args, arg0};
      slot->payload = {args + arg0, body - arg0};
      slot->out = {buf + 4096, kMaxIo + 8192};
      server_->requests_dev_.fetch_add(1, std::memory_order_relaxed);
      // A reader holds one request; the other reader takes the next.
      slot->lone = true;
      server_->Dispatch(slot);
    }
  }

  FuseServer::Impl* server_;
  int thread_count_;
  UniqueFd stop_fd_;
  std::vector<UniqueFd> fds_;
  std::vector<std::thread> threads_;
  std::vector<Slot> slots_;
  std::vector<AlignedBuffer> buffers_;
  std::mutex slots_mu_;
  std::condition_variable slots_cv_;
  std::vector<int> free_;  // GUARDED_BY(slots_mu_)
};

// ---------------------------------------------------------------------------
// io_uring transport: one queue per possible CPU (the kernel routes a request
// to the queue of the CPU that issued it), each with its own ring and thread.
// Every ring entry is a registered header + payload buffer pair; an answer
// is one COMMIT_AND_FETCH that also waits for the next request. Answers made
// on engine threads are handed to the queue thread through an eventfd, since
// a ring has one submitter.

int PossibleCpus() {
  std::ifstream in("/sys/devices/system/cpu/possible");
  std::string text;
  in >> text;
  // "0-N" or "0"; the kernel counts num_possible_cpus() queues.
  const size_t dash = text.rfind('-');
  const int last = std::atoi(text.c_str() + (dash == std::string::npos ? 0 : dash + 1));
  return std::max(1, last + 1);
}

class UringQueue;
thread_local UringQueue* tls_queue = nullptr;

constexpr uint64_t kEventTag = ~uint64_t{0};

class UringQueue final : public Transport {
 public:
  UringQueue(FuseServer::Impl* server, int qid, int entries)
      : server_(server), qid_(qid), entries_(entries) {
    for (int i = 0; i < entries; ++i) {
      Entry& e = entries_[i];
      e.header = AllocateAligned(sizeof(fuse_abi::UringReqHeader));
      e.payload = AllocateAligned(kMaxIo);
      e.iov[0] = {e.header.get(), sizeof(fuse_abi::UringReqHeader)};
      e.iov[1] = {e.payload.get(), kMaxIo};
      e.slot.transport = this;
      e.slot.index = i;
    }
  }

  ~UringQueue() override {
    Stop();
    if (ring_ready_) io_uring_queue_exit(&ring_);
  }

  // Starts the queue thread, which creates the ring and registers every
  // entry itself: the kernel hands requests to an entry through task work
  // on the task that submitted it, so registering from another thread would
  // park requests on a thread that is not listening (and may be the very
  // thread waiting for the answer). Returns the registration's result, so
  // auto mode can fall back.
  absl::Status Start() {
    std::promise<absl::Status> registered;
    std::future<absl::Status> result = registered.get_future();
    thread_ = std::thread([this, &registered] {
      tls_queue = this;
      PinToCpu();
      absl::Status status = Register();
      const bool ok = status.ok();
      registered.set_value(std::move(status));
      if (ok) Loop();
      tls_queue = nullptr;
    });
    return result.get();
  }

  void Stop() {
    if (!thread_.joinable()) return;
    stop_.store(true);
    if (event_fd_) {
      uint64_t one = 1;
      (void)!::write(event_fd_.get(), &one, sizeof(one));
    }
    thread_.join();
  }

  void Reply(Slot* slot, int error, size_t out_bytes) override {
    Entry& e = entries_[slot->index];
    auto* header = reinterpret_cast<fuse_abi::UringReqHeader*>(e.header.get());
    fuse_out_header out{};
    out.len = sizeof(out) + (error == 0 ? out_bytes : 0);
    out.error = error;
    out.unique = slot->in.unique;
    std::memcpy(header->in_out, &out, sizeof(out));
    header->ring_ent_in_out.payload_sz = error == 0 ? out_bytes : 0;
    slot->bounce.reset();
    if (tls_queue == this) {
      PrepCommit(slot->index);
      return;
    }
    bool wake;
    {
      std::lock_guard lock(mu_);
      wake = ready_.empty();
      ready_.push_back(slot->index);
    }
    if (wake) {
      uint64_t one = 1;
      (void)!::write(event_fd_.get(), &one, sizeof(one));
    }
  }

  void Drop(Slot* slot) override {
    // Every ring entry must be committed to get the next request.
    Reply(slot, 0, 0);
  }

 private:
  struct Entry {
    AlignedBuffer header;
    AlignedBuffer payload;
    iovec iov[2];
    Slot slot;
  };

  // Creates the ring and registers every entry; runs on the queue thread.
  absl::Status Register() {
    event_fd_.reset(::eventfd(0, EFD_CLOEXEC));
    if (!event_fd_) return ErrnoStatus(errno, "eventfd", "fuse uring queue");
    io_uring_params params{};
    params.flags = IORING_SETUP_SQE128;
    const int depth = static_cast<int>(entries_.size()) * 2 + 8;
    int rc = io_uring_queue_init_params(depth, &ring_, &params);
    if (rc < 0) {
      return ErrnoStatus(-rc, "io_uring_queue_init (SQE128)", "fuse queue");
    }
    ring_ready_ = true;
    for (size_t i = 0; i < entries_.size(); ++i) {
      io_uring_sqe* sqe = NextSqe();
      PrepCommand(sqe, fuse_abi::kUringCmdRegister, 0);
      sqe->addr = reinterpret_cast<uint64_t>(entries_[i].iov);
      sqe->len = 2;
      sqe->user_data = i;
    }
    ArmEvent();
    rc = io_uring_submit(&ring_);
    if (rc < 0) return ErrnoStatus(-rc, "io_uring_submit", "fuse register");
    // A refused registration completes at once; accepted ones stay pending.
    io_uring_cqe* cqe;
    while (io_uring_peek_cqe(&ring_, &cqe) == 0) {
      const int res = cqe->res;
      const uint64_t tag = cqe->user_data;
      io_uring_cqe_seen(&ring_, cqe);
      if (tag != kEventTag && res < 0) {
        return ErrnoStatus(-res, "FUSE_IO_URING_CMD_REGISTER",
                           absl::StrCat("queue ", qid_));
      }
    }
    return absl::OkStatus();
  }

  io_uring_sqe* NextSqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    while (sqe == nullptr) {
      io_uring_submit(&ring_);
      sqe = io_uring_get_sqe(&ring_);
    }
    return sqe;
  }

  void PrepCommand(io_uring_sqe* sqe, uint32_t cmd_op, uint64_t commit_id) {
    std::memset(sqe, 0, 128);
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = server_->fd();
    sqe->cmd_op = cmd_op;
    fuse_abi::UringCmdReq req{};
    req.commit_id = commit_id;
    req.qid = static_cast<uint16_t>(qid_);
    std::memcpy(sqe->cmd, &req, sizeof(req));
  }

  void PrepCommit(uint32_t index) {
    Entry& e = entries_[index];
    io_uring_sqe* sqe = NextSqe();
    PrepCommand(sqe, fuse_abi::kUringCmdCommitAndFetch, e.slot.in.unique);
    sqe->user_data = index;
  }

  void ArmEvent() {
    io_uring_sqe* sqe = NextSqe();
    io_uring_prep_read(sqe, event_fd_.get(), &event_value_,
                       sizeof(event_value_), 0);
    sqe->user_data = kEventTag;
  }

  void OnRequest(uint32_t index, bool lone) {
    Entry& e = entries_[index];
    auto* header = reinterpret_cast<fuse_abi::UringReqHeader*>(e.header.get());
    Slot* slot = &e.slot;
    std::memcpy(&slot->in, header->in_out, sizeof(fuse_in_header));
    slot->arg = {header->op_in, fuse_abi::kUringOpInOutSize};
    const uint32_t payload =
        std::min<uint32_t>(header->ring_ent_in_out.payload_sz, kMaxIo);
    slot->payload = {e.payload.get(), payload};
    slot->out = {e.payload.get(), kMaxIo};
    slot->lone = lone;
    server_->requests_uring_.fetch_add(1, std::memory_order_relaxed);
    server_->Dispatch(slot);
  }

  void PinToCpu() {
    if (qid_ >= CPU_SETSIZE) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(qid_, &set);
    ::sched_setaffinity(0, sizeof(set), &set);
  }

  void Loop() {
    size_t live = entries_.size();
    while (live > 0) {
      io_uring_cqe* cqe;
      const int rc = io_uring_wait_cqe(&ring_, &cqe);
      if (rc == -EINTR) continue;
      if (rc < 0) {
        spdlog::error("fuse: io_uring_wait_cqe: {}", std::strerror(-rc));
        break;
      }
      unsigned head;
      unsigned seen = 0;
      bool stop = false;
      unsigned requests = 0;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        requests += cqe->user_data != kEventTag && cqe->res >= 0;
      }
      io_uring_for_each_cqe(&ring_, head, cqe) {
        ++seen;
        const uint64_t tag = cqe->user_data;
        const int res = cqe->res;
        if (tag == kEventTag) {
          std::vector<uint32_t> ready;
          {
            std::lock_guard lock(mu_);
            ready.swap(ready_);
          }
          for (uint32_t index : ready) PrepCommit(index);
          if (stop_.load()) {
            stop = true;
          } else {
            ArmEvent();
          }
        } else if (res < 0) {
          // ENOTCONN / ECANCELED: the connection is going away.
          if (res != -ENOTCONN && res != -ECANCELED) {
            spdlog::warn("fuse: uring queue {} entry {}: {}", qid_, tag,
                         std::strerror(-res));
          }
          --live;
        } else {
          OnRequest(static_cast<uint32_t>(tag), requests == 1);
        }
      }
      io_uring_cq_advance(&ring_, seen);
      io_uring_submit(&ring_);
      if (stop) break;
    }
    if (live == 0) server_->MarkDisconnected();
  }

  FuseServer::Impl* server_;
  int qid_;
  std::vector<Entry> entries_;
  io_uring ring_{};
  bool ring_ready_ = false;
  UniqueFd event_fd_;
  uint64_t event_value_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::vector<uint32_t> ready_;  // GUARDED_BY(mu_)
};

class UringTransport final : public Transport {
 public:
  explicit UringTransport(FuseServer::Impl* server, int entries)
      : server_(server), entries_(entries) {}

  absl::Status Register() {
    const int queues = PossibleCpus();
    for (int q = 0; q < queues; ++q) {
      queues_.push_back(std::make_unique<UringQueue>(server_, q, entries_));
      RETURN_IF_ERROR(queues_.back()->Start());
    }
    return absl::OkStatus();
  }

  void Stop() {
    for (auto& q : queues_) q->Stop();
  }

  // Slots belong to the queues; these are never called on the holder.
  void Reply(Slot*, int, size_t) override { CHECK(false); }
  void Drop(Slot*) override { CHECK(false); }

 private:
  FuseServer::Impl* server_;
  int entries_;
  std::vector<std::unique_ptr<UringQueue>> queues_;
};

}  // namespace

// ---------------------------------------------------------------------------
// INIT: negotiate 1 MiB requests, asynchronous direct I/O (without it loop's
// requests reach us one at a time), parallel direct writes, a deep
// background queue, and io_uring when it is wanted and offered.

absl::StatusOr<bool> FuseServer::Impl::Handshake() {
  pollfd pfd{fd_.get(), POLLIN, 0};
  const int ready = ::poll(&pfd, 1, 10000);
  if (ready <= 0) {
    return absl::DeadlineExceededError("fuse: no INIT from the kernel in 10 s");
  }
  std::vector<uint8_t> buf(kDevSlotBytes);
  const ssize_t n = ::read(fd_.get(), buf.data(), buf.size());
  if (n < 0) return ErrnoStatus(errno, "read INIT", "/dev/fuse");
  fuse_in_header in;
  if (static_cast<size_t>(n) < sizeof(in)) {
    return absl::InternalError("fuse: short INIT request");
  }
  std::memcpy(&in, buf.data(), sizeof(in));
  if (in.opcode != FUSE_INIT) {
    return absl::InternalError(
        absl::StrCat("fuse: expected INIT, got opcode ", in.opcode));
  }
  fuse_init_in init{};
  std::memcpy(&init, buf.data() + sizeof(in),
              std::min<size_t>(sizeof(init), n - sizeof(in)));
  if (init.major != FUSE_KERNEL_VERSION || init.minor < 28) {
    return absl::FailedPreconditionError(absl::StrCat(
        "fuse: kernel protocol ", init.major, ".", init.minor,
        " is too old (need 7.28+)"));
  }
  uint64_t offered = init.flags;
  if (init.flags & FUSE_INIT_EXT) offered |= uint64_t{init.flags2} << 32;
  const bool uring_offered = (offered & fuse_abi::kOverIoUring) != 0;
  const bool want_uring = options_.transport != FuseTransport::kDev;
  uint64_t want = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_ASYNC_DIO |
                  FUSE_MAX_PAGES | FUSE_PARALLEL_DIROPS | FUSE_INIT_EXT |
                  fuse_abi::kDirectIoAllowMmap;
  if (want_uring && uring_offered) want |= fuse_abi::kOverIoUring;
  if (!options_.async_dio) want &= ~uint64_t{FUSE_ASYNC_DIO};
  const uint64_t flags = want & offered;

  fuse_init_out out{};
  out.major = FUSE_KERNEL_VERSION;
  out.minor = std::min(init.minor, fuse_abi::kMinorVersion);
  out.max_readahead = init.max_readahead;
  out.flags = static_cast<uint32_t>(flags);
  out.flags2 = static_cast<uint32_t>(flags >> 32);
  out.max_background = options_.max_background;
  out.congestion_threshold = options_.congestion_threshold;
  out.max_write = kMaxIo;
  out.time_gran = 1;
  out.max_pages = kMaxPages;
  fuse_out_header header{};
  header.len = sizeof(header) + sizeof(out);
  header.unique = in.unique;
  iovec iov[2] = {{&header, sizeof(header)}, {&out, sizeof(out)}};
  if (::writev(fd_.get(), iov, 2) < 0) {
    return ErrnoStatus(errno, "write INIT reply", "/dev/fuse");
  }
  if ((flags & FUSE_ASYNC_DIO) == 0 && options_.async_dio) {
    spdlog::warn("fuse: kernel did not offer FUSE_ASYNC_DIO; loop I/O "
                 "will be serialized");
  }
  if (options_.transport == FuseTransport::kUring && !uring_offered) {
    return absl::FailedPreconditionError(
        "transport uring: the kernel did not offer FUSE_OVER_IO_URING in INIT "
        "(fuse module parameter enable_uring is N, or kernel older than "
        "6.14)");
  }
  if (want_uring && !uring_offered) {
    fallback_reason_ =
        "kernel did not offer FUSE_OVER_IO_URING (enable_uring off or "
        "kernel < 6.14)";
  }
  return (flags & fuse_abi::kOverIoUring) != 0;
}

absl::Status FuseServer::Impl::Start() {
  ASSIGN_OR_RETURN(const bool uring, Handshake());
  if (uring) {
    auto transport =
        std::make_unique<UringTransport>(this, options_.uring_entries_per_queue);
    absl::Status status = transport->Register();
    if (status.ok()) {
      transport_ = FuseTransport::kUring;
      uring_ = std::move(transport);
    } else if (options_.transport == FuseTransport::kUring) {
      return absl::FailedPreconditionError(
          absl::StrCat("transport uring: ", status.message()));
    } else {
      fallback_reason_ = std::string(status.message());
      spdlog::warn("fuse: io_uring registration failed ({}); using /dev/fuse",
                   fallback_reason_);
    }
  }
  // Even with io_uring, FORGET and INTERRUPT (and anything sent before every
  // queue is registered) arrive over read(/dev/fuse).
  const bool dev_mode = transport_ == FuseTransport::kDev;
  auto dev = std::make_unique<DevTransport>(
      this, dev_mode ? std::max(1, options_.dev_threads) : 1,
      dev_mode ? kDevSlotsDevMode : kDevSlotsUringMode);
  RETURN_IF_ERROR(dev->Start());
  dev_ = std::move(dev);
  spdlog::info("fuse: serving over {}{}", FuseTransportName(transport_),
               fallback_reason_.empty()
                   ? ""
                   : absl::StrCat(" (io_uring not used: ", fallback_reason_,
                                  ")"));
  return absl::OkStatus();
}

void FuseServer::Impl::Stop() {
  if (stopped_) return;
  stopped_ = true;
  {
    std::lock_guard lock(state_mu_);
    stopping_ = true;
    state_cv_.notify_all();
  }
  stopping_flag_.store(true);
  // Engine completions still need their slots: wait for them first.
  while (in_flight_.load() > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (uring_) static_cast<UringTransport*>(uring_.get())->Stop();
  if (dev_) static_cast<DevTransport*>(dev_.get())->Stop();
  uring_.reset();
  dev_.reset();
}

// ---------------------------------------------------------------------------
// Engine requests. A slot's IoRequest completes on an engine thread, which
// answers the kernel directly.

void FuseServer::Impl::Submit(Slot* slot) {
  slot->server = this;
  slot->io.done = &Impl::OnIoDone;
  slot->io.context = slot;
  // A small lone request with nothing else in flight (queue depth 1: a
  // database's write, its fsync) runs here; anything else is queued so this
  // thread goes back to take the next request. Not a large one: the
  // hand-off is a small part of its cost, and while it ran here the
  // requests arriving behind it would wait, then each find nothing in
  // flight and run here too (1 MiB sequential reads at QD16 fell to a
  // third).
  if (in_flight_.fetch_add(1) == 0 && slot->lone &&
      slot->io.length <= kInlineMaxBytes) {
    volume_->SubmitInline(&slot->io);
  } else {
    volume_->Submit(&slot->io);
  }
}

void FuseServer::Impl::OnIoDone(IoRequest* request, int result) {
  Slot* slot = static_cast<Slot*>(request->context);
  Impl* self = slot->server;
  if (result < 0) {
    slot->transport->Reply(slot, result, 0);
  } else {
    switch (slot->in.opcode) {
      case FUSE_READ:
        if (slot->bounce) {
          std::memcpy(slot->out.data(), slot->bounce.get() + slot->bounce_skip,
                      slot->reply_bytes);
        }
        slot->transport->Reply(slot, 0, slot->reply_bytes);
        break;
      case FUSE_WRITE: {
        fuse_write_out out{};
        out.size = slot->reply_bytes;
        std::memcpy(slot->out.data(), &out, sizeof(out));
        slot->transport->Reply(slot, 0, sizeof(out));
        break;
      }
      default:
        slot->transport->Reply(slot, 0, 0);
    }
  }
  self->in_flight_.fetch_sub(1);
}

// Runs one engine request and waits for it (the rare unaligned path).
int FuseServer::Impl::SyncIo(IoOp op, uint64_t offset,
                             std::span<uint8_t> buffer) {
  struct Waiter {
    std::binary_semaphore done{0};
    int result = 0;
  } waiter;
  IoRequest request;
  request.op = op;
  request.offset = offset;
  request.length = buffer.size();
  request.buffer = buffer;
  request.context = &waiter;
  request.done = [](IoRequest* r, int result) {
    auto* w = static_cast<Waiter*>(r->context);
    w->result = result;
    w->done.release();
  };
  volume_->Submit(&request);
  waiter.done.acquire();
  return waiter.result;
}

// Zeroes bytes [from, to) of the block at `block_start` by read-modify-write.
int FuseServer::Impl::ZeroPartialBlock(uint64_t block_start, uint64_t from,
                                       uint64_t to) {
  AlignedBuffer block = AllocateAligned(kBlockSize);
  std::span<uint8_t> span(block.get(), kBlockSize);
  int rc = SyncIo(IoOp::kRead, block_start, span);
  if (rc < 0) return rc;
  std::memset(block.get() + (from - block_start), 0, to - from);
  return SyncIo(IoOp::kWrite, block_start, span);
}

// ---------------------------------------------------------------------------
// The operations.

fuse_attr FuseServer::Impl::Attr(uint64_t node) const {
  fuse_attr attr{};
  attr.ino = node;
  attr.blksize = kBlockSize;
  attr.uid = 0;
  attr.gid = 0;
  if (node == kRootId) {
    attr.mode = S_IFDIR | 0700;
    attr.nlink = 2;
  } else {
    const uint64_t size = volume_->size_bytes();
    attr.mode = S_IFREG | 0600;
    attr.nlink = 1;
    attr.size = size;
    attr.blocks = size / 512;
  }
  return attr;
}

void FuseServer::Impl::OpLookup(Slot* s) {
  const char* name = reinterpret_cast<const char*>(s->payload.data());
  const size_t len = strnlen(name, s->payload.size());
  if (s->in.nodeid != kRootId ||
      std::string(name, len) != options_.file_name) {
    return ReplyError(s, -ENOENT);
  }
  fuse_entry_out entry{};
  entry.nodeid = kFileId;
  entry.generation = 1;
  entry.entry_valid = 3600;
  entry.attr_valid = 1;
  entry.attr = Attr(kFileId);
  ReplyStruct(s, entry);
}

void FuseServer::Impl::OpGetattr(Slot* s) {
  if (s->in.nodeid != kRootId && s->in.nodeid != kFileId) {
    return ReplyError(s, -ENOENT);
  }
  fuse_attr_out out{};
  out.attr_valid = 1;
  out.attr = Attr(s->in.nodeid);
  ReplyStruct(s, out);
}

void FuseServer::Impl::OpSetattr(Slot* s) {
  fuse_setattr_in in{};
  std::memcpy(&in, s->arg.data(), std::min(sizeof(in), s->arg.size()));
  if (s->in.nodeid != kFileId && (in.valid & FATTR_SIZE)) {
    return ReplyError(s, -EISDIR);
  }
  if (in.valid & FATTR_SIZE) {
    const uint64_t size = volume_->size_bytes();
    if (in.size < size) return ReplyError(s, -EPERM);  // Never shrink.
    if (in.size > size) {
      if (!options_.grow || !Aligned(in.size)) return ReplyError(s, -EPERM);
      absl::Status status = options_.grow(in.size);
      if (!status.ok()) {
        spdlog::error("fuse: grow to {} bytes: {}", in.size,
                      status.ToString());
        return ReplyError(s, NegErrnoFromStatus(status));
      }
    }
  }
  // Modes, owners and times are fixed; report the attributes as they are.
  fuse_attr_out out{};
  out.attr_valid = 1;
  out.attr = Attr(s->in.nodeid);
  ReplyStruct(s, out);
}

void FuseServer::Impl::OpOpen(Slot* s) {
  fuse_open_out out{};
  if (s->in.opcode == FUSE_OPENDIR) {
    if (s->in.nodeid != kRootId) return ReplyError(s, -ENOTDIR);
  } else {
    if (s->in.nodeid != kFileId) return ReplyError(s, -EISDIR);
    out.open_flags = FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES;
  }
  ReplyStruct(s, out);
}

void FuseServer::Impl::OpRead(Slot* s) {
  fuse_read_in in{};
  std::memcpy(&in, s->arg.data(), std::min(sizeof(in), s->arg.size()));
  const uint64_t size = volume_->size_bytes();
  if (in.offset >= size || in.size == 0) return s->transport->Reply(s, 0, 0);
  const uint32_t length =
      static_cast<uint32_t>(std::min<uint64_t>(in.size, size - in.offset));
  if (length > kMaxIo) return ReplyError(s, -EINVAL);
  s->reply_bytes = length;
  s->io = IoRequest{};
  s->io.op = IoOp::kRead;
  if (Aligned(in.offset) && Aligned(length)) {
    s->io.offset = in.offset;
    s->io.length = length;
    s->io.buffer = s->out.subspan(0, length);
  } else {
    const uint64_t start = AlignDown(in.offset);
    const uint64_t end = AlignUp(in.offset + length);
    s->bounce = AllocateAligned(end - start);
    s->bounce_skip = static_cast<uint32_t>(in.offset - start);
    s->io.offset = start;
    s->io.length = end - start;
    s->io.buffer = {s->bounce.get(), end - start};
  }
  Submit(s);
}

void FuseServer::Impl::OpWrite(Slot* s) {
  fuse_write_in in{};
  std::memcpy(&in, s->arg.data(), std::min(sizeof(in), s->arg.size()));
  if (in.size > s->payload.size() || in.size > kMaxIo) {
    return ReplyError(s, -EINVAL);
  }
  const uint64_t size = volume_->size_bytes();
  // Written so that a huge offset cannot wrap the sum around.
  if (in.offset > size || in.size > size - in.offset) {
    return ReplyError(s, -EFBIG);
  }
  if (in.size == 0) return ReplyStruct(s, fuse_write_out{});
  s->reply_bytes = in.size;
  s->io = IoRequest{};
  s->io.op = IoOp::kWrite;
  s->io.fua = (in.flags & (O_DSYNC | O_SYNC)) != 0;
  if (Aligned(in.offset) && Aligned(in.size)) {
    s->io.offset = in.offset;
    s->io.length = in.size;
    s->io.buffer = s->payload.subspan(0, in.size);
    return Submit(s);
  }
  // Read-modify-write of the partial edge blocks, under rmw_mu_ so that two
  // unaligned writes into one block do not undo each other.
  std::lock_guard lock(rmw_mu_);
  const uint64_t start = AlignDown(in.offset);
  const uint64_t end = AlignUp(in.offset + in.size);
  s->bounce = AllocateAligned(end - start);
  uint8_t* bounce = s->bounce.get();
  if (!Aligned(in.offset)) {
    const int rc = SyncIo(IoOp::kRead, start, {bounce, kBlockSize});
    if (rc < 0) return ReplyError(s, rc);
  }
  if (!Aligned(in.offset + in.size) &&
      (end - kBlockSize != start || Aligned(in.offset))) {
    const int rc = SyncIo(IoOp::kRead, end - kBlockSize,
                          {bounce + (end - start - kBlockSize), kBlockSize});
    if (rc < 0) return ReplyError(s, rc);
  }
  std::memcpy(bounce + (in.offset - start), s->payload.data(), in.size);
  s->io.offset = start;
  s->io.length = end - start;
  s->io.buffer = {bounce, end - start};
  // Waiting for the completion keeps the lock over the whole update.
  const int rc = SyncIo(IoOp::kWrite, start, s->io.buffer);
  if (rc < 0) return ReplyError(s, rc);
  if (s->io.fua) {
    const int frc = SyncIo(IoOp::kFlush, 0, {});
    if (frc < 0) return ReplyError(s, frc);
  }
  fuse_write_out out{};
  out.size = in.size;
  ReplyStruct(s, out);
}

void FuseServer::Impl::OpFsync(Slot* s) {
  flushes_.fetch_add(1, std::memory_order_relaxed);
  s->io = IoRequest{};
  s->io.op = IoOp::kFlush;
  Submit(s);
}

void FuseServer::Impl::OpFallocate(Slot* s) {
  fuse_fallocate_in in{};
  std::memcpy(&in, s->arg.data(), std::min(sizeof(in), s->arg.size()));
  const uint64_t size = volume_->size_bytes();
  // A range whose end wraps around is refused as vfs_fallocate() does; the
  // edge arithmetic below relies on offset + length not overflowing.
  if (in.length > UINT64_MAX - in.offset) return ReplyError(s, -EFBIG);
  const uint32_t mode = in.mode & ~FALLOC_FL_KEEP_SIZE;
  if (mode == 0) {
    // Preallocation: a thin volume has nothing to do inside its size.
    return ReplyError(s, in.offset + in.length <= size ? 0 : -EOPNOTSUPP);
  }
  if (mode != FALLOC_FL_PUNCH_HOLE && mode != FALLOC_FL_ZERO_RANGE) {
    return ReplyError(s, -EOPNOTSUPP);
  }
  if (in.offset >= size || in.length == 0) return ReplyOk(s);
  const uint64_t from = in.offset;
  const uint64_t to = std::min(size, in.offset + in.length);
  uint64_t inner_start = AlignUp(from);
  uint64_t inner_end = AlignDown(to);
  {
    // Partial blocks at the edges are zeroed in place; whole blocks are
    // discarded (they read as zeros and release their space).
    std::lock_guard lock(rmw_mu_);
    if (inner_start > inner_end) {  // Inside one block.
      const int rc = ZeroPartialBlock(AlignDown(from), from, to);
      if (rc < 0) return ReplyError(s, rc);
      return ReplyOk(s);
    }
    if (from < inner_start) {
      const int rc = ZeroPartialBlock(AlignDown(from), from, inner_start);
      if (rc < 0) return ReplyError(s, rc);
    }
    if (inner_end < to) {
      const int rc = ZeroPartialBlock(inner_end, inner_end, to);
      if (rc < 0) return ReplyError(s, rc);
    }
  }
  if (inner_start == inner_end) return ReplyOk(s);
  s->io = IoRequest{};
  s->io.op = IoOp::kDiscard;
  s->io.offset = inner_start;
  s->io.length = inner_end - inner_start;
  Submit(s);
}

void FuseServer::Impl::OpStatfs(Slot* s) {
  fuse_statfs_out out{};
  out.st.blocks = volume_->size_bytes() / kBlockSize;
  out.st.bsize = kBlockSize;
  out.st.frsize = kBlockSize;
  out.st.files = 1;
  out.st.namelen = 255;
  ReplyStruct(s, out);
}

void FuseServer::Impl::OpReaddir(Slot* s) {
  fuse_read_in in{};
  std::memcpy(&in, s->arg.data(), std::min(sizeof(in), s->arg.size()));
  if (s->in.nodeid != kRootId) return ReplyError(s, -ENOTDIR);
  struct Entry {
    uint64_t ino;
    const char* name;
    uint32_t type;
  };
  const Entry entries[] = {{kRootId, ".", DT_DIR},
                           {kRootId, "..", DT_DIR},
                           {kFileId, options_.file_name.c_str(), DT_REG}};
  size_t used = 0;
  for (uint64_t i = in.offset; i < std::size(entries); ++i) {
    const size_t namelen = std::strlen(entries[i].name);
    const size_t record = FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + namelen);
    if (used + record > in.size) break;
    auto* dirent = reinterpret_cast<fuse_dirent*>(s->out.data() + used);
    std::memset(dirent, 0, record);
    dirent->ino = entries[i].ino;
    dirent->off = i + 1;
    dirent->namelen = static_cast<uint32_t>(namelen);
    dirent->type = entries[i].type;
    std::memcpy(dirent->name, entries[i].name, namelen);
    used += record;
  }
  s->transport->Reply(s, 0, used);
}

void FuseServer::Impl::OpDestroy(Slot* s) {
  const int rc = SyncIo(IoOp::kFlush, 0, {});
  ReplyError(s, rc);
}

// The ops table.
void FuseServer::Impl::Dispatch(Slot* s) {
  switch (s->in.opcode) {
    case FUSE_LOOKUP: return OpLookup(s);
    case FUSE_GETATTR: return OpGetattr(s);
    case FUSE_SETATTR: return OpSetattr(s);
    case FUSE_OPEN:
    case FUSE_OPENDIR: return OpOpen(s);
    case FUSE_READ: return OpRead(s);
    case FUSE_WRITE: return OpWrite(s);
    case FUSE_FSYNC: return OpFsync(s);
    case FUSE_FALLOCATE: return OpFallocate(s);
    case FUSE_STATFS: return OpStatfs(s);
    case FUSE_READDIR: return OpReaddir(s);
    case FUSE_FLUSH:     // close(2): nothing is buffered here.
    case FUSE_RELEASE:
    case FUSE_RELEASEDIR:
    case FUSE_FSYNCDIR: return ReplyOk(s);
    case FUSE_DESTROY: return OpDestroy(s);
    case FUSE_FORGET:
    case FUSE_BATCH_FORGET:
    // Engine requests cannot be cancelled; the original answer still comes.
    case FUSE_INTERRUPT: return s->transport->Drop(s);
    default: return ReplyError(s, -ENOSYS);
  }
}

// ---------------------------------------------------------------------------

FuseServer::FuseServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FuseServer::~FuseServer() { Stop(); }

absl::StatusOr<std::unique_ptr<FuseServer>> FuseServer::Start(
    UniqueFd fuse_fd, VolumeIo* volume, const FuseServerOptions& options) {
  auto impl = std::make_unique<Impl>(std::move(fuse_fd), volume, options);
  RETURN_IF_ERROR(impl->Start());
  return std::unique_ptr<FuseServer>(new FuseServer(std::move(impl)));
}

FuseTransport FuseServer::transport() const { return impl_->transport_; }
const std::string& FuseServer::fallback_reason() const {
  return impl_->fallback_reason_;
}
FuseServerStats FuseServer::stats() const {
  return {impl_->requests_dev_.load(), impl_->requests_uring_.load(),
          impl_->flushes_.load()};
}
bool FuseServer::disconnected() const { return impl_->disconnected(); }
void FuseServer::Wait() { impl_->Wait(); }
void FuseServer::Stop() { impl_->Stop(); }

}  // namespace sealvol::io
