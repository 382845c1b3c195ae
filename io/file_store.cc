// The io_uring backing store over a regular file or a block device.
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <liburing.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/error_kind.h"
#include "base/status_macros.h"
#include "base/unique_fd.h"
#include "io/backing_store.h"
#include "io/uring_ring.h"

namespace sealvol::io {

AlignedBuffer::AlignedBuffer(size_t bytes, bool zero) : size_(bytes) {
  void* p = nullptr;
  CHECK_EQ(posix_memalign(&p, 4096, bytes == 0 ? 4096 : bytes), 0);
  if (zero) std::memset(p, 0, bytes);
  data_ = static_cast<uint8_t*>(p);
}
AlignedBuffer::AlignedBuffer(AlignedBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& o) noexcept {
  if (this != &o) {
    std::free(data_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}
AlignedBuffer::~AlignedBuffer() { std::free(data_); }

namespace {

// The engine refuses to run on a kernel whose io_uring lacks an operation it
// needs rather than failing on the first I/O.
constexpr UringOp kStoreOps[] = {
    {IORING_OP_READ, "IORING_OP_READ"},
    {IORING_OP_WRITE, "IORING_OP_WRITE"},
    {IORING_OP_FSYNC, "IORING_OP_FSYNC"},
    {IORING_OP_FALLOCATE, "IORING_OP_FALLOCATE"},
};

// A FileStore's queue: one ring on the image's fd.
class FileStoreQueue : public StoreQueue {
 public:
  FileStoreQueue(int fd, unsigned depth) : fd_(fd), depth_(depth) {
    done_.reserve(size_t{depth} * 2);  // The completion ring's size.
  }

  absl::Status Init() {
    RETURN_IF_ERROR(ring_.Init(depth_, 0, "ring"));
    return RequireUringOps(kStoreOps);
  }

  void Execute(std::span<StoreOp> ops) override {
    ExecuteEach(ops, [](size_t) {});
  }

  void ExecuteEach(std::span<StoreOp> ops,
                   absl::FunctionRef<void(size_t)> done) override {
    if (ops.size() == 1) {
      // Nothing to batch: one system call on this thread. Through the ring,
      // an fdatasync (always) and a write to a file system that cannot take
      // it without blocking (tmpfs) would go to an io_uring worker thread
      // and back: two context switches on a queue-depth-1 path that does
      // several such steps per request (docs/benchmarks.md, "QD1").
      ops[0].result = RunDirect(ops[0]);
      done(0);
      return;
    }
    size_t next = 0;
    size_t in_flight = 0;
    while (next < ops.size() || in_flight > 0) {
      size_t queued = 0;
      while (next < ops.size()) {
        io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
        if (sqe == nullptr) break;
        Prepare(sqe, ops[next], next);
        ++next;
        ++queued;
      }
      in_flight += queued;
      // One submission per batch (or per ring-full of operations).
      int rc = io_uring_submit_and_wait(ring_.get(), 1);
      if (rc < 0 && rc != -EINTR) {
        // The ring itself failed: fail everything still outstanding.
        for (size_t i = 0; i < ops.size(); ++i) {
          if (ops[i].result != kPending) continue;
          ops[i].result = rc;
          done(i);
        }
        return;
      }
      // Take this round's completions off the ring first: `done` may take
      // a while (decryption) and must not hold the completion queue.
      io_uring_cqe* cqe = nullptr;
      unsigned head = 0;
      unsigned seen = 0;
      done_.clear();
      io_uring_for_each_cqe(ring_.get(), head, cqe) {
        StoreOp& op = ops[cqe->user_data];
        op.result = Result(op, cqe->res);
        done_.push_back(cqe->user_data);
        ++seen;
      }
      io_uring_cq_advance(ring_.get(), seen);
      in_flight -= seen;
      for (size_t i : done_) done(i);
    }
  }

 private:
  static constexpr int kPending = 1;

  void Prepare(io_uring_sqe* sqe, StoreOp& op, size_t index) {
    op.result = kPending;
    switch (op.kind) {
      case StoreOp::Kind::kRead:
        io_uring_prep_read(sqe, fd_, op.buffer, static_cast<unsigned>(op.length),
                           op.offset);
        break;
      case StoreOp::Kind::kWrite:
        io_uring_prep_write(sqe, fd_, op.buffer,
                            static_cast<unsigned>(op.length), op.offset);
        break;
      case StoreOp::Kind::kSync:
        io_uring_prep_fsync(sqe, fd_, IORING_FSYNC_DATASYNC);
        break;
      case StoreOp::Kind::kPunch:
        io_uring_prep_fallocate(sqe, fd_,
                                FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                op.offset, op.length);
        break;
    }
    sqe->user_data = index;
  }

  int RunDirect(const StoreOp& op) const {
    ssize_t res = -1;
    do {
      switch (op.kind) {
        case StoreOp::Kind::kRead:
          res = ::pread(fd_, op.buffer, op.length, static_cast<off_t>(op.offset));
          break;
        case StoreOp::Kind::kWrite:
          res = ::pwrite(fd_, op.buffer, op.length, static_cast<off_t>(op.offset));
          break;
        case StoreOp::Kind::kSync:
          res = ::fdatasync(fd_);
          break;
        case StoreOp::Kind::kPunch:
          res = ::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                            static_cast<off_t>(op.offset),
                            static_cast<off_t>(op.length));
          break;
      }
    } while (res < 0 && errno == EINTR);
    return Result(op, res < 0 ? -errno : static_cast<int>(res));
  }

  static int Result(const StoreOp& op, int res) {
    if (res < 0) return res;
    if ((op.kind == StoreOp::Kind::kRead || op.kind == StoreOp::Kind::kWrite) &&
        static_cast<uint64_t>(res) != op.length) {
      return -EIO;  // Short transfer: past the end or out of space.
    }
    return 0;
  }

  UringRing ring_;
  std::vector<size_t> done_;  // Op indexes completed in one reap.
  const int fd_;
  const unsigned depth_;
};

class FileStore : public BackingStore {
 public:
  FileStore(UniqueFd fd, std::string path, bool block_device, bool direct,
            uint64_t size, unsigned depth)
      : fd_(std::move(fd)),
        path_(std::move(path)),
        block_device_(block_device),
        direct_(direct),
        size_(size),
        depth_(depth) {}

  absl::StatusOr<std::unique_ptr<StoreQueue>> CreateQueue() override {
    auto q = std::make_unique<FileStoreQueue>(fd_.get(), depth_);
    absl::Status s = q->Init();
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrCat(path_, ": ", s.message()));
    }
    return std::unique_ptr<StoreQueue>(std::move(q));
  }

  uint64_t size_bytes() const override { return size_.load(); }

  absl::Status Resize(uint64_t bytes) override {
    if (bytes <= size_.load()) return absl::OkStatus();
    if (block_device_) {
      return absl::OutOfRangeError(absl::StrCat(
          path_, ": block device is ", size_.load(), " bytes, need ", bytes));
    }
    if (ftruncate(fd_.get(), static_cast<off_t>(bytes)) != 0) {
      return ErrnoStatus(errno, "ftruncate", path_);
    }
    size_.store(bytes);
    return absl::OkStatus();
  }

  bool needs_zeroing() const override { return block_device_; }
  const std::string& name() const override { return path_; }
  bool direct() const { return direct_; }

 private:
  UniqueFd fd_;
  const std::string path_;
  const bool block_device_;
  const bool direct_;
  std::atomic<uint64_t> size_;
  const unsigned depth_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<BackingStore>> OpenFileStore(
    const FileStoreOptions& options) {
  int flags = (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  if (options.create) flags |= O_CREAT;
  bool direct = !options.page_cache;
  int fd = ::open(options.path.c_str(), flags | (direct ? O_DIRECT : 0), 0600);
  if (fd < 0 && direct && errno == EINVAL) {
    // The filesystem refuses O_DIRECT: fall back to the page cache; fdatasync
    // still provides durability.
    direct = false;
    fd = ::open(options.path.c_str(), flags, 0600);
  }
  if (fd < 0) return ErrnoStatus(errno, "open", options.path);
  UniqueFd owned(fd);
  // A lock held by an engine of this process that just closed the image can
  // outlive its Close for a moment: the kernel tears an io_uring ring down
  // asynchronously, and its workers drop their file references late. Try
  // for up to half a second before calling the image in use (seen: a node
  // formatting 20 volumes at once under ASan, reopening right after close).
  int locked = -1;
  for (int attempt = 0; options.lock && attempt < 20; ++attempt) {
    locked = flock(fd, (options.read_only ? LOCK_SH : LOCK_EX) | LOCK_NB);
    if (locked == 0 || errno != EWOULDBLOCK) break;
    usleep(25 * 1000);
  }
  if (options.lock && locked != 0) {
    if (errno == EWOULDBLOCK) {
      return SetErrorKind(absl::FailedPreconditionError(
                              absl::StrCat(options.path, ": in use")),
                          ErrorKind::kInUse);
    }
    return ErrnoStatus(errno, "flock", options.path);
  }
  struct stat st {};
  if (fstat(fd, &st) != 0) return ErrnoStatus(errno, "stat", options.path);
  uint64_t size = static_cast<uint64_t>(st.st_size);
  const bool block_device = S_ISBLK(st.st_mode);
  if (block_device && ioctl(fd, BLKGETSIZE64, &size) != 0) {
    return ErrnoStatus(errno, "BLKGETSIZE64", options.path);
  }
  if (!block_device && !S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.path, ": not a regular file or block device"));
  }
  auto store = std::make_unique<FileStore>(std::move(owned), options.path,
                                           block_device, direct, size,
                                           options.queue_depth);
  // Probe now so a missing feature is reported at open, not at first I/O.
  ASSIGN_OR_RETURN(auto probe_queue, store->CreateQueue());
  (void)probe_queue;
  return std::unique_ptr<BackingStore>(std::move(store));
}

bool FileStoreUsesDirectIo(const BackingStore& store) {
  const auto* fs = dynamic_cast<const FileStore*>(&store);
  return fs != nullptr && fs->direct();
}

}  // namespace sealvol::io
