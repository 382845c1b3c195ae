// FakeFuseKernel plays the kernel's side of /dev/fuse for a FuseServer, with
// no mount and no root: a SOCK_SEQPACKET socket pair stands in for the
// device (it keeps message boundaries as /dev/fuse does). The server gets
// the other end (TakeServerEnd) with the transport kDev and one classic
// reader thread (no FUSE_DEV_IOC_CLONE needed). The test sends requests as
// the kernel writes them (fuse_in_header, the opcode's argument, a payload)
// and reads the answers. Used by the FUSE protocol test and the FUSE request
// fuzz target. Thread-compatible; Send and Receive may run on two threads.
#pragma once

#include <linux/fuse.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "base/unique_fd.h"

namespace sealvol::testing {

class FakeFuseKernel {
 public:
  // What every FUSE_INIT this kernel sends offers.
  static constexpr uint32_t kInitFlags = FUSE_ASYNC_READ | FUSE_BIG_WRITES |
                                         FUSE_ASYNC_DIO | FUSE_MAX_PAGES |
                                         FUSE_INIT_EXT;

  // One answer as it arrived: its header and the length of the message.
  struct Reply {
    fuse_out_header header;
    ssize_t size;
  };

  // Opens the socket pair; false (errno set) if it cannot.
  bool Open() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) {
      return false;
    }
    kernel_.reset(fds[0]);
    server_.reset(fds[1]);
    return true;
  }
  // The device end, for FuseServer::Start (once, after Open).
  UniqueFd TakeServerEnd() { return std::move(server_); }

  // Queues FUSE_INIT (unique 1) for the server to read first: protocol
  // 7.38, kInitFlags plus `extra_flags`, `max_readahead`.
  bool SendInit(uint32_t extra_flags = 0, uint32_t max_readahead = 0) {
    fuse_init_in init{};
    init.major = FUSE_KERNEL_VERSION;
    init.minor = 38;
    init.max_readahead = max_readahead;
    init.flags = kInitFlags | extra_flags;
    return Send(Request(FUSE_INIT, /*unique=*/1, /*nodeid=*/0, init));
  }

  // Sends one request; false (errno set, or a short send) if it did not go
  // out whole.
  bool Send(const std::vector<uint8_t>& request) {
    return ::send(kernel_.get(), request.data(), request.size(), 0) ==
           static_cast<ssize_t>(request.size());
  }

  // The next answer's header, waiting up to `timeout_ms` (-1: for ever);
  // nullopt on timeout, error or a message shorter than fuse_out_header.
  std::optional<Reply> Receive(int timeout_ms) {
    // A signal interrupts poll and recv (libFuzzer's -timeout alarm, every
    // timeout/2 s): wait again rather than report a lost answer.
    pollfd p{kernel_.get(), POLLIN, 0};
    int ready;
    do {
      ready = ::poll(&p, 1, timeout_ms);
    } while (ready < 0 && errno == EINTR);
    if (ready != 1) return std::nullopt;
    ssize_t n;
    do {
      n = ::recv(kernel_.get(), buffer_.data(), buffer_.size(), 0);
    } while (n < 0 && errno == EINTR);
    if (n < static_cast<ssize_t>(sizeof(fuse_out_header))) return std::nullopt;
    Reply reply;
    std::memcpy(&reply.header, buffer_.data(), sizeof(reply.header));
    reply.size = n;
    return reply;
  }

  // The bytes of one request as the kernel writes it: a fuse_in_header
  // (length, opcode, unique, node) followed by the opcode's argument.
  template <typename Argument>
  static std::vector<uint8_t> Request(uint32_t opcode, uint64_t unique,
                                      uint64_t nodeid,
                                      const Argument& argument) {
    struct {
      fuse_in_header header;
      Argument argument;
    } msg{};
    msg.header.len = sizeof(msg);
    msg.header.opcode = opcode;
    msg.header.unique = unique;
    msg.header.nodeid = nodeid;
    msg.argument = argument;
    const auto* p = reinterpret_cast<const uint8_t*>(&msg);
    return {p, p + sizeof(msg)};
  }
  // FUSE_GETATTR of the root: the cheapest request that is always answered.
  static std::vector<uint8_t> Getattr(uint64_t unique) {
    return Request(FUSE_GETATTR, unique, FUSE_ROOT_ID, fuse_getattr_in{});
  }

 private:
  UniqueFd kernel_;
  UniqueFd server_;
  // Room for the largest answer (1 MiB of read data and its header).
  std::vector<uint8_t> buffer_ = std::vector<uint8_t>((1 << 20) + 8192);
};

}  // namespace sealvol::testing
