// The copy engine of snapshots and clones (io/volume_copy.h): a cut and a
// re-encrypting copy give back the same bytes under a fresh key that shares
// no ciphertext block and no key with the source; writes after the cut stay
// out; a copy killed with -9 resumes to the same bytes.
#include "io/volume_copy.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "base/durable_file.h"
#include "base/error_kind.h"
#include "base/unique_fd.h"
#include "engine_test_support.h"
#include "gtest/gtest.h"
#include "io/copy_progress.h"

namespace sealvol::io {
namespace {

using testing::FormatOf;
using testing::Pattern;
using testing::TempDir;
using testing::TestDek;
using testing::TestId;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kSourceSize = 32 * kMiB;

std::string ReadFile(const std::string& path) {
  std::string out;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  EXPECT_TRUE(fd.valid()) << path;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

class VolumeCopyTest : public ::testing::Test {
 protected:
  VolumeCopyTest()
      : source_dek_(TestDek(1)), target_dek_(TestDek(2)),
        source_(dir_.file("source.img")), cut_(dir_.file("cut.img")),
        target_(dir_.file("target.img")) {}

  static EngineOptions Threaded(bool read_only = false) {
    EngineOptions o;
    o.worker_threads = 2;
    o.read_only = read_only;
    return o;
  }

  // A volume with data in some blocks of every group and never-written
  // stretches between; the engine is left open (live).
  std::unique_ptr<SealedVolume> LiveSource(uint64_t size = kSourceSize) {
    FormatOptions f = FormatOf(size, 1);
    f.path = source_;
    auto v = SealedVolume::FormatFile(f, source_dek_, Threaded());
    EXPECT_TRUE(v.ok()) << v.status();
    for (uint64_t block = 0; block < size / 4096; block += 97) {
      std::vector<uint8_t> d = Pattern(block, 4096 * 3);
      EXPECT_EQ((*v)->Io(IoOp::kWrite, block * 4096,
                         std::span(d).first(std::min<uint64_t>(
                             d.size(), size - block * 4096))),
                0);
    }
    return std::move(v).value();
  }

  CopyOptions Options(const std::string& source) {
    CopyOptions o;
    o.source_path = source;
    o.source_dek = &source_dek_;
    o.target_dek = &target_dek_;
    o.target_path = target_;
    o.target_volume_id = TestId(9);
    o.progress_interval_bytes = 4 * kMiB;
    return o;
  }

  // The whole plaintext of the image at `path` under `dek`.
  static std::vector<uint8_t> Contents(const std::string& path,
                                       const crypto::SecretBytes& dek) {
    auto v = SealedVolume::OpenFile(path, dek, Threaded(/*read_only=*/true));
    EXPECT_TRUE(v.ok()) << path << ": " << v.status();
    if (!v.ok()) return {};
    std::vector<uint8_t> out((*v)->size_bytes());
    EXPECT_EQ((*v)->Io(IoOp::kRead, 0, out), 0);
    EXPECT_TRUE((*v)->Close().ok());
    return out;
  }

  TempDir dir_;
  crypto::SecretBytes source_dek_, target_dek_;
  std::string source_, cut_, target_;
};

TEST_F(VolumeCopyTest, CopyGivesBackTheSameBytesUnderTheTargetId) {
  auto live = LiveSource();
  ASSERT_TRUE(live->Close().ok());
  const std::vector<uint8_t> want = Contents(source_, source_dek_);
  ASSERT_TRUE(CutImage(source_, cut_).ok());
  std::vector<std::pair<uint64_t, uint64_t>> calls;
  CopyOptions o = Options(cut_);
  o.on_progress = [&](uint64_t done, uint64_t total) {
    calls.emplace_back(done, total);
  };
  auto r = CopySealed(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->bytes_total, kSourceSize);
  EXPECT_FALSE(r->state.open);
  EXPECT_FALSE(r->resumed);
  // Only blocks holding data were sealed: 3 of every 97 blocks.
  const uint64_t data_blocks = 3 * ((kSourceSize / 4096 + 96) / 97);
  EXPECT_LE(r->bytes_sealed, data_blocks * 4096);
  EXPECT_GE(r->bytes_sealed, (data_blocks - 3) * 4096);
  ASSERT_FALSE(calls.empty());
  EXPECT_EQ(calls.back(), std::make_pair(kSourceSize, kSourceSize));

  auto header = ReadHeader(target_);
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->volume_id, TestId(9));
  EXPECT_EQ(header->format_id, r->format_id);
  EXPECT_TRUE(header->clean);
  EXPECT_EQ(header->state_epoch, r->state.epoch);
  EXPECT_EQ(header->state_root, r->state.root);
  EXPECT_EQ(Contents(target_, target_dek_), want);
  // The cut (the private source) is left closed cleanly.
  auto cut_header = ReadHeader(cut_);
  ASSERT_TRUE(cut_header.ok());
  EXPECT_TRUE(cut_header->clean);
}

TEST_F(VolumeCopyTest, CutOfALiveVolumeHoldsWhatWasFlushedAndNothingAfter) {
  auto live = LiveSource();
  std::vector<uint8_t> before = Pattern(1001, 8192);
  ASSERT_EQ(live->Io(IoOp::kWrite, 40 * 4096, before), 0);
  ASSERT_EQ(live->Io(IoOp::kFlush, 0, {}), 0);
  ASSERT_TRUE(CutImage(source_, cut_).ok());
  std::vector<uint8_t> after = Pattern(2002, 8192);
  ASSERT_EQ(live->Io(IoOp::kWrite, 40 * 4096, after), 0);
  ASSERT_EQ(live->Io(IoOp::kWrite, 5000 * 4096, after), 0);
  ASSERT_TRUE(live->Close().ok());

  auto r = CopySealed(Options(cut_));
  ASSERT_TRUE(r.ok()) << r.status();
  const std::vector<uint8_t> copy = Contents(target_, target_dek_);
  ASSERT_EQ(copy.size(), kSourceSize);
  EXPECT_TRUE(std::equal(before.begin(), before.end(), copy.begin() + 40 * 4096))
      << "the copy lacks what was written before the cut";
  const std::vector<uint8_t> zeros(8192, 0);
  EXPECT_TRUE(std::equal(zeros.begin(), zeros.end(), copy.begin() + 5000 * 4096))
      << "a write after the cut is in the copy";
  // And the source itself moved on.
  const std::vector<uint8_t> now = Contents(source_, source_dek_);
  EXPECT_TRUE(std::equal(after.begin(), after.end(), now.begin() + 40 * 4096));
}

TEST_F(VolumeCopyTest, NoCiphertextBlockOfTheTargetIsInTheSource) {
  auto live = LiveSource();
  ASSERT_TRUE(live->Close().ok());
  ASSERT_TRUE(CutImage(source_, cut_).ok());
  ASSERT_TRUE(CopySealed(Options(cut_)).ok());
  const std::string source = ReadFile(source_);
  const std::string target = ReadFile(target_);
  const std::string zero(4096, '\0');
  std::set<std::string> blocks;
  for (size_t at = 0; at + 4096 <= source.size(); at += 4096) {
    std::string b = source.substr(at, 4096);
    if (b != zero) blocks.insert(std::move(b));
  }
  ASSERT_GT(blocks.size(), 100u);
  size_t shared = 0, nonzero = 0;
  for (size_t at = 0; at + 4096 <= target.size(); at += 4096) {
    const std::string b = target.substr(at, 4096);
    if (b == zero) continue;
    ++nonzero;
    shared += blocks.count(b);
  }
  EXPECT_GT(nonzero, 100u);
  EXPECT_EQ(shared, 0u) << "the target shares ciphertext blocks with the source";
}

TEST_F(VolumeCopyTest, NeitherKeyOpensTheOthersImage) {
  auto live = LiveSource();
  ASSERT_TRUE(live->Close().ok());
  ASSERT_TRUE(CutImage(source_, cut_).ok());
  ASSERT_TRUE(CopySealed(Options(cut_)).ok());
  auto with_source_key =
      SealedVolume::OpenFile(target_, source_dek_, Threaded(/*read_only=*/true));
  ASSERT_FALSE(with_source_key.ok());
  EXPECT_EQ(GetErrorKind(with_source_key.status()), ErrorKind::kWrongKey)
      << with_source_key.status();
  auto with_target_key =
      SealedVolume::OpenFile(source_, target_dek_, Threaded(/*read_only=*/true));
  ASSERT_FALSE(with_target_key.ok());
  EXPECT_EQ(GetErrorKind(with_target_key.status()), ErrorKind::kWrongKey);
}

TEST_F(VolumeCopyTest, ALargerTargetReadsZerosPastTheSource) {
  auto live = LiveSource();
  ASSERT_TRUE(live->Close().ok());
  const std::vector<uint8_t> want = Contents(source_, source_dek_);
  ASSERT_TRUE(CutImage(source_, cut_).ok());
  CopyOptions o = Options(cut_);
  o.target_size_bytes = 3 * kSourceSize;
  auto r = CopySealed(o);
  ASSERT_TRUE(r.ok()) << r.status();
  const std::vector<uint8_t> copy = Contents(target_, target_dek_);
  ASSERT_EQ(copy.size(), 3 * kSourceSize);
  EXPECT_TRUE(std::equal(want.begin(), want.end(), copy.begin()));
  EXPECT_TRUE(std::all_of(copy.begin() + kSourceSize, copy.end(),
                          [](uint8_t b) { return b == 0; }));
}

TEST_F(VolumeCopyTest, ASmallerTargetIsRefusedNamingTheSize) {
  auto live = LiveSource();
  ASSERT_TRUE(live->Close().ok());
  ASSERT_TRUE(CutImage(source_, cut_).ok());
  CopyOptions o = Options(cut_);
  o.target_size_bytes = kSourceSize - 4096;
  auto r = CopySealed(o);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
  EXPECT_EQ(GetErrorKind(r.status()), ErrorKind::kBadSize);
  EXPECT_NE(r.status().message().find("target_size_bytes"), std::string::npos);
  EXPECT_NE(::access(target_.c_str(), F_OK), 0) << "a refused copy made a target";
}

TEST_F(VolumeCopyTest, BadOptionsAreRefusedNamingTheField) {
  auto live = LiveSource(4 * kMiB);
  ASSERT_TRUE(live->Close().ok());
  struct Case {
    const char* field;
    std::function<void(CopyOptions&)> edit;
  };
  crypto::SecretBytes same = TestDek(1);
  const Case cases[] = {
      {"source_path", [](CopyOptions& o) { o.source_path.clear(); }},
      {"target_path", [](CopyOptions& o) { o.target_path.clear(); }},
      {"source_dek", [](CopyOptions& o) { o.source_dek = nullptr; }},
      {"target_dek", [&](CopyOptions& o) { o.target_dek = &same; }},
      {"target_volume_id", [](CopyOptions& o) { o.target_volume_id = {}; }},
      {"source_expected_state",
       [](CopyOptions& o) {
         o.source_kind = CopyOptions::SourceKind::kSnapshotImage;
       }},
      {"target_size_bytes", [](CopyOptions& o) { o.target_size_bytes = 100; }},
  };
  for (const Case& c : cases) {
    CopyOptions o = Options(source_);
    c.edit(o);
    auto r = CopySealed(o);
    ASSERT_FALSE(r.ok()) << c.field;
    EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
    EXPECT_NE(r.status().message().find(c.field), std::string::npos)
        << c.field << ": " << r.status();
  }
  // The source as its own target.
  CopyOptions o = Options(source_);
  o.target_path = source_;
  auto r = CopySealed(o);
  EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
  EXPECT_NE(r.status().message().find("the source itself"), std::string::npos);
}

TEST_F(VolumeCopyTest, ASnapshotImageIsCheckedAgainstItsExpectedState) {
  auto live = LiveSource(8 * kMiB);
  ASSERT_TRUE(live->Close().ok());
  const VolumeState committed = live->state();
  CopyOptions o = Options(source_);
  o.source_kind = CopyOptions::SourceKind::kSnapshotImage;
  VolumeState stale = committed;
  stale.epoch += 5;
  o.source_expected_state = stale;
  auto refused = CopySealed(o);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(GetErrorKind(refused.status()), ErrorKind::kRolledBack)
      << refused.status();
  ASSERT_TRUE(CopyProgressFile(target_, ".copy", "copy").Remove().ok());
  (void)::unlink(target_.c_str());

  o.source_expected_state = committed;
  auto r = CopySealed(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(Contents(target_, target_dek_), Contents(source_, source_dek_));
  // Read only: the snapshot image is as it was.
  auto header = ReadHeader(source_);
  ASSERT_TRUE(header.ok());
  EXPECT_EQ(header->state_epoch, committed.epoch);
  EXPECT_EQ(header->state_root, committed.root);
}

TEST_F(VolumeCopyTest, AFinishedCopyAskedAgainGivesTheSameResult) {
  auto live = LiveSource(8 * kMiB);
  ASSERT_TRUE(live->Close().ok());
  ASSERT_TRUE(CutImage(source_, cut_).ok());
  auto first = CopySealed(Options(cut_));
  ASSERT_TRUE(first.ok()) << first.status();
  // Even with the cut gone (the node removes it before reporting).
  ASSERT_EQ(::unlink(cut_.c_str()), 0);
  auto again = CopySealed(Options(cut_));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->format_id, first->format_id);
  EXPECT_EQ(again->state, first->state);
  EXPECT_TRUE(again->resumed);
  ASSERT_TRUE(ForgetCopyProgress(target_).ok());
  ASSERT_TRUE(CutImage(source_, cut_).ok());
  auto after = CopySealed(Options(cut_));
  EXPECT_TRUE(absl::IsAlreadyExists(after.status())) << after.status();
}

TEST_F(VolumeCopyTest, AnInterruptedFormatIsFormattedAgainUnderANewFormatId) {
  auto live = LiveSource(8 * kMiB);
  ASSERT_TRUE(live->Close().ok());
  ASSERT_TRUE(CutImage(source_, cut_).ok());
  // A run that died after formatting, before its record said so: the
  // record still says "formatting" and the image is complete.
  auto first = CopySealed(Options(cut_));
  ASSERT_TRUE(first.ok());
  const CopyProgressFile file(target_, ".copy", "copy");
  auto p = file.Load();
  ASSERT_TRUE(p.ok());
  p->phase = CopyProgress::Phase::kFormatting;
  p->format_id.clear();
  p->final_state.reset();
  p->next_offset = 0;
  ASSERT_TRUE(file.Save(*p).ok());
  auto again = CopySealed(Options(cut_));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_NE(again->format_id, first->format_id);
  EXPECT_EQ(Contents(target_, target_dek_), Contents(source_, source_dek_));
}

TEST_F(VolumeCopyTest, AnotherSourceIsRefusedOnResume) {
  auto live = LiveSource(8 * kMiB);
  ASSERT_TRUE(live->Close().ok());
  ASSERT_TRUE(CutImage(source_, cut_).ok());
  ASSERT_TRUE(CopySealed(Options(cut_)).ok());
  const CopyProgressFile file(target_, ".copy", "copy");
  auto p = file.Load();
  ASSERT_TRUE(p.ok());
  p->phase = CopyProgress::Phase::kCopying;
  p->final_state.reset();
  p->next_offset = 4 * kMiB;
  ASSERT_TRUE(file.Save(*p).ok());
  // A new cut is another file: the half-done target must not mix the two.
  const std::string other = dir_.file("other-cut.img");
  ASSERT_TRUE(CutImage(source_, other).ok());
  auto r = CopySealed(Options(other));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
  EXPECT_NE(r.status().message().find("not what the interrupted copy"),
            std::string::npos);
}

// kill -9 of a process in the middle of a copy, then a resume: same bytes.
TEST_F(VolumeCopyTest, ACopyKilledMidwayResumesToTheSameBytes) {
  auto live = LiveSource(64 * kMiB);
  ASSERT_TRUE(live->Close().ok());
  const std::vector<uint8_t> want = Contents(source_, source_dek_);
  ASSERT_TRUE(CutImage(source_, cut_).ok());
  const CopyProgressFile file(target_, ".copy", "copy");
  bool killed = false;
  uint64_t killed_at = 0;
  for (int attempt = 0; attempt < 8 && !killed; ++attempt) {
    (void)file.Remove();
    (void)::unlink(target_.c_str());
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      // Key memory is not inherited (MADV_DONTFORK): the child's own keys.
      const crypto::SecretBytes source_dek = TestDek(1), target_dek = TestDek(2);
      CopyOptions o = Options(cut_);
      o.source_dek = &source_dek;
      o.target_dek = &target_dek;
      o.progress_interval_bytes = 1 * kMiB;
      auto r = CopySealed(o);
      ::_exit(r.ok() ? 0 : 1);
    }
    // Kill it once a record beyond the start is durable, while it writes.
    for (int i = 0; i < 20000; ++i) {
      auto p = file.Load();
      if (p.ok() && p->phase == CopyProgress::Phase::kCopying &&
          p->next_offset >= 8 * kMiB) {
        killed = ::kill(child, SIGKILL) == 0;
        break;
      }
      if (p.ok() && p->phase == CopyProgress::Phase::kDone) break;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    killed = killed && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    if (killed) {
      auto p = file.Load();
      ASSERT_TRUE(p.ok()) << p.status();
      killed = p->phase == CopyProgress::Phase::kCopying;
      killed_at = p->next_offset;
    }
  }
  ASSERT_TRUE(killed) << "could not kill a copy in the middle in 8 attempts";
  auto header = ReadHeader(target_);
  ASSERT_TRUE(header.ok());
  EXPECT_FALSE(header->clean) << "the killed copy's target should be unclean";
  auto r = CopySealed(Options(cut_));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->resumed);
  EXPECT_EQ(r->resumed_from, killed_at);
  EXPECT_GT(r->resumed_from, 0u);
  EXPECT_LT(r->bytes_sealed, want.size()) << "the resume copied everything again";
  EXPECT_EQ(Contents(target_, target_dek_), want);
}

TEST_F(VolumeCopyTest, CutIsSparseAndByteEqual) {
  auto live = LiveSource();
  ASSERT_TRUE(live->Close().ok());
  ASSERT_TRUE(CutImage(source_, cut_).ok());
  EXPECT_EQ(ReadFile(cut_), ReadFile(source_));
  // Holes stay holes (a reflink shares the extents instead).
  EXPECT_LE(testing::AllocatedBytes(cut_),
            testing::AllocatedBytes(source_) + 4 * kMiB);
}

// The FICLONE branch, on a file system that shares extents (xfs with
// reflink, loop-mounted in the test's directory). Needs root and mkfs.xfs.
TEST_F(VolumeCopyTest, CutSharesExtentsWhereTheFileSystemCan) {
  if (::geteuid() != 0 || ::access("/usr/sbin/mkfs.xfs", X_OK) != 0) {
    GTEST_SKIP() << "needs root and mkfs.xfs for a reflink file system";
  }
  const std::string fs = dir_.file("xfs.img"), mnt = dir_.file("mnt");
  ASSERT_EQ(::mkdir(mnt.c_str(), 0700), 0);
  ASSERT_EQ(std::system(("truncate -s 512M '" + fs + "' && mkfs.xfs -q -m reflink=1 '" +
                         fs + "' && mount -o loop '" + fs + "' '" + mnt + "'")
                            .c_str()),
            0);
  struct Unmount {
    std::string mnt;
    ~Unmount() { (void)std::system(("umount '" + mnt + "'").c_str()); }
  } unmount{mnt};
  const std::string image = mnt + "/source.img", cut = mnt + "/cut.img";
  FormatOptions f = FormatOf(8 * kMiB, 1);
  f.path = image;
  auto v = SealedVolume::FormatFile(f, source_dek_, Threaded());
  ASSERT_TRUE(v.ok()) << v.status();
  std::vector<uint8_t> d = Pattern(5, 4 * kMiB);
  ASSERT_EQ((*v)->Io(IoOp::kWrite, 0, d), 0);
  ASSERT_TRUE((*v)->Close().ok());
  EXPECT_TRUE(CutSharesExtents(image, mnt));
  ::sync();
  struct statvfs before {}, after {};
  ASSERT_EQ(::statvfs(mnt.c_str(), &before), 0);
  ASSERT_TRUE(CutImage(image, cut).ok());
  ::sync();
  ASSERT_EQ(::statvfs(mnt.c_str(), &after), 0);
  EXPECT_EQ(ReadFile(cut), ReadFile(image));
  // A reflink allocates no data blocks (a copy would take the 4 MiB again).
  const uint64_t used = (before.f_bfree - after.f_bfree) * before.f_frsize;
  EXPECT_LT(used, 1 * kMiB) << "the cut copied the data instead of sharing it";
}

TEST_F(VolumeCopyTest, CutRefusesAnExistingCutAndAMissingSource) {
  auto live = LiveSource(4 * kMiB);
  ASSERT_TRUE(live->Close().ok());
  ASSERT_TRUE(WriteFileAtomically(dir_.path(), "cut.img", "keep me", 0600).ok());
  absl::Status s = CutImage(source_, cut_);
  EXPECT_TRUE(absl::IsAlreadyExists(s)) << s;
  EXPECT_EQ(ReadFile(cut_), "keep me");
  s = CutImage(dir_.file("missing.img"), dir_.file("cut2.img"));
  EXPECT_TRUE(absl::IsNotFound(s)) << s;
  s = CutImage(dir_.path(), dir_.file("cut3.img"));
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_NE(::access(dir_.file("cut3.img").c_str(), F_OK), 0);
}

TEST_F(VolumeCopyTest, AFailedCutLeavesNoPartialFile) {
  auto live = LiveSource(4 * kMiB);
  ASSERT_TRUE(live->Close().ok());
  ASSERT_EQ(::setenv("SEALVOL_FAIL_AFTER_STEP", "cut.copied", 1), 0);
  const absl::Status s = CutImage(source_, cut_);
  ::unsetenv("SEALVOL_FAIL_AFTER_STEP");
  EXPECT_FALSE(s.ok());
  EXPECT_NE(::access(cut_.c_str(), F_OK), 0) << "a failed cut left " << cut_;
}

}  // namespace
}  // namespace sealvol::io
