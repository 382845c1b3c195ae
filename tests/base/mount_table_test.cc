#include "base/mount_table.h"

#include <unistd.h>

#include "gtest/gtest.h"

namespace sealvol {
namespace {

TEST(MountTableTest, ParsesFieldsAndUndoesTheEscapes) {
  const std::vector<MountEntry> entries = ParseMountInfo(
      "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
      "97 22 0:52 / /var/lib/sv/fuse/sv-1 rw,nosuid,nodev - fuse.sealvol "
      "sealvol rw,user_id=0\n"
      "98 22 7:3 /sub /mnt/with\\040space\\134x rw master:2 shared:7 - xfs "
      "/dev/loop3 rw\n");
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].mount_point, "/");
  EXPECT_EQ(entries[0].fs_type, "ext4");
  EXPECT_EQ(entries[0].source, "/dev/sda1");
  EXPECT_EQ(entries[0].major, 8u);
  EXPECT_EQ(entries[1].fs_type, "fuse.sealvol");
  EXPECT_EQ(entries[1].major, 0u);
  EXPECT_EQ(entries[1].minor, 52u);
  // Several optional fields before the separator; escaped space and
  // backslash in the mount point.
  EXPECT_EQ(entries[2].mount_point, "/mnt/with space\\x");
  EXPECT_EQ(entries[2].root, "/sub");
  EXPECT_EQ(entries[2].fs_type, "xfs");
  EXPECT_EQ(entries[2].source, "/dev/loop3");
  EXPECT_EQ(entries[2].minor, 3u);
}

TEST(MountTableTest, SkipsLinesWithoutTheFieldsOfMountinfo) {
  const std::vector<MountEntry> entries = ParseMountInfo(
      "\n"
      "garbage\n"
      "1 2 3:4 / /no-separator rw a b c d\n"
      "1 2 x:y / /bad-devno rw - ext4 /dev/x rw\n"
      "5 1 0:9 / /ok rw - tmpfs tmpfs rw\n");
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].mount_point, "/ok");
  EXPECT_EQ(entries[0].source, "tmpfs");
}

TEST(MountTableTest, ReadsThisProcesssTable) {
  auto entries = ReadMountTable();
  ASSERT_TRUE(entries.ok()) << entries.status();
  bool root = false;
  for (const MountEntry& entry : *entries) root |= entry.mount_point == "/";
  EXPECT_TRUE(root);
}

}  // namespace
}  // namespace sealvol
