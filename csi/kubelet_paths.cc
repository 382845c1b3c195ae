#include "csi/kubelet_paths.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"

namespace sealvol::csi {

namespace {

// openat2 beneath `dir` without following any link; -1 and errno on error
// (ELOOP: a link; EXDEV: the path would leave `dir`).
int OpenBeneath(int dir, const std::string& relative, uint64_t flags,
                mode_t mode = 0) {
  struct open_how how {};
  how.flags = flags | O_CLOEXEC;
  how.mode = (flags & O_CREAT) ? mode : 0;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  int fd;
  do {
    fd = static_cast<int>(
        syscall(SYS_openat2, dir, relative.c_str(), &how, sizeof(how)));
  } while (fd < 0 && errno == EAGAIN);
  return fd;
}

std::vector<std::string> Components(const std::string& relative) {
  return absl::StrSplit(relative, '/');
}

absl::Status NotConfined(std::string_view field, const std::string& path,
                         std::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat(std::string(field), " ", path.substr(0, 256), ": ",
                   std::string(why)));
}

// The error for an openat2 failure of a request path.
absl::Status ResolveError(int err, std::string_view field,
                          const std::string& path) {
  switch (err) {
    case ELOOP:
      return NotConfined(field, path, "has a symbolic link in it (refused)");
    case EXDEV:
      return NotConfined(field, path, "leaves the kubelet directory");
    case ENOTDIR:
      return NotConfined(field, path, "has a non-directory in its parents");
    default:
      return ErrnoStatus(err, "resolve", path);
  }
}

}  // namespace

KubeletPaths::KubeletPaths(std::string root) : root_(std::move(root)) {
  while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
}

absl::StatusOr<std::string> KubeletPaths::Relative(
    const std::string& path, std::string_view field) const {
  if (path.empty() || path[0] != '/') {
    return NotConfined(field, path, "is not an absolute path");
  }
  if (path.find('\0') != std::string::npos) {
    return NotConfined(field, path, "contains a NUL byte");
  }
  const std::string prefix = root_ == "/" ? "/" : root_ + "/";
  if (path.size() <= prefix.size() || path.compare(0, prefix.size(), prefix) != 0) {
    return NotConfined(field, path,
                       absl::StrCat("is not beneath the kubelet directory ", root_));
  }
  std::string relative = path.substr(prefix.size());
  while (!relative.empty() && relative.back() == '/') relative.pop_back();
  for (const std::string& part : Components(relative)) {
    if (part.empty() || part == "." || part == "..") {
      return NotConfined(field, path,
                         "has an empty, \".\" or \"..\" component");
    }
  }
  if (relative.empty()) {
    return NotConfined(field, path, "is the kubelet directory itself");
  }
  return relative;
}

absl::StatusOr<UniqueFd> KubeletPaths::OpenRoot() const {
  UniqueFd fd(::open(root_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "open kubelet directory", root_);
  return fd;
}

absl::Status KubeletPaths::Check(const std::string& path,
                                 std::string_view field) const {
  ASSIGN_OR_RETURN(std::string relative, Relative(path, field));
  ASSIGN_OR_RETURN(UniqueFd root, OpenRoot());
  // Component by component: everything that exists must resolve without a
  // link; the first missing one ends the walk (the rest is created later,
  // by MakeDirs, just as carefully).
  std::string prefix;
  for (const std::string& part : Components(relative)) {
    prefix += prefix.empty() ? part : "/" + part;
    UniqueFd fd(OpenBeneath(root.get(), prefix, O_PATH));
    if (fd) continue;
    if (errno == ENOENT) return absl::OkStatus();
    return ResolveError(errno, field, path);
  }
  return absl::OkStatus();
}

absl::StatusOr<UniqueFd> KubeletPaths::MakeDirs(const std::string& path,
                                                mode_t mode,
                                                std::string_view field) const {
  ASSIGN_OR_RETURN(std::string relative, Relative(path, field));
  ASSIGN_OR_RETURN(UniqueFd dir, OpenRoot());
  for (const std::string& part : Components(relative)) {
    UniqueFd next(OpenBeneath(dir.get(), part, O_PATH | O_DIRECTORY));
    if (!next && errno == ENOENT) {
      // mkdirat never follows a link in its last component: a link planted
      // here makes it EEXIST and the open below ELOOP.
      if (::mkdirat(dir.get(), part.c_str(), mode) != 0 && errno != EEXIST) {
        return ErrnoStatus(errno, "mkdir", path);
      }
      next = UniqueFd(OpenBeneath(dir.get(), part, O_PATH | O_DIRECTORY));
    }
    if (!next) return ResolveError(errno, field, path);
    dir = std::move(next);
  }
  return dir;
}

absl::StatusOr<UniqueFd> KubeletPaths::MakeFile(const std::string& path,
                                                std::string_view field) const {
  ASSIGN_OR_RETURN(std::string relative, Relative(path, field));
  const size_t slash = path.find_last_of('/');
  const std::string name = path.substr(slash + 1);
  UniqueFd parent;
  if (relative.find('/') == std::string::npos) {
    ASSIGN_OR_RETURN(parent, OpenRoot());
  } else {
    ASSIGN_OR_RETURN(parent, MakeDirs(path.substr(0, slash), 0750, field));
  }
  UniqueFd file(OpenBeneath(parent.get(), name, O_WRONLY | O_CREAT, 0600));
  if (!file) {
    if (errno == EISDIR) return NotConfined(field, path, "is a directory");
    return ResolveError(errno, field, path);
  }
  UniqueFd opened(OpenBeneath(parent.get(), name, O_PATH));
  if (!opened) return ResolveError(errno, field, path);
  return opened;
}

absl::Status KubeletPaths::Remove(const std::string& path,
                                  std::string_view field) const {
  ASSIGN_OR_RETURN(std::string relative, Relative(path, field));
  const size_t slash = relative.find_last_of('/');
  const std::string name =
      slash == std::string::npos ? relative : relative.substr(slash + 1);
  ASSIGN_OR_RETURN(UniqueFd root, OpenRoot());
  UniqueFd parent;
  if (slash == std::string::npos) {
    parent = std::move(root);
  } else {
    parent = UniqueFd(OpenBeneath(root.get(), relative.substr(0, slash),
                                  O_PATH | O_DIRECTORY));
    if (!parent && errno == ENOENT) return absl::OkStatus();
    if (!parent) return ResolveError(errno, field, path);
  }
  struct stat st {};
  if (::fstatat(parent.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return ErrnoStatus(errno, "stat", path);
  }
  if (S_ISLNK(st.st_mode)) {
    return NotConfined(field, path, "is a symbolic link (left alone)");
  }
  const int flags = S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0;
  if (::unlinkat(parent.get(), name.c_str(), flags) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, "remove", path);
  }
  return absl::OkStatus();
}

}  // namespace sealvol::csi
