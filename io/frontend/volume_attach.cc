#include "io/frontend/volume_attach.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "spdlog/spdlog.h"

namespace sealvol::io {

absl::Status InjectedFailure(const std::string& step) {
  const char* fail = std::getenv("SEALVOL_FAIL_AFTER_STEP");
  if (fail != nullptr && step == fail) {
    return absl::InternalError(
        absl::StrCat("injected failure after step ", step));
  }
  return absl::OkStatus();
}

namespace {

struct SpawnResult {
  int code = -1;  // Exit status, or -1 when it did not exit normally.
  std::string out;
  std::string err;
};

std::string ReadAll(int fd) {
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) text.append(buf, n);
  return text;
}

// Runs argv and waits. Its stdout is captured when `capture_out` (for short
// outputs only: it is read before stderr), else discarded.
SpawnResult Spawn(const std::vector<std::string>& argv, bool capture_out) {
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return {-1, "", std::strerror(errno)};
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return {-1, "", std::strerror(errno)};
  }
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int null = ::open("/dev/null", O_RDWR);
    ::dup2(null, 0);
    ::dup2(capture_out ? out_pipe[1] : null, 1);
    ::dup2(err_pipe[1], 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  SpawnResult result;
  if (pid > 0) {
    result.out = ReadAll(out_pipe[0]);
    result.err = ReadAll(err_pipe[0]);
    int wstatus = 0;
    while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
    }
    result.code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
  } else {
    result.err = std::strerror(errno);
  }
  ::close(out_pipe[0]);
  ::close(err_pipe[0]);
  return result;
}

std::string LastLine(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) {
    text.pop_back();
  }
  const size_t nl = text.rfind('\n');
  return nl == std::string::npos ? text : text.substr(nl + 1);
}

}  // namespace

absl::Status RunProgram(const std::vector<std::string>& argv) {
  SpawnResult r = Spawn(argv, false);
  if (r.code == 0) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(absl::StrJoin(argv, " "),
                                          ": exit status ", r.code, ": ",
                                          LastLine(r.err)));
}

absl::StatusOr<std::string> ProbeFilesystem(const std::string& device) {
  // -p probes the device itself, not blkid's cache; exit 2 = nothing found.
  SpawnResult r = Spawn({"blkid", "-p", "-o", "value", "-s", "TYPE", device},
                        true);
  if (r.code == 2) return std::string();
  if (r.code != 0) {
    return absl::InternalError(absl::StrCat("blkid -p ", device,
                                            ": exit status ", r.code, ": ",
                                            LastLine(r.err)));
  }
  return LastLine(r.out);
}

absl::StatusOr<std::unique_ptr<VolumeAttachment>> VolumeAttachment::Attach(
    VolumeIo* volume, const AttachOptions& options) {
  std::unique_ptr<VolumeAttachment> attachment(new VolumeAttachment());
  absl::Status status = attachment->Build(volume, options);
  if (!status.ok()) {
    absl::Status undo = attachment->Detach();
    if (!undo.ok()) {
      spdlog::error("attach: undo after failure: {}", undo.ToString());
    }
    return status;
  }
  return attachment;
}

absl::Status VolumeAttachment::Build(VolumeIo* volume,
                                     const AttachOptions& options) {
  options_ = options;
  if (options.fs != "ext4" && options.fs != "xfs") {
    return absl::InvalidArgumentError(
        absl::StrCat("file system \"", options.fs, "\": expected ext4 or xfs"));
  }

  ASSIGN_OR_RETURN(fuse_mount_, FuseMount::Create(options.fuse_dir));
  RETURN_IF_ERROR(InjectedFailure("fuse-mount"));

  ASSIGN_OR_RETURN(server_, FuseServer::Start(fuse_mount_.TakeFd(), volume,
                                              options.server));
  file_ = absl::StrCat(options.fuse_dir, "/", options.server.file_name);
  RETURN_IF_ERROR(InjectedFailure("fuse-serve"));

  ASSIGN_OR_RETURN(loop_, LoopDevice::Attach(file_));
  RETURN_IF_ERROR(InjectedFailure("loop"));

  if (options.block) return absl::OkStatus();

  ASSIGN_OR_RETURN(const std::string found, ProbeFilesystem(loop_.path()));
  if (found.empty()) {
    // First use: a blank device. lazy_*_init=0 does the init work now rather
    // than in the background after mount; discards are left to the volume.
    if (options.fs == "ext4") {
      RETURN_IF_ERROR(RunProgram(
          {"mkfs.ext4", "-F", "-q", "-E",
           "lazy_itable_init=0,lazy_journal_init=0,nodiscard", loop_.path()}));
    } else {
      RETURN_IF_ERROR(RunProgram({"mkfs.xfs", "-f", "-q", "-K", loop_.path()}));
    }
    formatted_ = true;
  } else if (found != options.fs) {
    return absl::FailedPreconditionError(
        absl::StrCat("volume holds a ", found, " file system, not ",
                     options.fs));
  }
  RETURN_IF_ERROR(InjectedFailure("mkfs"));

  std::error_code ec;
  std::filesystem::create_directories(options.mountpoint, ec);
  if (::mount(loop_.path().c_str(), options.mountpoint.c_str(),
              options.fs.c_str(), MS_NOSUID | MS_NODEV, nullptr) != 0) {
    return ErrnoStatus(errno,
                       absl::StrCat("mount ", options.fs, " ", loop_.path()),
                       options.mountpoint);
  }
  fs_mounted_ = true;
  RETURN_IF_ERROR(InjectedFailure("mount"));
  return absl::OkStatus();
}

absl::Status VolumeAttachment::Detach() {
  absl::Status first;
  auto keep = [&first](absl::Status s) {
    if (!s.ok()) {
      spdlog::error("detach: {}", s.ToString());
      if (first.ok()) first = s;
    }
  };
  if (fs_mounted_) {
    // umount flushes the file system; the flush reaches the engine through
    // loop (REQ_FLUSH -> fsync on the file) and FUSE (FSYNC).
    keep(UnmountRetrying(options_.mountpoint));
    fs_mounted_ = false;
  }
  keep(loop_.Detach());
  keep(fuse_mount_.Unmount());
  if (server_) server_->Stop();
  return first;
}

VolumeAttachment::~VolumeAttachment() { (void)Detach(); }

}  // namespace sealvol::io
