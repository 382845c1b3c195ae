#include "kms/vault_key_provider.h"

#include <algorithm>
#include <charconv>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kms/base64.h"
#include "kms/identifiers.h"
#include "kms/volume_record_json.h"
#include "spdlog/spdlog.h"

namespace sealvol::kms {
namespace {

using json = nlohmann::json;

// "vault:v3:..." -> 3.
absl::StatusOr<int64_t> CiphertextVersion(const std::string& ciphertext) {
  if (!absl::StartsWith(ciphertext, "vault:v")) {
    return absl::InvalidArgumentError("ciphertext does not start with vault:v");
  }
  const size_t colon = ciphertext.find(':', 7);
  int64_t v = 0;
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError("ciphertext has no version");
  }
  auto [p, ec] = std::from_chars(ciphertext.data() + 7,
                                 ciphertext.data() + colon, v);
  if (ec != std::errc() || p != ciphertext.data() + colon || v <= 0) {
    return absl::InvalidArgumentError("ciphertext has a bad version");
  }
  return v;
}

}  // namespace

absl::StatusOr<std::unique_ptr<VaultKeyProvider>> VaultKeyProvider::Open(
    VaultConfig config, SteadyClock now) {
  HttpClientOptions http;
  http.ca_file = config.ca_file;
  http.request_timeout = config.timeout;
  http.connect_timeout = config.connect_timeout;
  http.max_attempts = config.max_attempts;
  return OpenWithTransport(std::move(config),
                           std::make_unique<HttpClient>(std::move(http)),
                           std::move(now));
}

std::unique_ptr<VaultKeyProvider> VaultKeyProvider::OpenWithTransport(
    VaultConfig config, std::unique_ptr<HttpTransport> transport,
    SteadyClock now) {
  return std::unique_ptr<VaultKeyProvider>(new VaultKeyProvider(
      std::move(config), std::move(transport), std::move(now)));
}

VaultKeyProvider::VaultKeyProvider(VaultConfig config,
                                   std::unique_ptr<HttpTransport> http,
                                   SteadyClock now)
    : config_(std::move(config)),
      session_(std::make_unique<VaultSession>(config_, std::move(http),
                                              std::move(now))) {}

VaultKeyProvider::~VaultKeyProvider() = default;

std::string VaultKeyProvider::Describe() const {
  return absl::StrCat("vault+", config_.address, " (transit=",
                      config_.transit_mount, ", kv=", config_.kv_mount, "/",
                      config_.kv_prefix, ", auth=", config_.auth_method,
                      config_.role.empty() ? "" : " role " + config_.role,
                      config_.vault_namespace.empty()
                          ? ""
                          : ", namespace=" + config_.vault_namespace,
                      ")");
}

std::string VaultKeyProvider::RecordPath(std::string_view kind,
                                         std::string_view volume_id) const {
  return absl::StrCat("/v1/", config_.kv_mount, "/", std::string(kind), "/",
                      config_.kv_prefix, "/", std::string(volume_id));
}

absl::StatusOr<VaultKeyProvider::StoredRecord> VaultKeyProvider::ReadRecord(
    std::string_view volume_id) {
  RETURN_IF_ERROR(ValidateVolumeId(volume_id));
  const std::string path = RecordPath("data", volume_id);
  auto result = session_->Call("GET", path, nullptr);
  if (absl::IsNotFound(result.status())) {
    return absl::NotFoundError(absl::StrCat(
        "volume ", std::string(volume_id), ": no key record in ", Describe(),
        " (never created, or destroyed)"));
  }
  if (!result.ok()) return result.status();
  const std::string source = absl::StrCat("kv record ", config_.kv_mount, "/",
                                          config_.kv_prefix, "/",
                                          std::string(volume_id));
  auto data = JsonObject(*result, "data", source);
  if (!data.ok()) return MalformedKmsResponse(data.status(), "GET " + path);
  auto metadata = JsonObject(**data, "metadata", source);
  if (!metadata.ok()) return MalformedKmsResponse(metadata.status(), "GET " + path);
  auto version = JsonInt(**metadata, "version", source);
  if (!version.ok()) return MalformedKmsResponse(version.status(), "GET " + path);
  auto record_json = (*data)->find("data");
  if (record_json == (*data)->end() || record_json->is_null()) {
    return absl::NotFoundError(absl::StrCat(
        "volume ", std::string(volume_id), ": key record deleted in ",
        Describe()));
  }
  ASSIGN_OR_RETURN(VolumeRecord record,
                   VolumeRecordFromJson(*record_json, source));
  if (record.volume_id != volume_id) {
    return absl::DataLossError(
        absl::StrCat(source, ": record names volume ", record.volume_id));
  }
  return StoredRecord{std::move(record), *version};
}

absl::Status VaultKeyProvider::WriteRecord(const VolumeRecord& record,
                                           int64_t cas) {
  json body = {{"options", {{"cas", cas}}},
               {"data", VolumeRecordToJson(record)}};
  RETURN_IF_ERROR(CheckRecordWriteSize(DumpJson(body["data"]), record.volume_id));
  auto result = session_->Call("POST", RecordPath("data", record.volume_id), &body);
  if (absl::IsInvalidArgument(result.status()) &&
      absl::StrContains(result.status().message(), "check-and-set")) {
    return cas == 0
               ? absl::AlreadyExistsError(absl::StrCat(
                     "volume ", record.volume_id, ": already exists in ",
                     Describe()))
               : absl::AbortedError(absl::StrCat(
                     "volume ", record.volume_id,
                     ": record changed concurrently; retry"));
  }
  return result.status();
}

absl::Status VaultKeyProvider::EnsureTransitKey(const std::string& key_name) {
  {
    MutexLock lock(&keys_mu_);
    if (known_keys_.count(key_name) != 0) return absl::OkStatus();
  }
  const std::string path =
      absl::StrCat("/v1/", config_.transit_mount, "/keys/", key_name);
  auto key = session_->Call("GET", path, nullptr);
  if (absl::IsNotFound(key.status())) {
    json body = {{"type", "aes256-gcm96"}, {"derived", true}};
    RETURN_IF_ERROR(session_->Call("POST", path, &body).status());
    spdlog::info("kms: created transit key {}", key_name);
    key = session_->Call("GET", path, nullptr);
  }
  if (!key.ok()) return key.status();
  auto data = JsonObject(*key, "data", "transit key " + key_name);
  if (!data.ok()) return MalformedKmsResponse(data.status(), "GET " + path);
  auto type = JsonString(**data, "type", "transit key " + key_name);
  if (!type.ok()) return MalformedKmsResponse(type.status(), "GET " + path);
  const auto derived = (*data)->find("derived");
  if (*type != "aes256-gcm96" || derived == (*data)->end() ||
      !derived->is_boolean() || !derived->get<bool>()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "transit key ", key_name, " exists but is not an aes256-gcm96 key "
        "with derived=true: refusing to use it (the volume id binding needs "
        "key derivation)"));
  }
  MutexLock lock(&keys_mu_);
  known_keys_.insert(key_name);
  return absl::OkStatus();
}

absl::StatusOr<int64_t> VaultKeyProvider::LatestKeyVersion(
    const std::string& key_name) {
  const std::string path =
      absl::StrCat("/v1/", config_.transit_mount, "/keys/", key_name);
  ASSIGN_OR_RETURN(json key, session_->Call("GET", path, nullptr));
  auto data = JsonObject(key, "data", "transit key " + key_name);
  if (!data.ok()) return MalformedKmsResponse(data.status(), "GET " + path);
  auto v = JsonInt(**data, "latest_version", "transit key " + key_name);
  if (!v.ok()) return MalformedKmsResponse(v.status(), "GET " + path);
  return *v;
}

absl::StatusOr<VolumeRecord> VaultKeyProvider::CreateVolumeKey(
    const CreateVolumeKeyRequest& request) {
  ASSIGN_OR_RETURN(const std::string key_name,
                   CheckNewVolumeKey(request, config_.key_name_template));
  auto existing = ReadRecord(request.volume_id);
  if (existing.ok()) {
    return absl::AlreadyExistsError(absl::StrCat(
        "create key for volume ", request.volume_id, ": already exists in ",
        Describe()));
  }
  if (!absl::IsNotFound(existing.status())) return existing.status();
  RETURN_IF_ERROR(EnsureTransitKey(key_name));

  const std::string path = absl::StrCat("/v1/", config_.transit_mount,
                                        "/datakey/wrapped/", key_name);
  json body = {{"context", Base64Encode(request.volume_id)}, {"bits", 256}};
  ASSIGN_OR_RETURN(json result, session_->Call("POST", path, &body));
  auto data = JsonObject(result, "data", "datakey");
  if (!data.ok()) return MalformedKmsResponse(data.status(), "POST " + path);
  auto ciphertext = JsonString(**data, "ciphertext", "datakey");
  if (!ciphertext.ok()) return MalformedKmsResponse(ciphertext.status(), "POST " + path);
  auto version = CiphertextVersion(*ciphertext);
  if (!version.ok()) return MalformedKmsResponse(version.status(), "POST " + path);
  // Never asked for, but if a proxy or server sent a plaintext, drop it.
  if (auto it = result["data"].find("plaintext");
      it != result["data"].end() && it->is_string()) {
    WipeString(it->get_ref<std::string&>());
  }

  VolumeRecord record = NewVolumeRecord(request, key_name, *version);
  record.wrapped_dek = *ciphertext;
  // cas=0: only if no record exists, so two creators cannot both win. If
  // this write fails, nothing was stored: the wrapped key is just dropped.
  RETURN_IF_ERROR(WriteRecord(record, /*cas=*/0));
  spdlog::info("kms: created key for {} {} (tenant {}, key {} v{})",
               RecordKindName(record.kind), record.volume_id, record.tenant,
               key_name, record.key_version);
  return record;
}

absl::StatusOr<crypto::SecretBytes> VaultKeyProvider::UnwrapVolumeKey(
    std::string_view volume_id) {
  ASSIGN_OR_RETURN(StoredRecord stored, ReadRecord(volume_id));
  return UnwrapRecordKey(stored.record);
}

absl::StatusOr<crypto::SecretBytes> VaultKeyProvider::UnwrapRecordKey(
    const VolumeRecord& r) {
  const std::string path =
      absl::StrCat("/v1/", config_.transit_mount, "/decrypt/", r.key_name);
  json body = {{"ciphertext", r.wrapped_dek},
               {"context", Base64Encode(r.volume_id)}};
  auto result = session_->Call("POST", path, &body);
  if (absl::IsInvalidArgument(result.status())) {
    return absl::DataLossError(absl::StrCat(
        "unwrap DEK of volume ", r.volume_id, ": ", result.status().message()));
  }
  if (!result.ok()) return result.status();
  auto data = JsonObject(*result, "data", "decrypt");
  if (!data.ok()) return MalformedKmsResponse(data.status(), "POST " + path);
  json& mutable_data = (*result)["data"];  // Present: checked above.
  auto it = mutable_data.find("plaintext");
  if (it == mutable_data.end() || !it->is_string()) {
    return MalformedKmsResponse(absl::DataLossError("field \"plaintext\" is missing or "
                                         "not a string"),
                     "POST " + path);
  }
  std::string& plaintext = it->get_ref<std::string&>();
  auto dek = Base64DecodeSecret(plaintext);
  WipeString(plaintext);
  if (!dek.ok() || dek->size() != 32) {
    return absl::DataLossError(absl::StrCat(
        "unwrap DEK of volume ", r.volume_id,
        ": the KMS returned a plaintext that is not a 256-bit key"));
  }
  return dek;
}

absl::StatusOr<VolumeRecord> VaultKeyProvider::GetVolume(
    std::string_view volume_id) {
  ASSIGN_OR_RETURN(StoredRecord stored, ReadRecord(volume_id));
  return std::move(stored.record);
}

absl::Status VaultKeyProvider::UpdateVolume(const VolumeRecord& update) {
  ASSIGN_OR_RETURN(StoredRecord stored, ReadRecord(update.volume_id));
  stored.record.capacity_bytes = update.capacity_bytes;
  stored.record.node = update.node;
  stored.record.parameters = update.parameters;
  return WriteRecord(stored.record, stored.kv_version);
}

absl::StatusOr<VolumeRecord> VaultKeyProvider::ClaimFormat(
    std::string_view volume_id, const FormatClaim& claim) {
  RETURN_IF_ERROR(ValidateFormatId(claim.format_id));
  // kv-v2 check-and-set on the version read: of two concurrent claims one
  // write fails with Aborted and that caller reads the winner's record.
  constexpr int kAttempts = 5;
  for (int attempt = 1;; ++attempt) {
    ASSIGN_OR_RETURN(StoredRecord stored, ReadRecord(volume_id));
    if (!stored.record.format_id.empty()) return std::move(stored.record);
    stored.record.format_id = claim.format_id;
    stored.record.formatted_node = claim.node;
    stored.record.formatted_unix = claim.unix_time;
    if (claim.state.has_value() && !stored.record.state.has_value()) {
      RETURN_IF_ERROR(ApplyStateCommit(
          stored.record, {.state = *claim.state, .node = claim.node,
                          .unix_time = claim.unix_time}));
    }
    absl::Status written = WriteRecord(stored.record, stored.kv_version);
    if (written.ok()) return std::move(stored.record);
    if (!absl::IsAborted(written) || attempt == kAttempts) return written;
  }
}

absl::StatusOr<VolumeRecord> VaultKeyProvider::UpdateRecord(
    std::string_view volume_id,
    const std::function<absl::Status(VolumeRecord&)>& change) {
  // kv-v2 check-and-set on the version read: a concurrent change makes the
  // write fail with Aborted, and the change is applied again to the winner's
  // record (so a rule such as "the epoch never goes back" sees it).
  constexpr int kAttempts = 5;
  for (int attempt = 1;; ++attempt) {
    ASSIGN_OR_RETURN(StoredRecord stored, ReadRecord(volume_id));
    RETURN_IF_ERROR(change(stored.record));
    absl::Status written = WriteRecord(stored.record, stored.kv_version);
    if (written.ok()) return std::move(stored.record);
    if (!absl::IsAborted(written) || attempt == kAttempts) return written;
  }
}

absl::StatusOr<VolumeRecord> VaultKeyProvider::CommitState(
    std::string_view volume_id, const StateCommit& commit) {
  return UpdateRecord(volume_id, [&](VolumeRecord& record) {
    return ApplyStateCommit(record, commit);
  });
}

absl::StatusOr<VolumeRecord> VaultKeyProvider::UpdateCopy(
    std::string_view volume_id, const CopyUpdate& update) {
  return UpdateRecord(volume_id, [&](VolumeRecord& record) {
    return ApplyCopyUpdate(record, update);
  });
}

absl::StatusOr<VolumeRecord> VaultKeyProvider::AcceptRollback(
    std::string_view volume_id, std::string_view by, int64_t unix_time) {
  if (by.empty()) {
    return absl::InvalidArgumentError(
        "accept rollback: the operator (by) is empty");
  }
  return UpdateRecord(volume_id, [&](VolumeRecord& record) {
    record.rollback_pending = true;
    record.rollback_accepted_by = std::string(by);
    record.rollback_accepted_unix = unix_time;
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<VolumeRecord>> VaultKeyProvider::ListVolumes(
    std::string_view tenant) {
  const std::string path =
      absl::StrCat("/v1/", config_.kv_mount, "/metadata/", config_.kv_prefix,
                   "?list=true");
  auto result = session_->Call("GET", path, nullptr);
  if (absl::IsNotFound(result.status())) return std::vector<VolumeRecord>{};
  if (!result.ok()) return result.status();
  auto data = JsonObject(*result, "data", "kv list");
  if (!data.ok()) return MalformedKmsResponse(data.status(), "LIST " + path);
  auto keys = (*data)->find("keys");
  if (keys == (*data)->end() || !keys->is_array()) {
    return MalformedKmsResponse(absl::DataLossError("field \"keys\" is not an array"),
                     "LIST " + path);
  }
  std::vector<std::string> ids;
  for (const auto& k : *keys) {
    if (!k.is_string()) {
      return MalformedKmsResponse(absl::DataLossError("a key is not a string"),
                       "LIST " + path);
    }
    const std::string& id = k.get_ref<const std::string&>();
    if (absl::EndsWith(id, "/") || !ValidateVolumeId(id).ok()) continue;
    ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  std::vector<VolumeRecord> out;
  for (const std::string& id : ids) {
    auto stored = ReadRecord(id);
    if (absl::IsNotFound(stored.status())) continue;  // Destroyed meanwhile.
    if (IsBadRecordError(stored.status())) {
      // One bad record must not take every other volume down with it.
      spdlog::warn("registry {}: skipping the record of {}: {}", Describe(),
                   id, std::string(stored.status().message()));
      continue;
    }
    if (!stored.ok()) return stored.status();
    if (tenant.empty() || stored->record.tenant == tenant) {
      out.push_back(std::move(stored->record));
    }
  }
  return out;
}

absl::Status VaultKeyProvider::DestroyVolumeKey(std::string_view volume_id) {
  RETURN_IF_ERROR(ReadRecord(volume_id).status());
  RETURN_IF_ERROR(session_->Call("DELETE", RecordPath("metadata", volume_id), nullptr)
                      .status());
  spdlog::info("kms: destroyed the key record of volume {}",
               std::string(volume_id));
  return absl::OkStatus();
}

absl::StatusOr<RotationResult> VaultKeyProvider::RotateTenantKey(
    std::string_view tenant) {
  ASSIGN_OR_RETURN(const std::string default_key,
                   ExpandKeyNameTemplate(config_.key_name_template, tenant));
  ASSIGN_OR_RETURN(std::vector<VolumeRecord> all, ListVolumes(""));
  const std::set<std::string> key_names =
      TenantKeyNames(all, tenant, default_key);
  RotationResult result;
  result.key_name = default_key;
  for (const std::string& key_name : key_names) {
    RETURN_IF_ERROR(EnsureTransitKey(key_name));
    const std::string keys =
        absl::StrCat("/v1/", config_.transit_mount, "/keys/", key_name);
    RETURN_IF_ERROR(session_->Call("POST", keys + "/rotate", nullptr).status());
    ASSIGN_OR_RETURN(const int64_t latest, LatestKeyVersion(key_name));
    bool all_rewrapped = true;
    for (const VolumeRecord& listed : all) {
      if (listed.key_name != key_name) continue;
      if (listed.tenant != tenant) {
        all_rewrapped = false;  // Shared key name: leave old versions alone.
        continue;
      }
      // Re-read for the check-and-set version; skip if destroyed meanwhile.
      auto stored = ReadRecord(listed.volume_id);
      if (absl::IsNotFound(stored.status())) continue;
      if (!stored.ok()) return stored.status();
      const std::string path = absl::StrCat("/v1/", config_.transit_mount,
                                            "/rewrap/", key_name);
      json body = {{"ciphertext", stored->record.wrapped_dek},
                   {"context", Base64Encode(stored->record.volume_id)}};
      ASSIGN_OR_RETURN(json rewrapped, session_->Call("POST", path, &body));
      auto data = JsonObject(rewrapped, "data", "rewrap");
      if (!data.ok()) return MalformedKmsResponse(data.status(), "POST " + path);
      auto ciphertext = JsonString(**data, "ciphertext", "rewrap");
      if (!ciphertext.ok()) return MalformedKmsResponse(ciphertext.status(), "POST " + path);
      auto version = CiphertextVersion(*ciphertext);
      if (!version.ok()) return MalformedKmsResponse(version.status(), "POST " + path);
      stored->record.wrapped_dek = *ciphertext;
      stored->record.key_version = *version;
      RETURN_IF_ERROR(WriteRecord(stored->record, stored->kv_version));
      ++result.volumes_rewrapped;
    }
    if (all_rewrapped) {
      // Old ciphertexts (in backups of the registry, say) stop decrypting.
      json config = {{"min_decryption_version", latest}};
      RETURN_IF_ERROR(session_->Call("POST", keys + "/config", &config).status());
    }
    if (key_name == default_key) result.new_key_version = latest;
    spdlog::info("kms: rotated transit key {} to v{}", key_name, latest);
  }
  return result;
}

absl::Status VaultKeyProvider::Ping() { return session_->Health(); }

}  // namespace sealvol::kms
