// The classic FUSE transport: reader threads on cloned /dev/fuse fds. A
// reader hands each request to the server and goes back to read(); the
// engine's completion thread writes the answer, so one reader keeps many
// requests in flight. With the io_uring transport one reader still runs:
// FORGET and INTERRUPT (and anything sent before every queue is registered)
// arrive over read(/dev/fuse).
#pragma once

#include <sys/uio.h>

#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "base/mutex.h"
#include "base/unique_fd.h"
#include "io/frontend/fuse_request.h"

namespace sealvol::io::fuse {

class DevTransport final : public Channel {
 public:
  // Dev slot: header area, then 4 KiB-aligned data (write payload or read
  // reply). Also the size of the INIT read.
  static constexpr size_t kSlotBytes = 4096 + kMaxIo + 8192;

  DevTransport(FuseServer::Impl* server, int threads, int slots);
  ~DevTransport() override;

  absl::Status Start();
  void Stop();

  void Reply(Slot* slot, int error, size_t out_bytes) override;
  void Drop(Slot* slot) override;

 private:
  ssize_t WriteReply(int fd, const iovec* iov, int count);
  Slot* Acquire();
  void Release(Slot* slot);
  void ReaderLoop(int fd);

  FuseServer::Impl* server_;
  int thread_count_;
  UniqueFd stop_fd_;
  std::vector<UniqueFd> fds_;
  std::vector<std::thread> threads_;
  std::vector<Slot> slots_;
  std::vector<AlignedBuffer> buffers_;
  Mutex slots_mu_;
  CondVar slots_cv_;
  std::vector<int> free_ ABSL_GUARDED_BY(slots_mu_);
};

}  // namespace sealvol::io::fuse
