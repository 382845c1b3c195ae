// The parts of the FUSE kernel ABI that the front-end uses and that the system
// header (protocol 7.38) lacks: FUSE over io_uring (protocol 7.41+) and a few
// INIT flags. Classic structs come from <linux/fuse.h>. Stateless.
#pragma once

#include <linux/fuse.h>

#include <cstdint>

namespace sealvol::io::fuse_abi {

// The protocol minor version this server speaks (7.41 added io_uring).
inline constexpr uint32_t kMinorVersion = 41;

// INIT flags above bit 31 travel in fuse_init_in/out.flags2 (with
// FUSE_INIT_EXT set); these are their full 64-bit values.
inline constexpr uint64_t kDirectIoAllowMmap = 1ULL << 36;
inline constexpr uint64_t kOverIoUring = 1ULL << 41;

// FUSE_DEV_IOC_CLONE: attach a new /dev/fuse fd to an existing connection.
inline constexpr unsigned long kDevIocClone = 0x8004e500;  // _IOR(229, 0, u32)

// Sizes of the two fixed areas at the start of an io_uring ring entry.
inline constexpr size_t kUringInOutHeaderSize = 128;
inline constexpr size_t kUringOpInOutSize = 128;

// Per-entry metadata exchanged with the kernel.
struct UringEntInOut {
  uint64_t flags;
  uint64_t commit_id;    // fuse_in_header.unique of the request; echoed back.
  uint32_t payload_sz;   // Bytes of payload in (request) or out (reply).
  uint32_t padding;
  uint64_t reserved;
};

// iov[0] of a registered ring entry.
struct UringReqHeader {
  uint8_t in_out[kUringInOutHeaderSize];  // fuse_in_header / fuse_out_header.
  uint8_t op_in[kUringOpInOutSize];       // The per-opcode header (arg 0).
  UringEntInOut ring_ent_in_out;
};

// IORING_OP_URING_CMD cmd_op values on /dev/fuse.
enum UringCmd : uint32_t {
  kUringCmdRegister = 1,        // Register an entry and fetch a request.
  kUringCmdCommitAndFetch = 2,  // Commit a reply and fetch the next request.
};

// Lives in the 80-byte command area of a 128-byte SQE.
struct UringCmdReq {
  uint64_t flags;
  uint64_t commit_id;
  uint16_t qid;
  uint8_t padding[6];
};

static_assert(sizeof(UringEntInOut) == 32);
static_assert(sizeof(UringReqHeader) == 288);
static_assert(sizeof(UringCmdReq) == 24);

}  // namespace sealvol::io::fuse_abi
