// The registry's state-commit rules (KeyProvider::CommitState and
// AcceptRollback), checked the same way against every provider.
#pragma once

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kms/key_provider.h"
#include "tests/support/volume_ids.h"

namespace sealvol::kms {

inline std::string RootOf(char digit) { return std::string(64, digit); }

// `volume_id` must exist, with no state and no format claim yet.
inline void ExpectStateCommitRules(KeyProvider& p, const std::string& volume_id) {
  using ::testing::HasSubstr;
  auto fresh = p.GetVolume(volume_id);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_FALSE(fresh->state.has_value());

  // The first state comes with the format claim.
  auto claimed = p.ClaimFormat(
      volume_id, {.format_id = "0123456789abcdef0123456789abcdef",
                  .node = "node-1",
                  .unix_time = 1700000000,
                  .state = CommittedState{1, RootOf('1'), false}});
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  ASSERT_TRUE(claimed->state.has_value());
  EXPECT_EQ(*claimed->state, (CommittedState{1, RootOf('1'), false}));

  // A session opens at the next epoch and closes at it.
  auto opened = p.CommitState(volume_id, {CommittedState{2, RootOf('1'), true},
                                          "node-1", 1700000001});
  ASSERT_TRUE(opened.ok()) << opened.status();
  auto closed = p.CommitState(volume_id, {CommittedState{2, RootOf('2'), false},
                                          "node-1", 1700000002});
  ASSERT_TRUE(closed.ok()) << closed.status();
  auto got = p.GetVolume(volume_id);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE(got->state.has_value());
  EXPECT_EQ(*got->state, (CommittedState{2, RootOf('2'), false}));
  EXPECT_EQ(got->state_node, "node-1");
  EXPECT_EQ(got->state_unix, 1700000002);

  // The epoch never goes back, and a closed session does not reopen.
  auto behind = p.CommitState(volume_id, {CommittedState{1, RootOf('3'), false},
                                          "node-1", 1700000003});
  EXPECT_EQ(behind.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(behind.status().message(), HasSubstr("state_epoch 1 is behind"));
  auto reopened = p.CommitState(volume_id, {CommittedState{2, RootOf('3'), true},
                                            "node-1", 1700000003});
  EXPECT_EQ(reopened.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(*p.GetVolume(volume_id)->state, (CommittedState{2, RootOf('2'), false}));

  // A malformed root names the field.
  auto bad = p.CommitState(volume_id, {CommittedState{3, "abc", true}, "node-1", 1});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("state_root"));
  auto upper = p.CommitState(volume_id,
                             {CommittedState{3, std::string(64, 'A'), true}, "node-1", 1});
  EXPECT_EQ(upper.status().code(), absl::StatusCode::kInvalidArgument);

  // accept_rollback needs an operator's acceptance, and consumes it once;
  // even then the epoch must move forward (the restored image is opened
  // past the registry's epoch), so no older copy becomes acceptable again.
  const StateCommit restore{CommittedState{3, RootOf('9'), true}, "node-1",
                            1700000004, /*accept_rollback=*/true};
  const StateCommit restore_behind{CommittedState{1, RootOf('9'), true}, "node-1",
                                   1700000004, /*accept_rollback=*/true};
  EXPECT_EQ(p.CommitState(volume_id, restore).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(p.AcceptRollback(volume_id, "", 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto marked = p.AcceptRollback(volume_id, "alice@admin", 1700000005);
  ASSERT_TRUE(marked.ok()) << marked.status();
  EXPECT_TRUE(marked->rollback_pending);
  auto behind_restore = p.CommitState(volume_id, restore_behind);
  EXPECT_EQ(behind_restore.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(behind_restore.status().message(), HasSubstr("not past"));
  EXPECT_TRUE(p.GetVolume(volume_id)->rollback_pending);
  auto accepted = p.CommitState(volume_id, restore);
  ASSERT_TRUE(accepted.ok()) << accepted.status();
  EXPECT_FALSE(accepted->rollback_pending);
  EXPECT_EQ(accepted->rollback_accepted_by, "alice@admin");
  EXPECT_EQ(accepted->rollback_accepted_unix, 1700000005);
  EXPECT_EQ(*accepted->state, restore.state);
  EXPECT_EQ(p.CommitState(volume_id, restore).status().code(),
            absl::StatusCode::kFailedPrecondition);

  // Updates of the mutable fields keep the state.
  VolumeRecord update = *p.GetVolume(volume_id);
  update.state.reset();
  update.capacity_bytes = 8ull << 30;
  ASSERT_TRUE(p.UpdateVolume(update).ok());
  EXPECT_EQ(*p.GetVolume(volume_id)->state, restore.state);
  EXPECT_EQ(p.CommitState(::sealvol::testing::TestVolumeId("none-such"),
                          {CommittedState{1, RootOf('1'), true}, "node-1", 1})
                .status()
                .code(),
            absl::StatusCode::kNotFound);
}

}  // namespace sealvol::kms
