// The RAII io_uring ring and the once-per-process probe (see uring_ring.h).
#include "io/uring_ring.h"

#include <bitset>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/check.h"
#include "base/status_macros.h"

namespace sealvol::io {
namespace {

// What the kernel's io_uring supports, asked once.
struct UringSupport {
  absl::Status probed;              // Unavailable when the probe failed.
  std::bitset<256> supported;       // Indexed by IORING_OP_*.
};

UringSupport ProbeKernel() {
  UringSupport support;
  io_uring_probe* probe = io_uring_get_probe();
  if (probe == nullptr) {
    support.probed = absl::UnavailableError(
        "io_uring: the kernel does not support IORING_REGISTER_PROBE");
    return support;
  }
  for (int op = 0; op < static_cast<int>(support.supported.size()); ++op) {
    if (io_uring_opcode_supported(probe, op)) support.supported.set(op);
  }
  io_uring_free_probe(probe);
  return support;
}

const UringSupport& Support() {
  static const UringSupport support = ProbeKernel();
  return support;
}

}  // namespace

absl::Status RequireUringOps(std::span<const UringOp> ops) {
  const UringSupport& support = Support();
  RETURN_IF_ERROR(support.probed);
  std::vector<std::string> missing;
  for (const UringOp& op : ops) {
    if (op.op < 0 || op.op >= static_cast<int>(support.supported.size()) ||
        !support.supported.test(op.op)) {
      missing.push_back(op.name);
    }
  }
  if (missing.empty()) return absl::OkStatus();
  return absl::UnavailableError(
      absl::StrCat("io_uring: kernel lacks required operations: ",
                   absl::StrJoin(missing, ", ")));
}

UringRing::~UringRing() {
  if (initialized_) io_uring_queue_exit(&ring_);
}

absl::Status UringRing::Init(unsigned entries, unsigned flags,
                             const std::string& what) {
  CHECK(!initialized_);
  io_uring_params params{};
  params.flags = flags;
  const int rc = io_uring_queue_init_params(entries, &ring_, &params);
  if (rc < 0) return ErrnoStatus(-rc, "io_uring_queue_init", what);
  initialized_ = true;
  return absl::OkStatus();
}

}  // namespace sealvol::io
