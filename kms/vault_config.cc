#include "kms/vault_config.h"

#include <algorithm>
#include <charconv>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "kms/identifiers.h"

namespace sealvol::kms {
namespace {

constexpr char kKubernetesTokenFile[] =
    "/var/run/secrets/kubernetes.io/serviceaccount/token";

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

}  // namespace sealvol::kms
