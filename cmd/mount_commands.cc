// open: fork a server process, which unwraps the key, brings the volume up
// through the node's data path (csi::FuseDataPath: engine -> FUSE -> loop),
// makes and mounts the file system (csi/filesystem.h) and reports readiness
// over a pipe; the parent prints the result and exits. Everything secret happens
// in the child: engine threads and locked key pages (MADV_DONTFORK) do not
// survive fork(). close: SIGTERM the server and wait. status: the records.
#include "cmd/mount_commands.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/injected_fault.h"
#include "base/status_macros.h"
#include "cmd/exit_codes.h"
#include "cmd/kms_flags.h"
#include "crypto/secret_bytes.h"
#include "csi/committed_state.h"
#include "csi/filesystem.h"
#include "csi/fuse_data_path.h"
#include "csi/mounter.h"
#include "io/frontend/fuse_mount.h"
#include "io/frontend/fuse_server.h"
#include "io/frontend/runtime_record.h"
#include "io/sealed_volume.h"
#include "kms/broker/refusal.h"
#include "kms/key_provider.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace sealvol::cmd {
namespace {

struct OpenFlags {
  std::string image;
  std::string mountpoint;
  std::string fs = "ext4";
  bool block = false;
  std::string transport = "auto";
  KmsFlags keys;  // --state-dir also holds the records and FUSE mounts.
  bool foreground = false;
};

// A failure with the exit code it maps to.
struct Failure {
  int code = kExitError;
  std::string message;
};

std::string Absolute(const std::string& path) {
  std::error_code ec;
  auto p = std::filesystem::weakly_canonical(path, ec);
  return ec ? path : p.string();
}

// Readiness report from the server to the waiting parent: one line,
// "OK <loop-device> <transport>" or "ERR <exit-code> <message>".
void Report(int fd, const std::string& line) {
  if (fd < 0) return;
  const std::string text = line + "\n";
  (void)!::write(fd, text.data(), text.size());
  ::close(fd);
}

Failure FromStatus(const absl::Status& s, int code) {
  // The code and message; an error kind is for ExitCodeFor, not for people.
  return {code, s.ToString(absl::StatusToStringMode::kWithNoExtraData)};
}

// What the data path checks and records for `sealvol open`, from the
// registry's record of the volume (`registry` must outlive the options):
// the format claimed by `sealvol format` (an image from before format
// claims is adopted), the state the image must be at, and the session's
// commits, made as node "sealvol-open".
csi::AttachOptions RegistryAttachOptions(
    kms::KeyProvider& registry, const kms::VolumeRecord& record,
    const std::optional<io::VolumeState>& expected) {
  static constexpr char kNode[] = "sealvol-open";
  const std::string volume_id = record.volume_id;
  csi::AttachOptions attach;
  attach.volume_id = volume_id;
  attach.registry_format_id = record.format_id;
  attach.claim_format = [&registry, volume_id](
                            const std::string& format_id,
                            const std::optional<io::VolumeState>& first)
      -> absl::Status {
    std::optional<kms::CommittedState> state;
    if (first.has_value()) state = csi::ToCommittedState(*first);
    ASSIGN_OR_RETURN(kms::VolumeRecord claimed,
                     registry.ClaimFormat(volume_id,
                                          {.format_id = format_id,
                                           .node = kNode,
                                           .unix_time = std::time(nullptr),
                                           .state = state}));
    if (claimed.format_id != format_id) {
      return broker::RefusalStatus(
          broker::Reason::kAlreadyFormatted,
          "the registry holds format id " + claimed.format_id);
    }
    return absl::OkStatus();
  };
  attach.expected_state = expected;
  if (record.state.has_value()) attach.min_epoch = record.state->epoch;
  attach.rollback_accepted = record.rollback_pending;
  attach.commit_state = [&registry, volume_id](const io::VolumeState& state,
                                               bool accept_rollback) {
    return registry
        .CommitState(volume_id, {.state = csi::ToCommittedState(state),
                                 .node = kNode,
                                 .unix_time = std::time(nullptr),
                                 .accept_rollback = accept_rollback})
        .status();
  };
  return attach;
}

// The file system on `device` (mkfs on first use) and the mountpoint.
absl::Status PrepareFilesystem(const std::string& device,
                               const OpenFlags& flags) {
  auto formatted = csi::EnsureFilesystem(device, flags.fs);
  if (!formatted.ok()) {
    return absl::Status(formatted.status().code(),
                        "the volume's device " +
                            std::string(formatted.status().message()));
  }
  std::error_code ec;
  std::filesystem::create_directories(flags.mountpoint, ec);
  return absl::OkStatus();
}

// The server: runs in the forked child (or in the foreground). Returns the
// exit code. `ready_fd` gets one report line, then is closed.
int Serve(const OpenFlags& flags, int ready_fd) {
  auto fail = [&](const Failure& f) {
    spdlog::error("open {}: {}", flags.image, f.message);
    Report(ready_fd, absl::StrCat("ERR ", f.code, " ", f.message));
    return f.code;
  };
  // SIGTERM/SIGINT are taken synchronously by the main thread below; block
  // them before any thread exists so no other thread receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto header = io::ReadHeader(flags.image);
  if (!header.ok()) {
    return fail(FromStatus(header.status(), ExitCodeFor(header.status(),
                                                        CommandFamily::kVolume)));
  }
  const std::string volume_id = io::VolumeIdString(header->volume_id);
  if (absl::Status s = InjectedFailure("header"); !s.ok()) {
    return fail(FromStatus(s, kExitError));
  }

  auto provider = flags.keys.OpenProvider();
  if (!provider.ok()) return fail(FromStatus(provider.status(), kExitUnavailable));
  auto dek = (*provider)->UnwrapVolumeKey(volume_id);
  if (!dek.ok()) {
    // As for the key commands: no record (NotFound) is a destroyed key.
    return fail(FromStatus(dek.status(),
                           ExitCodeFor(dek.status(), CommandFamily::kKey)));
  }
  if (absl::Status s = InjectedFailure("key"); !s.ok()) {
    return fail(FromStatus(s, kExitError));
  }

  // The registry's record says which state the image must be at and which
  // format it holds; the data path checks both, commits the session's start
  // before the first write and its close after the engine closes.
  auto volume_record = (*provider)->GetVolume(volume_id);
  if (!volume_record.ok()) {
    dek->Wipe();
    return fail(FromStatus(volume_record.status(),
                           ExitCodeFor(volume_record.status(), CommandFamily::kKey)));
  }
  auto expected = csi::ExpectedState(*volume_record);
  if (!expected.ok()) {
    dek->Wipe();
    return fail(FromStatus(expected.status(), kExitError));
  }
  csi::AttachOptions attach =
      RegistryAttachOptions(**provider, *volume_record, *expected);
  attach.image_path = flags.image;
  attach.work_dir = absl::StrCat(flags.keys.state_dir, "/fuse/", volume_id);
  attach.transport = *io::ParseFuseTransport(flags.transport);
  csi::FuseDataPath data_path;
  auto device = data_path.Attach(attach, *dek);
  dek->Wipe();
  if (!device.ok()) {
    return fail(FromStatus(device.status(), ExitCodeFor(device.status(),
                                                        CommandFamily::kVolume)));
  }
  // From here on a failure undoes: our mount, the data path, the record.
  bool mounted = false;
  auto undo = [&](const Failure& f) {
    if (mounted) (void)csi::UnmountIfMounted(flags.mountpoint);
    (void)data_path.Detach(volume_id);
    (void)io::RemoveRuntimeRecord(flags.keys.state_dir, volume_id);
    return fail(f);
  };
  if (!flags.block) {
    absl::Status s = PrepareFilesystem(*device, flags);
    if (s.ok()) {
      s = csi::MountFilesystem(*device, flags.mountpoint, flags.fs, {},
                               /*read_only=*/false);
      mounted = s.ok();
    }
    if (s.ok()) s = InjectedFailure("mount");
    if (!s.ok()) return undo(FromStatus(s, kExitError));
  }

  io::RuntimeRecord record;
  record.pid = ::getpid();
  record.volume_id = volume_id;
  record.image = flags.image;
  record.loop_device = *device;
  record.mountpoint = flags.block ? "" : flags.mountpoint;
  record.fuse_dir = attach.work_dir;
  record.transport = io::FuseTransportName(
      data_path.Transport(volume_id).value_or(io::FuseTransport::kDev));
  record.fs = flags.block ? "" : flags.fs;
  record.block = flags.block;
  record.started_unix = std::time(nullptr);
  absl::Status written = io::WriteRuntimeRecord(flags.keys.state_dir, record);
  if (written.ok()) written = InjectedFailure("record");
  if (!written.ok()) return undo(FromStatus(written, kExitError));
  spdlog::info("open {}: {} ready on {} (transport {})", flags.image,
               volume_id, record.loop_device, record.transport);
  Report(ready_fd, absl::StrCat("OK ", record.loop_device, " ",
                                record.transport));

  // Serve until SIGTERM/SIGINT, or until the kernel ends the connection
  // (someone unmounted the FUSE directory or aborted it).
  while (true) {
    timespec timeout{0, 200 * 1000 * 1000};
    const int sig = sigtimedwait(&signals, nullptr, &timeout);
    if (sig == SIGTERM || sig == SIGINT) break;
    if (absl::IsUnavailable(data_path.Health(volume_id))) {
      spdlog::error("open {}: FUSE connection ended under us", flags.image);
      break;
    }
  }
  int code = kExitOk;
  if (!flags.block) {
    // umount flushes the file system; the flush reaches the engine through
    // loop (REQ_FLUSH -> fsync on the file) and FUSE (FSYNC).
    if (absl::Status s = csi::UnmountIfMounted(flags.mountpoint); !s.ok()) {
      spdlog::error("close {}: {}", flags.image, s.ToString());
      code = kExitError;
    }
    InjectedCrash("unmount");
  }
  // Ends the export, closes the engine and commits its closed state (a
  // commit that fails is logged: the next open accepts the open session).
  if (absl::Status s = data_path.Detach(volume_id); !s.ok()) {
    spdlog::error("close {}: {}", flags.image, s.ToString());
    code = kExitError;
  }
  if (code == kExitOk) {
    (void)io::RemoveRuntimeRecord(flags.keys.state_dir, volume_id);
    spdlog::info("close {}: done", flags.image);
  }
  return code;
}

int RunOpen(OpenFlags flags) {
  flags.image = Absolute(flags.image);
  flags.keys.state_dir = Absolute(flags.keys.state_dir);
  if (!flags.block) {
    if (flags.mountpoint.empty()) {
      std::fprintf(stderr, "open: --mountpoint is required unless --block\n");
      return kExitUsage;
    }
    flags.mountpoint = Absolute(flags.mountpoint);
  }
  if (!io::ParseFuseTransport(flags.transport).ok()) {
    std::fprintf(stderr, "open: --transport must be auto, uring or dev\n");
    return kExitUsage;
  }
  // Already open? A live server refuses; a dead one's leftovers go first.
  auto records = io::ListRuntimeRecords(flags.keys.state_dir);
  if (records.ok()) {
    for (const auto& r : *records) {
      if (r.image != flags.image &&
          (flags.block || r.mountpoint != flags.mountpoint)) {
        continue;
      }
      if (io::ServerAlive(r.pid)) {
        std::fprintf(stderr, "open %s: already open (pid %d, %s)\n",
                     flags.image.c_str(), r.pid,
                     r.block ? r.loop_device.c_str() : r.mountpoint.c_str());
        return kExitInUse;
      }
      spdlog::warn("open: cleaning up after dead server {} of {}", r.pid,
                   r.image);
      if (absl::Status s = io::CleanUpStale(flags.keys.state_dir, r); !s.ok()) {
        std::fprintf(stderr, "open %s: cleanup of stale state: %s\n",
                     flags.image.c_str(), s.ToString().c_str());
        return kExitError;
      }
    }
  }

  if (flags.foreground) return Serve(flags, -1);

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    std::perror("open: pipe");
    return kExitError;
  }
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    std::perror("open: fork");
    return kExitError;
  }
  if (pid == 0) {
    ::close(pipe_fds[0]);
    ::setsid();
    // The server's log goes next to its record.
    const std::string log_dir = io::RuntimeDir(flags.keys.state_dir);
    std::filesystem::create_directories(log_dir);
    const std::string log =
        absl::StrCat(log_dir, "/", std::filesystem::path(flags.image).filename().string(), ".log");
    const int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    const int null = ::open("/dev/null", O_RDWR);
    ::dup2(null, 0);
    ::dup2(log_fd >= 0 ? log_fd : null, 1);
    ::dup2(log_fd >= 0 ? log_fd : null, 2);
    ::_exit(Serve(flags, pipe_fds[1]));
  }
  ::close(pipe_fds[1]);
  std::string line;
  char buf[512];
  ssize_t n;
  while ((n = ::read(pipe_fds[0], buf, sizeof(buf))) > 0) line.append(buf, n);
  ::close(pipe_fds[0]);
  while (!line.empty() && line.back() == '\n') line.pop_back();
  if (line.rfind("OK ", 0) == 0) {
    const std::string rest = line.substr(3);
    const std::string device = rest.substr(0, rest.find(' '));
    if (flags.block) {
      std::printf("%s\n", device.c_str());
    } else {
      std::printf("%s mounted on %s (%s, transport %s)\n", flags.image.c_str(),
                  flags.mountpoint.c_str(), device.c_str(),
                  rest.substr(rest.find(' ') + 1).c_str());
    }
    return kExitOk;
  }
  // The server failed and is exiting; reap it so nothing is left behind.
  int wstatus = 0;
  ::waitpid(pid, &wstatus, 0);
  if (line.rfind("ERR ", 0) == 0) {
    const std::string rest = line.substr(4);
    const int code = std::atoi(rest.c_str());
    std::fprintf(stderr, "open %s: %s\n", flags.image.c_str(),
                 rest.substr(rest.find(' ') + 1).c_str());
    return code > 0 ? code : kExitError;
  }
  std::fprintf(stderr, "open %s: server exited without a report (status %d)\n",
               flags.image.c_str(), wstatus);
  return kExitError;
}

// True when `dir` is a directory of this user that no one else may write.
bool OwnedAndPrivate(const std::string& dir) {
  struct stat st {};
  return ::lstat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode) &&
         st.st_uid == ::geteuid() && (st.st_mode & 022) == 0;
}

// The state directories to look in for an open volume: `state_dir`, then
// that of every volume `sealvol open` serves on this machine, found in the
// mount table (each serves its FUSE file at <state-dir>/fuse/<volume-id>;
// see Serve), so `close` needs no --state-dir. A directory found that way
// is used only if it and its run/ are ours and private: anyone may mount a
// FUSE file system of type fuse.sealvol, and a record there would name the
// pid close signals and the mounts it clears.
std::vector<std::string> StateDirsToSearch(const std::string& state_dir) {
  std::vector<std::string> dirs = {state_dir};
  auto fuse_dirs = csi::MountPointsOfType(io::kFuseFsType);
  if (!fuse_dirs.ok()) return dirs;
  for (const std::string& fuse_dir : *fuse_dirs) {
    const std::filesystem::path parent =
        std::filesystem::path(fuse_dir).parent_path();
    if (parent.filename() != "fuse") continue;
    const std::string dir = parent.parent_path().string();
    if (!OwnedAndPrivate(dir) || !OwnedAndPrivate(io::RuntimeDir(dir))) {
      continue;
    }
    if (std::find(dirs.begin(), dirs.end(), dir) == dirs.end()) {
      dirs.push_back(dir);
    }
  }
  return dirs;
}

int RunClose(const std::string& target, const std::string& given_state_dir) {
  const std::string want = Absolute(target);
  std::string state_dir;
  std::optional<io::RuntimeRecord> found;
  for (const std::string& dir : StateDirsToSearch(Absolute(given_state_dir))) {
    auto records = io::ListRuntimeRecords(dir);
    if (!records.ok()) {
      std::fprintf(stderr, "close: %s\n", records.status().ToString().c_str());
      return kExitError;
    }
    for (const auto& r : *records) {
      if (r.image == want || r.mountpoint == want || r.loop_device == target ||
          r.volume_id == target) {
        state_dir = dir;
        found = r;
        break;
      }
    }
    if (found) break;
  }
  if (!found) {
    std::fprintf(stderr,
                 "close %s: no open volume with that image, mountpoint, device "
                 "or id in %s, nor in the state directory of any volume open "
                 "on this machine; pass the --state-dir that open was given\n",
                 target.c_str(), io::RuntimeDir(Absolute(given_state_dir)).c_str());
    return kExitError;
  }
  const io::RuntimeRecord& r = *found;
  if (!io::ServerAlive(r.pid)) {
    absl::Status s = io::CleanUpStale(state_dir, r);
    if (!s.ok()) {
      std::fprintf(stderr, "close %s: %s\n", target.c_str(),
                   s.ToString().c_str());
      return kExitError;
    }
    return kExitOk;
  }
  ::kill(r.pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(2);
  while (io::ServerAlive(r.pid) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (io::ServerAlive(r.pid)) {
    std::fprintf(stderr, "close %s: server %d did not stop in 2 minutes\n",
                 target.c_str(), r.pid);
    return kExitError;
  }
  // A clean shutdown removed the record; one still there means it failed.
  auto after = io::ListRuntimeRecords(state_dir);
  if (after.ok()) {
    for (const auto& a : *after) {
      if (a.volume_id == r.volume_id) {
        std::fprintf(stderr,
                     "close %s: server reported an error (see %s/)\n",
                     target.c_str(), io::RuntimeDir(state_dir).c_str());
        (void)io::CleanUpStale(state_dir, a);
        return kExitError;
      }
    }
  }
  return kExitOk;
}

int RunStatus(std::string state_dir, bool json) {
  state_dir = Absolute(state_dir);
  auto records = io::ListRuntimeRecords(state_dir);
  if (!records.ok()) {
    std::fprintf(stderr, "status: %s\n", records.status().ToString().c_str());
    return kExitError;
  }
  if (json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& r : *records) {
      out.push_back({{"volume_id", r.volume_id},
                     {"image", r.image},
                     {"pid", r.pid},
                     {"alive", io::ServerAlive(r.pid)},
                     {"loop_device", r.loop_device},
                     {"mountpoint", r.mountpoint},
                     {"fs", r.fs},
                     {"block", r.block},
                     {"transport", r.transport},
                     {"started_unix", r.started_unix}});
    }
    std::printf("%s\n", out.dump(2).c_str());
    return kExitOk;
  }
  std::printf("%-36s %-8s %-6s %-12s %-6s %s\n", "VOLUME", "PID", "STATE",
              "DEVICE", "XPORT", "MOUNTPOINT / IMAGE");
  for (const auto& r : *records) {
    std::printf("%-36s %-8d %-6s %-12s %-6s %s  %s\n", r.volume_id.c_str(),
                r.pid, io::ServerAlive(r.pid) ? "up" : "dead",
                r.loop_device.c_str(), r.transport.c_str(),
                r.block ? "(block)" : r.mountpoint.c_str(), r.image.c_str());
  }
  return kExitOk;
}

}  // namespace

void RegisterMountCommands(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<OpenFlags>();
  CLI::App* open = app.add_subcommand(
      "open", "Serve a sealed volume and mount it (or hand out a block device)");
  open->add_option("image", flags->image, "Sealed volume image")->required();
  open->add_option("--mountpoint", flags->mountpoint, "Where to mount");
  open->add_option("--fs", flags->fs, "ext4 (default) or xfs; mkfs on first open")
      ->check(CLI::IsMember({"ext4", "xfs"}));
  open->add_flag("--block", flags->block, "No file system: print the loop device");
  open->add_option("--transport", flags->transport, "auto (default), uring or dev")
      ->check(CLI::IsMember({"auto", "uring", "dev"}));
  flags->keys.AddTo(open, "State directory (records, FUSE mounts, local KMS)");
  open->add_flag("--foreground", flags->foreground, "Serve in this process");
  open->callback([flags, &exit_code] { exit_code = RunOpen(*flags); });

  auto close_target = std::make_shared<std::string>();
  auto close_state = std::make_shared<std::string>("/var/lib/sealvol");
  CLI::App* close = app.add_subcommand("close", "Unmount and stop serving a volume");
  close->add_option("target", *close_target, "Mountpoint, image, loop device or volume id")
      ->required();
  close->add_option("--state-dir", *close_state,
                    "State directory looked in first (the volumes open on "
                    "this machine are found without it)");
  close->callback([close_target, close_state, &exit_code] {
    exit_code = RunClose(*close_target, *close_state);
  });

  auto status_state = std::make_shared<std::string>("/var/lib/sealvol");
  auto status_json = std::make_shared<bool>(false);
  CLI::App* status = app.add_subcommand("status", "List open volumes");
  status->add_option("--state-dir", *status_state, "State directory");
  status->add_flag("--json", *status_json, "JSON output");
  status->callback([status_state, status_json, &exit_code] {
    exit_code = RunStatus(*status_state, *status_json);
  });
}

}  // namespace sealvol::cmd
