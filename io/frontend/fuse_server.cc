// The FUSE server: the INIT handshake, the operations (one file in one
// directory) and the ops table. Requests arrive through the transports
// (fuse_dev_transport.cc, fuse_uring_transport.cc), which share the slot and
// channel types of fuse_request.h.
//
// Why our own protocol code: Debian's libfuse 3.14 cannot speak FUSE over
// io_uring, and a loop device needs only a dozen operations.
#include "io/frontend/fuse_server.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <semaphore>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "io/frontend/fuse_dev_transport.h"
#include "io/frontend/fuse_request.h"
#include "io/frontend/fuse_uring_transport.h"
#include "spdlog/spdlog.h"

namespace sealvol::io {

using fuse::AlignDown;
using fuse::AlignedBuffer;
using fuse::AlignUp;
using fuse::Aligned;
using fuse::AllocateAligned;
using fuse::kFileId;
using fuse::kMaxIo;
using fuse::kMaxPages;
using fuse::kRootId;

namespace {

constexpr int kDevSlotsDevMode = 48;
constexpr int kDevSlotsUringMode = 8;
constexpr const char* kUringParam = "/sys/module/fuse/parameters/enable_uring";

// The largest request the receiving thread runs itself (see Submit).
constexpr uint64_t kInlineMaxBytes = 64 * 1024;

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

FuseServer::Impl::Impl(UniqueFd fd, VolumeIo* volume,
                       const FuseServerOptions& options)
    : fd_(std::move(fd)), volume_(volume), options_(options) {}

FuseServer::Impl::~Impl() { Stop(); }

void FuseServer::Impl::Wait() {
  MutexLock lock(&state_mu_);
  while (!disconnected_ && !stopping_) state_cv_.Wait(&state_mu_);
}

void FuseServer::Impl::MarkDisconnected() {
  // No logging here: this runs on transport threads, and the owner
  // reports the end of the connection (see disconnected()).
  MutexLock lock(&state_mu_);
  disconnected_ = true;
  state_cv_.SignalAll();
}

bool FuseServer::Impl::disconnected() const {
  MutexLock lock(&state_mu_);
  return disconnected_;
}

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
  std::vector<uint8_t> buf(fuse::DevTransport::kSlotBytes);
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
        std::make_unique<fuse::UringTransport>(
        this, options_.uring_entries_per_queue);
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
  auto dev = std::make_unique<fuse::DevTransport>(
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
    MutexLock lock(&state_mu_);
    stopping_ = true;
    state_cv_.SignalAll();
  }
  stopping_flag_.store(true);
  // Engine completions still need their slots: wait for them first.
  while (in_flight_.load() > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (uring_) uring_->Stop();
  if (dev_) dev_->Stop();
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
    slot->channel->Reply(slot, result, 0);
  } else {
    switch (slot->in.opcode) {
      case FUSE_READ:
        if (slot->bounce) {
          std::memcpy(slot->out.data(), slot->bounce.get() + slot->bounce_skip,
                      slot->reply_bytes);
        }
        slot->channel->Reply(slot, 0, slot->reply_bytes);
        break;
      case FUSE_WRITE: {
        fuse_write_out out{};
        out.size = slot->reply_bytes;
        std::memcpy(slot->out.data(), &out, sizeof(out));
        slot->channel->Reply(slot, 0, sizeof(out));
        break;
      }
      default:
        slot->channel->Reply(slot, 0, 0);
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
  if (in.offset >= size || in.size == 0) return s->channel->Reply(s, 0, 0);
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
  MutexLock lock(&rmw_mu_);
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
    MutexLock lock(&rmw_mu_);
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
  s->channel->Reply(s, 0, used);
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
    case FUSE_INTERRUPT: return s->channel->Drop(s);
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
