// The node's copy jobs (csi/copy_job_runner.h) over the fakes of its seams
// (FixedKeySource for the broker, FakeDataPath, a recording freeze) and the
// real copy engine on image files: no root, FUSE or mounts. A job's life,
// a restart in each of its states, and the refusals.
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "base/mutex.h"
#include "csi/committed_state.h"
#include "csi/copy_job_runner.h"
#include "csi/node_service.h"
#include "gtest/gtest.h"
#include "io/sealed_volume.h"
#include "io/volume_copy.h"
#include "kms/broker/refusal.h"
#include "tests/fakes/fake_data_path.h"
#include "tests/fakes/fixed_key_source.h"
#include "tests/support/temp_dir.h"

namespace sealvol::csi {
namespace {

namespace fs = std::filesystem;
using kms::CopyState;
using testing::FakeDataPath;
using testing::FixedKeySource;

constexpr uint64_t kSize = 4 << 20;
constexpr char kSource[] = "sv-0123456789abcdef0123456789abcdef";
constexpr char kTarget[] = "sv-11111111111111111111111111111111";

// The keys FixedKeySource releases: the volume key (source) and the copy's.
crypto::SecretBytes Key(bool target) {
  auto key = crypto::SecretBytes::Allocate(32);
  EXPECT_TRUE(key.ok());
  for (size_t i = 0; i < 32; ++i) {
    key->data()[i] = static_cast<uint8_t>(target ? i * 13 + 5 : i * 7 + 1);
  }
  return *std::move(key);
}

// One 4 KiB block, aligned for the engine, filled with `fill`.
struct Block {
  explicit Block(uint8_t fill) {
    data = static_cast<uint8_t*>(std::aligned_alloc(4096, 4096));
    std::memset(data, fill, 4096);
  }
  ~Block() { std::free(data); }
  uint8_t* data;
};

// Runs one request to its end.
int Io(io::VolumeIo& volume, io::IoOp op, uint64_t offset, uint8_t* data) {
  struct Wait {
    Mutex mu;
    CondVar cv;
    bool done ABSL_GUARDED_BY(mu) = false;
    int result ABSL_GUARDED_BY(mu) = 0;
  } wait;
  io::IoRequest request;
  request.op = op;
  request.offset = offset;
  request.length = op == io::IoOp::kFlush ? 0 : 4096;
  if (op != io::IoOp::kFlush) request.buffer = {data, 4096};
  request.context = &wait;
  request.done = [](io::IoRequest* r, int result) {
    auto* w = static_cast<Wait*>(r->context);
    MutexLock lock(&w->mu);
    w->result = result;
    w->done = true;
    w->cv.SignalAll();
  };
  volume.Submit(&request);
  MutexLock lock(&wait.mu);
  while (!wait.done) wait.cv.Wait(&wait.mu);
  return wait.result;
}

// Blocks (4 KiB index -> fill byte) of an image, opened with `key`.
std::map<uint64_t, uint8_t> ReadBlocks(const std::string& path,
                                       const crypto::SecretBytes& key,
                                       std::vector<uint64_t> blocks) {
  std::map<uint64_t, uint8_t> out;
  auto volume = io::SealedVolume::Open({.path = path, .read_only = true}, key);
  EXPECT_TRUE(volume.ok()) << volume.status();
  if (!volume.ok()) return out;
  for (uint64_t b : blocks) {
    Block block(0xEE);
    EXPECT_EQ(Io(**volume, io::IoOp::kRead, b * 4096, block.data), 0);
    bool uniform = true;
    for (int i = 1; i < 4096; ++i) uniform &= block.data[i] == block.data[0];
    EXPECT_TRUE(uniform) << "block " << b << " of " << path;
    out[b] = block.data[0];
  }
  EXPECT_TRUE((*volume)->Close().ok());
  return out;
}

// A freeze that records what it was asked and when, relative to the data
// path's calls.
class RecordingFreeze {
 public:
  explicit RecordingFreeze(FakeDataPath* data_path) : data_path_(data_path) {}

  std::function<absl::StatusOr<std::unique_ptr<FrozenFilesystem>>(
      const std::string&)>
  Hook() {
    return [this](const std::string& path)
               -> absl::StatusOr<std::unique_ptr<FrozenFilesystem>> {
      events.push_back("freeze " + path + " after " +
                       std::to_string(data_path_->calls().size()) + " calls");
      return std::unique_ptr<FrozenFilesystem>(new Frozen(this, path));
    };
  }
  std::vector<std::string> events;

 private:
  class Frozen final : public FrozenFilesystem {
   public:
    Frozen(RecordingFreeze* owner, std::string path)
        : owner_(owner), path_(std::move(path)) {}
    ~Frozen() override { Thaw().IgnoreError(); }
    absl::Status Thaw() override {
      if (thawed_) return absl::OkStatus();
      thawed_ = true;
      owner_->events.push_back(
          "thaw " + path_ + " after " +
          std::to_string(owner_->data_path_->calls().size()) + " calls");
      return absl::OkStatus();
    }

   private:
    RecordingFreeze* const owner_;
    const std::string path_;
    bool thawed_ = false;
  };
  FakeDataPath* const data_path_;
};

class CopyJobRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    stages_ = std::make_unique<StageStore>(dir_ + "/state");
    ASSERT_TRUE(stages_->CreateRoot().ok());
    runner_ = MakeRunner();
  }
  void TearDown() override { runner_.reset(); }

  std::unique_ptr<CopyJobRunner> MakeRunner() {
    return std::make_unique<CopyJobRunner>(
        CopyJobRunnerOptions{.node_id = "node-1",
                             .poll_interval = absl::Milliseconds(20),
                             .progress_interval_bytes = 1 << 20,
                             .freeze = freeze_.Hook()},
        &keys_, &data_path_, stages_.get(), &locks_);
  }

  // The source volume's image under the fixed key, with `blocks` written.
  void MakeImage(const std::string& id, std::map<uint64_t, uint8_t> blocks,
                 bool target_key = false) {
    ASSERT_TRUE(stages_->CreateVolumeDir(id).ok());
    io::FormatOptions format;
    format.path = stages_->ImagePath(id);
    format.size_bytes = kSize;
    format.volume_id = *io::ParseVolumeId(id);
    auto volume = io::SealedVolume::Format(format, Key(target_key));
    ASSERT_TRUE(volume.ok()) << volume.status();
    for (auto [b, fill] : blocks) {
      Block block(fill);
      ASSERT_EQ(Io(**volume, io::IoOp::kWrite, b * 4096, block.data), 0);
    }
    ASSERT_TRUE((*volume)->Close().ok());
    // What the registry holds once the image is claimed and closed.
    std::lock_guard lock(keys_.mu);
    keys_.formats[id] = io::FormatIdString((*volume)->format_id());
    keys_.states[id] = ToCommittedState((*volume)->state());
  }
  void AddJob(const std::string& target, const std::string& source,
              broker::CopyKind kind, CopyState state = CopyState::kPending,
              uint64_t capacity = kSize) {
    keys_.copy_jobs[target] = {.target_id = target,
                               .source_id = source,
                               .kind = kind,
                               .state = state,
                               .capacity_bytes = capacity};
  }
  // The source staged on this node and served by the (fake) data path.
  void Serve(const std::string& id, bool block) {
    StageRecord record;
    record.volume_id = id;
    record.staging_path = dir_ + "/staging";
    record.block = block;
    record.fs_type = "ext4";
    record.size_bytes = kSize;
    ASSERT_TRUE(stages_->Save(record).ok());
    ASSERT_TRUE(data_path_.Attach({.volume_id = id}, Key(false)).ok());
  }
  std::vector<CopyState> ReportedStates() {
    std::vector<CopyState> out;
    for (const auto& r : keys_.copy_reports) {
      if (out.empty() || out.back() != r.state) out.push_back(r.state);
    }
    return out;
  }
  const broker::CopyReport& LastReport() { return keys_.copy_reports.back(); }
  std::string TargetDir() const { return dir_ + "/state/volumes/" + kTarget; }
  // What a finished job leaves in the target's directory: its image only.
  void ExpectOnlyTheImageLeft() {
    EXPECT_TRUE(fs::exists(TargetDir() + "/image"));
    EXPECT_FALSE(fs::exists(TargetDir() + "/image.copy"));
    EXPECT_FALSE(fs::exists(TargetDir() + "/cut"));
    EXPECT_FALSE(fs::exists(TargetDir() + "/cut.partial"));
  }
  void ExpectNothingLeft() {
    EXPECT_FALSE(fs::exists(TargetDir() + "/image"));
    EXPECT_FALSE(fs::exists(TargetDir() + "/image.copy"));
    EXPECT_FALSE(fs::exists(TargetDir() + "/cut"));
    EXPECT_FALSE(fs::exists(TargetDir() + "/cut.partial"));
  }
  CopyPass Pass() {
    auto pass = runner_->RunOnce();
    EXPECT_TRUE(pass.ok()) << pass.status();
    return pass.ok() ? *pass : CopyPass{};
  }

  sealvol::testing::TempDir tmp_{"sealvol-copy-runner"};
  const std::string dir_ = tmp_.path();
  std::unique_ptr<StageStore> stages_;
  FixedKeySource keys_;
  FakeDataPath data_path_;
  VolumeLocks locks_;
  RecordingFreeze freeze_{&data_path_};
  std::unique_ptr<CopyJobRunner> runner_;
};

// A snapshot of a volume that is not served: cut from the closed image under
// its lock, reported cut, copied under the target's own key, reported
// ready with the target image's format id and closing state.
TEST_F(CopyJobRunnerTest, SnapshotOfAClosedVolumeIsCutCopiedAndReportedReady) {
  MakeImage(kSource, {{0, 0x41}, {5, 0x42}, {700, 0x43}});
  AddJob(kTarget, kSource, broker::CopyKind::kSnapshot);
  const CopyPass pass = Pass();
  EXPECT_EQ(pass.ready, 1);
  EXPECT_EQ(keys_.CopyStateOf(kTarget), CopyState::kReady);
  const std::vector<CopyState> expected = {CopyState::kCut, CopyState::kReady};
  EXPECT_EQ(ReportedStates(), expected);
  const broker::CopyReport& ready = LastReport();
  auto header = io::ReadHeader(stages_->ImagePath(kTarget));
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(ready.format_id, io::FormatIdString(header->format_id));
  EXPECT_EQ(io::VolumeIdString(header->volume_id), kTarget);
  ASSERT_TRUE(ready.closed_state.has_value());
  EXPECT_FALSE(ready.closed_state->open);
  EXPECT_EQ(ready.bytes_done, ready.bytes_total);
  EXPECT_EQ(keys_.copy_key_releases, 1);
  // The copy reads back under its own key, block for block.
  const std::map<uint64_t, uint8_t> blocks = {{0, 0x41}, {1, 0}, {5, 0x42}, {700, 0x43}};
  EXPECT_EQ(ReadBlocks(stages_->ImagePath(kTarget), Key(true), {0, 1, 5, 700}),
            blocks);
  ExpectOnlyTheImageLeft();
  EXPECT_TRUE(freeze_.events.empty()) << "froze a volume that is not served";
  EXPECT_TRUE(data_path_.calls().empty());
  // The job is no longer listed: the next pass does nothing.
  EXPECT_EQ(Pass().ready, 0);
}

// A served mount volume: its file system is frozen before the engine's
// writes are held, and thawed after they are released.
TEST_F(CopyJobRunnerTest, ServedMountVolumeIsFrozenAndHeldAroundTheCut) {
  MakeImage(kSource, {{3, 0x51}});
  Serve(kSource, /*block=*/false);
  AddJob(kTarget, kSource, broker::CopyKind::kClone);
  EXPECT_EQ(Pass().ready, 1);
  const std::vector<std::string> calls = {"attach " + std::string(kSource),
                                          "hold " + std::string(kSource),
                                          "release " + std::string(kSource)};
  EXPECT_EQ(data_path_.calls(), calls);
  const std::vector<std::string> events = {
      "freeze " + dir_ + "/staging after 1 calls",
      "thaw " + dir_ + "/staging after 3 calls"};
  EXPECT_EQ(freeze_.events, events);
  EXPECT_EQ(ReadBlocks(stages_->ImagePath(kTarget), Key(true), {3}).at(3), 0x51);
}

// A write hold that cannot be taken: the file system is thawed again and
// no cut is left. Writes in flight stuck past the hold's timeout
// (DeadlineExceeded) leave the job for the next pass; a permanent refusal
// fails it with its reason. The volume goes on serving.
TEST_F(CopyJobRunnerTest, AFailedWriteHoldThawsAndLeavesNoCut) {
  data_path_.FailHolds(absl::DeadlineExceededError("writes in flight stuck"));
  MakeImage(kSource, {{3, 0x51}});
  Serve(kSource, /*block=*/false);
  AddJob(kTarget, kSource, broker::CopyKind::kSnapshot);
  CopyPass pass = Pass();
  EXPECT_EQ(pass.failed, 0);
  EXPECT_EQ(pass.ready, 0);
  EXPECT_EQ(keys_.CopyStateOf(kTarget), CopyState::kPending);
  std::vector<std::string> events = {
      "freeze " + dir_ + "/staging after 1 calls",
      "thaw " + dir_ + "/staging after 1 calls"};
  EXPECT_EQ(freeze_.events, events);
  EXPECT_FALSE(fs::exists(stages_->CutPath(kTarget)));
  EXPECT_FALSE(fs::exists(stages_->CutPath(kTarget) + ".partial"));

  data_path_.FailHolds(absl::FailedPreconditionError("volume is closed"));
  pass = Pass();
  EXPECT_EQ(pass.failed, 1);
  EXPECT_EQ(keys_.CopyStateOf(kTarget), CopyState::kFailed);
  EXPECT_TRUE(absl::StrContains(LastReport().error, "volume is closed"))
      << LastReport().error;
  events.push_back("freeze " + dir_ + "/staging after 1 calls");
  events.push_back("thaw " + dir_ + "/staging after 1 calls");
  EXPECT_EQ(freeze_.events, events);
  EXPECT_FALSE(fs::exists(stages_->CutPath(kTarget)));
  EXPECT_FALSE(fs::exists(stages_->ImagePath(kTarget)));
  EXPECT_TRUE(data_path_.Device(kSource).ok());
}

// A restore reads the snapshot's image (no cut), into a larger target whose
// tail reads as zeros; progress is reported as pending, then ready.
TEST_F(CopyJobRunnerTest, RestoreCopiesTheSnapshotImageIntoALargerVolume) {
  MakeImage(kSource, {{0, 0x71}, {1000, 0x72}});
  AddJob(kTarget, kSource, broker::CopyKind::kRestore, CopyState::kPending,
         2 * kSize);
  EXPECT_EQ(Pass().ready, 1);
  EXPECT_FALSE(fs::exists(stages_->CutPath(kTarget)));
  for (const auto& report : keys_.copy_reports) {
    EXPECT_NE(report.state, CopyState::kCut) << "a restore reported a cut";
  }
  EXPECT_EQ(LastReport().state, CopyState::kReady);
  const std::map<uint64_t, uint8_t> blocks = {
      {0, 0x71}, {1000, 0x72}, {1500, 0}};
  EXPECT_EQ(ReadBlocks(stages_->ImagePath(kTarget), Key(true), {0, 1000, 1500}),
            blocks);
  auto header = io::ReadHeader(stages_->ImagePath(kTarget));
  ASSERT_TRUE(header.ok());
  EXPECT_EQ(header->size_bytes, 2 * kSize);
  ExpectOnlyTheImageLeft();
}

// A restore checks the snapshot's image against the state its record
// commits to: an image that is not at it fails the job.
TEST_F(CopyJobRunnerTest, RestoreRefusesASnapshotImageNotAtItsCommittedState) {
  MakeImage(kSource, {{0, 0x71}});
  {
    std::lock_guard lock(keys_.mu);
    keys_.states[kSource].epoch += 5;
  }
  AddJob(kTarget, kSource, broker::CopyKind::kRestore);
  EXPECT_EQ(Pass().failed, 1);
  EXPECT_EQ(LastReport().state, CopyState::kFailed);
  ExpectNothingLeft();
}

// Restart: a pending job whose cut is complete on disk (the node stopped
// before reporting it) keeps that cut as its point in time: it reports the
// cut and copies it, not the volume as it is now.
TEST_F(CopyJobRunnerTest, RestartPendingWithACompleteCutKeepsItsPointInTime) {
  MakeImage(kSource, {{2, 0x10}});
  ASSERT_TRUE(stages_->CreateVolumeDir(kTarget).ok());
  ASSERT_TRUE(io::CutImage(stages_->ImagePath(kSource), stages_->CutPath(kTarget)).ok());
  fs::remove(stages_->ImagePath(kSource));
  MakeImage(kSource, {{2, 0x20}});  // Written after the cut.
  AddJob(kTarget, kSource, broker::CopyKind::kSnapshot);
  EXPECT_EQ(Pass().ready, 1);
  EXPECT_EQ(keys_.copy_reports.front().state, CopyState::kCut);
  EXPECT_EQ(ReadBlocks(stages_->ImagePath(kTarget), Key(true), {2}).at(2), 0x10);
  ExpectOnlyTheImageLeft();
}

// Restart: a partial cut (the node stopped while writing it) is discarded
// and the source cut afresh.
TEST_F(CopyJobRunnerTest, RestartPendingWithAPartialCutCutsAfresh) {
  MakeImage(kSource, {{2, 0x30}});
  ASSERT_TRUE(stages_->CreateVolumeDir(kTarget).ok());
  { std::ofstream(stages_->CutPath(kTarget) + ".partial") << "torn"; }
  AddJob(kTarget, kSource, broker::CopyKind::kSnapshot);
  EXPECT_EQ(Pass().ready, 1);
  EXPECT_EQ(ReadBlocks(stages_->ImagePath(kTarget), Key(true), {2}).at(2), 0x30);
  ExpectOnlyTheImageLeft();
}

// Restart: a job in state cut resumes from its cut (the source has changed
// since, and is even gone).
TEST_F(CopyJobRunnerTest, RestartInStateCutResumesFromTheCut) {
  MakeImage(kSource, {{9, 0x44}});
  ASSERT_TRUE(stages_->CreateVolumeDir(kTarget).ok());
  ASSERT_TRUE(io::CutImage(stages_->ImagePath(kSource), stages_->CutPath(kTarget)).ok());
  fs::remove(stages_->ImagePath(kSource));
  AddJob(kTarget, kSource, broker::CopyKind::kSnapshot, CopyState::kCut);
  EXPECT_EQ(Pass().ready, 1);
  for (const auto& report : keys_.copy_reports) {
    EXPECT_NE(report.state, CopyState::kPending);
  }
  EXPECT_EQ(ReadBlocks(stages_->ImagePath(kTarget), Key(true), {9}).at(9), 0x44);
  ExpectOnlyTheImageLeft();
}

// Restart: a job in state cut whose cut is gone cannot be completed: it is
// failed, cleanly, and nothing of it is left.
TEST_F(CopyJobRunnerTest, RestartInStateCutWithoutTheCutFailsCleanly) {
  MakeImage(kSource, {{9, 0x44}});
  AddJob(kTarget, kSource, broker::CopyKind::kSnapshot, CopyState::kCut);
  EXPECT_EQ(Pass().failed, 1);
  EXPECT_EQ(keys_.CopyStateOf(kTarget), CopyState::kFailed);
  EXPECT_TRUE(absl::StrContains(LastReport().error, "cut")) << LastReport().error;
  EXPECT_EQ(keys_.copy_key_releases, 0);
  ExpectNothingLeft();
}

// The ready report does not reach the broker: the job stays listed, and
// the next pass reports the same image (from the copy's record, without
// copying again), never a half copy.
TEST_F(CopyJobRunnerTest, AReadyReportThatFailedIsRepeatedWithTheSameImage) {
  MakeImage(kSource, {{1, 0x55}});
  AddJob(kTarget, kSource, broker::CopyKind::kClone);
  keys_.ready_report_error = absl::UnavailableError("broker down");
  const CopyPass lost = Pass();
  EXPECT_EQ(lost.ready, 0);
  EXPECT_EQ(lost.later, 1);
  EXPECT_EQ(keys_.CopyStateOf(kTarget), CopyState::kCut);
  ASSERT_EQ(LastReport().state, CopyState::kReady);
  const std::string format = LastReport().format_id;
  EXPECT_TRUE(fs::exists(TargetDir() + "/image.copy"))
      << "the copy's record went before ready was in the registry";
  EXPECT_TRUE(fs::exists(stages_->CutPath(kTarget)));
  keys_.ready_report_error = absl::OkStatus();
  EXPECT_EQ(Pass().ready, 1);
  EXPECT_EQ(LastReport().format_id, format)
      << "the second report names another image";
  EXPECT_EQ(keys_.CopyStateOf(kTarget), CopyState::kReady);
  ExpectOnlyTheImageLeft();
}

TEST_F(CopyJobRunnerTest, RefusedKeysFailTheJobOrWait) {
  MakeImage(kSource, {{1, 0x55}});
  AddJob(kTarget, kSource, broker::CopyKind::kClone);
  // The job ended meanwhile (or its source is not complete): later.
  keys_.copy_keys_error = broker::RefusalStatus(broker::Reason::kCopyNotActive,
                                                "ended");
  CopyPass pass = Pass();
  EXPECT_EQ(pass.later, 1);
  EXPECT_EQ(keys_.CopyStateOf(kTarget), CopyState::kCut);
  // The source is placed elsewhere: failed, and its cut removed.
  keys_.copy_keys_error = broker::RefusalStatus(
      broker::Reason::kSourceNotOnNode, "the source is on node-2");
  pass = Pass();
  EXPECT_EQ(pass.failed, 1);
  EXPECT_EQ(keys_.CopyStateOf(kTarget), CopyState::kFailed);
  EXPECT_TRUE(absl::StrContains(LastReport().error, "source_not_on_node"))
      << LastReport().error;
  ExpectNothingLeft();
}

TEST_F(CopyJobRunnerTest, AMissingSourceImageFailsTheJob) {
  AddJob(kTarget, kSource, broker::CopyKind::kSnapshot);
  EXPECT_EQ(Pass().failed, 1);
  EXPECT_TRUE(absl::StrContains(LastReport().error, "has no image"))
      << LastReport().error;
  EXPECT_EQ(keys_.copy_key_releases, 0);
  ExpectNothingLeft();
}

// A volume busy with a CSI call (its lock held) waits for the next pass; a
// broker that cannot be asked fails the pass, changing nothing.
TEST_F(CopyJobRunnerTest, BusyVolumesAndAnUnreachableBrokerWait) {
  MakeImage(kSource, {{1, 0x55}});
  AddJob(kTarget, kSource, broker::CopyKind::kSnapshot);
  {
    VolumeLock busy(&locks_, kSource);
    ASSERT_TRUE(busy.status().ok());
    EXPECT_EQ(Pass().later, 1);
    EXPECT_TRUE(keys_.copy_reports.empty());
  }
  keys_.copy_error = absl::UnavailableError("broker down");
  EXPECT_TRUE(absl::IsUnavailable(runner_->RunOnce().status()));
  keys_.copy_error = absl::OkStatus();
  EXPECT_EQ(Pass().ready, 1);
}

// What ended jobs left (a cut, a finished copy's record, a failed copy's
// partial image) is removed by the next pass; a listed job's files stay.
TEST_F(CopyJobRunnerTest, AnEndedJobsFilesAreRemoved) {
  MakeImage(kSource, {{1, 0x55}});
  ASSERT_TRUE(stages_->CreateVolumeDir(kTarget).ok());
  ASSERT_TRUE(io::CutImage(stages_->ImagePath(kSource), stages_->CutPath(kTarget)).ok());
  { std::ofstream(stages_->CutPath(kTarget) + ".partial") << "torn"; }
  const std::string listed = "sv-44444444444444444444444444444444";
  ASSERT_TRUE(stages_->CreateVolumeDir(listed).ok());
  ASSERT_TRUE(io::CutImage(stages_->ImagePath(kSource), stages_->CutPath(listed)).ok());
  AddJob(listed, kSource, broker::CopyKind::kSnapshot, CopyState::kCut);
  VolumeLock busy(&locks_, listed);  // Its job cannot run in this pass.
  ASSERT_TRUE(busy.status().ok());
  EXPECT_EQ(Pass().later, 1);
  EXPECT_FALSE(fs::exists(stages_->CutPath(kTarget)));
  EXPECT_FALSE(fs::exists(stages_->CutPath(kTarget) + ".partial"));
  EXPECT_TRUE(fs::exists(stages_->CutPath(listed)));
  EXPECT_TRUE(fs::exists(stages_->ImagePath(kSource)));
}

// The lazy removal of deleted volumes takes deleted snapshots' images and
// their cuts with them.
TEST_F(CopyJobRunnerTest, ReaperRemovesADeletedSnapshotsImageAndCut) {
  MakeImage(kSource, {{1, 0x55}});
  AddJob(kTarget, kSource, broker::CopyKind::kSnapshot);
  ASSERT_EQ(Pass().ready, 1);
  { std::ofstream(stages_->CutPath(kTarget)) << "stale cut"; }
  NodeService node({.node_id = "node-1",
                    .state_dir = dir_ + "/state",
                    .kubelet_dir = dir_},
                   &keys_, &data_path_);
  keys_.deleted.insert(kTarget);
  auto removed = node.ReapDeletedVolumes();
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 1);
  EXPECT_FALSE(fs::exists(TargetDir()));
  EXPECT_TRUE(fs::exists(stages_->ImagePath(kSource)));
}

// The runner's own thread finds the job, and stops when asked.
TEST_F(CopyJobRunnerTest, TheThreadRunsJobsAndStops) {
  MakeImage(kSource, {{1, 0x55}});
  AddJob(kTarget, kSource, broker::CopyKind::kSnapshot);
  runner_->Start();
  for (int i = 0; i < 500 && keys_.CopyStateOf(kTarget) != CopyState::kReady; ++i) {
    usleep(10 * 1000);
  }
  runner_->Stop();
  EXPECT_EQ(keys_.CopyStateOf(kTarget), CopyState::kReady);
}

// The thread's long poll (the fake broker waits as the real one does).
class CopyJobRunnerThreadTest : public CopyJobRunnerTest {
 protected:
  // A runner whose plain polling would be slow (30 s): only the long poll
  // makes anything prompt.
  void UseRunner(absl::Duration poll_interval, absl::Duration job_wait) {
    runner_ = std::make_unique<CopyJobRunner>(
        CopyJobRunnerOptions{.node_id = "node-1",
                             .poll_interval = poll_interval,
                             .job_wait = job_wait,
                             .progress_interval_bytes = 1 << 20,
                             .freeze = freeze_.Hook()},
        &keys_, &data_path_, stages_.get(), &locks_);
  }
  // Waits (up to 10 s) until the runner has asked `asks` times, then a
  // little more, so that it waits in that ask.
  void AwaitAsks(int asks) {
    for (int i = 0; i < 1000 && keys_.CopyAsks() < asks; ++i) usleep(10 * 1000);
    ASSERT_GE(keys_.CopyAsks(), asks);
    usleep(200 * 1000);
  }
};

TEST_F(CopyJobRunnerThreadTest, AJobCreatedWhileTheRunnerWaitsStartsAtOnce) {
  MakeImage(kSource, {{1, 0x55}});
  UseRunner(absl::Seconds(30), absl::Seconds(20));
  runner_->Start();
  AwaitAsks(1);
  const absl::Time created = absl::Now();
  keys_.AddCopyJob({.target_id = kTarget,
                    .source_id = kSource,
                    .kind = broker::CopyKind::kSnapshot,
                    .state = CopyState::kPending,
                    .capacity_bytes = kSize});
  for (int i = 0; i < 1000 && keys_.CopyStateOf(kTarget) == CopyState::kPending; ++i) {
    usleep(5 * 1000);
  }
  const absl::Duration to_cut = absl::Now() - created;
  EXPECT_NE(keys_.CopyStateOf(kTarget), CopyState::kPending);
  // From the job's creation to its cut reported: well under the 30 s poll
  // interval (a plain poll would find it only then).
  EXPECT_LT(to_cut, absl::Seconds(1)) << to_cut;
  for (int i = 0; i < 1000 && keys_.CopyStateOf(kTarget) != CopyState::kReady; ++i) {
    usleep(10 * 1000);
  }
  EXPECT_EQ(keys_.CopyStateOf(kTarget), CopyState::kReady);
  // Done with every job it got: it asks (and waits) again at once.
  AwaitAsks(2);
  const absl::Time stop = absl::Now();
  runner_->Stop();
  EXPECT_LT(absl::Now() - stop, absl::Seconds(1));
}

TEST_F(CopyJobRunnerThreadTest, StopEndsAWaitingAskAtOnce) {
  UseRunner(absl::Seconds(30), absl::Seconds(20));
  runner_->Start();
  AwaitAsks(1);
  const absl::Time stop = absl::Now();
  runner_->Stop();
  const absl::Duration took = absl::Now() - stop;
  EXPECT_LT(took, absl::Seconds(1)) << "Stop waited for the ask's 20 s wait";
  EXPECT_EQ(keys_.CopyAsks(), 1);
}

// A broker older than the long poll answers at once: the runner then asks
// every poll interval, not in a loop.
TEST_F(CopyJobRunnerThreadTest, AnOlderBrokerIsAskedEveryPollInterval) {
  keys_.long_poll = false;
  UseRunner(absl::Milliseconds(200), absl::Seconds(20));
  runner_->Start();
  usleep(1000 * 1000);
  runner_->Stop();
  const int asks = keys_.CopyAsks();
  EXPECT_GE(asks, 3);
  EXPECT_LE(asks, 7) << "asked " << asks << " times in 1 s with a 200 ms interval";
}

}  // namespace
}  // namespace sealvol::csi
