#include "kms/local_key_provider.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/durable_file.h"
#include "base/status_macros.h"
#include "base/unique_fd.h"
#include "crypto/key_schedule.h"
#include "crypto/sector_codec.h"
#include "kms/base64.h"
#include "kms/identifiers.h"
#include "kms/volume_record_json.h"
#include "spdlog/spdlog.h"

namespace sealvol::kms {
namespace {

constexpr size_t kKekSize = 32;
constexpr size_t kMaxRecordSize = 1 << 20;
constexpr char kWrapPrefix[] = "local:v";

// Reads a key file of exactly `size` bytes into locked memory. Refuses a
// file whose mode grants any access to group or others (PermissionDenied),
// so a key file someone loosened is noticed rather than used.
absl::StatusOr<crypto::SecretBytes> ReadSecretFile(const std::string& path,
                                                   size_t size) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return ErrnoStatus(errno, "open", path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "stat", path);
  if ((st.st_mode & 077) != 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        "open ", path, ": key file is accessible by group or others (mode ",
        absl::Hex(st.st_mode & 07777), "); expected 0600"));
  }
  if (static_cast<size_t>(st.st_size) != size) {
    return absl::DataLossError(absl::StrCat("read ", path, ": key file has ",
                                            st.st_size, " bytes, expected ",
                                            size));
  }
  ASSIGN_OR_RETURN(crypto::SecretBytes key, crypto::SecretBytes::Allocate(size));
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::read(fd.get(), key.data() + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "read", path);
    }
    if (n == 0) {
      return absl::DataLossError(absl::StrCat("read ", path, ": short file"));
    }
    done += static_cast<size_t>(n);
  }
  return key;
}

// An flock(2) on DIR/lock, held for one operation. Each acquisition opens its
// own file description, so threads of one process exclude each other too.
class DirLock {
 public:
  static absl::StatusOr<DirLock> Acquire(const std::string& dir,
                                         bool exclusive) {
    const std::string path = dir + "/lock";
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd && errno == ENOENT) {
      // The store's directory itself is gone: unavailable, never "not
      // found", which callers read as "this volume was destroyed".
      return absl::UnavailableError(absl::StrCat(
          "local KMS: directory ", dir, " is missing (unmounted or moved?)"));
    }
    if (!fd) return ErrnoStatus(errno, "open", path);
    while (::flock(fd.get(), exclusive ? LOCK_EX : LOCK_SH) != 0) {
      if (errno != EINTR) return ErrnoStatus(errno, "flock", path);
    }
    return DirLock(std::move(fd));
  }

 private:
  explicit DirLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;  // Closing it releases the lock.
};

std::string KekFileName(const std::string& key_name, int64_t version) {
  return absl::StrCat(key_name, ".v", version, ".key");
}

std::string AdditionalData(const VolumeRecord& r, int64_t version) {
  std::string aad = "sealvol/local-dek/v1";
  for (const std::string* part : {&r.volume_id, &r.tenant, &r.key_name}) {
    aad.push_back('\0');
    aad += *part;
  }
  aad.push_back('\0');
  aad += std::to_string(version);
  return aad;
}

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

absl::StatusOr<std::unique_ptr<LocalKeyProvider>> LocalKeyProvider::Open(
    std::string dir, std::string key_name_template) {
  if (dir.empty()) {
    return absl::InvalidArgumentError("local KMS: empty directory");
  }
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  // Validate the template once, with a placeholder tenant.
  if (!key_name_template.empty()) {
    RETURN_IF_ERROR(ExpandKeyNameTemplate(key_name_template, "x").status());
  }
  std::unique_ptr<LocalKeyProvider> p(
      new LocalKeyProvider(dir, std::move(key_name_template)));
  RETURN_IF_ERROR(MakeDirectoryDurably(dir, 0700));
  RETURN_IF_ERROR(MakeDirectoryDurably(p->KekDir(), 0700));
  RETURN_IF_ERROR(MakeDirectoryDurably(p->VolumeDir(), 0700));
  ASSIGN_OR_RETURN(DirLock lock, DirLock::Acquire(dir, /*exclusive=*/true));
  RETURN_IF_ERROR(RemoveStaleTempFiles(p->KekDir()));
  RETURN_IF_ERROR(RemoveStaleTempFiles(p->VolumeDir()));
  return p;
}

std::string LocalKeyProvider::Describe() const { return "local:" + dir_; }

absl::Status LocalKeyProvider::Ping() {
  if (::access(VolumeDir().c_str(), R_OK | W_OK | X_OK) != 0) {
    return ErrnoStatus(errno, "access", VolumeDir());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> LocalKeyProvider::KekVersions(
    std::string_view key_name) const {
  const std::string dir = KekDir();
  std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), ::closedir);
  if (!d) return ErrnoStatus(errno, "opendir", dir);
  const std::string prefix = absl::StrCat(std::string(key_name), ".v");
  std::vector<int64_t> versions;
  while (struct dirent* e = ::readdir(d.get())) {
    std::string_view name = e->d_name;
    if (!absl::StartsWith(std::string(name), prefix) ||
        !absl::EndsWith(std::string(name), ".key")) {
      continue;
    }
    name.remove_prefix(prefix.size());
    name.remove_suffix(4);
    int64_t v = 0;
    auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), v);
    if (ec == std::errc() && end == name.data() + name.size() && v > 0) {
      versions.push_back(v);
    }
  }
  std::sort(versions.begin(), versions.end());
  return versions;
}

absl::StatusOr<crypto::SecretBytes> LocalKeyProvider::ReadKek(
    const std::string& key_name, int64_t version) const {
  auto kek = ReadSecretFile(
      absl::StrCat(KekDir(), "/", KekFileName(key_name, version)), kKekSize);
  if (absl::IsNotFound(kek.status())) {
    return absl::DataLossError(absl::StrCat(
        "KEK ", key_name, " version ", version, " is missing from ", KekDir(),
        ": the volumes wrapped under it cannot be unwrapped"));
  }
  return kek;
}

absl::Status LocalKeyProvider::WriteKek(const std::string& key_name,
                                        int64_t version) const {
  ASSIGN_OR_RETURN(crypto::SecretBytes kek,
                   crypto::SecretBytes::Random(kKekSize));
  return CreateFileAtomically(KekDir(), KekFileName(key_name, version),
                              kek.span(), 0600);
}

absl::StatusOr<std::string> LocalKeyProvider::Wrap(
    const VolumeRecord& record, const crypto::SecretBytes& kek,
    const crypto::SecretBytes& dek) const {
  // Random nonces are safe here: a KEK version wraps one DEK per volume of
  // one tenant, far below the 2^32 limit of NIST SP 800-38D.
  crypto::GcmNonce nonce;
  if (RAND_bytes(nonce.data(), static_cast<int>(nonce.size())) != 1) {
    return absl::InternalError("wrap DEK: RAND_bytes failed");
  }
  ASSIGN_OR_RETURN(auto codec, crypto::SectorCodec::Create(kek));
  std::vector<uint8_t> blob(nonce.size() + dek.size() + crypto::kGcmTagSize);
  std::copy(nonce.begin(), nonce.end(), blob.begin());
  std::span<uint8_t> ciphertext(blob.data() + nonce.size(), dek.size());
  crypto::GcmTag tag;
  RETURN_IF_ERROR(codec->Seal(nonce, Bytes(AdditionalData(record, record.key_version)),
                              dek.span(), ciphertext, tag));
  std::copy(tag.begin(), tag.end(), blob.end() - tag.size());
  return absl::StrCat(kWrapPrefix, record.key_version, ":", Base64Encode(blob));
}

absl::StatusOr<crypto::SecretBytes> LocalKeyProvider::Unwrap(
    const VolumeRecord& record) const {
  const std::string what = absl::StrCat("unwrap DEK of volume ", record.volume_id);
  const std::string expected_prefix =
      absl::StrCat(kWrapPrefix, record.key_version, ":");
  if (!absl::StartsWith(record.wrapped_dek, expected_prefix)) {
    return absl::DataLossError(absl::StrCat(
        what, ": wrapped key is not a local key of version ",
        record.key_version));
  }
  auto blob = Base64Decode(
      std::string_view(record.wrapped_dek).substr(expected_prefix.size()));
  if (!blob.ok() || blob->size() != crypto::kGcmNonceSize + crypto::kDekSize +
                                        crypto::kGcmTagSize) {
    return absl::DataLossError(absl::StrCat(what, ": malformed wrapped key"));
  }
  crypto::GcmNonce nonce;
  crypto::GcmTag tag;
  std::copy_n(blob->begin(), nonce.size(), nonce.begin());
  std::copy_n(blob->end() - tag.size(), tag.size(), tag.begin());
  ASSIGN_OR_RETURN(crypto::SecretBytes kek,
                   ReadKek(record.key_name, record.key_version));
  ASSIGN_OR_RETURN(auto codec, crypto::SectorCodec::Create(kek));
  ASSIGN_OR_RETURN(crypto::SecretBytes dek,
                   crypto::SecretBytes::Allocate(crypto::kDekSize));
  absl::Status s = codec->Open(
      nonce, Bytes(AdditionalData(record, record.key_version)),
      std::span<const uint8_t>(blob->data() + nonce.size(), crypto::kDekSize),
      tag, dek.span());
  if (!s.ok()) {
    return absl::DataLossError(absl::StrCat(
        what, ": authentication failed (wrong KEK, or the record was altered "
              "or copied from another volume or tenant)"));
  }
  return dek;
}

absl::StatusOr<VolumeRecord> LocalKeyProvider::ReadRecord(
    std::string_view volume_id) const {
  RETURN_IF_ERROR(ValidateVolumeId(volume_id));
  const std::string path =
      absl::StrCat(VolumeDir(), "/", std::string(volume_id), ".json");
  auto text = ReadSmallFile(path, kMaxRecordSize);
  if (absl::IsNotFound(text.status())) {
    // A record is absent only if its directory is there to say so. A key
    // store whose directory has gone (an unmounted volume, a moved folder)
    // is unavailable, not a store in which every volume was destroyed: the
    // node's reaper deletes the images of destroyed volumes.
    struct stat st;
    if (::stat(VolumeDir().c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return absl::UnavailableError(absl::StrCat(
          "volume ", std::string(volume_id), ": the key store's volume "
          "directory ", VolumeDir(), " is missing (unmounted or moved?); ",
          Describe(), " is unavailable"));
    }
    return absl::NotFoundError(absl::StrCat(
        "volume ", std::string(volume_id), ": no key record in ", Describe(),
        " (never created, or destroyed)"));
  }
  if (!text.ok()) return text.status();
  nlohmann::json json = nlohmann::json::parse(*text, nullptr, false);
  if (json.is_discarded()) {
    return absl::DataLossError(absl::StrCat(path, ": not valid JSON"));
  }
  ASSIGN_OR_RETURN(VolumeRecord record, VolumeRecordFromJson(json, path));
  if (record.volume_id != volume_id) {
    return absl::DataLossError(absl::StrCat(
        path, ": record names volume ", record.volume_id));
  }
  return record;
}

absl::Status LocalKeyProvider::WriteRecord(const VolumeRecord& record,
                                           bool create) const {
  const std::string text = DumpJson(VolumeRecordToJson(record), 2) + "\n";
  RETURN_IF_ERROR(CheckRecordWriteSize(text, record.volume_id));
  const std::string name = record.volume_id + ".json";
  return create ? CreateFileAtomically(VolumeDir(), name, Bytes(text), 0600)
                : WriteFileAtomically(VolumeDir(), name, Bytes(text), 0600);
}

absl::StatusOr<VolumeRecord> LocalKeyProvider::CreateVolumeKey(
    const CreateVolumeKeyRequest& request) {
  ASSIGN_OR_RETURN(const std::string key_name,
                   CheckNewVolumeKey(request, key_name_template_));
  ASSIGN_OR_RETURN(DirLock lock, DirLock::Acquire(dir_, /*exclusive=*/true));
  const std::string path =
      absl::StrCat(VolumeDir(), "/", request.volume_id, ".json");
  if (::access(path.c_str(), F_OK) == 0) {
    return absl::AlreadyExistsError(absl::StrCat(
        "create key for volume ", request.volume_id, ": already exists in ",
        Describe()));
  }
  ASSIGN_OR_RETURN(std::vector<int64_t> versions, KekVersions(key_name));
  if (versions.empty()) {
    RETURN_IF_ERROR(WriteKek(key_name, 1));
    versions.push_back(1);
  }
  VolumeRecord record = NewVolumeRecord(request, key_name, versions.back());
  // A fresh DEK for every record, copies included: nothing of a source's
  // key is ever reused.
  ASSIGN_OR_RETURN(crypto::SecretBytes kek,
                   ReadKek(key_name, record.key_version));
  ASSIGN_OR_RETURN(crypto::SecretBytes dek,
                   crypto::SecretBytes::Random(crypto::kDekSize));
  ASSIGN_OR_RETURN(record.wrapped_dek, Wrap(record, kek, dek));
  RETURN_IF_ERROR(WriteRecord(record, /*create=*/true));
  return record;
}

absl::StatusOr<crypto::SecretBytes> LocalKeyProvider::UnwrapVolumeKey(
    std::string_view volume_id) {
  // Shared lock: a rotation must not delete the KEK version between reading
  // the record and reading the KEK.
  ASSIGN_OR_RETURN(DirLock lock, DirLock::Acquire(dir_, /*exclusive=*/false));
  ASSIGN_OR_RETURN(VolumeRecord record, ReadRecord(volume_id));
  return Unwrap(record);
}

absl::StatusOr<crypto::SecretBytes> LocalKeyProvider::UnwrapRecordKey(
    const VolumeRecord& record) {
  ASSIGN_OR_RETURN(DirLock lock, DirLock::Acquire(dir_, /*exclusive=*/false));
  return Unwrap(record);
}

absl::StatusOr<VolumeRecord> LocalKeyProvider::GetVolume(
    std::string_view volume_id) {
  return ReadRecord(volume_id);
}

absl::Status LocalKeyProvider::UpdateVolume(const VolumeRecord& update) {
  ASSIGN_OR_RETURN(DirLock lock, DirLock::Acquire(dir_, /*exclusive=*/true));
  ASSIGN_OR_RETURN(VolumeRecord record, ReadRecord(update.volume_id));
  record.capacity_bytes = update.capacity_bytes;
  record.node = update.node;
  record.parameters = update.parameters;
  return WriteRecord(record, /*create=*/false);
}

absl::StatusOr<VolumeRecord> LocalKeyProvider::ClaimFormat(
    std::string_view volume_id, const FormatClaim& claim) {
  RETURN_IF_ERROR(ValidateFormatId(claim.format_id));
  // Exclusive: two claims must not both see an empty format id.
  ASSIGN_OR_RETURN(DirLock lock, DirLock::Acquire(dir_, /*exclusive=*/true));
  ASSIGN_OR_RETURN(VolumeRecord record, ReadRecord(volume_id));
  if (!record.format_id.empty()) return record;
  record.format_id = claim.format_id;
  record.formatted_node = claim.node;
  record.formatted_unix = claim.unix_time;
  if (claim.state.has_value() && !record.state.has_value()) {
    RETURN_IF_ERROR(ApplyStateCommit(
        record, {.state = *claim.state, .node = claim.node,
                 .unix_time = claim.unix_time}));
  }
  RETURN_IF_ERROR(WriteRecord(record, /*create=*/false));
  return record;
}

absl::StatusOr<VolumeRecord> LocalKeyProvider::CommitState(
    std::string_view volume_id, const StateCommit& commit) {
  // Exclusive: the epoch check and the write are one step.
  ASSIGN_OR_RETURN(DirLock lock, DirLock::Acquire(dir_, /*exclusive=*/true));
  ASSIGN_OR_RETURN(VolumeRecord record, ReadRecord(volume_id));
  RETURN_IF_ERROR(ApplyStateCommit(record, commit));
  RETURN_IF_ERROR(WriteRecord(record, /*create=*/false));
  return record;
}

absl::StatusOr<VolumeRecord> LocalKeyProvider::UpdateCopy(
    std::string_view volume_id, const CopyUpdate& update) {
  // Exclusive: the forward-only check and the write are one step.
  ASSIGN_OR_RETURN(DirLock lock, DirLock::Acquire(dir_, /*exclusive=*/true));
  ASSIGN_OR_RETURN(VolumeRecord record, ReadRecord(volume_id));
  const VolumeRecord before = record;
  RETURN_IF_ERROR(ApplyCopyUpdate(record, update));
  if (record.copy == before.copy) return record;  // A repeated final report.
  RETURN_IF_ERROR(WriteRecord(record, /*create=*/false));
  return record;
}

absl::StatusOr<VolumeRecord> LocalKeyProvider::AcceptRollback(
    std::string_view volume_id, std::string_view by, int64_t unix_time) {
  if (by.empty()) {
    return absl::InvalidArgumentError(
        "accept rollback: the operator (by) is empty");
  }
  ASSIGN_OR_RETURN(DirLock lock, DirLock::Acquire(dir_, /*exclusive=*/true));
  ASSIGN_OR_RETURN(VolumeRecord record, ReadRecord(volume_id));
  record.rollback_pending = true;
  record.rollback_accepted_by = std::string(by);
  record.rollback_accepted_unix = unix_time;
  RETURN_IF_ERROR(WriteRecord(record, /*create=*/false));
  return record;
}

absl::StatusOr<std::vector<VolumeRecord>> LocalKeyProvider::ReadAllRecords(
    bool skip_bad_records) const {
  const std::string dir = VolumeDir();
  std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), ::closedir);
  if (!d) return ErrnoStatus(errno, "opendir", dir);
  std::vector<std::string> ids;
  while (struct dirent* e = ::readdir(d.get())) {
    const std::string name = e->d_name;
    if (absl::StartsWith(name, kTempFilePrefix) ||
        !absl::EndsWith(name, ".json")) {
      continue;
    }
    ids.push_back(name.substr(0, name.size() - 5));
  }
  std::sort(ids.begin(), ids.end());
  std::vector<VolumeRecord> out;
  for (const std::string& id : ids) {
    auto record = ReadRecord(id);
    if (absl::IsNotFound(record.status())) continue;  // Destroyed meanwhile.
    if (skip_bad_records && IsBadRecordError(record.status())) {
      // One bad file must not take every other volume down with it.
      spdlog::warn("registry {}: skipping the record of {}: {}", Describe(),
                   id.substr(0, 64), std::string(record.status().message()));
      continue;
    }
    if (!record.ok()) return record.status();
    out.push_back(std::move(*record));
  }
  return out;
}

absl::StatusOr<std::vector<VolumeRecord>> LocalKeyProvider::ListVolumes(
    std::string_view tenant) {
  ASSIGN_OR_RETURN(DirLock lock, DirLock::Acquire(dir_, /*exclusive=*/false));
  ASSIGN_OR_RETURN(std::vector<VolumeRecord> all,
                   ReadAllRecords(/*skip_bad_records=*/true));
  std::vector<VolumeRecord> out;
  for (VolumeRecord& record : all) {
    if (tenant.empty() || record.tenant == tenant) {
      out.push_back(std::move(record));
    }
  }
  return out;
}

absl::Status LocalKeyProvider::DestroyVolumeKey(std::string_view volume_id) {
  RETURN_IF_ERROR(ValidateVolumeId(volume_id));
  ASSIGN_OR_RETURN(DirLock lock, DirLock::Acquire(dir_, /*exclusive=*/true));
  absl::Status s =
      RemoveFileDurably(VolumeDir(), std::string(volume_id) + ".json");
  if (absl::IsNotFound(s)) {
    return absl::NotFoundError(absl::StrCat("destroy key of volume ",
                                            std::string(volume_id),
                                            ": no key record in ", Describe()));
  }
  return s;
}

absl::StatusOr<RotationResult> LocalKeyProvider::RotateTenantKey(
    std::string_view tenant) {
  ASSIGN_OR_RETURN(const std::string default_key,
                   ExpandKeyNameTemplate(key_name_template_, tenant));
  ASSIGN_OR_RETURN(DirLock lock, DirLock::Acquire(dir_, /*exclusive=*/true));
  // Strict: a rotation must not delete a KEK version a record it cannot
  // read still needs.
  ASSIGN_OR_RETURN(std::vector<VolumeRecord> records,
                   ReadAllRecords(/*skip_bad_records=*/false));
  const std::set<std::string> key_names =
      TenantKeyNames(records, tenant, default_key);
  RotationResult result;
  result.key_name = default_key;
  for (const std::string& key_name : key_names) {
    ASSIGN_OR_RETURN(std::vector<int64_t> versions, KekVersions(key_name));
    const int64_t next = versions.empty() ? 1 : versions.back() + 1;
    RETURN_IF_ERROR(WriteKek(key_name, next));
    ASSIGN_OR_RETURN(crypto::SecretBytes new_kek, ReadKek(key_name, next));
    for (VolumeRecord& r : records) {
      if (r.tenant != tenant || r.key_name != key_name) continue;
      ASSIGN_OR_RETURN(crypto::SecretBytes dek, Unwrap(r));
      VolumeRecord rewrapped = r;
      rewrapped.key_version = next;
      ASSIGN_OR_RETURN(rewrapped.wrapped_dek, Wrap(rewrapped, new_kek, dek));
      RETURN_IF_ERROR(WriteRecord(rewrapped, /*create=*/false));
      r = std::move(rewrapped);
      ++result.volumes_rewrapped;
    }
    // The tenant's records of this key are now under `next`. Older versions
    // that no record references any more are deleted, so that they cannot
    // unwrap old copies of a record (from a backup, say).
    std::set<int64_t> referenced;
    for (const VolumeRecord& r : records) {
      if (r.key_name == key_name) referenced.insert(r.key_version);
    }
    for (int64_t v : versions) {
      if (referenced.count(v) != 0) continue;
      absl::Status s = RemoveFileDurably(KekDir(), KekFileName(key_name, v));
      if (!s.ok() && !absl::IsNotFound(s)) return s;
    }
    if (key_name == default_key) result.new_key_version = next;
  }
  return result;
}

}  // namespace sealvol::kms
