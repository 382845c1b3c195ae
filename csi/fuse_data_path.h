// FuseDataPath serves volumes inside the node process: the sealed-volume
// engine, our FUSE server exporting it as one file in a private mount, and a
// direct-I/O loop device on that file. Thread-safe; calls for one volume
// must not overlap (the node service serializes them).
//
// The data path lives as long as this process: when the node plugin exits,
// the kernel ends the FUSE connections and the volumes' mounts return
// errors until NodeService::Recover() clears them and a publish reattaches.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "base/mutex.h"
#include "csi/data_path.h"
#include "io/frontend/fuse_server.h"

namespace sealvol::csi {

class FuseDataPath final : public DataPath {
 public:
  FuseDataPath();
  ~FuseDataPath() override;  // Detaches every volume still attached.

  absl::StatusOr<std::string> Attach(const AttachOptions& options,
                                     const crypto::SecretBytes& dek) override;
  absl::StatusOr<std::unique_ptr<WriteHold>> HoldWrites(
      const std::string& volume_id) override;
  absl::StatusOr<std::string> Device(const std::string& volume_id) override;
  absl::Status Grow(const std::string& volume_id,
                    uint64_t new_size_bytes) override;
  absl::Status Health(const std::string& volume_id) override;
  absl::Status Detach(const std::string& volume_id) override;
  absl::StatusOr<bool> StaleAt(const std::string& work_dir) override;
  absl::Status AbortStale(const std::string& work_dir) override;
  absl::Status ClearStale(const std::string& work_dir) override;

  // The FUSE transport serving an attached volume (kUring or kDev); NotFound
  // when it is not attached. AttachOptions::transport asks for one; kAuto
  // is decided by io::ServingOptions().
  absl::StatusOr<io::FuseTransport> Transport(const std::string& volume_id);

 private:
  struct Served;

  // The served volume; NotFound "volume ID is not attached".
  absl::StatusOr<std::shared_ptr<Served>> Find(const std::string& volume_id);

  Mutex mutex_;
  std::map<std::string, std::shared_ptr<Served>> served_
      ABSL_GUARDED_BY(mutex_);
};

}  // namespace sealvol::csi
