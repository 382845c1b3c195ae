// The KeyBroker's copy jobs (snapshots, restores, clones): which jobs a node
// sees, when it gets the two keys of one, what its reports change, and the
// audit record of every decision.
#include <fstream>
#include <future>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kms/broker/key_broker_service.h"
#include "kms/broker/refusal.h"
#include "nlohmann/json.hpp"
#include "tests/kms/broker/broker_service_fixture.h"
#include "tests/kms/broker/broker_test_env.h"

namespace sealvol::broker {
namespace {

using kms::CopyState;
using testing::FakeKeyProvider;
using testing::kNode;
using testing::kTenant;
using testing::MakeVolume;

constexpr char kSource[] = "sv-00000000000000000000000000000001";
constexpr char kSnapshot[] = "sv-00000000000000000000000000000002";
constexpr char kRestore[] = "sv-00000000000000000000000000000003";
constexpr char kClone[] = "sv-00000000000000000000000000000004";
constexpr char kFormat[] = "0123456789abcdef0123456789abcdef";
const std::string kRoot(64, 'c');

kms::VolumeRecord Copy(const std::string& id, const std::string& source,
                       kms::RecordKind kind, CopyState state,
                       const std::string& node = kNode) {
  kms::VolumeRecord record = MakeVolume(id, kTenant);
  record.kind = kind;
  record.source_volume_id = source;
  record.copy.state = state;
  record.node = node;
  record.capacity_bytes = 8 << 20;
  return record;
}

class CopyJobsTest : public testing::BrokerServiceTest {
 protected:
  void SetUp() override {
    BrokerServiceTest::SetUp();
    auto source = MakeVolume(kSource, kTenant);
    source.format_id = kFormat;
    source.state = kms::CommittedState{4, kRoot, true};
    keys_.AddVolume(source, 0x11);
    keys_.AddVolume(Copy(kSnapshot, kSource, kms::RecordKind::kSnapshot,
                         CopyState::kPending),
                    0x22);
  }

  // Expects the key release of `target` refused with `reason`, nothing
  // unwrapped, and one refusal record.
  void ExpectKeysRefused(const std::string& target, const std::string& node,
                         const std::string& reason) {
    const int unwraps = keys_.unwrap_calls();
    const size_t records = AuditRecords().size();
    auto keys = service_->ReleaseCopyJobKeys(node, target, NodeToken(node));
    ASSERT_FALSE(keys.ok()) << "copy keys of " << target << " released to "
                            << node << ", expected " << reason;
    EXPECT_EQ(RefusalReason(keys.status()), reason) << keys.status();
    EXPECT_EQ(keys_.unwrap_calls(), unwraps) << "refused, yet a key was unwrapped";
    auto audit = AuditRecords();
    ASSERT_EQ(audit.size(), records + 1);
    EXPECT_EQ(audit.back()["decision"], "refuse");
    EXPECT_EQ(audit.back()["reason"], reason);
    EXPECT_EQ(audit.back()["volume"], target);
    EXPECT_EQ(audit.back()["node"], node);
    EXPECT_EQ(audit.back()["attestation"], "copy_job");
  }

  absl::StatusOr<CopyState> Report(const CopyReport& report,
                                   const std::string& node = kNode) {
    return service_->ReportCopyJob(node, report, NodeToken(node));
  }
};

TEST_F(CopyJobsTest, ListsTheNodesCopiesInProgressWithTheirKind) {
  keys_.AddVolume(Copy(kRestore, kSnapshot, kms::RecordKind::kVolume,
                       CopyState::kCut),
                  0x33);
  keys_.AddVolume(Copy(kClone, kSource, kms::RecordKind::kVolume,
                       CopyState::kPending),
                  0x44);
  // Not this node's jobs, or no job in progress.
  keys_.AddVolume(Copy("sv-00000000000000000000000000000005", kSource,
                       kms::RecordKind::kSnapshot, CopyState::kPending,
                       "node-2"),
                  0x55);
  keys_.AddVolume(Copy("sv-00000000000000000000000000000006", kSource,
                       kms::RecordKind::kSnapshot, CopyState::kReady),
                  0x66);
  keys_.AddVolume(Copy("sv-00000000000000000000000000000007", kSource,
                       kms::RecordKind::kVolume, CopyState::kFailed),
                  0x77);
  auto jobs = service_->ListCopyJobs(kNode, NodeToken());
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 3u);
  EXPECT_EQ((*jobs)[0].target_id, kSnapshot);
  EXPECT_EQ((*jobs)[0].source_id, kSource);
  EXPECT_EQ((*jobs)[0].kind, CopyKind::kSnapshot);
  EXPECT_EQ((*jobs)[0].state, CopyState::kPending);
  EXPECT_EQ((*jobs)[0].capacity_bytes, 8u << 20);
  EXPECT_EQ((*jobs)[1].target_id, kRestore);
  EXPECT_EQ((*jobs)[1].kind, CopyKind::kRestore);
  EXPECT_EQ((*jobs)[1].state, CopyState::kCut);
  EXPECT_EQ((*jobs)[2].target_id, kClone);
  EXPECT_EQ((*jobs)[2].kind, CopyKind::kClone);
  EXPECT_TRUE(AuditRecords().empty()) << "a listing was audited";
  // Another node sees its own job only.
  auto other = service_->ListCopyJobs("node-2", NodeToken("node-2"));
  ASSERT_TRUE(other.ok()) << other.status();
  ASSERT_EQ(other->size(), 1u);
  EXPECT_EQ((*other)[0].target_id, "sv-00000000000000000000000000000005");
}

TEST_F(CopyJobsTest, ListingNeedsTheNodesOwnIdentityAndIsRateLimited) {
  auto refused = service_->ListCopyJobs(kNode, NodeToken("node-2"));
  EXPECT_EQ(RefusalReason(refused.status()), "node_identity_invalid")
      << refused.status();
  ASSERT_EQ(AuditRecords().size(), 1u);
  EXPECT_EQ(AuditRecords().back()["reason"], "node_identity_invalid");
  options_.rate_limit.burst = 1;
  options_.rate_limit.tokens_per_second = 0.001;
  Rebuild();
  EXPECT_TRUE(service_->ListCopyJobs(kNode, NodeToken()).ok());
  refused = service_->ListCopyJobs(kNode, NodeToken());
  EXPECT_EQ(RefusalReason(refused.status()), "rate_limited") << refused.status();
  keys_.set_reachable(false);
  Rebuild();
  refused = service_->ListCopyJobs(kNode, NodeToken());
  EXPECT_EQ(RefusalReason(refused.status()), "kms_error") << refused.status();
}

TEST_F(CopyJobsTest, ReleasesBothKeysOfAJobAndAuditsEach) {
  auto keys = service_->ReleaseCopyJobKeys(kNode, kSnapshot, NodeToken());
  ASSERT_TRUE(keys.ok()) << keys.status();
  ASSERT_EQ(keys->source_dek.size(), 32u);
  ASSERT_EQ(keys->target_dek.size(), 32u);
  EXPECT_EQ(keys->source_dek.data()[0], 0x11);
  EXPECT_EQ(keys->target_dek.data()[31], 0x22);
  EXPECT_EQ(keys->source_id, kSource);
  EXPECT_EQ(keys->kind, CopyKind::kSnapshot);
  EXPECT_EQ(keys->state, CopyState::kPending);
  EXPECT_EQ(keys->source_format_id, kFormat);
  ASSERT_TRUE(keys->source_expected_state.has_value());
  EXPECT_EQ(keys->source_expected_state->epoch, 4u);
  EXPECT_EQ(keys->target_capacity_bytes, 8u << 20);
  auto audit = AuditRecords();
  ASSERT_EQ(audit.size(), 2u);
  EXPECT_EQ(audit[0]["decision"], "grant");
  EXPECT_EQ(audit[0]["reason"], "copy_key_released");
  EXPECT_EQ(audit[0]["volume"], kSource);
  EXPECT_EQ(audit[0]["tenant"], kTenant);
  EXPECT_EQ(audit[0]["attestation"], "copy_job");
  EXPECT_EQ(audit[0]["key_version"], 3);
  EXPECT_TRUE(absl::StrContains(audit[0]["message"].get<std::string>(),
                                kSnapshot));
  EXPECT_EQ(audit[1]["decision"], "grant");
  EXPECT_EQ(audit[1]["reason"], "copy_key_released");
  EXPECT_EQ(audit[1]["volume"], kSnapshot);
  EXPECT_EQ(audit[1]["node"], kNode);
  EXPECT_EQ(metrics_.grants(), 2);
}

TEST_F(CopyJobsTest, RefusesTheKeysToAnotherNode) {
  // node-2 authenticates as itself, but the job is placed on node-1.
  ExpectKeysRefused(kSnapshot, "node-2", "node_not_owner");
  // A job placed on no node is nobody's.
  keys_.AddVolume(Copy(kClone, kSource, kms::RecordKind::kVolume,
                       CopyState::kPending, ""),
                  0x44);
  ExpectKeysRefused(kClone, kNode, "node_not_owner");
  // And a node token of another node does not pass as node-1's.
  auto keys = service_->ReleaseCopyJobKeys(kNode, kSnapshot, NodeToken("node-2"));
  EXPECT_EQ(RefusalReason(keys.status()), "node_identity_invalid")
      << keys.status();
  EXPECT_EQ(AuditRecords().back()["reason"], "node_identity_invalid");
}

TEST_F(CopyJobsTest, RefusesTheKeysWithoutAJob) {
  // A plain volume has no job; an unknown id is no volume.
  ExpectKeysRefused(kSource, kNode, "copy_not_active");
  ExpectKeysRefused("sv-0000000000000000000000000000000f", kNode,
                    "volume_not_found");
  auto keys = service_->ReleaseCopyJobKeys(kNode, kSource, NodeToken());
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(CopyJobsTest, RefusesTheKeysOfAFinishedJob) {
  keys_.AddVolume(Copy(kRestore, kSnapshot, kms::RecordKind::kVolume,
                       CopyState::kReady),
                  0x33);
  keys_.AddVolume(Copy(kClone, kSource, kms::RecordKind::kVolume,
                       CopyState::kFailed),
                  0x44);
  ExpectKeysRefused(kRestore, kNode, "copy_not_active");
  ExpectKeysRefused(kClone, kNode, "copy_not_active");
}

TEST_F(CopyJobsTest, RefusesTheKeysWhenTheSourceIsNotOnTheNode) {
  auto elsewhere = MakeVolume("sv-0000000000000000000000000000000a", kTenant);
  elsewhere.node = "node-2";
  keys_.AddVolume(elsewhere, 0x0a);
  keys_.AddVolume(Copy(kClone, elsewhere.volume_id, kms::RecordKind::kVolume,
                       CopyState::kPending),
                  0x44);
  ExpectKeysRefused(kClone, kNode, "source_not_on_node");
  // The source is gone (shredded before the cut).
  keys_.AddVolume(Copy(kRestore, "sv-0000000000000000000000000000000b",
                       kms::RecordKind::kVolume, CopyState::kPending),
                  0x33);
  ExpectKeysRefused(kRestore, kNode, "volume_not_found");
  // The source is itself a copy that is not complete.
  keys_.AddVolume(Copy("sv-0000000000000000000000000000000c", kSnapshot,
                       kms::RecordKind::kVolume, CopyState::kPending),
                  0x0c);
  ExpectKeysRefused("sv-0000000000000000000000000000000c", kNode,
                    "copy_not_active");
  // Source and copy of two tenants.
  auto foreign = MakeVolume("sv-0000000000000000000000000000000d", "team-b");
  keys_.AddVolume(foreign, 0x0d);
  keys_.AddVolume(Copy("sv-0000000000000000000000000000000e",
                       foreign.volume_id, kms::RecordKind::kSnapshot,
                       CopyState::kPending),
                  0x0e);
  ExpectKeysRefused("sv-0000000000000000000000000000000e", kNode,
                    "namespace_mismatch");
}

TEST_F(CopyJobsTest, NoKeysWithoutTheirAuditRecords) {
  auto full = AuditLog::Open({.path = "/dev/full"});
  ASSERT_TRUE(full.ok()) << full.status();
  KeyBrokerService service(keys_, env_->verifier, **full, options_);
  auto keys = service.ReleaseCopyJobKeys(kNode, kSnapshot, NodeToken());
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kUnavailable)
      << keys.status();
}

// pending -> progress -> cut -> progress -> ready: the registry follows, the
// cut and the end are audited, and the ready copy carries its image's
// format and closing state like any volume.
TEST_F(CopyJobsTest, ReportsMoveTheJobForwardToReady) {
  auto state = Report({.target_id = kSnapshot,
                       .state = CopyState::kPending,
                       .bytes_done = 0,
                       .bytes_total = 8 << 20});
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_TRUE(AuditRecords().empty()) << "progress was audited";
  state = Report({.target_id = kSnapshot, .state = CopyState::kCut});
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(*state, CopyState::kCut);
  ASSERT_EQ(AuditRecords().size(), 1u);
  EXPECT_EQ(AuditRecords().back()["reason"], "copy_cut");
  EXPECT_EQ(AuditRecords().back()["decision"], "grant");
  ASSERT_TRUE(Report({.target_id = kSnapshot,
                      .state = CopyState::kCut,
                      .bytes_done = 4 << 20,
                      .bytes_total = 8 << 20})
                  .ok());
  EXPECT_EQ(AuditRecords().size(), 1u);
  EXPECT_EQ(keys_.GetVolume(kSnapshot)->copy.bytes_done, 4u << 20);

  const CopyReport ready{.target_id = kSnapshot,
                         .state = CopyState::kReady,
                         .bytes_done = 8 << 20,
                         .bytes_total = 8 << 20,
                         .format_id = kFormat,
                         .closed_state = kms::CommittedState{1, kRoot, false}};
  state = Report(ready);
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(*state, CopyState::kReady);
  auto record = keys_.GetVolume(kSnapshot);
  EXPECT_EQ(record->copy.state, CopyState::kReady);
  EXPECT_EQ(record->format_id, kFormat);
  EXPECT_EQ(record->formatted_node, kNode);
  ASSERT_TRUE(record->state.has_value());
  EXPECT_EQ(*record->state, (kms::CommittedState{1, kRoot, false}));
  ASSERT_EQ(AuditRecords().size(), 2u);
  EXPECT_EQ(AuditRecords().back()["reason"], "copy_ready");
  EXPECT_TRUE(absl::StrContains(
      AuditRecords().back()["message"].get<std::string>(), kFormat));
  // A node that lost the answer reports ready again: accepted, audited.
  state = Report(ready);
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_EQ(AuditRecords().size(), 3u);
  // Anything else about an ended job is refused, and so are its keys.
  auto late = Report({.target_id = kSnapshot, .state = CopyState::kCut});
  EXPECT_EQ(RefusalReason(late.status()), "copy_not_active") << late.status();
  EXPECT_EQ(AuditRecords().back()["decision"], "refuse");
  EXPECT_EQ(AuditRecords().back()["reason"], "copy_not_active");
  CopyReport other = ready;
  other.format_id = "fedcba9876543210fedcba9876543210";
  late = Report(other);
  EXPECT_EQ(RefusalReason(late.status()), "copy_not_active") << late.status();
  ExpectKeysRefused(kSnapshot, kNode, "copy_not_active");
}

TEST_F(CopyJobsTest, AFailedCopyIsAuditedAndEnded) {
  auto bad = Report({.target_id = kSnapshot, .state = CopyState::kFailed});
  EXPECT_EQ(RefusalReason(bad.status()), "invalid_request") << bad.status();
  EXPECT_EQ(AuditRecords().back()["reason"], "invalid_request");
  auto state = Report({.target_id = kSnapshot,
                       .state = CopyState::kFailed,
                       .error = "source image missing"});
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(*state, CopyState::kFailed);
  EXPECT_EQ(keys_.GetVolume(kSnapshot)->copy.error, "source image missing");
  EXPECT_EQ(AuditRecords().back()["reason"], "copy_failed");
  EXPECT_TRUE(absl::StrContains(
      AuditRecords().back()["message"].get<std::string>(),
      "source image missing"));
  ExpectKeysRefused(kSnapshot, kNode, "copy_not_active");
}

TEST_F(CopyJobsTest, ReportsComeOnlyFromTheJobsNodeWithWellFormedValues) {
  auto refused = Report({.target_id = kSnapshot, .state = CopyState::kCut},
                        "node-2");
  EXPECT_EQ(RefusalReason(refused.status()), "node_not_owner")
      << refused.status();
  EXPECT_EQ(AuditRecords().back()["reason"], "node_not_owner");
  refused = service_->ReportCopyJob(
      kNode, {.target_id = kSnapshot, .state = CopyState::kNone}, NodeToken());
  EXPECT_EQ(RefusalReason(refused.status()), "invalid_request")
      << refused.status();
  refused = Report({.target_id = kSnapshot,
                    .state = CopyState::kReady,
                    .format_id = "0123",
                    .closed_state = kms::CommittedState{1, kRoot, false}});
  EXPECT_EQ(RefusalReason(refused.status()), "invalid_format_id")
      << refused.status();
  refused = Report({.target_id = kSnapshot,
                    .state = CopyState::kReady,
                    .format_id = kFormat,
                    .closed_state = kms::CommittedState{1, kRoot, true}});
  EXPECT_EQ(RefusalReason(refused.status()), "invalid_state")
      << refused.status();
  refused = Report({.target_id = kSnapshot,
                    .state = CopyState::kCut,
                    .bytes_done = 9,
                    .bytes_total = 8});
  EXPECT_EQ(RefusalReason(refused.status()), "invalid_request")
      << refused.status();
  EXPECT_EQ(AuditRecords().back()["reason"], "invalid_request");
  // None of them changed the job.
  EXPECT_EQ(keys_.GetVolume(kSnapshot)->copy.state, CopyState::kPending);
  EXPECT_TRUE(keys_.GetVolume(kSnapshot)->format_id.empty());
}

// The long poll (CopyJobsRequest.wait_seconds). node-2 has no job in the
// fixture; kNode has kSnapshot.
class CopyJobsLongPollTest : public CopyJobsTest {
 protected:
  void SetUp() override {
    CopyJobsTest::SetUp();
    // Far beyond every wait below: only a wake-up ends a wait early.
    options_.copy_jobs_recheck = absl::Seconds(60);
    Rebuild();
  }
  // ListCopyJobs of `node` waiting up to `wait` on another thread; the
  // answer and how long it took.
  struct Answer {
    absl::StatusOr<std::vector<CopyJob>> jobs;
    absl::Duration took;
  };
  std::future<Answer> Ask(const std::string& node, absl::Duration wait,
                          absl::Time deadline = absl::InfiniteFuture()) {
    const std::string token = NodeToken(node);
    return std::async(std::launch::async, [this, node, wait, deadline, token] {
      const absl::Time start = absl::Now();
      auto jobs = service_->ListCopyJobs(
          node, token, {.wait = wait, .deadline = deadline});
      return Answer{std::move(jobs), absl::Now() - start};
    });
  }
};

TEST_F(CopyJobsLongPollTest, AnswersAsSoonAsAJobForTheNodeIsCreated) {
  auto answer = Ask("node-2", absl::Seconds(20));
  absl::SleepFor(absl::Milliseconds(300));
  ASSERT_EQ(answer.wait_for(std::chrono::seconds(0)), std::future_status::timeout)
      << "answered without a job for node-2";
  const absl::Time created = absl::Now();
  keys_.AddVolume(Copy(kClone, kSource, kms::RecordKind::kVolume,
                       CopyState::kPending, "node-2"),
                  0x44);
  service_->CopyJobsChanged("node-2");  // As the controller does.
  ASSERT_EQ(answer.wait_for(std::chrono::seconds(10)), std::future_status::ready)
      << "still waiting 10 s after the job was created";
  const absl::Duration latency = absl::Now() - created;
  Answer got = answer.get();
  ASSERT_TRUE(got.jobs.ok()) << got.jobs.status();
  ASSERT_EQ(got.jobs->size(), 1u);
  EXPECT_EQ((*got.jobs)[0].target_id, kClone);
  // Well under the node's poll interval (3 s) and the broker's recheck.
  EXPECT_LT(latency, absl::Milliseconds(500)) << latency;
}

TEST_F(CopyJobsLongPollTest, AnswersAtOnceWhenTheNodeHasAJob) {
  auto answer = Ask(kNode, absl::Seconds(20));
  ASSERT_EQ(answer.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  Answer got = answer.get();
  ASSERT_TRUE(got.jobs.ok()) << got.jobs.status();
  ASSERT_EQ(got.jobs->size(), 1u);
  EXPECT_EQ((*got.jobs)[0].target_id, kSnapshot);
  EXPECT_LT(got.took, absl::Seconds(1));
}

// Another node's new job wakes nothing here: the answer is empty, at the
// end of the wait.
TEST_F(CopyJobsLongPollTest, AnswersEmptyAtTheEndOfTheWaitAndNeverAnotherNodesJob) {
  auto answer = Ask("node-2", absl::Seconds(2));
  absl::SleepFor(absl::Milliseconds(300));
  keys_.AddVolume(Copy(kClone, kSource, kms::RecordKind::kVolume,
                       CopyState::kPending, kNode),
                  0x44);
  service_->CopyJobsChanged(kNode);
  ASSERT_EQ(answer.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  Answer got = answer.get();
  ASSERT_TRUE(got.jobs.ok()) << got.jobs.status();
  EXPECT_TRUE(got.jobs->empty()) << (*got.jobs)[0].target_id;
  EXPECT_GE(got.took, absl::Milliseconds(1900));
  EXPECT_LT(got.took, absl::Seconds(4));
  EXPECT_TRUE(AuditRecords().empty()) << "a listing was audited";
}

// The call's deadline bounds the wait: the answer leaves before it.
TEST_F(CopyJobsLongPollTest, TheCallsDeadlineBoundsTheWait) {
  auto answer = Ask("node-2", absl::Seconds(20), absl::Now() + absl::Seconds(2));
  ASSERT_EQ(answer.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  Answer got = answer.get();
  ASSERT_TRUE(got.jobs.ok()) << got.jobs.status();
  EXPECT_TRUE(got.jobs->empty());
  EXPECT_LT(got.took, absl::Milliseconds(1800)) << got.took;
}

// A job another replica created (no wake-up here) is found at the next
// registry read.
TEST_F(CopyJobsLongPollTest, FindsAnotherReplicasJobAtTheNextRegistryRead) {
  options_.copy_jobs_recheck = absl::Milliseconds(200);
  Rebuild();
  auto answer = Ask("node-2", absl::Seconds(20));
  absl::SleepFor(absl::Milliseconds(300));
  keys_.AddVolume(Copy(kClone, kSource, kms::RecordKind::kVolume,
                       CopyState::kPending, "node-2"),
                  0x44);
  ASSERT_EQ(answer.wait_for(std::chrono::seconds(3)), std::future_status::ready)
      << "the job was not found by a registry read within 3 s";
  Answer got = answer.get();
  ASSERT_TRUE(got.jobs.ok()) << got.jobs.status();
  ASSERT_EQ(got.jobs->size(), 1u);
  EXPECT_EQ((*got.jobs)[0].target_id, kClone);
}

// The broker shutting down ends every wait (gRPC's Shutdown waits for
// calls), and a wait asked later answers at once.
TEST_F(CopyJobsLongPollTest, EndWaitsAnswersWaitingCallsAtOnce) {
  auto answer = Ask("node-2", absl::Seconds(20));
  absl::SleepFor(absl::Milliseconds(300));
  service_->EndWaits();
  ASSERT_EQ(answer.wait_for(std::chrono::seconds(2)), std::future_status::ready)
      << "EndWaits left the call waiting";
  EXPECT_TRUE(answer.get().jobs->empty());
  Answer later = Ask("node-2", absl::Seconds(20)).get();
  EXPECT_LT(later.took, absl::Seconds(1));
}

}  // namespace
}  // namespace sealvol::broker
