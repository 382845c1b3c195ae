// TempDir: a fresh directory per instance, removed at the end with what is
// in it, but never through a symbolic link or into a mounted file system.
#include "tests/support/temp_dir.h"

#include <sys/mount.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace sealvol::testing {
namespace {

namespace fs = std::filesystem;

TEST(TempDirTest, EachIsNewAndNamedByItsPrefix) {
  TempDir a("sealvol-tempdir"), b("sealvol-tempdir");
  EXPECT_NE(a.path(), b.path());
  EXPECT_TRUE(fs::is_directory(a.path()));
  EXPECT_EQ(fs::path(a.path()).filename().string().rfind("sealvol-tempdir-", 0),
            0u);
  EXPECT_EQ(a.file("x"), a.path() + "/x");
}

TEST(TempDirTest, RemovesItsContentsButNotWhatALinkPointsTo) {
  TempDir outside("sealvol-tempdir-outside");
  WriteFile(outside.file("keep"), "kept");
  std::string path;
  {
    TempDir dir("sealvol-tempdir");
    path = dir.path();
    fs::create_directories(dir.file("a/b"));
    WriteFile(dir.file("a/b/file"), "x");
    fs::create_directory_symlink(outside.path(), dir.file("a/link"));
  }
  EXPECT_FALSE(fs::exists(path));
  std::ifstream kept(outside.file("keep"));
  std::string text;
  kept >> text;
  EXPECT_EQ(text, "kept");
}

// A test that failed before unmounting leaves its mount behind: the
// removal must not delete what that file system holds.
TEST(TempDirTest, DoesNotEnterAFileSystemMountedInside) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting needs root";
  std::string mount_point;
  {
    TempDir dir("sealvol-tempdir");
    mount_point = dir.file("mnt");
    fs::create_directory(mount_point);
    ASSERT_EQ(::mount("tmpfs", mount_point.c_str(), "tmpfs", 0, "size=1m"), 0);
    WriteFile(mount_point + "/data", "mounted");
  }
  EXPECT_TRUE(fs::exists(mount_point + "/data"));
  ASSERT_EQ(::umount2(mount_point.c_str(), MNT_DETACH), 0);
  fs::remove_all(fs::path(mount_point).parent_path());
}

}  // namespace
}  // namespace sealvol::testing
