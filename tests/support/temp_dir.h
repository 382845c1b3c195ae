// TempDir is one test's own directory: created fresh (mkdtemp, so tests
// running at the same time from other worktrees never share one) and
// removed with its contents when the TempDir goes out of scope. The removal
// never enters a file system mounted inside (a failed test may leave one):
// that mount and its mount point stay. WriteFile puts a test's file in
// place. Thread-compatible.
#pragma once

#include <ftw.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>

namespace sealvol::testing {

class TempDir {
 public:
  // Creates <parent>/<prefix>-XXXXXX; `parent` defaults to $TMPDIR, else
  // /tmp. Aborts the test binary, naming the directory, if it cannot.
  explicit TempDir(std::string_view prefix = "sealvol-test",
                   std::string parent = "") {
    if (parent.empty()) {
      const char* tmpdir = std::getenv("TMPDIR");
      parent = tmpdir != nullptr && *tmpdir != '\0' ? tmpdir : "/tmp";
    }
    std::string name = parent + "/" + std::string(prefix) + "-XXXXXX";
    if (::mkdtemp(name.data()) == nullptr) {
      std::fprintf(stderr, "mkdtemp %s: %s\n", name.c_str(),
                   std::strerror(errno));
      std::abort();
    }
    path_ = name;
  }
  ~TempDir() {
    // Depth first, symbolic links not followed, mount points not crossed.
    ::nftw(
        path_.c_str(),
        [](const char* path, const struct stat*, int, struct FTW*) {
          ::remove(path);
          return 0;
        },
        16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path()/name.
  std::string file(std::string_view name) const {
    return path_ + "/" + std::string(name);
  }

 private:
  std::string path_;
};

// Replaces `path` with `content` (tokens, certificates, configuration).
inline void WriteFile(const std::string& path, std::string_view content) {
  std::ofstream(path, std::ios::trunc) << content;
}

}  // namespace sealvol::testing
