// The file store's choice between O_DIRECT and the page cache: direct by
// default where the file system allows it, the page cache when asked
// (a cut that is read once right after it was copied).
#include <fcntl.h>
#include <unistd.h>

#include <string>

#include "base/unique_fd.h"
#include "engine_test_support.h"
#include "gtest/gtest.h"
#include "io/backing_store.h"

namespace sealvol::io {
namespace {

using testing::TempDir;

// Whether the file system under `dir` takes O_DIRECT at all.
bool DirectIoWorks(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_DIRECT | O_CLOEXEC, 0600));
  return fd.valid();
}

TEST(FileStoreTest, DirectByDefaultThroughThePageCacheWhenAsked) {
  TempDir dir;
  const std::string path = dir.file("image");
  FileStoreOptions o;
  o.path = path;
  o.create = true;
  {
    auto store = OpenFileStore(o);
    ASSERT_TRUE(store.ok()) << store.status();
    EXPECT_EQ(FileStoreUsesDirectIo(**store), DirectIoWorks(dir.path()));
  }
  o.create = false;
  o.page_cache = true;
  auto store = OpenFileStore(o);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_FALSE(FileStoreUsesDirectIo(**store));
}

}  // namespace
}  // namespace sealvol::io
