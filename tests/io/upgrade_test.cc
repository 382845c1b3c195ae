// Format version 1 is refused, and `sealvol upgrade` (io::UpgradeV1Image)
// converts it: every written block carried over, authenticated first, the
// original untouched until an atomic rename. The version-1 images here are
// written by a small writer that follows the version-1 layout.
#include <fcntl.h>
#include <openssl/sha.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <iterator>
#include <map>

#include "crypto/key_schedule.h"
#include "crypto/sector_codec.h"
#include "engine_test_support.h"
#include "base/error_kind.h"
#include "io/sealed_volume.h"
#include "io/format_v1.h"
#include "io/layout.h"
#include "io/upgrade.h"

namespace sealvol::io {
namespace {

using testing::Pattern;
using testing::TempDir;
using testing::TestDek;
using testing::TestId;

void Put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void Put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

std::vector<uint8_t> FileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Writes a version-1 image: `blocks` maps block -> content; `stale` blocks
// also carry an older slot (lower counter) describing earlier content.
void WriteV1Image(const std::string& path, const crypto::SecretBytes& dek,
                  const VolumeId& vid, uint64_t size,
                  const std::map<uint64_t, std::vector<uint8_t>>& blocks,
                  const std::vector<uint64_t>& stale = {}) {
  const Layout l = Layout::Default();
  std::vector<uint8_t> image(l.image_bytes(size / 4096), 0);
  auto data_key = crypto::HkdfSha256(dek, vid, "sealvol/v1/data", 32);
  auto header_key = crypto::HkdfSha256(dek, vid, "sealvol/v1/header-mac", 32);
  auto kcv = crypto::HkdfSha256(dek, vid, "sealvol/v1/key-check", 16);
  ASSERT_TRUE(data_key.ok() && header_key.ok() && kcv.ok());
  auto codec = crypto::SectorCodec::Create(*data_key);
  ASSERT_TRUE(codec.ok());
  uint64_t counter = 1;
  for (const auto& [block, content] : blocks) {
    uint8_t* entry = image.data() +
                     (l.tag_start(l.group_of(block)) * 4096) +
                     (block % l.data_blocks_per_group) * 64;
    const bool two = std::find(stale.begin(), stale.end(), block) != stale.end();
    for (int s = 0; s < (two ? 2 : 1); ++s) {
      // Slot 1 (when two) is the newer: higher counter; slot 0 is stale.
      const int slot = two ? s : 0;
      const uint64_t c = counter++;
      uint8_t aad[32];
      std::memcpy(aad, vid.data(), 16);
      for (int k = 0; k < 8; ++k) {
        aad[16 + k] = static_cast<uint8_t>(block >> (56 - 8 * k));
        aad[24 + k] = static_cast<uint8_t>(c >> (56 - 8 * k));
      }
      std::vector<uint8_t> plain = two && s == 0 ? Pattern(block + 5000) : content;
      std::vector<uint8_t> out(4096);
      crypto::GcmTag tag;
      ASSERT_TRUE((*codec)->Seal(crypto::CounterNonce(0, c), aad, plain, out, tag).ok());
      Put64(entry + slot * 32, c);
      std::memcpy(entry + slot * 32 + 8, tag.data(), 16);
      std::memcpy(image.data() + l.data_position(block) * 4096, out.data(), 4096);
    }
  }
  for (uint64_t copy = 0; copy < 2; ++copy) {
    uint8_t* p = image.data() + copy * 4096;
    std::memcpy(p, "SEALVOL\0", 8);
    Put32(p + 8, 1);
    Put32(p + 12, 4096);
    std::memcpy(p + 16, vid.data(), 16);
    Put64(p + 32, size);
    Put64(p + 40, copy + 4);  // generation
    Put64(p + 48, counter + 100);
    Put32(p + 56, 1);  // clean
    Put32(p + 60, l.data_blocks_per_group);
    Put32(p + 64, l.tag_blocks_per_group);
    Put64(p + 72, l.bitmap_start);
    Put64(p + 80, l.bitmap_blocks);
    Put64(p + 88, l.groups_start);
    std::memcpy(p + 96, kcv->data(), 16);
    SHA256(p, 160, p + 160);
    auto mac = crypto::HmacSha256(*header_key, {p, 192});
    ASSERT_TRUE(mac.ok());
    std::memcpy(p + 192, mac->data(), 32);
  }
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(image.data()),
             static_cast<std::streamsize>(image.size()));
}

class UpgradeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (uint64_t b : {0, 1, 2, 3, 100, 1023, 1024, 1500}) content_[b] = Pattern(b);
    WriteV1Image(path_, dek_, vid_, kSize, content_, /*stale=*/{2, 1024});
  }
  static constexpr uint64_t kSize = 8 << 20;
  TempDir dir_;
  std::string path_ = dir_.file("v1.img");
  crypto::SecretBytes dek_ = TestDek(21);
  VolumeId vid_ = TestId(21);
  std::map<uint64_t, std::vector<uint8_t>> content_;
};

TEST_F(UpgradeTest, FormatOneIsRefusedWithTheUpgradeCommand) {
  OpenOptions o;
  o.path = path_;
  auto v = SealedVolume::Open(o, dek_);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(v.status().message().find("sealvol upgrade"), std::string::npos)
      << v.status();
  auto header = ReadHeader(path_);
  EXPECT_NE(header.status().message().find("sealvol upgrade"), std::string::npos);
}

TEST_F(UpgradeTest, UpgradeCarriesEveryBlockOverUnderTheSameKey) {
  auto result = UpgradeV1Image(path_, dek_);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->blocks_copied, content_.size());
  EXPECT_EQ(access((path_ + ".upgrade").c_str(), F_OK), -1);
  auto header = ReadHeader(path_);
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->format_version, kFormatVersion);
  EXPECT_EQ(header->volume_id, vid_);
  EXPECT_EQ(header->format_id, result->format_id);
  OpenOptions o;
  o.path = path_;
  auto v = SealedVolume::Open(o, dek_);
  ASSERT_TRUE(v.ok()) << v.status();
  auto& e = **v;
  for (uint64_t b : {0, 1, 2, 3, 4, 100, 1023, 1024, 1500, 2047}) {
    std::vector<uint8_t> out(4096, 0xAA);
    ASSERT_EQ(e.Io(IoOp::kRead, b * 4096, out), 0) << "block " << b;
    const auto it = content_.find(b);
    EXPECT_EQ(out, it == content_.end() ? std::vector<uint8_t>(4096, 0) : it->second)
        << "block " << b;
  }
  EXPECT_TRUE(e.Close().ok());
  // Running it again on the converted image changes nothing.
  EXPECT_FALSE(UpgradeV1Image(path_, dek_).ok());
}

TEST_F(UpgradeTest, WrongKeyOrTamperingChangesNothing) {
  const auto before = FileBytes(path_);
  auto wrong = UpgradeV1Image(path_, TestDek(22));
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kPermissionDenied);
  // Flip a ciphertext bit of block 100.
  {
    const Layout l = Layout::Default();
    int fd = open(path_.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    uint8_t b = 0;
    const off_t at = static_cast<off_t>(l.data_position(100) * 4096 + 77);
    ASSERT_EQ(pread(fd, &b, 1, at), 1);
    b ^= 4;
    ASSERT_EQ(pwrite(fd, &b, 1, at), 1);
    close(fd);
  }
  const auto tampered = FileBytes(path_);
  auto bad = UpgradeV1Image(path_, dek_);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(bad.status().message().find("block 100"), std::string::npos)
      << bad.status();
  EXPECT_EQ(FileBytes(path_), tampered);
  EXPECT_NE(tampered, before);
  EXPECT_EQ(access((path_ + ".upgrade").c_str(), F_OK), -1);
}

// A run killed part way leaves `IMAGE.upgrade` behind and the image as it
// was; the next run discards the leftover and completes.
TEST_F(UpgradeTest, LeftoverFromAnInterruptedRunIsRedone) {
  std::ofstream(path_ + ".upgrade") << "half-written leftover";
  auto result = UpgradeV1Image(path_, dek_);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->blocks_copied, content_.size());
  EXPECT_EQ(access((path_ + ".upgrade").c_str(), F_OK), -1);
}

TEST_F(UpgradeTest, ImageInUseIsNotConverted) {
  int fd = open(path_.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(flock(fd, LOCK_SH), 0);
  auto busy = UpgradeV1Image(path_, dek_);
  EXPECT_EQ(busy.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(busy.status().message().find("in use"), std::string::npos);
  close(fd);
}

// A format-2 image from before the state root (no digest table, groups at
// 1 MiB) is refused with a line naming `sealvol upgrade`, and converted by
// an authenticated copy; a tampered block stops the conversion untouched.
class PreStateRootUpgradeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Layout old;  // The layout those images had.
    old.digest_start = 0;
    old.digest_blocks = 0;
    old.groups_start = 256;
    FileStoreOptions fo;
    fo.path = path_;
    fo.create = true;
    auto store = OpenFileStore(fo);
    ASSERT_TRUE(store.ok()) << store.status();
    FormatOptions f;
    f.path = path_;
    f.size_bytes = 16 << 20;
    f.volume_id = TestId(7);
    EngineOptions eo;
    eo.format_layout = old;
    eo.allow_pre_state_root = true;
    auto v = SealedVolume::FormatOn(std::move(store).value(), f, dek_, eo);
    ASSERT_TRUE(v.ok()) << v.status();
    for (uint64_t b : {0ull, 5ull, 1500ull, 4095ull}) {
      auto d = Pattern(b + 1);
      ASSERT_EQ((*v)->Io(IoOp::kWrite, b * 4096, d), 0);
    }
    ASSERT_TRUE((*v)->Close().ok());
  }

  TempDir dir_;
  const std::string path_ = dir_.file("old.img");
  const crypto::SecretBytes dek_ = TestDek(31);
};

TEST_F(PreStateRootUpgradeTest, RefusedThenConverted) {
  OpenOptions o;
  o.path = path_;
  auto refused = SealedVolume::Open(o, dek_);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(GetErrorKind(refused.status()), ErrorKind::kBadVersion);
  EXPECT_NE(refused.status().message().find("sealvol upgrade"),
            std::string::npos)
      << refused.status();

  auto result = UpgradePreStateRootImage(path_, dek_);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_FALSE(result->state.open);
  auto header = ReadHeader(path_);
  ASSERT_TRUE(header.ok());
  EXPECT_TRUE(header->has_state_root);
  o.expected_state = result->state;
  auto v = SealedVolume::Open(o, dek_);
  ASSERT_TRUE(v.ok()) << v.status();
  SealedVolume& e = **v;
  for (uint64_t b : {0ull, 5ull, 1500ull, 4095ull, 6ull, 3000ull}) {
    std::vector<uint8_t> out(4096);
    ASSERT_EQ(e.Io(IoOp::kRead, b * 4096, out), 0) << "block " << b;
    const bool written = b == 0 || b == 5 || b == 1500 || b == 4095;
    EXPECT_EQ(out, written ? Pattern(b + 1) : std::vector<uint8_t>(4096, 0))
        << "block " << b;
  }
  EXPECT_TRUE(e.Close().ok());
  // Current already: nothing to do.
  EXPECT_EQ(UpgradePreStateRootImage(path_, dek_).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(PreStateRootUpgradeTest, TamperedBlockStopsTheConversionUntouched) {
  {
    int fd = open(path_.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    uint8_t b = 0;
    const off_t at = static_cast<off_t>((256 + 16 + 1500 % 1024 + 1040) * 4096 + 9);
    ASSERT_EQ(pread(fd, &b, 1, at), 1);
    b ^= 1;
    ASSERT_EQ(pwrite(fd, &b, 1, at), 1);
    close(fd);
  }
  const auto before = FileBytes(path_);
  auto bad = UpgradePreStateRootImage(path_, dek_);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss) << bad.status();
  EXPECT_EQ(FileBytes(path_), before);
  EXPECT_EQ(access((path_ + ".upgrade").c_str(), F_OK), -1);
}

}  // namespace
}  // namespace sealvol::io
