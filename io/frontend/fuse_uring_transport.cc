// The FUSE-over-io_uring transport (see fuse_uring_transport.h).
#include "io/frontend/fuse_uring_transport.h"

#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <future>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "spdlog/spdlog.h"

namespace sealvol::io::fuse {
namespace {

constexpr uint64_t kEventTag = ~uint64_t{0};

// A queue's commands, and the eventfd read that wakes it.
constexpr UringOp kQueueOps[] = {
    {IORING_OP_URING_CMD, "IORING_OP_URING_CMD"},
    {IORING_OP_READ, "IORING_OP_READ"},
};

// The queue whose thread is running, so that an answer made on it is
// committed directly instead of through the eventfd.
thread_local RingQueue* tls_queue = nullptr;

int PossibleCpus() {
  std::ifstream in("/sys/devices/system/cpu/possible");
  std::string text;
  in >> text;
  // "0-N" or "0"; the kernel counts num_possible_cpus() queues.
  const size_t dash = text.rfind('-');
  const int last =
      std::atoi(text.c_str() + (dash == std::string::npos ? 0 : dash + 1));
  return std::max(1, last + 1);
}

}  // namespace

RingQueue::RingQueue(FuseServer::Impl* server, int qid, int entries)
    : server_(server), qid_(qid), entries_(entries) {
  for (int i = 0; i < entries; ++i) {
    Entry& e = entries_[i];
    e.header = AllocateAligned(sizeof(fuse_abi::UringReqHeader));
    e.payload = AllocateAligned(kMaxIo);
    e.iov[0] = {e.header.get(), sizeof(fuse_abi::UringReqHeader)};
    e.iov[1] = {e.payload.get(), kMaxIo};
    e.slot.channel = this;
    e.slot.index = i;
  }
}

RingQueue::~RingQueue() { Stop(); }

absl::Status RingQueue::Start() {
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

void RingQueue::Stop() {
  if (!thread_.joinable()) return;
  stop_.store(true);
  if (event_fd_) {
    uint64_t one = 1;
    (void)!::write(event_fd_.get(), &one, sizeof(one));
  }
  thread_.join();
}

void RingQueue::Reply(Slot* slot, int error, size_t out_bytes) {
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
    MutexLock lock(&mu_);
    wake = ready_.empty();
    ready_.push_back(slot->index);
  }
  if (wake) {
    uint64_t one = 1;
    (void)!::write(event_fd_.get(), &one, sizeof(one));
  }
}

// Creates the ring and registers every entry; runs on the queue thread.
absl::Status RingQueue::Register() {
  event_fd_.reset(::eventfd(0, EFD_CLOEXEC));
  if (!event_fd_) return ErrnoStatus(errno, "eventfd", "fuse uring queue");
  const unsigned depth = static_cast<unsigned>(entries_.size()) * 2 + 8;
  RETURN_IF_ERROR(
      ring_.Init(depth, IORING_SETUP_SQE128, "fuse queue (SQE128)"));
  RETURN_IF_ERROR(RequireUringOps(kQueueOps));
  for (size_t i = 0; i < entries_.size(); ++i) {
    io_uring_sqe* sqe = NextSqe();
    PrepCommand(sqe, fuse_abi::kUringCmdRegister, 0);
    sqe->addr = reinterpret_cast<uint64_t>(entries_[i].iov);
    sqe->len = 2;
    sqe->user_data = i;
  }
  ArmEvent();
  const int rc = io_uring_submit(ring_.get());
  if (rc < 0) return ErrnoStatus(-rc, "io_uring_submit", "fuse register");
  // A refused registration completes at once; accepted ones stay pending.
  io_uring_cqe* cqe;
  while (io_uring_peek_cqe(ring_.get(), &cqe) == 0) {
    const int res = cqe->res;
    const uint64_t tag = cqe->user_data;
    io_uring_cqe_seen(ring_.get(), cqe);
    if (tag != kEventTag && res < 0) {
      return ErrnoStatus(-res, "FUSE_IO_URING_CMD_REGISTER",
                         absl::StrCat("queue ", qid_));
    }
  }
  return absl::OkStatus();
}

io_uring_sqe* RingQueue::NextSqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
  while (sqe == nullptr) {
    io_uring_submit(ring_.get());
    sqe = io_uring_get_sqe(ring_.get());
  }
  return sqe;
}

void RingQueue::PrepCommand(io_uring_sqe* sqe, uint32_t cmd_op,
                             uint64_t commit_id) {
  std::memset(sqe, 0, 128);
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = server_->fd();
  sqe->cmd_op = cmd_op;
  fuse_abi::UringCmdReq req{};
  req.commit_id = commit_id;
  req.qid = static_cast<uint16_t>(qid_);
  std::memcpy(sqe->cmd, &req, sizeof(req));
}

void RingQueue::PrepCommit(uint32_t index) {
  Entry& e = entries_[index];
  io_uring_sqe* sqe = NextSqe();
  PrepCommand(sqe, fuse_abi::kUringCmdCommitAndFetch, e.slot.in.unique);
  sqe->user_data = index;
}

void RingQueue::ArmEvent() {
  io_uring_sqe* sqe = NextSqe();
  io_uring_prep_read(sqe, event_fd_.get(), &event_value_, sizeof(event_value_),
                     0);
  sqe->user_data = kEventTag;
}

void RingQueue::OnRequest(uint32_t index, bool lone) {
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

void RingQueue::PinToCpu() {
  if (qid_ >= CPU_SETSIZE) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(qid_, &set);
  ::sched_setaffinity(0, sizeof(set), &set);
}

void RingQueue::Loop() {
  size_t live = entries_.size();
  while (live > 0) {
    io_uring_cqe* cqe;
    const int rc = io_uring_wait_cqe(ring_.get(), &cqe);
    if (rc == -EINTR) continue;
    if (rc < 0) {
      spdlog::error("fuse: io_uring_wait_cqe: {}", std::strerror(-rc));
      break;
    }
    unsigned head;
    unsigned seen = 0;
    bool stop = false;
    unsigned requests = 0;
    io_uring_for_each_cqe(ring_.get(), head, cqe) {
      requests += cqe->user_data != kEventTag && cqe->res >= 0;
    }
    io_uring_for_each_cqe(ring_.get(), head, cqe) {
      ++seen;
      const uint64_t tag = cqe->user_data;
      const int res = cqe->res;
      if (tag == kEventTag) {
        std::vector<uint32_t> ready;
        {
          MutexLock lock(&mu_);
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
    io_uring_cq_advance(ring_.get(), seen);
    io_uring_submit(ring_.get());
    if (stop) break;
  }
  if (live == 0) server_->MarkDisconnected();
}

UringTransport::UringTransport(FuseServer::Impl* server, int entries_per_queue)
    : server_(server), entries_(entries_per_queue) {}

absl::Status UringTransport::Register() {
  const int queues = PossibleCpus();
  for (int q = 0; q < queues; ++q) {
    queues_.push_back(std::make_unique<RingQueue>(server_, q, entries_));
    RETURN_IF_ERROR(queues_.back()->Start());
  }
  return absl::OkStatus();
}

void UringTransport::Stop() {
  for (auto& q : queues_) q->Stop();
}

}  // namespace sealvol::io::fuse
