// FuseServer over an in-memory volume: the protocol, both transports, the
// unaligned paths, fsync and hole punching, seen through real syscalls on a
// real FUSE mount. Needs root and /dev/fuse.
#include "io/frontend/fuse_server.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "io/frontend/fuse_mount.h"
#include "tests/io/frontend/memory_volume.h"
#include "tests/support/temp_dir.h"

namespace sealvol::io {
namespace {

constexpr uint64_t kVolumeSize = 64ull << 20;

bool UringAvailable() {
  return std::filesystem::exists("/sys/module/fuse/parameters/enable_uring");
}

class FuseServerTest : public ::testing::TestWithParam<FuseTransport> {
 protected:
  void SetUp() override {
    if (::geteuid() != 0 || ::access("/dev/fuse", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "needs root and /dev/fuse";
    }
    if (GetParam() == FuseTransport::kUring) {
      if (!UringAvailable()) {
        GTEST_SKIP() << "kernel lacks FUSE over io_uring (no enable_uring)";
      }
      ASSERT_TRUE(EnableFuseOverIoUring().ok());
    }
    volume_ = std::make_unique<MemoryVolume>(kVolumeSize);
    auto mount = FuseMount::Create(root_.file("mnt"));
    ASSERT_TRUE(mount.ok()) << mount.status();
    mount_ = std::move(*mount);
    FuseServerOptions options;
    options.transport = GetParam();
    options.grow = [this](uint64_t size) {
      volume_->Grow(size);
      return absl::OkStatus();
    };
    auto server = FuseServer::Start(mount_.TakeFd(), volume_.get(), options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    file_ = root_.file("mnt/volume");
  }

  void TearDown() override {
    // Unmount before anything walks the directory (root_ at destruction):
    // a mount without a server would hang the walk.
    EXPECT_TRUE(mount_.Unmount().ok());
    if (server_) server_->Stop();
  }

  sealvol::testing::TempDir root_{"sealvol-fuse-server"};
  std::unique_ptr<MemoryVolume> volume_;
  FuseMount mount_;
  std::unique_ptr<FuseServer> server_;
  std::string file_;
};

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

void* AlignedAlloc(size_t n) { return std::aligned_alloc(4096, n); }

TEST_P(FuseServerTest, ServesTheChosenTransport) {
  EXPECT_EQ(server_->transport(), GetParam());
  struct stat st;
  ASSERT_EQ(::stat(file_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), kVolumeSize);
  const auto stats = server_->stats();
  if (GetParam() == FuseTransport::kUring) {
    EXPECT_GT(stats.requests_uring, 0u);
  } else {
    EXPECT_EQ(stats.requests_uring, 0u);
    EXPECT_GT(stats.requests_dev, 0u);
  }
}

TEST_P(FuseServerTest, DirectIoWritesReachTheVolumeAndReadBack) {
  int fd = ::open(file_.c_str(), O_RDWR | O_DIRECT);
  ASSERT_GE(fd, 0);
  const size_t n = 1 << 20;
  auto data = RandomBytes(n, 1);
  auto* buf = static_cast<uint8_t*>(AlignedAlloc(n));
  std::memcpy(buf, data.data(), n);
  ASSERT_EQ(::pwrite(fd, buf, n, 8 << 20), static_cast<ssize_t>(n));
  std::memset(buf, 0, n);
  ASSERT_EQ(::pread(fd, buf, n, 8 << 20), static_cast<ssize_t>(n));
  EXPECT_EQ(std::memcmp(buf, data.data(), n), 0);
  auto snapshot = volume_->Snapshot();
  EXPECT_EQ(std::memcmp(snapshot.data() + (8 << 20), data.data(), n), 0);
  std::free(buf);
  ::close(fd);
  EXPECT_EQ(volume_->misaligned(), 0);
}

TEST_P(FuseServerTest, UnalignedWriteIsReadModifyWrite) {
  int fd = ::open(file_.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  auto base = RandomBytes(3 * 4096, 2);
  ASSERT_EQ(::pwrite(fd, base.data(), base.size(), 0), 3 * 4096);
  const char patch[] = "unaligned-bytes-across-a-block-edge";
  ASSERT_EQ(::pwrite(fd, patch, sizeof(patch), 4096 - 10),
            static_cast<ssize_t>(sizeof(patch)));
  std::memcpy(base.data() + 4096 - 10, patch, sizeof(patch));
  std::vector<uint8_t> back(base.size());
  ASSERT_EQ(::pread(fd, back.data(), back.size(), 0), 3 * 4096);
  EXPECT_EQ(back, base);
  // An unaligned read inside one block.
  char small[7];
  ASSERT_EQ(::pread(fd, small, sizeof(small), 4096 - 3), 7);
  EXPECT_EQ(std::memcmp(small, base.data() + 4096 - 3, 7), 0);
  ::close(fd);
  EXPECT_EQ(volume_->misaligned(), 0);
}

TEST_P(FuseServerTest, FsyncReachesTheEngineAsAFlush) {
  int fd = ::open(file_.c_str(), O_RDWR | O_DIRECT);
  ASSERT_GE(fd, 0);
  const int before = volume_->flushes();
  ASSERT_EQ(::fsync(fd), 0);
  ASSERT_EQ(::fdatasync(fd), 0);
  EXPECT_GE(volume_->flushes(), before + 2);
  EXPECT_GE(server_->stats().flushes, 2u);
  ::close(fd);
}

TEST_P(FuseServerTest, PunchHoleDiscardsAndZeroesEdges) {
  int fd = ::open(file_.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  std::vector<uint8_t> ones(4 * 4096, 0xab);
  ASSERT_EQ(::pwrite(fd, ones.data(), ones.size(), 0), 4 * 4096);
  ASSERT_EQ(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 100,
                        3 * 4096),
            0);
  EXPECT_GE(volume_->discards(), 1);
  std::vector<uint8_t> back(4 * 4096);
  ASSERT_EQ(::pread(fd, back.data(), back.size(), 0), 4 * 4096);
  for (size_t i = 0; i < back.size(); ++i) {
    const bool punched = i >= 100 && i < 100 + 3 * 4096;
    ASSERT_EQ(back[i], punched ? 0 : 0xab) << "byte " << i;
  }
  ::close(fd);
}

TEST_P(FuseServerTest, WritesPastTheEndFailAndSizeOnlyGrows) {
  int fd = ::open(file_.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  char byte = 1;
  EXPECT_EQ(::pwrite(fd, &byte, 1, kVolumeSize), -1);
  EXPECT_EQ(errno, EFBIG);
  EXPECT_NE(::ftruncate(fd, kVolumeSize / 2), 0);
  ASSERT_EQ(::ftruncate(fd, kVolumeSize * 2), 0);
  struct stat st;
  ASSERT_EQ(::fstat(fd, &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), kVolumeSize * 2);
  ::close(fd);
}

TEST_P(FuseServerTest, UnsupportedOperationsGetErrno) {
  EXPECT_NE(::mkdir(root_.file("mnt/dir").c_str(), 0700), 0);
  EXPECT_EQ(errno, ENOSYS);
  EXPECT_NE(::open(root_.file("mnt/other").c_str(), O_RDONLY), 0);
  EXPECT_EQ(errno, ENOENT);
  std::vector<std::string> names;
  for (auto& e : std::filesystem::directory_iterator(root_.file("mnt"))) {
    names.push_back(e.path().filename());
  }
  EXPECT_EQ(names, std::vector<std::string>{"volume"});
}

TEST_P(FuseServerTest, ParallelWritersSeeTheirOwnData) {
  constexpr int kThreads = 8;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      int fd = ::open(file_.c_str(), O_RDWR | O_DIRECT);
      auto* buf = static_cast<uint8_t*>(AlignedAlloc(65536));
      auto* back = static_cast<uint8_t*>(AlignedAlloc(65536));
      for (int i = 0; i < 50; ++i) {
        std::memset(buf, t * 16 + i % 16, 65536);
        const off_t off = (static_cast<off_t>(t) * 50 + i) * 65536;
        if (::pwrite(fd, buf, 65536, off) != 65536 ||
            ::pread(fd, back, 65536, off) != 65536 ||
            std::memcmp(buf, back, 65536) != 0) {
          ++failures;
        }
      }
      std::free(buf);
      std::free(back);
      ::close(fd);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Transports, FuseServerTest,
                         ::testing::Values(FuseTransport::kDev,
                                           FuseTransport::kUring),
                         [](const auto& info) {
                           return std::string(FuseTransportName(info.param));
                         });

}  // namespace
}  // namespace sealvol::io
