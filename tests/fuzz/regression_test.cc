// Replays every fuzz seed (tests/fuzz/corpus/TARGET/) and every crasher the
// fuzzers ever found (tests/fuzz/crashers/TARGET/) through the same entry
// points the fuzzers use, in the normal build, so a fixed crash stays fixed.
// A target's CHECKs abort the process: a regression fails this test.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/fuzz/fuzz_targets.h"

namespace sealvol::fuzz {
namespace {

namespace fs = std::filesystem;

std::vector<fs::path> InputsOf(const std::string& target) {
  std::vector<fs::path> files;
  for (const char* kind : {"corpus", "crashers"}) {
    const fs::path dir = fs::path(SEALVOL_SOURCE_DIR) / "tests/fuzz" / kind / target;
    if (!fs::is_directory(dir)) continue;
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.is_regular_file()) files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

class FuzzRegressionTest : public ::testing::TestWithParam<FuzzTarget> {};

TEST_P(FuzzRegressionTest, EverySeedAndCrasherRunsClean) {
  const FuzzTarget& target = GetParam();
  const std::vector<fs::path> inputs = InputsOf(target.name);
  // Every target ships seeds; an empty list means the corpus went missing.
  ASSERT_FALSE(inputs.empty()) << "no seeds for " << target.name;
  for (const fs::path& path : inputs) {
    SCOPED_TRACE(path.string());
    std::ifstream in(path, std::ios::binary);
    ASSERT_TRUE(in) << "cannot read " << path;
    const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                                     std::istreambuf_iterator<char>());
    EXPECT_EQ(target.run(bytes.data(), bytes.size()), 0);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Targets, FuzzRegressionTest, ::testing::ValuesIn(kFuzzTargets),
    [](const ::testing::TestParamInfo<FuzzTarget>& info) {
      return std::string(info.param.name);
    });

}  // namespace
}  // namespace sealvol::fuzz
