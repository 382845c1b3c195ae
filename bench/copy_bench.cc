// Snapshot/clone copy throughput beside `cp --sparse=always` (issue 16):
// a 2 GiB sealed volume with 1 GiB written is cut (CutImage) and re-encrypted
// under a new key (CopySealed), and that snapshot restored (CopySealed of a
// snapshot image); a plain 2 GiB image holding the same 1 GiB is copied with
// `cp --sparse=always`, in the same directory (same file system), in the
// same run, alternating, best of `rounds`. Each is timed twice: "warm", as
// both images were read into the page cache just before, and "cold", after
// `sync` and dropping the page cache, so that both read their source from
// the disk, as a volume in use is read: the engine writes and reads its
// image with O_DIRECT, so a live volume's data is not in the page cache. A
// restore reads the snapshot image from the disk either way. Prints one JSON
// object: times, throughput of the data, the ratios (cp time / our time;
// the target is >= 0.5), the machine and the load average before and after.
// Not a test. Run as root (to drop the cache) when the machine is quiet:
//   build/bench/copy_bench [DIR [ROUNDS]]   (DIR default /var/tmp)
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "base/unique_fd.h"
#include "crypto/secret_bytes.h"
#include "io/sealed_volume.h"
#include "io/volume_copy.h"

extern char** environ;

namespace sealvol::io {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kVolumeBytes = 2048 * kMiB;
// 1 MiB of data in every 2 MiB: 1 GiB written, spread over the volume.
constexpr uint64_t kRun = kMiB;

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

crypto::SecretBytes Key(uint8_t seed) {
  auto k = crypto::SecretBytes::Allocate(32);
  for (size_t i = 0; i < 32; ++i) k->data()[i] = static_cast<uint8_t>(seed + 3 * i);
  return std::move(k).value();
}

void Fill(std::vector<uint8_t>& buf, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i + 8 <= buf.size(); i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(&buf[i], &x, 8);
  }
}

// The run's directory, removed with its files on the way out.
std::string g_dir;

void RemoveRunDirectory() {
  if (g_dir.empty()) return;
  for (const char* f : {"sealed.img", "plain.img", "cut.img", "target.img",
                        "target.img.copy", "restore.img", "restore.img.copy",
                        "plain.copy"}) {
    ::unlink((g_dir + "/" + f).c_str());
  }
  ::rmdir(g_dir.c_str());
  g_dir.clear();
}

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "copy_bench: %s\n", what.c_str());
  RemoveRunDirectory();
  std::exit(1);
}

void MakeImages(const std::string& sealed, const std::string& plain,
                const crypto::SecretBytes& dek) {
  FormatOptions f;
  f.path = sealed;
  f.size_bytes = kVolumeBytes;
  f.volume_id[0] = 1;
  EngineOptions eo;
  eo.worker_threads = 2;
  auto v = SealedVolume::FormatFile(f, dek, eo);
  if (!v.ok()) Die(std::string(v.status().message()));
  UniqueFd fd(::open(plain.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(kVolumeBytes)) != 0) {
    Die("create " + plain);
  }
  std::vector<uint8_t> buf(kRun);
  for (uint64_t at = 0; at < kVolumeBytes; at += 2 * kRun) {
    Fill(buf, at / kRun + 1);
    if ((*v)->Io(IoOp::kWrite, at, buf) != 0) Die("write " + sealed);
    if (::pwrite(fd.get(), buf.data(), buf.size(), static_cast<off_t>(at)) !=
        static_cast<ssize_t>(buf.size())) {
      Die("write " + plain);
    }
  }
  if (!(*v)->Close().ok()) Die("close " + sealed);
  if (::fsync(fd.get()) != 0) Die("fsync " + plain);
}

// Writes back every dirty page and drops the page cache, so that the next
// read comes from the disk. False when the cache cannot be dropped (not
// root): the "cold" figures are then not reported.
bool DropCaches() {
  ::sync();
  UniqueFd fd(::open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC));
  return fd && ::write(fd.get(), "3", 1) == 1;
}

// Reads `path` through the page cache, so that it is cached for a "warm"
// run.
void WarmUp(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) Die("open " + path);
  std::vector<uint8_t> buf(4 * kMiB);
  while (::read(fd.get(), buf.data(), buf.size()) > 0) {
  }
}

double TimeCp(const std::string& from, const std::string& to, double* with_fsync) {
  const auto start = Clock::now();
  const char* argv[] = {"cp", "--sparse=always", from.c_str(), to.c_str(), nullptr};
  pid_t pid = 0;
  if (posix_spawnp(&pid, "cp", nullptr, nullptr, const_cast<char**>(argv),
                   environ) != 0) {
    Die("cannot run cp");
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
      WEXITSTATUS(status) != 0) {
    Die("cp failed");
  }
  const double cp = Seconds(start);
  UniqueFd fd(::open(to.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd || ::fsync(fd.get()) != 0) Die("fsync " + to);
  *with_fsync = Seconds(start);
  ::unlink(to.c_str());
  return cp;
}

// One snapshot (cut, then the re-encrypting copy into `target`) and one
// restore of it into `restore`; every file but the source removed after.
struct SnapshotTimes {
  double cut = 0, copy = 0, snapshot = 0, restore = 0;
};

SnapshotTimes TimeSnapshot(const std::string& sealed, const std::string& cut,
                           const std::string& target, const std::string& restore,
                           const crypto::SecretBytes& source_dek,
                           const crypto::SecretBytes& target_dek,
                           const crypto::SecretBytes& restore_dek) {
  SnapshotTimes t;
  const auto start = Clock::now();
  if (absl::Status s = CutImage(sealed, cut); !s.ok()) Die(std::string(s.message()));
  t.cut = Seconds(start);
  CopyOptions o;
  o.source_path = cut;
  o.source_dek = &source_dek;
  o.target_dek = &target_dek;
  o.target_path = target;
  o.target_volume_id[0] = 2;
  const auto copy_start = Clock::now();
  auto snapshot = CopySealed(o);
  if (!snapshot.ok()) Die(std::string(snapshot.status().message()));
  t.copy = Seconds(copy_start);
  t.snapshot = Seconds(start);
  ::unlink(cut.c_str());
  (void)ForgetCopyProgress(target);

  CopyOptions r;
  r.source_path = target;
  r.source_kind = CopyOptions::SourceKind::kSnapshotImage;
  r.source_expected_state = snapshot->state;
  r.source_dek = &target_dek;
  r.target_dek = &restore_dek;
  r.target_path = restore;
  r.target_volume_id[0] = 3;
  const auto restore_start = Clock::now();
  auto restored = CopySealed(r);
  if (!restored.ok()) Die(std::string(restored.status().message()));
  t.restore = Seconds(restore_start);
  ::unlink(target.c_str());
  ::unlink(restore.c_str());
  (void)ForgetCopyProgress(restore);
  return t;
}

void KeepBest(SnapshotTimes& best, const SnapshotTimes& t) {
  best.cut = std::min(best.cut, t.cut);
  best.copy = std::min(best.copy, t.copy);
  best.snapshot = std::min(best.snapshot, t.snapshot);
  best.restore = std::min(best.restore, t.restore);
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "?";
}

std::string LoadAverage() {
  double l[3] = {};
  if (getloadavg(l, 3) != 3) return "?";
  char s[64];
  std::snprintf(s, sizeof(s), "%.2f %.2f %.2f", l[0], l[1], l[2]);
  return s;
}

int Main(int argc, char** argv) {
  const std::string base = argc > 1 ? argv[1] : "/var/tmp";
  const int rounds = argc > 2 ? std::max(1, std::atoi(argv[2])) : 3;
  std::string tmpl = base + "/sealvol-copy-bench-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) Die("mkdtemp in " + base);
  const std::string dir = tmpl;
  g_dir = dir;
  const std::string sealed = dir + "/sealed.img", plain = dir + "/plain.img";
  const std::string cut = dir + "/cut.img", target = dir + "/target.img";
  const std::string restore = dir + "/restore.img";
  const std::string plain_copy = dir + "/plain.copy";
  const std::string load_before = LoadAverage();
  const crypto::SecretBytes source_dek = Key(1), target_dek = Key(2),
                            restore_dek = Key(3);
  MakeImages(sealed, plain, source_dek);
  ::sync();

  constexpr double kNone = 1e9;
  double cp_warm = kNone, cp_warm_fsync = kNone, cp_cold = kNone,
         cp_cold_fsync = kNone;
  SnapshotTimes warm{kNone, kNone, kNone, kNone}, cold = warm;
  bool can_drop = true;
  for (int r = 0; r < rounds; ++r) {
    double fsynced = 0;
    WarmUp(plain);
    WarmUp(sealed);
    cp_warm = std::min(cp_warm, TimeCp(plain, plain_copy, &fsynced));
    cp_warm_fsync = std::min(cp_warm_fsync, fsynced);
    KeepBest(warm, TimeSnapshot(sealed, cut, target, restore, source_dek,
                                target_dek, restore_dek));
    if (can_drop && (can_drop = DropCaches())) {
      cp_cold = std::min(cp_cold, TimeCp(plain, plain_copy, &fsynced));
      cp_cold_fsync = std::min(cp_cold_fsync, fsynced);
      can_drop = DropCaches();
      KeepBest(cold, TimeSnapshot(sealed, cut, target, restore, source_dek,
                                  target_dek, restore_dek));
    }
  }
  struct statfs fs {};
  ::statfs(dir.c_str(), &fs);
  const bool reflink = CutSharesExtents(sealed, dir);
  RemoveRunDirectory();

  const double data_mib = static_cast<double>(kVolumeBytes / 2) / kMiB;
  auto times = [&](const char* name, double cp, double cp_fsync,
                   const SnapshotTimes& t) {
    std::printf(
        " \"%s\": {\"cp_sparse_s\": %.3f, \"cp_sparse_fsync_s\": %.3f,\n"
        "   \"cut_s\": %.3f, \"copy_s\": %.3f, \"snapshot_s\": %.3f, "
        "\"restore_s\": %.3f,\n"
        "   \"cp_mib_s\": %.0f, \"snapshot_mib_s\": %.0f, \"restore_mib_s\": %.0f,\n"
        "   \"ratio_snapshot_vs_cp\": %.2f, \"ratio_restore_vs_cp\": %.2f,\n"
        "   \"ratio_snapshot_vs_cp_fsync\": %.2f, "
        "\"ratio_restore_vs_cp_fsync\": %.2f},\n",
        name, cp, cp_fsync, t.cut, t.copy, t.snapshot, t.restore,
        data_mib / cp, data_mib / t.snapshot, data_mib / t.restore,
        cp / t.snapshot, cp / t.restore, cp_fsync / t.snapshot,
        cp_fsync / t.restore);
  };
  std::printf("{\"volume_mib\": %llu, \"written_mib\": %.0f, \"rounds\": %d,\n",
              static_cast<unsigned long long>(kVolumeBytes / kMiB), data_mib,
              rounds);
  times("warm", cp_warm, cp_warm_fsync, warm);
  if (can_drop) {
    times("cold", cp_cold, cp_cold_fsync, cold);
  } else {
    std::printf(" \"cold\": null,\n");
  }
  std::printf(
      " \"dir\": \"%s\", \"fs_magic\": \"0x%lx\", \"cut_reflink\": %s,\n"
      " \"cpu\": \"%s\", \"cpus\": %ld, \"load_before\": \"%s\", "
      "\"load_after\": \"%s\"}\n",
      base.c_str(), static_cast<unsigned long>(fs.f_type),
      reflink ? "true" : "false", CpuModel().c_str(),
      sysconf(_SC_NPROCESSORS_ONLN), load_before.c_str(),
      LoadAverage().c_str());
  return 0;
}

}  // namespace
}  // namespace sealvol::io

int main(int argc, char** argv) { return sealvol::io::Main(argc, argv); }
