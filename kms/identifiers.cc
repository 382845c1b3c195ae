#include "kms/identifiers.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace sealvol::kms {
namespace {

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

absl::Status ValidateName(std::string_view what, std::string_view name) {
  if (name.empty() || name.size() > 128) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(what), " must be 1 to 128 characters"));
  }
  if (name[0] == '.' || name[0] == '-') {
    return absl::InvalidArgumentError(absl::StrCat(
        std::string(what), " \"", std::string(name),
        "\" must not start with '.' or '-'"));
  }
  for (char c : name) {
    if (!IsNameChar(c)) {
      return absl::InvalidArgumentError(absl::StrCat(
          std::string(what), " \"", std::string(name),
          "\" may only contain letters, digits, '.', '_' and '-'"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateFormatId(std::string_view format_id) {
  bool ok = format_id.size() == 32;
  for (char c : format_id) {
    ok = ok && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "format id \"", std::string(format_id.substr(0, 64)),
        "\" is not 32 lowercase hex digits"));
  }
  return absl::OkStatus();
}

absl::Status ValidateStateRoot(std::string_view root, std::string_view field) {
  bool ok = root.size() == 64;
  for (char c : root) {
    ok = ok && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        std::string(field), " \"", std::string(root.substr(0, 80)),
        "\" is not 64 lowercase hex digits"));
  }
  return absl::OkStatus();
}

absl::Status ValidateTenant(std::string_view tenant) {
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
  };
  bool ok = !tenant.empty() && tenant.size() <= 63 && alnum(tenant.front()) &&
            alnum(tenant.back());
  for (char c : tenant) ok = ok && (alnum(c) || c == '-');
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tenant \"", std::string(tenant),
        "\" is not a Kubernetes namespace name (RFC 1123 label)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ExpandKeyNameTemplate(
    std::string_view key_name_template, std::string_view tenant) {
  if (auto s = ValidateTenant(tenant); !s.ok()) return s;
  const std::string templ = key_name_template.empty()
                                ? std::string(kDefaultKeyNameTemplate)
                                : std::string(key_name_template);
  if (templ.find("${namespace}") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "key name template \"", templ,
        "\" must contain ${namespace}: every tenant needs its own KEK"));
  }
  std::string name =
      absl::StrReplaceAll(templ, {{"${namespace}", std::string(tenant)}});
  if (auto s = ValidateName("key name", name); !s.ok()) return s;
  return name;
}

}  // namespace sealvol::kms
