#include "kms/broker/audit_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/durable_file.h"
#include "base/status_macros.h"
#include "kms/broker/token_verifier.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace sealvol::broker {
namespace {

using nlohmann::ordered_json;

constexpr size_t kMaxFieldBytes = 256;
constexpr size_t kMaxLineBytes = 64 * 1024;
const std::string kGenesisHash(64, '0');

std::string Clip(const std::string& s) {
  return s.size() <= kMaxFieldBytes ? s : s.substr(0, kMaxFieldBytes);
}

std::string FormatLine(const AuditRecord& r, absl::Time now, int64_t seq,
                       const std::string& prev) {
  // Insertion order is the key order: stable for Loki and for humans.
  ordered_json line;
  line["time"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", now,
                                  absl::UTCTimeZone());
  line["seq"] = seq;
  line["decision"] = Clip(r.decision);
  line["reason"] = Clip(r.reason);
  line["volume"] = Clip(r.volume);
  line["tenant"] = Clip(r.tenant);
  line["namespace"] = Clip(r.namespace_name);
  line["pod"] = Clip(r.pod);
  line["pod_uid"] = Clip(r.pod_uid);
  line["service_account"] = Clip(r.service_account);
  line["node"] = Clip(r.node);
  line["token_id"] = Clip(r.token_id);
  line["attestation"] = Clip(r.attestation);
  line["key_version"] = r.key_version;
  line["message"] = Clip(r.message);
  line["prev"] = prev;
  // Request strings may be invalid UTF-8: replace, never throw.
  return line.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
}

absl::Status WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "write", path);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

std::string RotatedName(const std::string& path, int64_t last_seq) {
  return absl::StrFormat("%s.%020d", path, last_seq);
}

// The last complete line of the file at `fd` (size `size`); "" if none.
// Cuts off a torn (unterminated) tail first.
absl::StatusOr<std::string> LastLineRepairingTail(int fd, off_t size,
                                                  const std::string& path) {
  if (size == 0) return std::string();
  const off_t window = std::min<off_t>(size, 2 * kMaxLineBytes);
  std::string tail(static_cast<size_t>(window), '\0');
  if (::pread(fd, tail.data(), tail.size(), size - window) != window) {
    return ErrnoStatus(errno ? errno : EIO, "read", path);
  }
  if (tail.back() != '\n') {
    const size_t nl = tail.rfind('\n');
    if (nl == std::string::npos && window < size) {
      return absl::DataLossError(
          absl::StrCat("audit log ", path, ": last record is too long"));
    }
    const off_t keep =
        nl == std::string::npos ? 0 : size - window + static_cast<off_t>(nl) + 1;
    spdlog::warn("audit log {}: cutting off a torn last record ({} bytes)",
                 path, size - keep);
    if (::ftruncate(fd, keep) != 0) return ErrnoStatus(errno, "ftruncate", path);
    if (::fsync(fd) != 0) return ErrnoStatus(errno, "fsync", path);
    tail.resize(tail.size() - static_cast<size_t>(size - keep));
  }
  if (tail.empty()) return std::string();
  tail.pop_back();  // The final '\n'.
  const size_t nl = tail.rfind('\n');
  if (nl == std::string::npos && window < size) {
    return absl::DataLossError(
        absl::StrCat("audit log ", path, ": last record is too long"));
  }
  return nl == std::string::npos ? tail : tail.substr(nl + 1);
}

absl::StatusOr<int64_t> SeqOf(const std::string& line, const std::string& where) {
  auto doc = nlohmann::json::parse(line, nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("seq") ||
      !doc["seq"].is_number_integer()) {
    return absl::DataLossError(absl::StrCat(
        "audit log ", where,
        ": last record is not a valid record; run `sealvol audit verify`"));
  }
  return doc["seq"].get<int64_t>();
}

// The newest "<path>.<20 digits>" sibling, or "".
std::string NewestRotated(const std::string& path) {
  const std::filesystem::path p(path);
  const std::string prefix = p.filename().string() + ".";
  std::filesystem::path dir = p.parent_path();
  if (dir.empty()) dir = ".";
  std::error_code ec;
  std::string best;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() != prefix.size() + 20 || name.rfind(prefix, 0) != 0) {
      continue;
    }
    const std::string digits = name.substr(prefix.size());
    if (!std::all_of(digits.begin(), digits.end(), absl::ascii_isdigit)) {
      continue;
    }
    best = std::max(best, name);
  }
  return best.empty() ? "" : (dir / best).string();
}

// The file at `path` opened for appending, with the chain's last record
// (from the newest rotated file when the current one is empty); a torn last
// line is cut off first.
struct ChainTail {
  UniqueFd fd;
  int64_t last_seq = 0;
  std::string last_hash;
  uint64_t file_bytes = 0;
};

absl::StatusOr<ChainTail> OpenChainTail(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC,
                     0600));
  if (!fd) return ErrnoStatus(errno, "open", path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "fstat", path);
  ASSIGN_OR_RETURN(std::string last_line,
                   LastLineRepairingTail(fd.get(), st.st_size, path));
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "fstat", path);
  std::string source = path;
  if (last_line.empty()) {
    // A fresh file after rotation (or a crash right after the rename): the
    // chain continues from the newest rotated file.
    source = NewestRotated(path);
    if (!source.empty()) {
      UniqueFd old(::open(source.c_str(), O_RDONLY | O_CLOEXEC));
      struct stat old_st;
      if (!old || ::fstat(old.get(), &old_st) != 0) {
        return ErrnoStatus(errno, "open", source);
      }
      ASSIGN_OR_RETURN(last_line,
                       LastLineRepairingTail(old.get(), old_st.st_size, source));
    }
  }
  ChainTail tail;
  tail.last_hash = kGenesisHash;
  if (!last_line.empty()) {
    ASSIGN_OR_RETURN(tail.last_seq, SeqOf(last_line, source));
    tail.last_hash = Sha256Hex(last_line);
  }
  RETURN_IF_ERROR(SyncDirectory(ParentDirectory(path)));
  tail.fd = std::move(fd);
  tail.file_bytes = static_cast<uint64_t>(st.st_size);
  return tail;
}

}  // namespace

AuditLog::AuditLog(AuditLogOptions options, UniqueFd fd, int64_t last_seq,
                   std::string last_hash, uint64_t file_bytes)
    : options_(std::move(options)),
      fd_(std::move(fd)),
      last_seq_(last_seq),
      last_hash_(std::move(last_hash)),
      file_bytes_(file_bytes),
      durable_seq_(last_seq) {}

AuditLog::~AuditLog() {
  MutexLock lock(&mu_);
  WaitForSyncLocked();
}

void AuditLog::WaitForSyncLocked() {
  while (sync_in_progress_) synced_.Wait(&mu_);
}

absl::StatusOr<std::unique_ptr<AuditLog>> AuditLog::Open(
    AuditLogOptions options) {
  ASSIGN_OR_RETURN(ChainTail tail, OpenChainTail(options.path));
  return std::unique_ptr<AuditLog>(
      new AuditLog(std::move(options), std::move(tail.fd), tail.last_seq,
                   std::move(tail.last_hash), tail.file_bytes));
}

absl::Status AuditLog::RecoverLocked() {
  if (broken_.ok()) return absl::OkStatus();
  const auto now = std::chrono::steady_clock::now();
  if (now - last_recovery_ < kRecoveryInterval) return broken_;
  last_recovery_ = now;
  // The syncing thread uses fd_ without the lock: let it finish first.
  WaitForSyncLocked();
  // Reopen and resume from what the file holds: a torn line the failed
  // write left is cut off; a record whose sync failed was never
  // acknowledged, so whether it is still there does not matter, but every
  // acknowledged one must be.
  auto tail = OpenChainTail(options_.path);
  if (!tail.ok()) {
    broken_ = tail.status();
    return broken_;
  }
  if (tail->last_seq < durable_seq_) {
    broken_ = absl::DataLossError(absl::StrCat(
        "audit log ", options_.path, ": ends at record ", tail->last_seq,
        " but record ", durable_seq_,
        " was acknowledged; run `sealvol audit verify`"));
    return broken_;
  }
  if (::fdatasync(tail->fd.get()) != 0) {
    broken_ = ErrnoStatus(errno, "fdatasync", options_.path);
    return broken_;
  }
  // Reopening succeeds on a full disk too; room for a few records is what
  // says the cause has gone.
  struct statvfs vfs {};
  if (::fstatvfs(tail->fd.get(), &vfs) == 0 &&
      static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize < 4 * kMaxLineBytes) {
    broken_ = absl::ResourceExhaustedError(absl::StrCat(
        "audit log ", options_.path, ": less than ", 4 * kMaxLineBytes / 1024,
        " KiB free on its file system"));
    return broken_;
  }
  fd_ = std::move(tail->fd);
  last_seq_ = tail->last_seq;
  last_hash_ = std::move(tail->last_hash);
  file_bytes_ = tail->file_bytes;
  durable_seq_ = last_seq_;
  spdlog::warn("audit log {}: writable again after \"{}\"; chain resumes "
               "at record {}",
               options_.path, std::string(broken_.message()), last_seq_);
  broken_ = absl::OkStatus();
  return broken_;
}

absl::Status AuditLog::Health() {
  MutexLock lock(&mu_);
  return RecoverLocked();
}

int64_t AuditLog::last_seq() const {
  MutexLock lock(&mu_);
  return last_seq_;
}

absl::Status AuditLog::Append(const AuditRecord& record) {
  MutexLock lock(&mu_);
  RETURN_IF_ERROR(RecoverLocked());
  const int64_t seq = last_seq_ + 1;
  std::string line = FormatLine(record, options_.now(), seq, last_hash_);
  const std::string hash = Sha256Hex(line);
  line += '\n';
  if (absl::Status s = WriteAll(fd_.get(), line, options_.path); !s.ok()) {
    // A partial line may be on disk; Open cuts it off. Fail closed.
    broken_ = s;
    return s;
  }
  last_seq_ = seq;
  last_hash_ = hash;
  file_bytes_ += line.size();
  while (durable_seq_ < seq) {
    if (!broken_.ok()) return broken_;
    if (sync_in_progress_) {
      synced_.Wait(&mu_);
      continue;
    }
    // Group commit: one fdatasync covers every record written so far.
    sync_in_progress_ = true;
    const int64_t target = last_seq_;
    const int fd = fd_.get();
    mu_.Unlock();
    const int rc = ::fdatasync(fd);
    const int err = errno;
    mu_.Lock();
    sync_in_progress_ = false;
    if (rc != 0) {
      broken_ = ErrnoStatus(err, "fdatasync", options_.path);
    } else {
      durable_seq_ = std::max(durable_seq_, target);
    }
    synced_.SignalAll();
  }
  if (options_.max_file_bytes > 0 && file_bytes_ >= options_.max_file_bytes) {
    // The record is durable; a failed rotation only means a bigger file.
    if (absl::Status s = RotateLocked(); !s.ok()) {
      spdlog::warn("audit log rotation failed: {}", std::string(s.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status AuditLog::Rotate() {
  MutexLock lock(&mu_);
  RETURN_IF_ERROR(RecoverLocked());
  return RotateLocked();
}

absl::Status AuditLog::RotateLocked() {
  // The syncing thread uses fd_ without the lock: let it finish first.
  WaitForSyncLocked();
  if (file_bytes_ == 0) return absl::OkStatus();
  if (::fdatasync(fd_.get()) != 0) {
    broken_ = ErrnoStatus(errno, "fdatasync", options_.path);
    return broken_;
  }
  durable_seq_ = last_seq_;
  const std::string rotated = RotatedName(options_.path, last_seq_);
  if (::rename(options_.path.c_str(), rotated.c_str()) != 0) {
    return ErrnoStatus(errno, "rename", options_.path);
  }
  UniqueFd fd(::open(options_.path.c_str(),
                     O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!fd) {
    broken_ = ErrnoStatus(errno, "open", options_.path);
    return broken_;
  }
  fd_ = std::move(fd);
  file_bytes_ = 0;
  return SyncDirectory(ParentDirectory(options_.path));
}

absl::StatusOr<AuditVerifyResult> VerifyAuditFiles(
    const std::vector<std::string>& files, const AuditVerifyOptions& options) {
  AuditVerifyResult result;
  std::string prev_hash = kGenesisHash;
  int64_t prev_seq = 0;
  bool first = true;
  for (const std::string& file : files) {
    std::ifstream in(file, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("open ", file, ": failed"));
    std::ostringstream buf;
    buf << in.rdbuf();
    const std::string content = buf.str();
    size_t pos = 0;
    int64_t line_no = 0;
    while (pos < content.size()) {
      ++line_no;
      const std::string where = absl::StrCat(file, ":", line_no);
      const size_t nl = content.find('\n', pos);
      if (nl == std::string::npos) {
        return absl::DataLossError(
            absl::StrCat(where, ": torn record (no final newline)"));
      }
      const std::string line = content.substr(pos, nl - pos);
      pos = nl + 1;
      auto doc = nlohmann::json::parse(line, nullptr, false);
      if (doc.is_discarded() || !doc.is_object()) {
        return absl::DataLossError(absl::StrCat(where, ": not a JSON object"));
      }
      for (const char* key : {"time", "decision", "reason", "volume", "node",
                              "token_id"}) {
        if (!doc.contains(key) || !doc[key].is_string()) {
          return absl::DataLossError(
              absl::StrCat(where, ": field '", key, "' missing"));
        }
      }
      if (!doc.contains("seq") || !doc["seq"].is_number_integer() ||
          !doc.contains("prev") || !doc["prev"].is_string()) {
        return absl::DataLossError(
            absl::StrCat(where, ": seq or prev missing"));
      }
      const int64_t seq = doc["seq"].get<int64_t>();
      const std::string prev = doc["prev"].get<std::string>();
      if (first && options.allow_partial_start) {
        result.first_seq = seq;
      } else {
        if (seq != prev_seq + 1) {
          return absl::DataLossError(absl::StrCat(
              where, ": seq ", seq, " where ", prev_seq + 1,
              " was expected (a record was deleted, inserted or moved)"));
        }
        if (prev != prev_hash) {
          return absl::DataLossError(absl::StrCat(
              where, ": prev does not match the hash of the record before "
                     "(that record was edited, or records were deleted, "
                     "inserted or moved)"));
        }
        if (first) result.first_seq = seq;
      }
      first = false;
      prev_seq = seq;
      prev_hash = Sha256Hex(line);
      ++result.records;
    }
  }
  result.last_seq = prev_seq;
  result.head_hash = result.records > 0 ? prev_hash : "";
  return result;
}

}  // namespace sealvol::broker
