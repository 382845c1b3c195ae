// Snapshot/clone copy throughput beside `cp --sparse=always` (issue 16):
// a 2 GiB sealed volume with 1 GiB written is cut (CutImage) and re-encrypted
// under a new key (CopySealed); a plain 2 GiB image holding the same 1 GiB
// is copied with `cp --sparse=always`, in the same directory (same file
// system), in the same run, alternating, best of `rounds`. Prints one JSON
// object: times, throughput of the data, the ratios (cp time / our time;
// the target is >= 0.5), the machine and the load average before and after.
// Not a test. Run when the machine is quiet:
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
                        "target.img.copy", "plain.copy"}) {
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
  return cp;
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
  const std::string plain_copy = dir + "/plain.copy";
  const std::string load_before = LoadAverage();
  const crypto::SecretBytes source_dek = Key(1), target_dek = Key(2);
  MakeImages(sealed, plain, source_dek);
  ::sync();

  double best_cp = 1e9, best_cp_fsync = 1e9, best_cut = 1e9, best_copy = 1e9;
  double best_total = 1e9;
  for (int r = 0; r < rounds; ++r) {
    double with_fsync = 0;
    best_cp = std::min(best_cp, TimeCp(plain, plain_copy, &with_fsync));
    best_cp_fsync = std::min(best_cp_fsync, with_fsync);
    ::unlink(plain_copy.c_str());

    const auto start = Clock::now();
    if (absl::Status s = CutImage(sealed, cut); !s.ok()) Die(std::string(s.message()));
    const double cut_s = Seconds(start);
    CopyOptions o;
    o.source_path = cut;
    o.source_dek = &source_dek;
    o.target_dek = &target_dek;
    o.target_path = target;
    o.target_volume_id[0] = 2;
    const auto copy_start = Clock::now();
    auto result = CopySealed(o);
    if (!result.ok()) Die(std::string(result.status().message()));
    const double copy_s = Seconds(copy_start);
    best_cut = std::min(best_cut, cut_s);
    best_copy = std::min(best_copy, copy_s);
    best_total = std::min(best_total, Seconds(start));
    ::unlink(cut.c_str());
    ::unlink(target.c_str());
    (void)ForgetCopyProgress(target);
  }
  struct statfs fs {};
  ::statfs(dir.c_str(), &fs);
  const bool reflink = CutSharesExtents(sealed, dir);
  RemoveRunDirectory();

  const double data_mib = static_cast<double>(kVolumeBytes / 2) / kMiB;
  std::printf(
      "{\"volume_mib\": %llu, \"written_mib\": %.0f, \"rounds\": %d,\n"
      " \"cp_sparse_s\": %.3f, \"cp_sparse_fsync_s\": %.3f,\n"
      " \"cut_s\": %.3f, \"copy_s\": %.3f, \"cut_and_copy_s\": %.3f,\n"
      " \"cp_mib_s\": %.0f, \"copy_mib_s\": %.0f, \"cut_and_copy_mib_s\": %.0f,\n"
      " \"ratio_cut_and_copy_vs_cp\": %.2f, \"ratio_copy_vs_cp\": %.2f,\n"
      " \"ratio_cut_and_copy_vs_cp_fsync\": %.2f,\n"
      " \"dir\": \"%s\", \"fs_magic\": \"0x%lx\", \"cut_reflink\": %s,\n"
      " \"cpu\": \"%s\", \"cpus\": %ld, \"load_before\": \"%s\", \"load_after\": \"%s\"}\n",
      static_cast<unsigned long long>(kVolumeBytes / kMiB), data_mib, rounds,
      best_cp, best_cp_fsync, best_cut, best_copy, best_total, data_mib / best_cp,
      data_mib / best_copy, data_mib / best_total, best_cp / best_total,
      best_cp / best_copy, best_cp_fsync / best_total, base.c_str(),
      static_cast<unsigned long>(fs.f_type), reflink ? "true" : "false",
      CpuModel().c_str(), sysconf(_SC_NPROCESSORS_ONLN), load_before.c_str(),
      LoadAverage().c_str());
  return 0;
}

}  // namespace
}  // namespace sealvol::io

int main(int argc, char** argv) { return sealvol::io::Main(argc, argv); }
