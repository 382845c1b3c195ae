// Validation of the names the KMS layer turns into file names, URL path
// segments and policy names, and expansion of the KEK name template.
// Thread-safe: stateless.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/volume_id.h"

namespace sealvol::kms {

inline constexpr char kDefaultKeyNameTemplate[] = "sealvol-${namespace}";

// Volume ids are checked by base/volume_id.h's ValidateVolumeId (the one
// rule for io, kms and csi); it is visible here for the KMS's callers.
using ::sealvol::ValidateVolumeId;

// A format id as the registry stores it: 32 lowercase hex digits (the text
// form of the engine's 16-byte io::FormatId).
absl::Status ValidateFormatId(std::string_view format_id);

// A state root as the registry stores it: 64 lowercase hex digits (the text
// form of the engine's 32-byte io::StateRoot). InvalidArgument naming
// `field` otherwise.
absl::Status ValidateStateRoot(std::string_view root,
                               std::string_view field = "state_root");

// A tenant is a Kubernetes namespace: a DNS label (RFC 1123), 1..63 of
// [a-z0-9-], starting and ending alphanumeric.
absl::Status ValidateTenant(std::string_view tenant);

// Expands "${namespace}" in `key_name_template` (empty = the default). The
// template must contain "${namespace}" so that no two tenants share a KEK,
// and the result must be a valid key name (1..128 of [A-Za-z0-9._-]).
absl::StatusOr<std::string> ExpandKeyNameTemplate(
    std::string_view key_name_template, std::string_view tenant);

}  // namespace sealvol::kms
