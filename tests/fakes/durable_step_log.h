// DurableStepLog records the steps of durable file writes (the seam in
// base/durable_file.h) while it lives, and answers what a crash after any
// prefix of them may leave under a name, in the worst case a POSIX file
// system allows: a rename, link or unlink that no fsync of its directory
// followed may or may not have reached the disk, and data written to a file
// that was not fsynced may be lost (the name then shows an empty file).
// Thread-safe; one log installed at a time.
#pragma once

#include <cstddef>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "base/durable_file.h"
#include "base/mutex.h"

namespace sealvol::testing {

class DurableStepLog final : public DurableStepObserver {
 public:
  // What a name may hold after a crash.
  enum class Outcome {
    kOld,    // What it held before the log started (possibly nothing).
    kNew,    // Content written while the log lived, complete.
    kEmpty,  // A file written while the log lived, its data lost.
    kGone,   // Removed while the log lived.
  };

  DurableStepLog() { previous_ = SetDurableStepObserver(this); }
  ~DurableStepLog() override { SetDurableStepObserver(previous_); }
  DurableStepLog(const DurableStepLog&) = delete;
  DurableStepLog& operator=(const DurableStepLog&) = delete;

  void Observe(const DurableStep& step) override {
    MutexLock lock(&mu_);
    steps_.push_back(step);
  }

  size_t size() const {
    MutexLock lock(&mu_);
    return steps_.size();
  }

  // The outcomes `path` may show after a crash that let only the first
  // `n` steps happen.
  std::set<Outcome> AfterCrash(const std::string& path, size_t n) const {
    MutexLock lock(&mu_);
    const std::string dir = path.substr(0, path.find_last_of('/'));
    constexpr int kOldInode = -1, kGoneInode = -2;
    std::map<std::string, int> inode_of;  // Names written during the log.
    std::map<int, bool> synced;           // Inode -> data fsynced.
    int durable = kOldInode;              // What the directory surely holds.
    std::vector<int> pending;             // Entries not yet made durable.
    int next_inode = 0;
    for (size_t i = 0; i < n && i < steps_.size(); ++i) {
      const DurableStep& s = steps_[i];
      switch (s.kind) {
        case DurableStep::Kind::kWrite:
          inode_of[s.path] = next_inode;
          synced[next_inode++] = false;
          break;
        case DurableStep::Kind::kSyncFile:
          if (inode_of.count(s.path)) synced[inode_of[s.path]] = true;
          break;
        case DurableStep::Kind::kRename:
        case DurableStep::Kind::kLink: {
          const int inode =
              inode_of.count(s.path) ? inode_of[s.path] : kOldInode;
          if (s.to == path) pending.push_back(inode);
          inode_of[s.to] = inode;
          if (s.kind == DurableStep::Kind::kRename) inode_of.erase(s.path);
          break;
        }
        case DurableStep::Kind::kUnlink:
          if (s.path == path) pending.push_back(kGoneInode);
          inode_of.erase(s.path);
          break;
        case DurableStep::Kind::kSyncDir:
          if (s.path == dir && !pending.empty()) {
            durable = pending.back();
            pending.clear();
          }
          break;
      }
    }
    std::set<Outcome> out;
    std::vector<int> candidates = pending;
    candidates.push_back(durable);
    for (const int inode : candidates) {
      if (inode == kOldInode) {
        out.insert(Outcome::kOld);
      } else if (inode == kGoneInode) {
        out.insert(Outcome::kGone);
      } else {
        out.insert(Outcome::kNew);
        if (!synced.at(inode)) out.insert(Outcome::kEmpty);
      }
    }
    return out;
  }

 private:
  mutable Mutex mu_;
  std::vector<DurableStep> steps_;
  DurableStepObserver* previous_ = nullptr;
};

// For test messages: "{old, new}".
inline std::string OutcomesString(
    const std::set<DurableStepLog::Outcome>& outcomes) {
  static const char* const kNames[] = {"old", "new", "empty", "gone"};
  std::string s = "{";
  for (const auto o : outcomes) {
    if (s.size() > 1) s += ", ";
    s += kNames[static_cast<int>(o)];
  }
  return s + "}";
}

}  // namespace sealvol::testing
