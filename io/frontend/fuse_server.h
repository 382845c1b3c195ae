// FuseServer exports one VolumeIo as a single regular file through our own
// implementation of the FUSE protocol on an already mounted /dev/fuse
// connection, over FUSE-over-io_uring or classic /dev/fuse read/write.
// Thread-safe: the server runs its own threads; its methods may be called
// from any one control thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/unique_fd.h"
#include "io/volume_io.h"

namespace sealvol::io {

enum class FuseTransport { kAuto, kUring, kDev };

// "auto", "uring", "dev".
absl::StatusOr<FuseTransport> ParseFuseTransport(const std::string& text);
const char* FuseTransportName(FuseTransport transport);

struct FuseServerOptions {
  // The name of the one file in the mount's root directory.
  std::string file_name = "volume";
  FuseTransport transport = FuseTransport::kAuto;
  // Classic transport: reader threads, each with its own cloned fd.
  int dev_threads = 2;
  // io_uring transport: registered entries (in-flight requests) per queue;
  // there is one queue per possible CPU, as the kernel requires.
  int uring_entries_per_queue = 32;
  // INIT: how many asynchronous (background) requests the kernel keeps in
  // flight; loop's async direct I/O is background traffic.
  uint16_t max_background = 256;
  uint16_t congestion_threshold = 192;
  // INIT: ask for FUSE_ASYNC_DIO. Only benchmarks turn it off, to show what
  // it is worth: without it loop's requests reach the server one at a time.
  bool async_dio = true;
  // Called for SETATTR size > current size; null refuses size changes.
  std::function<absl::Status(uint64_t new_size)> grow;
};

struct FuseServerStats {
  uint64_t requests_dev = 0;    // Requests that arrived over read(/dev/fuse).
  uint64_t requests_uring = 0;  // Requests that arrived over io_uring.
  uint64_t flushes = 0;         // FSYNCs forwarded to the engine.
};

// Sets the fuse module's enable_uring parameter to Y when it exists and is
// N. Must run before the mount whose INIT should offer io_uring. Fails with
// Unavailable when the parameter does not exist (kernel < 6.14 or built
// without CONFIG_FUSE_IO_URING) and with the errno status when not writable.
absl::Status EnableFuseOverIoUring();

class FuseServer {
 public:
  // Serves `fuse_fd`, an open /dev/fuse fd whose mount(2) has been done.
  // Reads and answers INIT before returning, then serves on its own threads.
  // `volume` must outlive the server. kUring fails (FailedPrecondition, with
  // the reason) when the kernel does not offer or accept io_uring; kAuto
  // then falls back to kDev and fallback_reason() says why.
  static absl::StatusOr<std::unique_ptr<FuseServer>> Start(
      UniqueFd fuse_fd, VolumeIo* volume, const FuseServerOptions& options);

  ~FuseServer();
  FuseServer(const FuseServer&) = delete;
  FuseServer& operator=(const FuseServer&) = delete;

  // The transport serving requests: kUring or kDev.
  FuseTransport transport() const;
  // Why kAuto did not use io_uring; empty when it did.
  const std::string& fallback_reason() const;
  FuseServerStats stats() const;

  // True once the kernel ended the connection (unmount or abort).
  bool disconnected() const;
  // Blocks until the kernel ends the connection or Stop() is called.
  void Wait();
  // Stops the threads and waits for every engine request in flight. The
  // mount should be gone first; requests still queued in the kernel then
  // fail when the fd closes.
  void Stop();

  class Impl;

 private:
  explicit FuseServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sealvol::io
