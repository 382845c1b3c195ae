#include "base/durable_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <random>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "base/unique_fd.h"

namespace sealvol {
namespace {

std::atomic<DurableStepObserver*> step_observer{nullptr};

void Report(DurableStep::Kind kind, const std::string& path,
            const std::string& to = "") {
  if (DurableStepObserver* o = step_observer.load(std::memory_order_acquire)) {
    o->Observe({kind, path, to});
  }
}

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
  if (status.ok()) Report(DurableStep::Kind::kWrite, path);
  if (status.ok() && ::fsync(fd.get()) != 0) {
    status = ErrnoStatus(errno, "fsync", path);
  }
  if (status.ok()) Report(DurableStep::Kind::kSyncFile, path);
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
  Report(DurableStep::Kind::kSyncDir, dir);
  return absl::OkStatus();
}

std::string ParentDirectory(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

absl::Status SyncFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "open", path);
  if (::fsync(fd.get()) != 0) return ErrnoStatus(errno, "fsync", path);
  Report(DurableStep::Kind::kSyncFile, path);
  return absl::OkStatus();
}

absl::Status ReplaceFileDurably(const std::string& from,
                                const std::string& to) {
  RETURN_IF_ERROR(SyncFile(from));
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return ErrnoStatus(errno, absl::StrCat("rename ", from, " to"), to);
  }
  Report(DurableStep::Kind::kRename, from, to);
  return SyncDirectory(ParentDirectory(to));
}

absl::Status MakeDirectoryDurably(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) == 0) {
    if (::chmod(path.c_str(), mode) != 0) {
      return ErrnoStatus(errno, "chmod", path);
    }
    return SyncDirectory(ParentDirectory(path));
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

namespace {

// Writes a synced temp file, then gives it `name`: rename(2) replaces an
// existing file, link(2) never does (the first creator wins). Either way the
// directory is synced last, so the name is durable when this returns.
absl::Status InstallSyncedFile(const std::string& dir, const std::string& name,
                               std::span<const uint8_t> content, mode_t mode,
                               bool replace) {
  ASSIGN_OR_RETURN(const std::string temp,
                   WriteSyncedTemp(dir, name, content, mode));
  const std::string from = absl::StrCat(dir, "/", temp);
  const std::string to = absl::StrCat(dir, "/", name);
  if (replace) {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      const int err = errno;
      ::unlink(from.c_str());
      return ErrnoStatus(err, "rename", to);
    }
    Report(DurableStep::Kind::kRename, from, to);
  } else {
    const int rc = ::link(from.c_str(), to.c_str());
    const int err = errno;
    if (rc == 0) Report(DurableStep::Kind::kLink, from, to);
    ::unlink(from.c_str());
    Report(DurableStep::Kind::kUnlink, from);
    if (rc != 0) return ErrnoStatus(err, "create", to);
  }
  return SyncDirectory(dir);
}

}  // namespace

absl::Status WriteFileAtomically(const std::string& dir,
                                 const std::string& name,
                                 std::span<const uint8_t> content,
                                 mode_t mode) {
  return InstallSyncedFile(dir, name, content, mode, /*replace=*/true);
}

absl::Status WriteFileAtomically(const std::string& dir,
                                 const std::string& name,
                                 std::string_view content, mode_t mode) {
  return WriteFileAtomically(
      dir, name,
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(content.data()),
                               content.size()),
      mode);
}

absl::Status CreateFileAtomically(const std::string& dir,
                                  const std::string& name,
                                  std::span<const uint8_t> content,
                                  mode_t mode) {
  return InstallSyncedFile(dir, name, content, mode, /*replace=*/false);
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

absl::Status RemoveFileDurably(const std::string& dir,
                               const std::string& name) {
  const std::string path = absl::StrCat(dir, "/", name);
  if (::unlink(path.c_str()) != 0) return ErrnoStatus(errno, "unlink", path);
  Report(DurableStep::Kind::kUnlink, path);
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

DurableStepObserver* SetDurableStepObserver(DurableStepObserver* observer) {
  return step_observer.exchange(observer, std::memory_order_acq_rel);
}

}  // namespace sealvol
