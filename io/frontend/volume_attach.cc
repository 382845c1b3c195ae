#include "io/frontend/volume_attach.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "base/unique_fd.h"
#include "spdlog/spdlog.h"

namespace sealvol::io {

void InjectedCrash(const std::string& step) {
  const char* kill_after = std::getenv("SEALVOL_KILL_AFTER_STEP");
  if (kill_after != nullptr && step == kill_after) {
    // Unbuffered, so the test can tell where the process died.
    const std::string line = absl::StrCat("injected kill after step ", step, "\n");
    (void)!::write(STDERR_FILENO, line.data(), line.size());
    ::raise(SIGKILL);
  }
}

absl::Status InjectedFailure(const std::string& step) {
  InjectedCrash(step);
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
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    // A child (mkfs, blkid) must not outlive a killed parent: it would hold
    // the loop device open while the restarted node cleans up. The forking
    // thread waits for the child, so it outlives it unless the process dies.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
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

namespace {

// /proc/self/mountinfo escapes space, tab, newline and backslash as octal.
std::string EscapeMountPath(const std::string& path) {
  std::string out;
  for (char c : path) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\\') {
      out += absl::StrCat("\\", (c >> 6) & 7, (c >> 3) & 7, c & 7);
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// The FUSE connection number (the minor of the mount's anonymous device,
// /sys/fs/fuse/connections/N) of our FUSE mount at `dir`, or -1.
int FuseConnectionAt(const std::string& dir) {
  std::ifstream in("/proc/self/mountinfo");
  const std::string want = EscapeMountPath(dir);
  int found = -1;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, mount_point, token;
    fields >> id >> parent >> devno >> root >> mount_point;
    while (fields >> token && token != "-") {
    }
    std::string fstype;
    fields >> fstype;
    if (mount_point != want || fstype != kFuseFsType) continue;
    const size_t colon = devno.find(':');
    if (colon == std::string::npos || devno.substr(0, colon) != "0") continue;
    found = std::atoi(devno.c_str() + colon + 1);  // The top one wins.
  }
  return found;
}

}  // namespace

absl::Status AbortFuseConnection(const std::string& fuse_dir) {
  const int connection = FuseConnectionAt(fuse_dir);
  if (connection < 0) return absl::OkStatus();
  const std::string abort =
      absl::StrCat("/sys/fs/fuse/connections/", connection, "/abort");
  UniqueFd fd(::open(abort.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) {
    // No fusectl mounted: the kernel aborted the connection already when
    // the dead server's last /dev/fuse fd closed.
    if (errno == ENOENT) return absl::OkStatus();
    return ErrnoStatus(errno, "open", abort);
  }
  if (::write(fd.get(), "1", 1) != 1) return ErrnoStatus(errno, "write", abort);
  spdlog::info("aborted FUSE connection {} of {}", connection, fuse_dir);
  return absl::OkStatus();
}

absl::Status ClearStaleAttachment(const std::string& fuse_dir) {
  absl::Status first;
  auto keep = [&first](absl::Status s) {
    if (first.ok() && !s.ok()) first = s;
  };
  keep(AbortFuseConnection(fuse_dir));
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/sys/block", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("loop", 0) != 0) continue;
    std::ifstream backing(entry.path() / "loop" / "backing_file");
    std::string file;
    if (!std::getline(backing, file)) continue;  // Not bound.
    if (file.rfind(fuse_dir + "/", 0) != 0) continue;
    keep(DetachLoopDevice("/dev/" + name));
    spdlog::info("detached stale loop device /dev/{} ({})", name, file);
  }
  keep(UnmountRetrying(fuse_dir));
  ::rmdir(fuse_dir.c_str());
  return first;
}

absl::StatusOr<FuseServerOptions> ServingOptions(FuseServerOptions requested) {
  FuseServerOptions options = std::move(requested);
  if (const char* v = std::getenv("SEALVOL_FUSE_MAX_BACKGROUND")) {
    options.max_background = static_cast<uint16_t>(std::atoi(v));
    options.congestion_threshold =
        static_cast<uint16_t>(options.max_background * 3 / 4);
  }
  if (const char* v = std::getenv("SEALVOL_FUSE_ASYNC_DIO")) {
    options.async_dio = std::string(v) != "0";
  }
  if (options.transport == FuseTransport::kDev) return options;
  absl::Status uring = EnableFuseOverIoUring();
  if (!uring.ok()) {
    if (options.transport == FuseTransport::kUring) return uring;
    spdlog::warn("attach: {}; serving over /dev/fuse", uring.ToString());
  }
  return options;
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
  ASSIGN_OR_RETURN(options_.server, ServingOptions(options.server));
  if (options.fs != "ext4" && options.fs != "xfs") {
    return absl::InvalidArgumentError(
        absl::StrCat("file system \"", options.fs, "\": expected ext4 or xfs"));
  }

  ASSIGN_OR_RETURN(fuse_mount_, FuseMount::Create(options.fuse_dir));
  RETURN_IF_ERROR(InjectedFailure("fuse-mount"));

  ASSIGN_OR_RETURN(server_, FuseServer::Start(fuse_mount_.TakeFd(), volume,
                                              options_.server));
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
    InjectedCrash("unmount");
  }
  if (loop_.attached()) {
    keep(loop_.Detach());
    InjectedCrash("loop-detach");
  }
  if (fuse_mount_.mounted()) {
    keep(fuse_mount_.Unmount());
    InjectedCrash("fuse-unmount");
  }
  if (server_ && !server_stopped_) {
    server_->Stop();
    server_stopped_ = true;
    InjectedCrash("server-stop");
  }
  return first;
}

VolumeAttachment::~VolumeAttachment() { (void)Detach(); }

}  // namespace sealvol::io
