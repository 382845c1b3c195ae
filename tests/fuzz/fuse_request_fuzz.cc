// Fuzzes FUSE request decoding: the input is one request as the kernel would
// write it on /dev/fuse (fuse_in_header, the opcode's argument, a payload).
// It reaches the real FuseServer through FakeFuseKernel's socket pair, with
// one classic reader thread, serving a real engine over an in-memory backing
// store.
#include <linux/fuse.h>

#include <cstring>
#include <memory>
#include <vector>

#include "base/check.h"
#include "crypto/secret_bytes.h"
#include "io/sealed_volume.h"
#include "io/frontend/fuse_server.h"
#include "tests/fakes/fake_fuse_kernel.h"
#include "tests/fakes/fault_store.h"
#include "tests/fuzz/fuzz_targets.h"

namespace sealvol::fuzz {
namespace {

using ::sealvol::testing::FakeFuseKernel;

constexpr uint64_t kVolumeBytes = 1 << 20;
// The sentinel that tells us every earlier request has been taken apart.
constexpr uint64_t kSentinelUnique = ~uint64_t{0};

struct Connection {
  std::unique_ptr<io::SealedVolume> engine;
  std::unique_ptr<io::FuseServer> server;
  FakeFuseKernel kernel;
};

Connection& TheConnection() {
  static Connection* c = [] {
    auto* conn = new Connection;
    CHECK(conn->kernel.Open());
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
    CHECK(conn->kernel.SendInit(FUSE_PARALLEL_DIROPS, 1 << 17));
    io::FuseServerOptions server_options;
    server_options.transport = io::FuseTransport::kDev;
    server_options.dev_threads = 1;
    auto server = io::FuseServer::Start(conn->kernel.TakeServerEnd(),
                                        conn->engine.get(),
                                        server_options);
    CHECK(server.ok());
    conn->server = std::move(server).value();
    CHECK(conn->kernel.Receive(-1).has_value());  // The INIT answer.
    return conn;
  }();
  return *c;
}

// Reads answers until the sentinel's. Each answer must be well formed: a
// header whose length matches what arrived, an errno or 0, a known unique.
void DrainUntilSentinel(FakeFuseKernel& kernel) {
  while (true) {
    // A lost answer is a hang: fail.
    const auto reply = kernel.Receive(30000);
    CHECK(reply.has_value());
    const fuse_out_header& out = reply->header;
    CHECK_EQ(out.len, static_cast<uint32_t>(reply->size));
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
  CHECK(conn.kernel.Send(request));
  CHECK(conn.kernel.Send(FakeFuseKernel::Getattr(kSentinelUnique)));
  DrainUntilSentinel(conn.kernel);
  return 0;
}

}  // namespace sealvol::fuzz
