// KubeletPaths confines the staging and target paths of CSI Node requests to
// the kubelet's directory (--kubelet-dir) and resolves them without
// following symbolic links (openat2 with RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS), so a request can neither name a path elsewhere
// (/etc) nor reach out of the directory through a planted link. The root
// itself is the operator's and may be a link. Thread-safe: immutable.
//
// Errors: InvalidArgument naming the field for a path that is not confined
// (relative, "." or ".." components, outside the root, a link, a file where
// a directory is needed); an errno Status naming the path otherwise.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/unique_fd.h"

namespace sealvol::csi {

inline constexpr char kDefaultKubeletDir[] = "/var/lib/kubelet";

class KubeletPaths {
 public:
  // `root`: an absolute directory; trailing slashes are dropped.
  explicit KubeletPaths(std::string root);

  // OK when `path` is absolute, has no empty, "." or ".." component, lies
  // strictly beneath the root, and none of its existing components beneath
  // the root is a symbolic link. Parts that do not exist yet are fine.
  absl::Status Check(const std::string& path, std::string_view field) const;

  // Creates the missing directories of `path` (mode `mode`) beneath the
  // root, never through a link, and returns `path` opened O_PATH.
  absl::StatusOr<UniqueFd> MakeDirs(const std::string& path, mode_t mode,
                                    std::string_view field) const;

  // Creates (or opens) the regular file `path` and its missing parents, as
  // a bind-mount target for a block device; returns it opened O_PATH.
  absl::StatusOr<UniqueFd> MakeFile(const std::string& path,
                                    std::string_view field) const;

  // Removes `path`, an empty directory or a file, never through a link.
  // OK when it is already gone.
  absl::Status Remove(const std::string& path, std::string_view field) const;

  const std::string& root() const { return root_; }

 private:
  // `path` relative to the root, after the lexical checks.
  absl::StatusOr<std::string> Relative(const std::string& path,
                                       std::string_view field) const;
  absl::StatusOr<UniqueFd> OpenRoot() const;

  std::string root_;
};

}  // namespace sealvol::csi
