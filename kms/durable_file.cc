#include "kms/durable_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <random>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "base/unique_fd.h"

namespace sealvol::kms {
namespace {

absl::Status WriteAll(int fd, std::span<const uint8_t> content,
                      const std::string& path) {
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "write", path);
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

std::string TempName(const std::string& name) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return absl::StrCat(kTempFilePrefix, name, ".", ::getpid(), ".", rng());
}

// Writes and fsyncs a new temporary file in `dir`; returns its name.
absl::StatusOr<std::string> WriteSyncedTemp(const std::string& dir,
                                            const std::string& name,
                                            std::span<const uint8_t> content,
                                            mode_t mode) {
  const std::string temp = TempName(name);
  const std::string path = absl::StrCat(dir, "/", temp);
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                     mode));
  if (!fd) return ErrnoStatus(errno, "create", path);
  // The umask may have narrowed the mode; key files rely on the exact mode.
  absl::Status status = absl::OkStatus();
  if (::fchmod(fd.get(), mode) != 0) {
    status = ErrnoStatus(errno, "chmod", path);
  }
  if (status.ok()) status = WriteAll(fd.get(), content, path);
  if (status.ok() && ::fsync(fd.get()) != 0) {
    status = ErrnoStatus(errno, "fsync", path);
  }
  if (!status.ok()) {
    ::unlink(path.c_str());
    return status;
  }
  return temp;
}

}  // namespace

absl::Status SyncDirectory(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "open directory", dir);
  if (::fsync(fd.get()) != 0) return ErrnoStatus(errno, "fsync", dir);
  return absl::OkStatus();
}

absl::Status MakeDirectoryDurably(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) == 0) {
    if (::chmod(path.c_str(), mode) != 0) {
      return ErrnoStatus(errno, "chmod", path);
    }
    const size_t slash = path.find_last_of('/');
    const std::string parent =
        slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
    return SyncDirectory(parent);
  }
  if (errno != EEXIST) return ErrnoStatus(errno, "mkdir", path);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(errno, "stat", path);
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("mkdir ", path, ": exists and is not a directory"));
  }
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::string& dir,
                                 const std::string& name,
                                 std::span<const uint8_t> content,
                                 mode_t mode) {
  ASSIGN_OR_RETURN(const std::string temp,
                   WriteSyncedTemp(dir, name, content, mode));
  const std::string from = absl::StrCat(dir, "/", temp);
  const std::string to = absl::StrCat(dir, "/", name);
  if (::rename(from.c_str(), to.c_str()) != 0) {
    const int err = errno;
    ::unlink(from.c_str());
    return ErrnoStatus(err, "rename", to);
  }
  return SyncDirectory(dir);
}

absl::Status CreateFileAtomically(const std::string& dir,
                                  const std::string& name,
                                  std::span<const uint8_t> content,
                                  mode_t mode) {
  ASSIGN_OR_RETURN(const std::string temp,
                   WriteSyncedTemp(dir, name, content, mode));
  const std::string from = absl::StrCat(dir, "/", temp);
  const std::string to = absl::StrCat(dir, "/", name);
  // link(2) never replaces an existing name: the first creator wins.
  const int rc = ::link(from.c_str(), to.c_str());
  const int err = errno;
  ::unlink(from.c_str());
  if (rc != 0) return ErrnoStatus(err, "create", to);
  return SyncDirectory(dir);
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path,
                                          size_t max_size) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "open", path);
  std::string out;
  char buf[4096];
  while (true) {
    const ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "read", path);
    }
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > max_size) {
      return absl::FailedPreconditionError(
          absl::StrCat("read ", path, ": larger than ", max_size, " bytes"));
    }
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

absl::StatusOr<crypto::SecretBytes> ReadSecretFile(const std::string& path,
                                                   size_t size) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return ErrnoStatus(errno, "open", path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "stat", path);
  if ((st.st_mode & 077) != 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        "open ", path, ": key file is accessible by group or others (mode ",
        absl::Hex(st.st_mode & 07777), "); expected 0600"));
  }
  if (static_cast<size_t>(st.st_size) != size) {
    return absl::DataLossError(absl::StrCat("read ", path, ": key file has ",
                                            st.st_size, " bytes, expected ",
                                            size));
  }
  ASSIGN_OR_RETURN(crypto::SecretBytes key, crypto::SecretBytes::Allocate(size));
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::read(fd.get(), key.data() + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "read", path);
    }
    if (n == 0) {
      return absl::DataLossError(absl::StrCat("read ", path, ": short file"));
    }
    done += static_cast<size_t>(n);
  }
  return key;
}

absl::Status RemoveFileDurably(const std::string& dir,
                               const std::string& name) {
  const std::string path = absl::StrCat(dir, "/", name);
  if (::unlink(path.c_str()) != 0) return ErrnoStatus(errno, "unlink", path);
  return SyncDirectory(dir);
}

absl::Status RemoveStaleTempFiles(const std::string& dir) {
  std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), ::closedir);
  if (!d) return ErrnoStatus(errno, "opendir", dir);
  const size_t prefix_len = std::strlen(kTempFilePrefix);
  bool removed = false;
  while (struct dirent* e = ::readdir(d.get())) {
    if (std::strncmp(e->d_name, kTempFilePrefix, prefix_len) != 0) continue;
    const std::string path = absl::StrCat(dir, "/", e->d_name);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return ErrnoStatus(errno, "unlink", path);
    }
    removed = true;
  }
  return removed ? SyncDirectory(dir) : absl::OkStatus();
}

}  // namespace sealvol::kms
