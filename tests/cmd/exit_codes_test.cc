// cmd/exit_codes: the exit code follows the error's kind (a payload set
// where the error is created), never the words of its message.
#include "cmd/exit_codes.h"

#include "absl/status/status.h"
#include "base/error_kind.h"
#include "gtest/gtest.h"

namespace sealvol::cmd {
namespace {

using Family = CommandFamily;

TEST(ExitCodesTest, KindsMapToTheirCodes) {
  struct Case {
    absl::Status status;
    ErrorKind kind;
    int code;
  } cases[] = {
      {absl::PermissionDeniedError("v.img: key check failed"),
       ErrorKind::kWrongKey, kExitWrongKey},
      {absl::InvalidArgumentError("no magic"), ErrorKind::kNotSealvol,
       kExitNotSealvol},
      {absl::OutOfRangeError("v.img: short"), ErrorKind::kTruncated,
       kExitTruncated},
      {absl::FailedPreconditionError("version 9"), ErrorKind::kBadVersion,
       kExitBadVersion},
      {absl::InvalidArgumentError("size 5"), ErrorKind::kBadSize,
       kExitBadSize},
      {absl::FailedPreconditionError("v.img: locked"), ErrorKind::kInUse,
       kExitInUse},
      {absl::NotFoundError("key of sv-1 is gone"), ErrorKind::kKeyDestroyed,
       kExitKeyDestroyed},
  };
  for (const Case& c : cases) {
    const absl::Status tagged = SetErrorKind(c.status, c.kind);
    EXPECT_EQ(GetErrorKind(tagged), c.kind) << tagged;
    EXPECT_EQ(ExitCodeFor(tagged, Family::kVolume), c.code) << tagged;
  }
  // A crypto-shredded key is 10 for every command family.
  const absl::Status shredded =
      SetErrorKind(absl::NotFoundError("gone"), ErrorKind::kKeyDestroyed);
  EXPECT_EQ(ExitCodeFor(shredded, Family::kService), kExitKeyDestroyed);
}

// Words in a message choose nothing: an error that merely mentions them
// (a KMS refusal quoting a path, a peer's text) keeps its plain code.
TEST(ExitCodesTest, MessageTextWithoutKindChoosesNothing) {
  EXPECT_EQ(ExitCodeFor(absl::PermissionDeniedError(
                            "vault: policy denies /keys/wrong key-ring"),
                        Family::kVolume),
            kExitPermission);
  EXPECT_EQ(ExitCodeFor(absl::FailedPreconditionError(
                            "/mnt/in use by nobody: mount failed"),
                        Family::kVolume),
            kExitError);
  EXPECT_EQ(ExitCodeFor(absl::OutOfRangeError("offset truncated to 0"),
                        Family::kVolume),
            kExitBadSize);
  EXPECT_EQ(ExitCodeFor(absl::NotFoundError("crypto-shredded.txt not found"),
                        Family::kVolume),
            kExitError);
  EXPECT_EQ(ExitCodeFor(absl::InvalidArgumentError("not a sealvol image?"),
                        Family::kVolume),
            kExitError);
}

TEST(ExitCodesTest, CodesWithoutKind) {
  EXPECT_EQ(ExitCodeFor(absl::OkStatus(), Family::kVolume), kExitOk);
  EXPECT_EQ(ExitCodeFor(absl::DataLossError("block 3"), Family::kVolume),
            kExitIntegrity);
  EXPECT_EQ(ExitCodeFor(absl::NotFoundError("sv-1"), Family::kKey),
            kExitKeyDestroyed);
  EXPECT_EQ(ExitCodeFor(absl::UnavailableError("down"), Family::kKey),
            kExitUnavailable);
  EXPECT_EQ(ExitCodeFor(absl::InvalidArgumentError("x"), Family::kService),
            kExitUsage);
  EXPECT_EQ(ExitCodeFor(absl::UnauthenticatedError("x"), Family::kService),
            kExitPermission);
}

}  // namespace
}  // namespace sealvol::cmd
