// Engine behaviour and properties P1 (integrity), P2 (position binding),
// P5 (thin), P6 (growth), and the error cases of open and format.
#include "io/sealed_volume.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <thread>

#include "base/error_kind.h"
#include "engine_test_support.h"
#include "io/layout.h"
#include "io/superblock.h"
#include "io/tag_table.h"

#include <openssl/sha.h>
#include <algorithm>

namespace sealvol::io {
namespace {

using testing::AllocatedBytes;
using testing::FormatOf;
using testing::Manual;
using testing::Pattern;
using testing::TempDir;
using testing::TestDek;
using testing::TestId;

constexpr uint64_t kMiB = 1 << 20;

class SealedVolumeTest : public ::testing::Test {
 protected:
  SealedVolumeTest() : dek_(TestDek(1)) {}

  std::unique_ptr<SealedVolume> FormatMem(uint64_t size, uint8_t id = 1) {
    auto v = SealedVolume::FormatOn(std::make_unique<FaultStore>(0), FormatOf(size, id),
                              dek_, Manual());
    EXPECT_TRUE(v.ok()) << v.status();
    return std::move(v).value();
  }

  // Closes `v` and returns its image as a new store.
  static std::unique_ptr<FaultStore> CloseToImage(std::unique_ptr<SealedVolume> v) {
    auto& fs = static_cast<FaultStore&>(v->store());
    EXPECT_TRUE(v->Close().ok());
    auto image = fs.Snapshot();
    v.reset();
    return image;
  }

  std::unique_ptr<SealedVolume> OpenMem(std::unique_ptr<FaultStore> image) {
    auto v = SealedVolume::OpenOn(std::move(image), dek_, Manual());
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? std::move(v).value() : nullptr;
  }

  static int Write(SealedVolume& v, uint64_t block, const std::vector<uint8_t>& data) {
    std::vector<uint8_t> copy = data;
    return v.Io(IoOp::kWrite, block * 4096, copy);
  }
  static std::vector<uint8_t> Read(SealedVolume& v, uint64_t block, size_t blocks,
                                   int* result) {
    std::vector<uint8_t> out(blocks * 4096, 0xAA);
    *result = v.Io(IoOp::kRead, block * 4096, out);
    return out;
  }
  static bool AllZero(const std::vector<uint8_t>& v) {
    for (uint8_t b : v) {
      if (b != 0) return false;
    }
    return true;
  }
  static void FlipBit(FaultStore& fs, uint64_t image_block, size_t byte,
                      int bit) {
    FaultStore::Block b = fs.PeekBlock(image_block);
    b[byte] ^= static_cast<uint8_t>(1u << bit);
    fs.PokeBlock(image_block, b);
  }

  crypto::SecretBytes dek_;
  const Layout layout_ = Layout::Default();
};

TEST_F(SealedVolumeTest, WritesReadBackAcrossGroupsAndReopen) {
  auto v = FormatMem(12 * kMiB);
  // Eight blocks straddling the boundary between groups 0 and 1.
  auto data = Pattern(7, 8 * 4096);
  ASSERT_EQ(Write(*v, 1020, data), 0);
  int r = 0;
  EXPECT_EQ(Read(*v, 1020, 8, &r), data);
  EXPECT_EQ(r, 0);
  v = OpenMem(CloseToImage(std::move(v)));
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(Read(*v, 1020, 8, &r), data);
  EXPECT_EQ(r, 0);
  // Overwrites alternate slots; the newest content wins after reopen.
  for (int i = 0; i < 5; ++i) ASSERT_EQ(Write(*v, 1021, Pattern(100 + i)), 0);
  v = OpenMem(CloseToImage(std::move(v)));
  EXPECT_EQ(Read(*v, 1021, 1, &r), Pattern(104));
  EXPECT_EQ(r, 0);
}

TEST_F(SealedVolumeTest, CiphertextOnDiskIsNotPlaintext) {
  auto v = FormatMem(4 * kMiB);
  auto data = Pattern(3);
  ASSERT_EQ(Write(*v, 9, data), 0);
  auto image = CloseToImage(std::move(v));
  FaultStore::Block raw = image->PeekBlock(layout_.data_position(9));
  EXPECT_NE(std::vector<uint8_t>(raw.begin(), raw.end()), data);
}

// P1: a flipped bit anywhere in a block's ciphertext, tag or counter makes
// the read fail with -EIO and a zeroed buffer.
TEST_F(SealedVolumeTest, ReadFailsOnFlippedCiphertextBit) {
  auto v = FormatMem(4 * kMiB);
  ASSERT_EQ(Write(*v, 5, Pattern(1)), 0);
  auto image = CloseToImage(std::move(v));
  FlipBit(*image, layout_.data_position(5), 1234, 3);
  v = OpenMem(std::move(image));
  int r = 0;
  auto out = Read(*v, 4, 3, &r);
  EXPECT_EQ(r, -EIO);
  EXPECT_TRUE(AllZero(out));
}

TEST_F(SealedVolumeTest, ReadFailsOnFlippedTagBit) {
  auto v = FormatMem(4 * kMiB);
  ASSERT_EQ(Write(*v, 70, Pattern(1)), 0);
  auto image = CloseToImage(std::move(v));
  // Block 70: tag block 1 of group 0, entry 6; slot 0's tag starts at +16.
  FlipBit(*image, layout_.tag_start(0) + 1, 6 * kTagEntryBytes + 16 + 5, 0);
  v = OpenMem(std::move(image));
  int r = 0;
  auto out = Read(*v, 70, 1, &r);
  EXPECT_EQ(r, -EIO);
  EXPECT_TRUE(AllZero(out));
}

TEST_F(SealedVolumeTest, ReadFailsOnFlippedCounterBit) {
  auto v = FormatMem(4 * kMiB);
  ASSERT_EQ(Write(*v, 2, Pattern(1)), 0);
  auto image = CloseToImage(std::move(v));
  // The first counter of a session is 1 (byte 10 of the slot): flipping its
  // bit makes it 0, which must not pass for anything but tampering.
  FaultStore::Block tb = image->PeekBlock(layout_.tag_start(0));
  ASSERT_EQ(tb[2 * kTagEntryBytes + 10], 1);
  FlipBit(*image, layout_.tag_start(0), 2 * kTagEntryBytes + 10, 0);
  v = OpenMem(std::move(image));
  int r = 0;
  auto out = Read(*v, 2, 1, &r);
  EXPECT_EQ(r, -EIO);
  EXPECT_TRUE(AllZero(out));
}

// The session id and the seq are bound by the additional data too.
TEST_F(SealedVolumeTest, ReadFailsOnFlippedSessionOrSeqBit) {
  for (size_t byte : {size_t{0}, size_t{9}, size_t{15}}) {
    auto v = FormatMem(4 * kMiB);
    ASSERT_EQ(Write(*v, 3, Pattern(1)), 0);
    auto image = CloseToImage(std::move(v));
    FlipBit(*image, layout_.tag_start(0), 3 * kTagEntryBytes + byte, 2);
    v = OpenMem(std::move(image));
    int r = 0;
    auto out = Read(*v, 3, 1, &r);
    EXPECT_EQ(r, -EIO) << "slot byte " << byte;
    EXPECT_TRUE(AllZero(out));
  }
}

TEST_F(SealedVolumeTest, OpenFailsWhenBothSuperblockCopiesAreAltered) {
  auto v = FormatMem(4 * kMiB);
  auto image = CloseToImage(std::move(v));
  // Change the size field and re-seal the unkeyed digest: only the MAC can
  // tell (an attacker can recompute the digest, not the MAC).
  for (uint64_t copy = 0; copy < 2; ++copy) {
    FaultStore::Block b = image->PeekBlock(copy);
    b[49] ^= 0x10;  // size_bytes.
    SHA256(b.data(), 256, b.data() + 256);
    image->PokeBlock(copy, b);
  }
  auto opened = SealedVolume::OpenOn(std::move(image), dek_, Manual());
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kDataLoss)
      << opened.status();
}

TEST_F(SealedVolumeTest, AlteredNewestCopyFallsBackToTheOlderCopy) {
  auto v = FormatMem(4 * kMiB);
  ASSERT_EQ(Write(*v, 1, Pattern(1)), 0);
  auto image = CloseToImage(std::move(v));
  auto info = DecodeSuperblock(
      std::span<const uint8_t>(image->PeekBlock(0).data(), 4096));
  auto info1 = DecodeSuperblock(
      std::span<const uint8_t>(image->PeekBlock(1).data(), 4096));
  ASSERT_TRUE(info.ok() && info1.ok());
  const uint64_t newest = info->generation > info1->generation ? 0 : 1;
  FlipBit(*image, newest, 50, 1);  // In size_bytes: the digest fails.
  v = OpenMem(std::move(image));
  ASSERT_NE(v, nullptr);
  int r = 0;
  EXPECT_EQ(Read(*v, 1, 1, &r), Pattern(1));
  EXPECT_EQ(r, 0);
  // Nothing in the header feeds the nonces: writing after the fallback
  // opens fresh sessions, whatever the older copy said.
  EXPECT_GE(v->sessions_started(), 1u);
  ASSERT_EQ(Write(*v, 1, Pattern(2)), 0);
}

// P2: the additional data binds the block number and the volume.
TEST_F(SealedVolumeTest, BlockCopiedToAnotherPositionFails) {
  auto v = FormatMem(4 * kMiB);
  ASSERT_EQ(Write(*v, 3, Pattern(3)), 0);
  ASSERT_EQ(Write(*v, 7, Pattern(7)), 0);
  auto image = CloseToImage(std::move(v));
  // Copy block 3's ciphertext and whole tag entry over block 7's.
  image->PokeBlock(layout_.data_position(7),
                   image->PeekBlock(layout_.data_position(3)));
  FaultStore::Block tb = image->PeekBlock(layout_.tag_start(0));
  std::memcpy(&tb[7 * kTagEntryBytes], &tb[3 * kTagEntryBytes], kTagEntryBytes);
  image->PokeBlock(layout_.tag_start(0), tb);
  v = OpenMem(std::move(image));
  int r = 0;
  auto out = Read(*v, 7, 1, &r);
  EXPECT_EQ(r, -EIO);
  EXPECT_TRUE(AllZero(out));
  // The group's tag area no longer matches its digest: every block of the
  // group fails (block 3 too), and the group is reported.
  out = Read(*v, 3, 1, &r);
  EXPECT_EQ(r, -EIO);
  EXPECT_TRUE(AllZero(out));
  EXPECT_EQ(v->mismatched_groups(), std::vector<uint64_t>{0});
}

TEST_F(SealedVolumeTest, BlockCopiedToAnotherVolumeFails) {
  auto a = FormatMem(4 * kMiB, /*id=*/1);
  auto b = FormatMem(4 * kMiB, /*id=*/2);
  ASSERT_EQ(Write(*a, 3, Pattern(3)), 0);
  ASSERT_EQ(Write(*b, 3, Pattern(4)), 0);
  auto ia = CloseToImage(std::move(a));
  auto ib = CloseToImage(std::move(b));
  ib->PokeBlock(layout_.data_position(3), ia->PeekBlock(layout_.data_position(3)));
  ib->PokeBlock(layout_.tag_start(0), ia->PeekBlock(layout_.tag_start(0)));
  auto v = OpenMem(std::move(ib));
  int r = 0;
  auto out = Read(*v, 3, 1, &r);
  EXPECT_EQ(r, -EIO);
  EXPECT_TRUE(AllZero(out));
}

// P5: thin volumes.
TEST_F(SealedVolumeTest, FreshVolumeReadsZerosWithoutReadingData) {
  auto v = FormatMem(8 * kMiB);
  auto& fs = static_cast<FaultStore&>(v->store());
  fs.ClearReadLog();
  int r = 0;
  auto out = Read(*v, 0, 2048, &r);
  EXPECT_EQ(r, 0);
  EXPECT_TRUE(AllZero(out));
  for (uint64_t b : fs.read_blocks()) {
    const uint64_t rel = (b - layout_.groups_start) % layout_.group_span();
    EXPECT_LT(rel, layout_.tag_blocks_per_group) << "read data block " << b;
  }
}

TEST_F(SealedVolumeTest, FileImageIsSparseAndDiscardPunchesHoles) {
  TempDir dir;
  const std::string path = dir.file("thin.img");
  FormatOptions f = FormatOf(256 * kMiB);
  f.path = path;
  auto v = SealedVolume::Format(f, dek_);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_LT(AllocatedBytes(path), 1 * kMiB) << "format wrote more than metadata";
  auto* e = v->get();
  auto data = Pattern(9, 8 * kMiB);
  ASSERT_EQ(e->Io(IoOp::kWrite, 64 * kMiB, data), 0);
  ASSERT_EQ(e->Io(IoOp::kFlush, 0, {}), 0);
  const uint64_t before = AllocatedBytes(path);
  EXPECT_GE(before, 8 * kMiB);
  ASSERT_EQ(e->Io(IoOp::kDiscard, 64 * kMiB, std::span<uint8_t>(data.data(), 6 * kMiB)), 0);
  const uint64_t after = AllocatedBytes(path);
  EXPECT_LE(after + 5 * kMiB, before) << "discard did not punch holes";
  std::vector<uint8_t> out(8 * kMiB, 0xAA);
  ASSERT_EQ(e->Io(IoOp::kRead, 64 * kMiB, out), 0);
  EXPECT_TRUE(std::all_of(out.begin(), out.begin() + 6 * kMiB,
                          [](uint8_t b) { return b == 0; }));
  EXPECT_TRUE(std::equal(out.begin() + 6 * kMiB, out.end(),
                         data.begin() + 6 * kMiB));
  ASSERT_TRUE((*v)->Close().ok());
  // Discarded blocks still read zeros after reopen.
  OpenOptions o;
  o.path = path;
  auto re = SealedVolume::Open(o, dek_);
  ASSERT_TRUE(re.ok()) << re.status();
  std::fill(out.begin(), out.end(), 0xAA);
  ASSERT_EQ(re->get()->Io(IoOp::kRead, 64 * kMiB, out), 0);
  EXPECT_TRUE(std::all_of(out.begin(), out.begin() + 6 * kMiB,
                          [](uint8_t b) { return b == 0; }));
}

// P1 over the io_uring store, where a large read is issued as several
// backing reads, each decrypted as it lands: a flipped bit in the first or in
// the last piece of a 1 MiB read fails the whole read with a zeroed buffer,
// and a read that stops before the flipped block returns every piece intact.
TEST_F(SealedVolumeTest, LargeFileReadFailsWholeOnFlippedBitInAnyPiece) {
  TempDir dir;
  const std::string path = dir.file("pieces.img");
  FormatOptions f = FormatOf(16 * kMiB);
  f.path = path;
  auto v = SealedVolume::Format(f, dek_);
  ASSERT_TRUE(v.ok()) << v.status();
  auto* e = v->get();
  auto data = Pattern(21, 2 * kMiB);
  ASSERT_EQ(e->Io(IoOp::kWrite, 0, data), 0);
  ASSERT_TRUE((*v)->Close().ok());
  v->reset();
  {
    // Block 3 (first piece of the first MiB), block 256 + 250 (last piece
    // of the second MiB).
    const int fd = ::open(path.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    for (uint64_t block : {uint64_t{3}, uint64_t{256 + 250}}) {
      const off_t at =
          static_cast<off_t>(layout_.data_position(block) * 4096 + 77);
      uint8_t byte = 0;
      ASSERT_EQ(::pread(fd, &byte, 1, at), 1);
      byte ^= 0x10;
      ASSERT_EQ(::pwrite(fd, &byte, 1, at), 1);
    }
    ::close(fd);
  }
  OpenOptions o;
  o.path = path;
  auto re = SealedVolume::Open(o, dek_);
  ASSERT_TRUE(re.ok()) << re.status();
  auto* r = re->get();
  for (uint64_t mib : {0, 1}) {
    std::vector<uint8_t> out(kMiB, 0xAA);
    EXPECT_EQ(r->Io(IoOp::kRead, mib * kMiB, out), -EIO) << "MiB " << mib;
    EXPECT_TRUE(AllZero(out)) << "MiB " << mib;
  }
  std::vector<uint8_t> good(250 * 4096, 0xAA);
  ASSERT_EQ(r->Io(IoOp::kRead, kMiB, good), 0);
  EXPECT_TRUE(std::equal(good.begin(), good.end(), data.begin() + kMiB));
  ASSERT_TRUE((*re)->Close().ok());
}

// P6: online growth.
TEST_F(SealedVolumeTest, GrowsOnlineWhileIoRunsWithoutRewritingData) {
  TempDir dir;
  const std::string path = dir.file("grow.img");
  FormatOptions f = FormatOf(8 * kMiB);
  f.path = path;
  auto v = SealedVolume::Format(f, dek_);
  ASSERT_TRUE(v.ok()) << v.status();
  auto* e = v->get();
  auto old = Pattern(11, 8 * kMiB);
  ASSERT_EQ(e->Io(IoOp::kWrite, 0, old), 0);
  std::atomic<bool> stop{false};
  std::atomic<int> errors{0};
  std::thread io([&] {
    uint64_t i = 0;
    while (!stop.load()) {
      auto blk = Pattern(i % 2048 + 11, 4096);
      const uint64_t b = i % 2048;
      std::vector<uint8_t> want(old.begin() + b * 4096, old.begin() + (b + 1) * 4096);
      if (e->Io(IoOp::kWrite, b * 4096, want) != 0) errors++;
      std::vector<uint8_t> got(4096);
      if (e->Io(IoOp::kRead, b * 4096, got) != 0 || got != want) errors++;
      ++i;
    }
  });
  for (uint64_t size = 12 * kMiB; size <= 40 * kMiB; size += 4 * kMiB + 4096) {
    ASSERT_TRUE((*v)->Grow(size).ok());
    EXPECT_EQ((*v)->size_bytes(), size);
  }
  stop = true;
  io.join();
  EXPECT_EQ(errors.load(), 0);
  const uint64_t grown = (*v)->size_bytes();
  std::vector<uint8_t> out(8 * kMiB);
  ASSERT_EQ(e->Io(IoOp::kRead, 0, out), 0);
  EXPECT_EQ(out, old);
  std::vector<uint8_t> fresh(grown - 8 * kMiB, 0xAA);
  ASSERT_EQ(e->Io(IoOp::kRead, 8 * kMiB, fresh), 0);
  EXPECT_TRUE(std::all_of(fresh.begin(), fresh.end(), [](uint8_t b) { return b == 0; }));
  auto tail = Pattern(12, 4096);
  ASSERT_EQ(e->Io(IoOp::kWrite, grown - 4096, tail), 0);
  EXPECT_TRUE((*v)->Grow(grown - 4096).code() == absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE((*v)->Close().ok());
  auto info = ReadHeader(path);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->size_bytes, grown);
  OpenOptions o;
  o.path = path;
  auto re = SealedVolume::Open(o, dek_);
  ASSERT_TRUE(re.ok()) << re.status();
  EXPECT_EQ((*re)->size_bytes(), grown);
  auto* r = re->get();
  ASSERT_EQ(r->Io(IoOp::kRead, 0, out), 0);
  EXPECT_EQ(out, old);
  std::vector<uint8_t> got(4096);
  ASSERT_EQ(r->Io(IoOp::kRead, grown - 4096, got), 0);
  EXPECT_EQ(got, tail);
}

// Errors of format and open.
class SealedVolumeErrorTest : public SealedVolumeTest {
 protected:
  std::string MakeImage(uint64_t size = 8 * kMiB) {
    const std::string path = dir_.file("e.img");
    FormatOptions f = FormatOf(size);
    f.path = path;
    auto v = SealedVolume::Format(f, dek_);
    EXPECT_TRUE(v.ok()) << v.status();
    EXPECT_TRUE((*v)->Close().ok());
    return path;
  }
  absl::Status OpenStatus(const std::string& path, uint8_t key = 1) {
    OpenOptions o;
    o.path = path;
    auto v = SealedVolume::Open(o, TestDek(key));
    return v.status();
  }
  TempDir dir_;
};

TEST_F(SealedVolumeErrorTest, WrongKeyIsPermissionDenied) {
  auto s = OpenStatus(MakeImage(), /*key=*/2);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_NE(s.message().find("wrong key"), std::string::npos) << s;
  EXPECT_EQ(GetErrorKind(s), ErrorKind::kWrongKey) << s;
}

TEST_F(SealedVolumeErrorTest, NotASealvolImage) {
  const std::string path = dir_.file("junk.img");
  auto junk = Pattern(5, 4 * kMiB);
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
  ::close(fd);
  auto s = OpenStatus(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("not a sealvol image"), std::string::npos) << s;
  EXPECT_EQ(GetErrorKind(s), ErrorKind::kNotSealvol) << s;
  EXPECT_EQ(ReadHeader(path).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SealedVolumeErrorTest, TruncatedImage) {
  const std::string path = MakeImage();
  ASSERT_EQ(::truncate(path.c_str(), 4 * kMiB), 0);
  auto s = OpenStatus(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange) << s;
  EXPECT_NE(s.message().find("truncated"), std::string::npos) << s;
  EXPECT_EQ(GetErrorKind(s), ErrorKind::kTruncated) << s;
  EXPECT_EQ(ReadHeader(path).status().code(), absl::StatusCode::kOutOfRange);
}

TEST_F(SealedVolumeErrorTest, UnsupportedVersion) {
  const std::string path = MakeImage();
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  const uint8_t v99[4] = {99, 0, 0, 0};
  ASSERT_EQ(::pwrite(fd, v99, 4, 8), 4);
  ASSERT_EQ(::pwrite(fd, v99, 4, 4096 + 8), 4);
  ::close(fd);
  auto s = OpenStatus(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("unsupported format version 99"), std::string::npos) << s;
  EXPECT_EQ(GetErrorKind(s), ErrorKind::kBadVersion) << s;
}

TEST_F(SealedVolumeErrorTest, SizeNotMultipleOfBlock) {
  FormatOptions f = FormatOf(8 * kMiB + 100);
  f.path = dir_.file("odd.img");
  auto v = SealedVolume::Format(f, dek_);
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument) << v.status();
  f.size_bytes = 0;
  EXPECT_EQ(SealedVolume::Format(f, dek_).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(SealedVolumeErrorTest, ImageInUse) {
  const std::string path = MakeImage();
  OpenOptions o;
  o.path = path;
  auto first = SealedVolume::Open(o, dek_);
  ASSERT_TRUE(first.ok()) << first.status();
  auto s = OpenStatus(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("in use"), std::string::npos) << s;
  EXPECT_EQ(GetErrorKind(s), ErrorKind::kInUse) << s;
}

TEST_F(SealedVolumeErrorTest, FormatRefusesExistingImage) {
  const std::string path = MakeImage();
  FormatOptions f = FormatOf(8 * kMiB);
  f.path = path;
  EXPECT_EQ(SealedVolume::Format(f, dek_).status().code(),
            absl::StatusCode::kAlreadyExists);
}

TEST_F(SealedVolumeErrorTest, HeaderReadsWithoutKeyAndShowsCleanFlag) {
  const std::string path = MakeImage(12 * kMiB);
  auto info = ReadHeader(path);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->size_bytes, 12 * kMiB);
  EXPECT_EQ(info->format_version, kFormatVersion);
  EXPECT_EQ(info->volume_id, TestId(1));
  EXPECT_TRUE(info->clean);
  OpenOptions o;
  o.path = path;
  auto v = SealedVolume::Open(o, dek_);
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(ReadHeader(path)->clean) << "open must clear the clean flag";
  ASSERT_TRUE((*v)->Close().ok());
  EXPECT_TRUE(ReadHeader(path)->clean);
}

TEST_F(SealedVolumeTest, RejectsBadRequests) {
  auto v = FormatMem(4 * kMiB);
  std::vector<uint8_t> buf(8192);
  EXPECT_EQ(v->Io(IoOp::kRead, 100, std::span<uint8_t>(buf.data(), 4096)), -EINVAL);
  EXPECT_EQ(v->Io(IoOp::kRead, 0, std::span<uint8_t>(buf.data(), 100)), -EINVAL);
  EXPECT_EQ(v->Io(IoOp::kWrite, 4 * kMiB - 4096, buf), -EINVAL);
  ASSERT_TRUE(v->Close().ok());
  EXPECT_EQ(v->Io(IoOp::kRead, 0, std::span<uint8_t>(buf.data(), 4096)), -EROFS);
}

}  // namespace
}  // namespace sealvol::io

namespace sealvol::io {
namespace {

// Issue 18: in manual mode RunPending ran every worker once, so a request
// submitted by a completion callback to a worker that had already run was
// left queued. It must run until every queue is empty.
TEST(SealedVolumeManualTest, RunPendingRunsWorkSubmittedByCallbacks) {
  const auto dek = testing::TestDek(2);
  auto v = SealedVolume::FormatOn(std::make_unique<FaultStore>(0),
                            testing::FormatOf(8 << 20), dek, testing::Manual(2));
  ASSERT_TRUE(v.ok()) << v.status();
  struct Chain {
    SealedVolume* engine;
    IoRequest first, second;
    std::vector<uint8_t> a = testing::Pattern(1), b = testing::Pattern(2);
    int first_result = 1, second_result = 1;
  } c;
  c.engine = v->get();
  // Group 1 belongs to worker 1, group 0 to worker 0, which runs first.
  c.first.op = IoOp::kWrite;
  c.first.offset = 1024 * 4096;
  c.first.length = 4096;
  c.first.buffer = c.a;
  c.first.context = &c;
  c.first.done = [](IoRequest* r, int result) {
    auto* chain = static_cast<Chain*>(r->context);
    chain->first_result = result;
    chain->second.op = IoOp::kWrite;
    chain->second.offset = 0;
    chain->second.length = 4096;
    chain->second.buffer = chain->b;
    chain->second.context = chain;
    chain->second.done = [](IoRequest* r2, int result2) {
      static_cast<Chain*>(r2->context)->second_result = result2;
    };
    chain->engine->Submit(&chain->second);
  };
  (*v)->Submit(&c.first);
  (*v)->RunPending();
  EXPECT_EQ(c.first_result, 0);
  EXPECT_EQ(c.second_result, 0) << "the callback's request was left queued";
}

}  // namespace
}  // namespace sealvol::io
