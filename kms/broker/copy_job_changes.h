// CopyJobChanges wakes the KeyBroker's waiting CopyJobs calls (long polls)
// when a node's copy jobs change in this process: the controller calls
// Changed(node) after it creates a job placed on that node. A change made
// by another process (another controller replica sharing the registry) is
// not seen here; a waiting call finds it at its next registry read
// (KeyBrokerOptions::copy_jobs_recheck). Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"
#include "base/mutex.h"

namespace sealvol::broker {

class CopyJobChanges {
 public:
  enum class Wake {
    kChanged,   // The node's jobs changed since the count was taken.
    kDeadline,  // The deadline passed first.
    kClosed,    // Close() was called: the broker is shutting down.
  };

  // How many changes of `node_id`'s jobs this process has seen; take it
  // before reading the registry and pass it to WaitForChange, so that a
  // change between the read and the wait is not missed.
  uint64_t Count(const std::string& node_id) const;
  // Records a change of `node_id`'s jobs and wakes its waiting calls.
  void Changed(const std::string& node_id);
  // Waits until the node's count differs from `seen`, `deadline` passes or
  // Close() is called.
  Wake WaitForChange(const std::string& node_id, uint64_t seen,
                     absl::Time deadline);
  // Ends every wait, now and later.
  void Close();

 private:
  mutable Mutex mu_;
  CondVar changed_;
  // One entry per node that ever had a change (bounded by the nodes).
  std::map<std::string, uint64_t, std::less<>> counts_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace sealvol::broker
