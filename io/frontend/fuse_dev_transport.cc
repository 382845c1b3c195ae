// The classic /dev/fuse transport (see fuse_dev_transport.h).
#include "io/frontend/fuse_dev_transport.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "base/status_macros.h"
#include "spdlog/spdlog.h"

namespace sealvol::io::fuse {

DevTransport::DevTransport(FuseServer::Impl* server, int threads, int slots)
    : server_(server), thread_count_(threads) {
  slots_.resize(slots);
  buffers_.reserve(slots);
  for (int i = 0; i < slots; ++i) {
    buffers_.push_back(AllocateAligned(kSlotBytes));
    slots_[i].channel = this;
    slots_[i].index = i;
    free_.push_back(i);
  }
}

DevTransport::~DevTransport() { Stop(); }

absl::Status DevTransport::Start() {
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

void DevTransport::Stop() {
  if (stop_fd_) {
    uint64_t one = 1;
    (void)!::write(stop_fd_.get(), &one, sizeof(one));
    slots_cv_.SignalAll();
  }
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void DevTransport::Reply(Slot* slot, int error, size_t out_bytes) {
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

void DevTransport::Drop(Slot* slot) { Release(slot); }

// The reader fds are O_NONBLOCK (for the poll loop), and O_NONBLOCK holds
// for writes too. /dev/fuse takes every answer at once, but a socket
// standing in for it (the protocol test, the fuzz target) refuses with
// EAGAIN while its peer has not read earlier answers: wait for room then,
// or an answer (even the one the peer is waiting for) would be lost.
// Returns what writev returned, with errno set on failure.
ssize_t DevTransport::WriteReply(int fd, const iovec* iov, int count) {
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

Slot* DevTransport::Acquire() {
  MutexLock lock(&slots_mu_);
  while (free_.empty() && !server_->stopping()) slots_cv_.Wait(&slots_mu_);
  if (free_.empty()) return nullptr;
  Slot* slot = &slots_[free_.back()];
  free_.pop_back();
  return slot;
}

void DevTransport::Release(Slot* slot) {
  slot->bounce.reset();
  MutexLock lock(&slots_mu_);
  free_.push_back(slot->index);
  slots_cv_.Signal();
}

void DevTransport::ReaderLoop(int fd) {
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
    const ssize_t n = ::read(fd, buf, kSlotBytes);
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
    const size_t body =
        std::min<size_t>(n, slot->in.len) - sizeof(fuse_in_header);
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

}  // namespace sealvol::io::fuse
