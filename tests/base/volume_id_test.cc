// base/volume_id: the one volume-id rule that io, kms and csi share.
#include "base/volume_id.h"

#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/volume_ids.h"

namespace sealvol {
namespace {

using ::testing::HasSubstr;

TEST(VolumeIdTest, TextFormRoundTrips) {
  VolumeId id{};
  for (size_t i = 0; i < id.size(); ++i) id[i] = static_cast<uint8_t>(i * 17);
  const std::string text = VolumeIdString(id);
  EXPECT_EQ(text, "sv-00112233445566778899aabbccddeeff");
  auto parsed = ParseVolumeId(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, id);
  EXPECT_TRUE(ValidateVolumeId(text).ok());
  EXPECT_TRUE(IsWellFormedVolumeId(text));
}

TEST(VolumeIdTest, RejectsEveryOtherForm) {
  const std::string good = "sv-00112233445566778899aabbccddeeff";
  for (const std::string& bad : std::vector<std::string>{
        std::string(), std::string("sv-"), std::string("sv-a"),
        good.substr(0, good.size() - 1), good + "0",
        "SV-" + good.substr(3), "sv_" + good.substr(3),
        "sv-00112233445566778899AABBCCDDEEFF",
        "sv-00112233445566778899aabbccddeefg",
        "sv-0011223344556677../aabbccddeeff", "pvc-1",
        std::string("sv-00112233445566778899aabbccddee\0f", 35)}) {
    EXPECT_FALSE(IsWellFormedVolumeId(bad)) << bad;
    const absl::Status s = ValidateVolumeId(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(s.message(), HasSubstr("volume id"));
    EXPECT_FALSE(ParseVolumeId(bad).ok()) << bad;
  }
}

TEST(VolumeIdTest, ErrorQuotesAtMostEightyCharactersOfTheText) {
  const absl::Status s = ValidateVolumeId(std::string(10000, 'x'));
  EXPECT_LT(s.message().size(), 200u);
}

TEST(VolumeIdTest, FreshIdsAreWellFormedAndDistinct) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    const std::string id = NewVolumeId();
    EXPECT_TRUE(IsWellFormedVolumeId(id)) << id;
    EXPECT_TRUE(seen.insert(id).second) << "repeated " << id;
  }
  EXPECT_NE(RandomVolumeId(), RandomVolumeId());
}

TEST(VolumeIdTest, TestIdsAreWellFormedAndSortAsTheirTags) {
  using ::sealvol::testing::TestVolumeId;
  EXPECT_TRUE(IsWellFormedVolumeId(TestVolumeId("a")));
  EXPECT_TRUE(IsWellFormedVolumeId(TestVolumeId("0123456789abcdef")));
  EXPECT_LT(TestVolumeId("1"), TestVolumeId("10"));
  EXPECT_LT(TestVolumeId("10"), TestVolumeId("9"));
  EXPECT_NE(TestVolumeId("a"), TestVolumeId("b"));
}

}  // namespace
}  // namespace sealvol
