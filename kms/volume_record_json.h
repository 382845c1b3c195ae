// JSON form of VolumeRecord, used by the embedded registry (one file per
// volume) and by the Vault kv-v2 registry (the secret's data). Thread-safe:
// stateless. Parsing never throws: malformed input gives DataLoss naming
// `source` and the offending field.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "kms/key_provider.h"
#include "nlohmann/json.hpp"

namespace sealvol::kms {

nlohmann::json VolumeRecordToJson(const VolumeRecord& record);

// Largest serialized record a registry writes (a record holds ids, names and
// StorageClass parameters the controller bounds to a few KiB). Readers accept
// up to 1 MiB, so that records of older versions still read.
inline constexpr size_t kMaxRecordWriteBytes = 64 * 1024;

// InvalidArgument when `serialized` (a record about to be written) is over
// kMaxRecordWriteBytes.
absl::Status CheckRecordWriteSize(std::string_view serialized,
                                  std::string_view volume_id);

// True for an error about one record's own content (unparseable, too large,
// naming another volume): a listing skips and reports that record instead of
// failing for every volume. Outages and permission errors are not.
bool IsBadRecordError(const absl::Status& status);

// Serialises without throwing: invalid UTF-8 is replaced, not an exception.
std::string DumpJson(const nlohmann::json& json, int indent = -1);

absl::StatusOr<VolumeRecord> VolumeRecordFromJson(const nlohmann::json& json,
                                                  std::string_view source);

// Field access that reports a missing field or a wrong type as DataLoss
// ("<source>: field \"x\" ..."), never an exception.
absl::StatusOr<std::string> JsonString(const nlohmann::json& object,
                                       std::string_view field,
                                       std::string_view source);
absl::StatusOr<int64_t> JsonInt(const nlohmann::json& object,
                                std::string_view field,
                                std::string_view source);
absl::StatusOr<uint64_t> JsonUint(const nlohmann::json& object,
                                  std::string_view field,
                                  std::string_view source);
absl::StatusOr<bool> JsonBool(const nlohmann::json& object,
                              std::string_view field, std::string_view source);
absl::StatusOr<const nlohmann::json*> JsonObject(const nlohmann::json& object,
                                                 std::string_view field,
                                                 std::string_view source);

}  // namespace sealvol::kms
