// The FUSE-over-io_uring transport: one queue per possible CPU (the kernel
// routes a request to the queue of the CPU that issued it), each with its
// own ring and thread. Every ring entry is a registered header + payload
// buffer pair; an answer is one COMMIT_AND_FETCH that also waits for the
// next request. Answers made on engine threads are handed to the queue
// thread through an eventfd, since a ring has one submitter.
#pragma once

#include <liburing.h>
#include <sys/uio.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "base/mutex.h"
#include "base/unique_fd.h"
#include "io/frontend/fuse_request.h"
#include "io/uring_ring.h"

namespace sealvol::io::fuse {

// One queue (the kernel's fuse_ring_queue): a ring, its registered entries
// and the thread that serves them.
class RingQueue final : public Channel {
 public:
  RingQueue(FuseServer::Impl* server, int qid, int entries);
  ~RingQueue() override;

  // Starts the queue thread, which creates the ring and registers every
  // entry itself: the kernel hands requests to an entry through task work
  // on the task that submitted it, so registering from another thread would
  // park requests on a thread that is not listening (and may be the very
  // thread waiting for the answer). Returns the registration's result, so
  // auto mode can fall back.
  absl::Status Start();
  void Stop();

  void Reply(Slot* slot, int error, size_t out_bytes) override;
  // Every ring entry must be committed to get the next request.
  void Drop(Slot* slot) override { Reply(slot, 0, 0); }

 private:
  struct Entry {
    AlignedBuffer header;
    AlignedBuffer payload;
    iovec iov[2];
    Slot slot;
  };

  absl::Status Register();
  io_uring_sqe* NextSqe();
  void PrepCommand(io_uring_sqe* sqe, uint32_t cmd_op, uint64_t commit_id);
  void PrepCommit(uint32_t index);
  void ArmEvent();
  void OnRequest(uint32_t index, bool lone);
  void PinToCpu();
  void Loop();

  FuseServer::Impl* server_;
  int qid_;
  std::vector<Entry> entries_;
  UringRing ring_;
  UniqueFd event_fd_;
  uint64_t event_value_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  Mutex mu_;
  std::vector<uint32_t> ready_ ABSL_GUARDED_BY(mu_);
};

// Every queue of one connection.
class UringTransport {
 public:
  UringTransport(FuseServer::Impl* server, int entries_per_queue);

  // Starts one queue per possible CPU; fails when any registration fails.
  absl::Status Register();
  void Stop();

 private:
  FuseServer::Impl* server_;
  int entries_;
  std::vector<std::unique_ptr<RingQueue>> queues_;
};

}  // namespace sealvol::io::fuse
