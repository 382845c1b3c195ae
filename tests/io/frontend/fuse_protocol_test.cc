// FuseServer driven request by request, as the fuzz target drives it: a
// SOCK_SEQPACKET socket pair stands in for /dev/fuse (it keeps message
// boundaries), the test plays the kernel. Regression tests for requests that
// once left the connection without an answer. No mount, no root needed.
#include <linux/falloc.h>
#include <linux/fuse.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "io/frontend/fuse_server.h"
#include "tests/io/frontend/memory_volume.h"

namespace sealvol::io {
namespace {

constexpr uint64_t kVolumeSize = 4ull << 20;
constexpr uint64_t kCheckUnique = 1'000'000;

class FuseProtocolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int fds[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds), 0);
    kernel_.reset(fds[0]);
    struct {
      fuse_in_header header;
      fuse_init_in init;
    } msg{};
    msg.header.len = sizeof(msg);
    msg.header.opcode = FUSE_INIT;
    msg.header.unique = 1;
    msg.init.major = FUSE_KERNEL_VERSION;
    msg.init.minor = 38;
    msg.init.flags = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_ASYNC_DIO |
                     FUSE_MAX_PAGES | FUSE_INIT_EXT;
    ASSERT_EQ(::send(kernel_.get(), &msg, sizeof(msg), 0),
              static_cast<ssize_t>(sizeof(msg)));
    volume_ = std::make_unique<MemoryVolume>(kVolumeSize);
    FuseServerOptions options;
    options.transport = FuseTransport::kDev;
    options.dev_threads = 1;
    auto server = FuseServer::Start(UniqueFd(fds[1]), volume_.get(), options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    std::vector<uint8_t> reply(4096);
    ASSERT_GT(::recv(kernel_.get(), reply.data(), reply.size(), 0), 0);
  }

  void TearDown() override {
    if (server_) server_->Stop();
    server_.reset();
    volume_.reset();
  }

  // Sends requests from another thread (a full socket must not stall the
  // test) and collects answers until every unique in `expected` has its
  // answer, or 20 s pass without one. Returns the uniques still unanswered;
  // errors_ gets each answer's error.
  std::set<uint64_t> SendAndCollect(std::vector<std::vector<uint8_t>> requests,
                                    std::set<uint64_t> expected) {
    std::thread sender([&] {
      for (const auto& r : requests) {
        if (::send(kernel_.get(), r.data(), r.size(), 0) !=
            static_cast<ssize_t>(r.size())) {
          ADD_FAILURE() << "send: " << std::strerror(errno);
          return;
        }
      }
    });
    std::vector<uint8_t> reply((1 << 20) + 8192);
    while (!expected.empty()) {
      pollfd p{kernel_.get(), POLLIN, 0};
      if (::poll(&p, 1, 20000) != 1) break;
      const ssize_t n = ::recv(kernel_.get(), reply.data(), reply.size(), 0);
      if (n < static_cast<ssize_t>(sizeof(fuse_out_header))) break;
      fuse_out_header out;
      std::memcpy(&out, reply.data(), sizeof(out));
      EXPECT_EQ(out.len, static_cast<uint32_t>(n));
      errors_[out.unique] = out.error;
      expected.erase(out.unique);
    }
    sender.join();
    return expected;
  }

  static std::vector<uint8_t> Getattr(uint64_t unique) {
    struct {
      fuse_in_header header;
      fuse_getattr_in getattr;
    } msg{};
    msg.header.len = sizeof(msg);
    msg.header.opcode = FUSE_GETATTR;
    msg.header.unique = unique;
    msg.header.nodeid = FUSE_ROOT_ID;
    const auto* p = reinterpret_cast<const uint8_t*>(&msg);
    return {p, p + sizeof(msg)};
  }

  std::map<uint64_t, int> errors_;
  UniqueFd kernel_;
  std::unique_ptr<MemoryVolume> volume_;
  std::unique_ptr<FuseServer> server_;
};

// 128 KiB read answers fill the socket's buffer long before 200 of them are
// read. Each must still arrive (the server used to drop an answer the
// socket refused with EAGAIN, and the peer then waited forever), and so must
// the check request sent after them.
TEST_F(FuseProtocolTest, EveryReadIsAnsweredWhenTheReplySocketIsFull) {
  constexpr int kRequests = 200;  // More than the 48 request slots.
  std::vector<std::vector<uint8_t>> requests;
  std::set<uint64_t> expected;
  for (int i = 0; i < kRequests; ++i) {
    struct {
      fuse_in_header header;
      fuse_read_in read;
    } msg{};
    msg.header.len = sizeof(msg);
    msg.header.opcode = FUSE_READ;
    msg.header.unique = 100 + i;
    msg.header.nodeid = 2;  // The file.
    msg.read.offset = (i % 16) * (128 << 10);
    msg.read.size = 128 << 10;
    const auto* p = reinterpret_cast<const uint8_t*>(&msg);
    requests.emplace_back(p, p + sizeof(msg));
    expected.insert(msg.header.unique);
  }
  requests.push_back(Getattr(kCheckUnique));
  expected.insert(kCheckUnique);
  const std::set<uint64_t> missing =
      SendAndCollect(std::move(requests), std::move(expected));
  EXPECT_TRUE(missing.empty()) << missing.size() << " requests unanswered, "
                               << "first unique "
                               << (missing.empty() ? 0 : *missing.begin());
  for (int i = 0; i < kRequests; ++i) {
    EXPECT_EQ(errors_[100 + i], 0) << "request " << 100 + i;
  }
}

// A hole punch whose end wraps past 2^64 is refused, not zeroed with a
// wrapped length; many of them leave the connection answering.
TEST_F(FuseProtocolTest, FallocateRangeThatWrapsIsRefused) {
  constexpr int kRequests = 200;
  std::vector<std::vector<uint8_t>> requests;
  std::set<uint64_t> expected;
  for (int i = 0; i < kRequests; ++i) {
    struct {
      fuse_in_header header;
      fuse_fallocate_in fallocate;
    } msg{};
    msg.header.len = sizeof(msg);
    msg.header.opcode = FUSE_FALLOCATE;
    msg.header.unique = 100 + i;
    msg.header.nodeid = 2;
    msg.fallocate.offset = 11008 + i;
    msg.fallocate.length = ~uint64_t{0} - static_cast<uint64_t>(i);
    msg.fallocate.mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    const auto* p = reinterpret_cast<const uint8_t*>(&msg);
    requests.emplace_back(p, p + sizeof(msg));
    expected.insert(msg.header.unique);
  }
  requests.push_back(Getattr(kCheckUnique));
  expected.insert(kCheckUnique);
  const std::set<uint64_t> missing =
      SendAndCollect(std::move(requests), std::move(expected));
  EXPECT_TRUE(missing.empty()) << missing.size() << " requests unanswered";
  for (int i = 0; i < kRequests; ++i) {
    EXPECT_EQ(errors_[100 + i], -EFBIG) << "request " << 100 + i;
  }
  EXPECT_EQ(errors_[kCheckUnique], 0);
}

}  // namespace
}  // namespace sealvol::io
