// Fuzzes FUSE request decoding: the input is one request as the kernel would
// write it on /dev/fuse (fuse_in_header, the opcode's argument, a payload).
// It reaches the real FuseServer through a SOCK_SEQPACKET socket pair, which
// keeps message boundaries as /dev/fuse does, with one classic reader thread
// (no FUSE_DEV_IOC_CLONE needed), serving a real engine over an in-memory
// backing store.
#include <linux/fuse.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <vector>

#include "base/check.h"
#include "base/unique_fd.h"
#include "crypto/secret_bytes.h"
#include "io/sealed_volume.h"
#include "tests/fakes/fault_store.h"
#include "io/frontend/fuse_server.h"
#include "tests/fuzz/fuzz_targets.h"

namespace sealvol::fuzz {
namespace {

constexpr uint64_t kVolumeBytes = 1 << 20;
// The sentinel that tells us every earlier request has been taken apart.
constexpr uint64_t kSentinelUnique = ~uint64_t{0};

struct Connection {
  std::unique_ptr<io::SealedVolume> engine;
  std::unique_ptr<io::FuseServer> server;
  int kernel_fd = -1;  // Our end: plays the kernel.
};

void SendInit(int fd) {
  struct {
    fuse_in_header header;
    fuse_init_in init;
  } msg{};
  msg.header.len = sizeof(msg);
  msg.header.opcode = FUSE_INIT;
  msg.header.unique = 1;
  msg.init.major = FUSE_KERNEL_VERSION;
  msg.init.minor = 38;
  msg.init.max_readahead = 1 << 17;
  msg.init.flags = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_ASYNC_DIO |
                   FUSE_MAX_PAGES | FUSE_PARALLEL_DIROPS | FUSE_INIT_EXT;
  CHECK_EQ(::send(fd, &msg, sizeof(msg), 0), static_cast<ssize_t>(sizeof(msg)));
}

Connection& TheConnection() {
  static Connection* c = [] {
    auto* conn = new Connection;
    int fds[2];
    CHECK_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds), 0);
    conn->kernel_fd = fds[0];
    auto dek = crypto::SecretBytes::Allocate(32);
    CHECK(dek.ok());
    for (size_t i = 0; i < 32; ++i) dek->data()[i] = static_cast<uint8_t>(i);
    io::FormatOptions format;
    format.size_bytes = kVolumeBytes;
    io::EngineOptions options;
    options.worker_threads = 1;
    options.cache_groups = 2;
    options.batch_blocks = 256;
    auto engine = io::SealedVolume::FormatOn(
        std::make_unique<io::FaultStore>(
            io::Layout::Default().image_bytes(kVolumeBytes / 4096)),
        format, *dek, options);
    CHECK(engine.ok());
    conn->engine = std::move(engine).value();
    SendInit(conn->kernel_fd);
    io::FuseServerOptions server_options;
    server_options.transport = io::FuseTransport::kDev;
    server_options.dev_threads = 1;
    auto server = io::FuseServer::Start(UniqueFd(fds[1]), conn->engine.get(),
                                        server_options);
    CHECK(server.ok());
    conn->server = std::move(server).value();
    std::vector<uint8_t> reply(4096);
    CHECK_GT(::recv(conn->kernel_fd, reply.data(), reply.size(), 0), 0);
    return conn;
  }();
  return *c;
}

// Reads answers until the sentinel's. Each answer must be well formed: a
// header whose length matches what arrived, an errno or 0, a known unique.
void DrainUntilSentinel(int fd) {
  std::vector<uint8_t> reply((1 << 20) + 8192);
  while (true) {
    pollfd p{fd, POLLIN, 0};
    CHECK_EQ(::poll(&p, 1, 30000), 1);  // A lost answer is a hang: fail.
    const ssize_t n = ::recv(fd, reply.data(), reply.size(), 0);
    CHECK_GE(n, static_cast<ssize_t>(sizeof(fuse_out_header)));
    fuse_out_header out;
    std::memcpy(&out, reply.data(), sizeof(out));
    CHECK_EQ(out.len, static_cast<uint32_t>(n));
    CHECK(out.error <= 0 && out.error > -4096);
    if (out.unique == kSentinelUnique) return;
  }
}

}  // namespace

int FuzzFuseRequest(const uint8_t* data, size_t size) {
  Connection& conn = TheConnection();
  if (size < sizeof(fuse_in_header) || size > 64 * 1024) return 0;
  std::vector<uint8_t> request(data, data + size);
  fuse_in_header header;
  std::memcpy(&header, request.data(), sizeof(header));
  // The sentinel's unique would end the exchange early.
  if (header.unique == kSentinelUnique) return 0;
  CHECK_EQ(::send(conn.kernel_fd, request.data(), request.size(), 0),
           static_cast<ssize_t>(request.size()));
  struct {
    fuse_in_header header;
    fuse_getattr_in getattr;
  } sentinel{};
  sentinel.header.len = sizeof(sentinel);
  sentinel.header.opcode = FUSE_GETATTR;
  sentinel.header.unique = kSentinelUnique;
  sentinel.header.nodeid = FUSE_ROOT_ID;
  CHECK_EQ(::send(conn.kernel_fd, &sentinel, sizeof(sentinel), 0),
           static_cast<ssize_t>(sizeof(sentinel)));
  DrainUntilSentinel(conn.kernel_fd);
  return 0;
}

}  // namespace sealvol::fuzz
