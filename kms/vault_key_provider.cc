#include "kms/vault_key_provider.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <ctime>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "kms/base64.h"
#include "base/durable_file.h"
#include "kms/identifiers.h"
#include "kms/volume_record_json.h"
#include "spdlog/spdlog.h"

namespace sealvol::kms {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr size_t kMaxCredentialFileSize = 64 * 1024;
constexpr char kKubernetesTokenFile[] =
    "/var/run/secrets/kubernetes.io/serviceaccount/token";

void Wipe(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

absl::StatusOr<std::string> PercentDecode(std::string_view in) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%') {
      int v = 0;
      if (i + 2 >= in.size()) {
        return absl::InvalidArgumentError("bad percent-encoding");
      }
      auto [p, ec] = std::from_chars(in.data() + i + 1, in.data() + i + 3, v, 16);
      if (ec != std::errc() || p != in.data() + i + 3) {
        return absl::InvalidArgumentError("bad percent-encoding");
      }
      out.push_back(static_cast<char>(v));
      i += 2;
    } else if (in[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(in[i]);
    }
  }
  return out;
}

// Mount and path names go into URLs unescaped, so they are restricted.
absl::Status ValidatePathParam(std::string_view name, const std::string& v) {
  bool ok = !v.empty() && v.front() != '/' && v.back() != '/' &&
            v.find("..") == std::string::npos;
  for (char c : v) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
                c == '/');
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KMS URI parameter ", std::string(name), "=\"", v,
        "\": expected a path of letters, digits, '-', '_', '.' and '/'"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> ParsePositive(std::string_view name,
                                      const std::string& v) {
  int64_t n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || p != v.data() + v.size() || n <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KMS URI parameter ", std::string(name), "=\"", v,
        "\": expected a positive integer"));
  }
  return n;
}

// Turns a malformed-response field error into Unavailable: the KMS (or
// something posing as it) answered, but not with what the API promises.
absl::Status Malformed(const absl::Status& s, std::string_view what) {
  return absl::UnavailableError(absl::StrCat(
      "malformed KMS response to ", std::string(what), ": ",
      std::string(s.message())));
}

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

// The "errors" of a Vault error body, or a description of a body that is
// not one. Capped so a huge page does not flood the message.
std::string ErrorText(const HttpResponse& r) {
  if (absl::StrContains(r.content_type, "html") ||
      absl::StartsWith(absl::StripLeadingAsciiWhitespace(r.body), "<")) {
    return "the server answered with an HTML page, not the KMS JSON API "
           "(wrong address, or a proxy in the way?)";
  }
  json j = json::parse(r.body, nullptr, false);
  std::string text;
  if (!j.is_discarded() && j.is_object()) {
    auto it = j.find("errors");
    if (it != j.end() && it->is_array()) {
      std::vector<std::string> errs;
      for (const auto& e : *it) {
        if (e.is_string()) errs.push_back(e.get<std::string>());
      }
      text = absl::StrJoin(errs, "; ");
    }
  }
  if (text.empty()) text = r.body.empty() ? "empty body" : "no error message";
  if (text.size() > 300) text = text.substr(0, 300) + "...";
  return text;
}

}  // namespace

absl::StatusOr<VaultConfig> VaultConfig::FromUri(std::string_view uri_view) {
  const std::string uri(uri_view);
  VaultConfig c;
  std::string rest;
  if (absl::StartsWith(uri, "vault+https://")) {
    c.address = "https://";
    rest = uri.substr(14);
  } else if (absl::StartsWith(uri, "vault+http://")) {
    c.address = "http://";
    rest = uri.substr(13);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "KMS URI \"", uri, "\": expected vault+https:// or vault+http://"));
  }
  const size_t q = rest.find('?');
  std::string authority = rest.substr(0, q);
  while (!authority.empty() && authority.back() == '/') authority.pop_back();
  if (authority.empty() || authority.find('/') != std::string::npos ||
      authority.find('@') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KMS URI \"", uri, "\": expected HOST:PORT after the scheme"));
  }
  c.address += authority;
  if (q != std::string::npos) {
    const std::vector<std::string> pairs =
        absl::StrSplit(rest.substr(q + 1), '&');
    for (const std::string& pair_str : pairs) {
      const std::string_view pair = pair_str;
      if (pair.empty()) continue;
      const size_t eq = pair.find('=');
      const std::string key(pair.substr(0, eq));
      auto value = PercentDecode(
          eq == std::string_view::npos ? "" : pair.substr(eq + 1));
      if (!value.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "KMS URI parameter ", key, ": ", value.status().message()));
      }
      std::string& v = *value;
      if (key == "transit") {
        c.transit_mount = v;
      } else if (key == "key_template") {
        c.key_name_template = v;
      } else if (key == "kv") {
        c.kv_mount = v;
      } else if (key == "kv_prefix") {
        c.kv_prefix = v;
      } else if (key == "auth") {
        c.auth_method = v;
      } else if (key == "auth_mount") {
        c.auth_mount = v;
      } else if (key == "role") {
        c.role = v;
      } else if (key == "token_file") {
        c.token_file = v;
      } else if (key == "jwt_file") {
        c.jwt_file = v;
      } else if (key == "ca_file") {
        c.ca_file = v;
      } else if (key == "namespace") {
        c.vault_namespace = v;
      } else if (key == "timeout_ms") {
        ASSIGN_OR_RETURN(int64_t ms, ParsePositive(key, v));
        c.timeout = std::chrono::milliseconds(ms);
      } else if (key == "connect_timeout_ms") {
        ASSIGN_OR_RETURN(int64_t ms, ParsePositive(key, v));
        c.connect_timeout = std::chrono::milliseconds(ms);
      } else if (key == "max_attempts") {
        ASSIGN_OR_RETURN(int64_t n, ParsePositive(key, v));
        c.max_attempts = static_cast<int>(std::min<int64_t>(n, 10));
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            "KMS URI: unknown parameter \"", key, "\" (see docs/kms.md)"));
      }
    }
  }
  if (c.auth_method != "token" && c.auth_method != "jwt" &&
      c.auth_method != "kubernetes") {
    return absl::InvalidArgumentError(absl::StrCat(
        "KMS URI parameter auth=\"", c.auth_method,
        "\": expected token, jwt or kubernetes"));
  }
  if (c.auth_method != "token" && c.role.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KMS URI: auth=", c.auth_method, " needs a role parameter"));
  }
  if (c.auth_method == "jwt" && c.jwt_file.empty()) {
    return absl::InvalidArgumentError("KMS URI: auth=jwt needs jwt_file");
  }
  if (c.auth_method == "kubernetes" && c.jwt_file.empty()) {
    c.jwt_file = kKubernetesTokenFile;
  }
  if (c.auth_mount.empty()) c.auth_mount = c.auth_method;
  RETURN_IF_ERROR(ValidatePathParam("transit", c.transit_mount));
  RETURN_IF_ERROR(ValidatePathParam("kv", c.kv_mount));
  RETURN_IF_ERROR(ValidatePathParam("kv_prefix", c.kv_prefix));
  RETURN_IF_ERROR(ValidatePathParam("auth_mount", c.auth_mount));
  if (!c.key_name_template.empty()) {
    RETURN_IF_ERROR(ExpandKeyNameTemplate(c.key_name_template, "x").status());
  }
  return c;
}

absl::StatusOr<std::unique_ptr<VaultKeyProvider>> VaultKeyProvider::Open(
    VaultConfig config) {
  HttpClientOptions http;
  http.ca_file = config.ca_file;
  http.request_timeout = config.timeout;
  http.connect_timeout = config.connect_timeout;
  http.max_attempts = config.max_attempts;
  return OpenWithTransport(std::move(config),
                           std::make_unique<HttpClient>(std::move(http)));
}

std::unique_ptr<VaultKeyProvider> VaultKeyProvider::OpenWithTransport(
    VaultConfig config, std::unique_ptr<HttpTransport> transport) {
  return std::unique_ptr<VaultKeyProvider>(
      new VaultKeyProvider(std::move(config), std::move(transport)));
}

VaultKeyProvider::VaultKeyProvider(VaultConfig config,
                                   std::unique_ptr<HttpTransport> http)
    : config_(std::move(config)), http_(std::move(http)) {}

VaultKeyProvider::~VaultKeyProvider() {
  std::lock_guard<std::mutex> lock(auth_mu_);
  Wipe(token_);
}

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

void VaultKeyProvider::ForgetTokenForTesting() {
  std::lock_guard<std::mutex> lock(auth_mu_);
  Wipe(token_);
}

absl::StatusOr<json> VaultKeyProvider::CallWithToken(const std::string& method,
                                                     const std::string& path,
                                                     const json* body,
                                                     const std::string& token) {
  HttpRequest request;
  request.method = method;
  request.url = config_.address + path;
  request.headers.emplace_back("Accept", "application/json");
  if (!token.empty()) request.headers.emplace_back("X-Vault-Token", token);
  if (!config_.vault_namespace.empty()) {
    request.headers.emplace_back("X-Vault-Namespace", config_.vault_namespace);
  }
  if (body != nullptr) {
    request.headers.emplace_back("Content-Type", "application/json");
    request.body = DumpJson(*body);
  }
  auto response = http_->Send(request);
  Wipe(request.body);
  for (auto& [name, value] : request.headers) Wipe(value);
  const std::string what = absl::StrCat(method, " ", path);
  if (!response.ok()) {
    return absl::Status(response.status().code(),
                        absl::StrCat("KMS ", config_.address, ": ",
                                     response.status().message()));
  }
  const long status = response->status;
  if (status >= 200 && status < 300) {
    if (response->body.empty()) return json();
    json j = json::parse(response->body, nullptr, false);
    Wipe(response->body);
    if (j.is_discarded()) {
      return absl::UnavailableError(absl::StrCat(
          "malformed KMS response to ", what, ": status ", status,
          " with a body that is not valid JSON",
          absl::StrContains(response->content_type, "html")
              ? " (an HTML page)"
              : ""));
    }
    if (!j.is_object()) {
      return absl::UnavailableError(absl::StrCat(
          "malformed KMS response to ", what, ": body is not a JSON object"));
    }
    return j;
  }
  const std::string text = ErrorText(*response);
  Wipe(response->body);
  const std::string message =
      absl::StrCat("KMS refused ", what, " (HTTP ", status, "): ", text);
  switch (status) {
    case 400:
      return absl::InvalidArgumentError(message);
    case 401:
    case 403:
      return absl::PermissionDeniedError(message);
    case 404:
      return absl::NotFoundError(message);
    case 412:
      return absl::FailedPreconditionError(message);
    case 429:
      return absl::UnavailableError(absl::StrCat(
          message, " (still rate-limited after ", response->attempts,
          " attempts)"));
    default:
      if (status >= 500) {
        return absl::UnavailableError(absl::StrCat(
            message, " (after ", response->attempts, " attempts)"));
      }
      return absl::InternalError(message);
  }
}

void VaultKeyProvider::SetTokenLocked(std::string token, int64_t ttl_seconds,
                                      bool renewable) {
  Wipe(token_);
  token_ = std::move(token);
  token_renewable_ = renewable;
  if (ttl_seconds <= 0) {
    token_refresh_at_ = token_expires_at_ = Clock::time_point();
  } else {
    const auto now = Clock::now();
    token_expires_at_ = now + std::chrono::seconds(ttl_seconds);
    // Refresh when two thirds of the TTL have passed, leaving a third for
    // the renewal (or a new login) to succeed.
    token_refresh_at_ = now + std::chrono::milliseconds(ttl_seconds * 2000 / 3);
  }
}

absl::Status VaultKeyProvider::LoginLocked() {
  if (config_.auth_method == "token") {
    std::string token;
    if (!config_.token_file.empty()) {
      ASSIGN_OR_RETURN(token,
                       ReadSmallFile(config_.token_file, kMaxCredentialFileSize));
    } else if (const char* env = std::getenv("VAULT_TOKEN")) {
      token = env;
    } else {
      return absl::FailedPreconditionError(
          "KMS auth=token: no token_file parameter and VAULT_TOKEN is unset");
    }
    while (!token.empty() && (token.back() == '\n' || token.back() == ' ')) {
      token.pop_back();
    }
    if (token.empty()) {
      return absl::FailedPreconditionError("KMS auth=token: the token is empty");
    }
    auto self = CallWithToken("GET", "/v1/auth/token/lookup-self", nullptr,
                              token);
    if (!self.ok()) {
      Wipe(token);
      return absl::Status(self.status().code(),
                          absl::StrCat("KMS token lookup: ",
                                       self.status().message()));
    }
    auto data = JsonObject(*self, "data", "token lookup-self");
    if (!data.ok()) return Malformed(data.status(), "token lookup-self");
    auto ttl = JsonInt(**data, "ttl", "token lookup-self");
    if (!ttl.ok()) return Malformed(ttl.status(), "token lookup-self");
    const auto renewable = (*data)->find("renewable");
    SetTokenLocked(std::move(token), *ttl,
                   renewable != (*data)->end() && renewable->is_boolean() &&
                       renewable->get<bool>());
    spdlog::info("kms: using a Vault token (ttl {} s)", *ttl);
    return absl::OkStatus();
  }
  // jwt and kubernetes: exchange the (re-read: it is rotated) JWT.
  ASSIGN_OR_RETURN(std::string jwt,
                   ReadSmallFile(config_.jwt_file, kMaxCredentialFileSize));
  while (!jwt.empty() && (jwt.back() == '\n' || jwt.back() == ' ')) {
    jwt.pop_back();
  }
  json body = {{"role", config_.role}, {"jwt", jwt}};
  Wipe(jwt);
  const std::string path =
      absl::StrCat("/v1/auth/", config_.auth_mount, "/login");
  auto result = CallWithToken("POST", path, &body, "");
  Wipe(body["jwt"].get_ref<std::string&>());
  if (!result.ok()) {
    return absl::Status(result.status().code(),
                        absl::StrCat("KMS login (", config_.auth_method,
                                     ", role ", config_.role,
                                     "): ", result.status().message()));
  }
  auto auth = JsonObject(*result, "auth", "login");
  if (!auth.ok()) return Malformed(auth.status(), "login");
  auto token = JsonString(**auth, "client_token", "login");
  auto ttl = JsonInt(**auth, "lease_duration", "login");
  if (!token.ok()) return Malformed(token.status(), "login");
  if (!ttl.ok()) return Malformed(ttl.status(), "login");
  const auto renewable = (*auth)->find("renewable");
  SetTokenLocked(std::move(*token), *ttl,
                 renewable != (*auth)->end() && renewable->is_boolean() &&
                     renewable->get<bool>());
  Wipe((*result)["auth"]["client_token"].get_ref<std::string&>());
  spdlog::info("kms: logged in with {} auth, role {} (ttl {} s)",
               config_.auth_method, config_.role, *ttl);
  return absl::OkStatus();
}

absl::Status VaultKeyProvider::RenewLocked() {
  json body = json::object();
  auto result =
      CallWithToken("POST", "/v1/auth/token/renew-self", &body, token_);
  if (!result.ok()) return result.status();
  auto auth = JsonObject(*result, "auth", "renew-self");
  if (!auth.ok()) return Malformed(auth.status(), "renew-self");
  auto ttl = JsonInt(**auth, "lease_duration", "renew-self");
  if (!ttl.ok()) return Malformed(ttl.status(), "renew-self");
  // At the token's max TTL, renewal "succeeds" with what is left; when that
  // is too short to be worth it, log in again instead.
  if (*ttl < 2) {
    return absl::FailedPreconditionError("token is at its maximum TTL");
  }
  std::string token = token_;
  SetTokenLocked(std::move(token), *ttl, true);
  spdlog::debug("kms: renewed the Vault token (ttl {} s)", *ttl);
  return absl::OkStatus();
}

absl::StatusOr<std::string> VaultKeyProvider::CurrentToken() {
  std::lock_guard<std::mutex> lock(auth_mu_);
  const auto now = Clock::now();
  const bool expiring = token_refresh_at_ != Clock::time_point() &&
                        now >= token_refresh_at_;
  if (!token_.empty() && expiring) {
    absl::Status renewed = absl::FailedPreconditionError("not renewable");
    if (token_renewable_ && now < token_expires_at_) renewed = RenewLocked();
    if (!renewed.ok()) {
      spdlog::info("kms: token renewal failed ({}); logging in again",
                   renewed.ToString());
      Wipe(token_);
    }
  }
  if (token_.empty()) RETURN_IF_ERROR(LoginLocked());
  return token_;
}

absl::StatusOr<json> VaultKeyProvider::Call(const std::string& method,
                                            const std::string& path,
                                            const json* body) {
  ASSIGN_OR_RETURN(std::string token, CurrentToken());
  auto result = CallWithToken(method, path, body, token);
  if (absl::IsPermissionDenied(result.status())) {
    // The token may have been revoked or expired early: log in once more.
    // A second refusal is a real policy decision.
    bool relogged = false;
    {
      std::lock_guard<std::mutex> lock(auth_mu_);
      if (token_ == token) {
        Wipe(token_);
        relogged = LoginLocked().ok();
      } else {
        relogged = !token_.empty();
      }
      if (relogged) {
        Wipe(token);
        token = token_;
      }
    }
    if (relogged) result = CallWithToken(method, path, body, token);
  }
  Wipe(token);
  return result;
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
  auto result = Call("GET", path, nullptr);
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
  if (!data.ok()) return Malformed(data.status(), "GET " + path);
  auto metadata = JsonObject(**data, "metadata", source);
  if (!metadata.ok()) return Malformed(metadata.status(), "GET " + path);
  auto version = JsonInt(**metadata, "version", source);
  if (!version.ok()) return Malformed(version.status(), "GET " + path);
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
  auto result = Call("POST", RecordPath("data", record.volume_id), &body);
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
    std::lock_guard<std::mutex> lock(keys_mu_);
    if (known_keys_.count(key_name) != 0) return absl::OkStatus();
  }
  const std::string path =
      absl::StrCat("/v1/", config_.transit_mount, "/keys/", key_name);
  auto key = Call("GET", path, nullptr);
  if (absl::IsNotFound(key.status())) {
    json body = {{"type", "aes256-gcm96"}, {"derived", true}};
    RETURN_IF_ERROR(Call("POST", path, &body).status());
    spdlog::info("kms: created transit key {}", key_name);
    key = Call("GET", path, nullptr);
  }
  if (!key.ok()) return key.status();
  auto data = JsonObject(*key, "data", "transit key " + key_name);
  if (!data.ok()) return Malformed(data.status(), "GET " + path);
  auto type = JsonString(**data, "type", "transit key " + key_name);
  if (!type.ok()) return Malformed(type.status(), "GET " + path);
  const auto derived = (*data)->find("derived");
  if (*type != "aes256-gcm96" || derived == (*data)->end() ||
      !derived->is_boolean() || !derived->get<bool>()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "transit key ", key_name, " exists but is not an aes256-gcm96 key "
        "with derived=true: refusing to use it (the volume id binding needs "
        "key derivation)"));
  }
  std::lock_guard<std::mutex> lock(keys_mu_);
  known_keys_.insert(key_name);
  return absl::OkStatus();
}

absl::StatusOr<int64_t> VaultKeyProvider::LatestKeyVersion(
    const std::string& key_name) {
  const std::string path =
      absl::StrCat("/v1/", config_.transit_mount, "/keys/", key_name);
  ASSIGN_OR_RETURN(json key, Call("GET", path, nullptr));
  auto data = JsonObject(key, "data", "transit key " + key_name);
  if (!data.ok()) return Malformed(data.status(), "GET " + path);
  auto v = JsonInt(**data, "latest_version", "transit key " + key_name);
  if (!v.ok()) return Malformed(v.status(), "GET " + path);
  return *v;
}

absl::StatusOr<VolumeRecord> VaultKeyProvider::CreateVolumeKey(
    const CreateVolumeKeyRequest& request) {
  RETURN_IF_ERROR(ValidateVolumeId(request.volume_id));
  ASSIGN_OR_RETURN(
      const std::string key_name,
      ExpandKeyNameTemplate(request.key_name_template.empty()
                                ? config_.key_name_template
                                : request.key_name_template,
                            request.tenant));
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
  ASSIGN_OR_RETURN(json result, Call("POST", path, &body));
  auto data = JsonObject(result, "data", "datakey");
  if (!data.ok()) return Malformed(data.status(), "POST " + path);
  auto ciphertext = JsonString(**data, "ciphertext", "datakey");
  if (!ciphertext.ok()) return Malformed(ciphertext.status(), "POST " + path);
  auto version = CiphertextVersion(*ciphertext);
  if (!version.ok()) return Malformed(version.status(), "POST " + path);
  // Never asked for, but if a proxy or server sent a plaintext, drop it.
  if (auto it = result["data"].find("plaintext");
      it != result["data"].end() && it->is_string()) {
    Wipe(it->get_ref<std::string&>());
  }

  VolumeRecord record;
  record.volume_id = request.volume_id;
  record.name = request.name;
  record.tenant = request.tenant;
  record.key_name = key_name;
  record.key_version = *version;
  record.wrapped_dek = *ciphertext;
  record.capacity_bytes = request.capacity_bytes;
  record.node = request.node;
  record.parameters = request.parameters;
  record.created_unix = static_cast<int64_t>(std::time(nullptr));
  // cas=0: only if no record exists, so two creators cannot both win. If
  // this write fails, nothing was stored: the wrapped key is just dropped.
  RETURN_IF_ERROR(WriteRecord(record, /*cas=*/0));
  spdlog::info("kms: created key for volume {} (tenant {}, key {} v{})",
               record.volume_id, record.tenant, key_name, record.key_version);
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
  auto result = Call("POST", path, &body);
  if (absl::IsInvalidArgument(result.status())) {
    return absl::DataLossError(absl::StrCat(
        "unwrap DEK of volume ", r.volume_id, ": ", result.status().message()));
  }
  if (!result.ok()) return result.status();
  auto data = JsonObject(*result, "data", "decrypt");
  if (!data.ok()) return Malformed(data.status(), "POST " + path);
  json& mutable_data = (*result)["data"];  // Present: checked above.
  auto it = mutable_data.find("plaintext");
  if (it == mutable_data.end() || !it->is_string()) {
    return Malformed(absl::DataLossError("field \"plaintext\" is missing or "
                                         "not a string"),
                     "POST " + path);
  }
  std::string& plaintext = it->get_ref<std::string&>();
  auto dek = Base64DecodeSecret(plaintext);
  Wipe(plaintext);
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
  auto result = Call("GET", path, nullptr);
  if (absl::IsNotFound(result.status())) return std::vector<VolumeRecord>{};
  if (!result.ok()) return result.status();
  auto data = JsonObject(*result, "data", "kv list");
  if (!data.ok()) return Malformed(data.status(), "LIST " + path);
  auto keys = (*data)->find("keys");
  if (keys == (*data)->end() || !keys->is_array()) {
    return Malformed(absl::DataLossError("field \"keys\" is not an array"),
                     "LIST " + path);
  }
  std::vector<std::string> ids;
  for (const auto& k : *keys) {
    if (!k.is_string()) {
      return Malformed(absl::DataLossError("a key is not a string"),
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
  RETURN_IF_ERROR(Call("DELETE", RecordPath("metadata", volume_id), nullptr)
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
  std::set<std::string> key_names = {default_key};
  for (const VolumeRecord& r : all) {
    if (r.tenant == tenant) key_names.insert(r.key_name);
  }
  RotationResult result;
  result.key_name = default_key;
  for (const std::string& key_name : key_names) {
    RETURN_IF_ERROR(EnsureTransitKey(key_name));
    const std::string keys =
        absl::StrCat("/v1/", config_.transit_mount, "/keys/", key_name);
    RETURN_IF_ERROR(Call("POST", keys + "/rotate", nullptr).status());
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
      ASSIGN_OR_RETURN(json rewrapped, Call("POST", path, &body));
      auto data = JsonObject(rewrapped, "data", "rewrap");
      if (!data.ok()) return Malformed(data.status(), "POST " + path);
      auto ciphertext = JsonString(**data, "ciphertext", "rewrap");
      if (!ciphertext.ok()) return Malformed(ciphertext.status(), "POST " + path);
      auto version = CiphertextVersion(*ciphertext);
      if (!version.ok()) return Malformed(version.status(), "POST " + path);
      stored->record.wrapped_dek = *ciphertext;
      stored->record.key_version = *version;
      RETURN_IF_ERROR(WriteRecord(stored->record, stored->kv_version));
      ++result.volumes_rewrapped;
    }
    if (all_rewrapped) {
      // Old ciphertexts (in backups of the registry, say) stop decrypting.
      json config = {{"min_decryption_version", latest}};
      RETURN_IF_ERROR(Call("POST", keys + "/config", &config).status());
    }
    if (key_name == default_key) result.new_key_version = latest;
    spdlog::info("kms: rotated transit key {} to v{}", key_name, latest);
  }
  return result;
}

absl::Status VaultKeyProvider::Ping() {
  HttpRequest request;
  request.url = config_.address + "/v1/sys/health?standbyok=true";
  if (!config_.vault_namespace.empty()) {
    request.headers.emplace_back("X-Vault-Namespace", config_.vault_namespace);
  }
  ASSIGN_OR_RETURN(HttpResponse response, http_->Send(request));
  if (response.status != 200) {
    return absl::UnavailableError(absl::StrCat(
        "KMS ", config_.address, " health: HTTP ", response.status,
        response.status == 503 ? " (sealed)" : "",
        response.status == 501 ? " (not initialised)" : ""));
  }
  return absl::OkStatus();
}

}  // namespace sealvol::kms
