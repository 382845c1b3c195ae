// FuseServer driven request by request, as the fuzz target drives it:
// FakeFuseKernel's socket pair stands in for /dev/fuse, the test plays the
// kernel. Regression tests for requests that once left the connection
// without an answer. No mount, no root needed.
#include <linux/falloc.h>
#include <linux/fuse.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "io/frontend/fuse_server.h"
#include "tests/fakes/fake_fuse_kernel.h"
#include "tests/io/frontend/memory_volume.h"

namespace sealvol::io {
namespace {

constexpr uint64_t kVolumeSize = 4ull << 20;
constexpr uint64_t kCheckUnique = 1'000'000;
using ::sealvol::testing::FakeFuseKernel;

class FuseProtocolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(kernel_.Open()) << std::strerror(errno);
    ASSERT_TRUE(kernel_.SendInit()) << std::strerror(errno);
    volume_ = std::make_unique<MemoryVolume>(kVolumeSize);
    FuseServerOptions options;
    options.transport = FuseTransport::kDev;
    options.dev_threads = 1;
    auto server = FuseServer::Start(kernel_.TakeServerEnd(), volume_.get(),
                                    options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    ASSERT_TRUE(kernel_.Receive(-1).has_value()) << "no answer to FUSE_INIT";
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
        if (!kernel_.Send(r)) {
          ADD_FAILURE() << "send: " << std::strerror(errno);
          return;
        }
      }
    });
    while (!expected.empty()) {
      const auto reply = kernel_.Receive(20000);
      if (!reply.has_value()) break;
      const fuse_out_header& out = reply->header;
      EXPECT_EQ(out.len, static_cast<uint32_t>(reply->size));
      errors_[out.unique] = out.error;
      expected.erase(out.unique);
    }
    sender.join();
    return expected;
  }

  std::map<uint64_t, int> errors_;
  FakeFuseKernel kernel_;
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
    fuse_read_in read{};
    read.offset = (i % 16) * (128 << 10);
    read.size = 128 << 10;
    // Node 2 is the file.
    requests.push_back(FakeFuseKernel::Request(FUSE_READ, 100 + i, 2, read));
    expected.insert(100 + i);
  }
  requests.push_back(FakeFuseKernel::Getattr(kCheckUnique));
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
    fuse_fallocate_in fallocate{};
    fallocate.offset = 11008 + i;
    fallocate.length = ~uint64_t{0} - static_cast<uint64_t>(i);
    fallocate.mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    requests.push_back(
        FakeFuseKernel::Request(FUSE_FALLOCATE, 100 + i, 2, fallocate));
    expected.insert(100 + i);
  }
  requests.push_back(FakeFuseKernel::Getattr(kCheckUnique));
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
