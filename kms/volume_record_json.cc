#include "kms/volume_record_json.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kms/identifiers.h"

namespace sealvol::kms {
namespace {

absl::Status FieldError(std::string_view source, std::string_view field,
                        std::string_view problem) {
  return absl::DataLossError(absl::StrCat(std::string(source), ": field \"",
                                          std::string(field), "\" ",
                                          std::string(problem)));
}

absl::StatusOr<const nlohmann::json*> Field(const nlohmann::json& object,
                                            std::string_view field,
                                            std::string_view source) {
  if (!object.is_object()) {
    return absl::DataLossError(
        absl::StrCat(std::string(source), ": expected a JSON object"));
  }
  auto it = object.find(std::string(field));
  if (it == object.end()) return FieldError(source, field, "is missing");
  return &*it;
}

}  // namespace

absl::StatusOr<std::string> JsonString(const nlohmann::json& object,
                                       std::string_view field,
                                       std::string_view source) {
  ASSIGN_OR_RETURN(const nlohmann::json* value, Field(object, field, source));
  if (!value->is_string()) return FieldError(source, field, "is not a string");
  return value->get_ref<const std::string&>();
}

absl::StatusOr<int64_t> JsonInt(const nlohmann::json& object,
                                std::string_view field,
                                std::string_view source) {
  ASSIGN_OR_RETURN(const nlohmann::json* value, Field(object, field, source));
  if (value->is_number_integer()) return value->get<int64_t>();
  if (value->is_number_unsigned()) {
    const uint64_t v = value->get<uint64_t>();
    if (v > static_cast<uint64_t>(INT64_MAX)) {
      return FieldError(source, field, "is out of range");
    }
    return static_cast<int64_t>(v);
  }
  return FieldError(source, field, "is not an integer");
}

absl::StatusOr<uint64_t> JsonUint(const nlohmann::json& object,
                                  std::string_view field,
                                  std::string_view source) {
  ASSIGN_OR_RETURN(const nlohmann::json* value, Field(object, field, source));
  if (value->is_number_unsigned()) return value->get<uint64_t>();
  if (value->is_number_integer()) {
    if (value->get<int64_t>() < 0) return FieldError(source, field, "is negative");
    return static_cast<uint64_t>(value->get<int64_t>());
  }
  return FieldError(source, field, "is not an integer");
}

absl::StatusOr<bool> JsonBool(const nlohmann::json& object,
                              std::string_view field, std::string_view source) {
  ASSIGN_OR_RETURN(const nlohmann::json* value, Field(object, field, source));
  if (!value->is_boolean()) return FieldError(source, field, "is not a boolean");
  return value->get<bool>();
}

absl::StatusOr<const nlohmann::json*> JsonObject(const nlohmann::json& object,
                                                 std::string_view field,
                                                 std::string_view source) {
  ASSIGN_OR_RETURN(const nlohmann::json* value, Field(object, field, source));
  if (!value->is_object()) return FieldError(source, field, "is not an object");
  return value;
}

std::string DumpJson(const nlohmann::json& json, int indent) {
  return json.dump(indent, ' ', /*ensure_ascii=*/false,
                   nlohmann::json::error_handler_t::replace);
}

nlohmann::json VolumeRecordToJson(const VolumeRecord& r) {
  nlohmann::json params = nlohmann::json::object();
  for (const auto& [k, v] : r.parameters) params[k] = v;
  nlohmann::json out{
      {"volume_id", r.volume_id},   {"name", r.name},
      {"tenant", r.tenant},         {"key_name", r.key_name},
      {"key_version", r.key_version}, {"wrapped_dek", r.wrapped_dek},
      {"capacity_bytes", r.capacity_bytes}, {"node", r.node},
      {"parameters", params},       {"created_unix", r.created_unix},
      {"format_id", r.format_id},   {"formatted_node", r.formatted_node},
      {"formatted_unix", r.formatted_unix},
  };
  // Written only once committed: a record without them has no state yet.
  if (r.state.has_value()) {
    out["state_epoch"] = r.state->epoch;
    out["state_root"] = r.state->root;
    out["state_open"] = r.state->open;
    out["state_node"] = r.state_node;
    out["state_unix"] = r.state_unix;
  }
  if (r.rollback_pending || !r.rollback_accepted_by.empty()) {
    out["rollback_pending"] = r.rollback_pending;
    out["rollback_accepted_by"] = r.rollback_accepted_by;
    out["rollback_accepted_unix"] = r.rollback_accepted_unix;
  }
  out["kind"] = std::string(RecordKindName(r.kind));
  if (!r.source_volume_id.empty()) out["source_volume_id"] = r.source_volume_id;
  // Written for copies only: a record without them is not one.
  if (r.copy.state != CopyState::kNone) {
    out["copy_state"] = std::string(CopyStateName(r.copy.state));
    out["copy_bytes_done"] = r.copy.bytes_done;
    out["copy_bytes_total"] = r.copy.bytes_total;
    out["copy_error"] = r.copy.error;
    out["copy_updated_unix"] = r.copy.updated_unix;
    out["copy_cut_unix"] = r.copy.cut_unix;
  }
  return out;
}

absl::StatusOr<VolumeRecord> VolumeRecordFromJson(const nlohmann::json& json,
                                                  std::string_view source) {
  VolumeRecord r;
  ASSIGN_OR_RETURN(r.volume_id, JsonString(json, "volume_id", source));
  ASSIGN_OR_RETURN(r.name, JsonString(json, "name", source));
  ASSIGN_OR_RETURN(r.tenant, JsonString(json, "tenant", source));
  ASSIGN_OR_RETURN(r.key_name, JsonString(json, "key_name", source));
  ASSIGN_OR_RETURN(r.key_version, JsonInt(json, "key_version", source));
  ASSIGN_OR_RETURN(r.wrapped_dek, JsonString(json, "wrapped_dek", source));
  ASSIGN_OR_RETURN(const int64_t capacity,
                   JsonInt(json, "capacity_bytes", source));
  if (capacity < 0) return FieldError(source, "capacity_bytes", "is negative");
  r.capacity_bytes = static_cast<uint64_t>(capacity);
  ASSIGN_OR_RETURN(r.node, JsonString(json, "node", source));
  ASSIGN_OR_RETURN(const nlohmann::json* params,
                   JsonObject(json, "parameters", source));
  for (const auto& [k, v] : params->items()) {
    if (!v.is_string()) {
      return FieldError(source, absl::StrCat("parameters.", k),
                        "is not a string");
    }
    r.parameters[k] = v.get_ref<const std::string&>();
  }
  ASSIGN_OR_RETURN(r.created_unix, JsonInt(json, "created_unix", source));
  // The format fields came later: a record without them was never claimed.
  if (json.contains("format_id")) {
    ASSIGN_OR_RETURN(r.format_id, JsonString(json, "format_id", source));
    if (!r.format_id.empty() && !ValidateFormatId(r.format_id).ok()) {
      return FieldError(source, "format_id", "is not 32 lowercase hex digits");
    }
  }
  if (json.contains("formatted_node")) {
    ASSIGN_OR_RETURN(r.formatted_node, JsonString(json, "formatted_node", source));
  }
  if (json.contains("formatted_unix")) {
    ASSIGN_OR_RETURN(r.formatted_unix, JsonInt(json, "formatted_unix", source));
  }
  // The state fields came later still; all three or none.
  const bool has_epoch = json.contains("state_epoch");
  const bool has_root = json.contains("state_root");
  const bool has_open = json.contains("state_open");
  if (has_epoch || has_root || has_open) {
    if (!has_epoch) return FieldError(source, "state_epoch", "is missing");
    if (!has_root) return FieldError(source, "state_root", "is missing");
    if (!has_open) return FieldError(source, "state_open", "is missing");
    CommittedState state;
    ASSIGN_OR_RETURN(state.epoch, JsonUint(json, "state_epoch", source));
    ASSIGN_OR_RETURN(state.root, JsonString(json, "state_root", source));
    if (!ValidateStateRoot(state.root).ok()) {
      return FieldError(source, "state_root", "is not 64 lowercase hex digits");
    }
    ASSIGN_OR_RETURN(state.open, JsonBool(json, "state_open", source));
    r.state = std::move(state);
    if (json.contains("state_node")) {
      ASSIGN_OR_RETURN(r.state_node, JsonString(json, "state_node", source));
    }
    if (json.contains("state_unix")) {
      ASSIGN_OR_RETURN(r.state_unix, JsonInt(json, "state_unix", source));
    }
  }
  if (json.contains("rollback_pending")) {
    ASSIGN_OR_RETURN(r.rollback_pending,
                     JsonBool(json, "rollback_pending", source));
  }
  if (json.contains("rollback_accepted_by")) {
    ASSIGN_OR_RETURN(r.rollback_accepted_by,
                     JsonString(json, "rollback_accepted_by", source));
  }
  if (json.contains("rollback_accepted_unix")) {
    ASSIGN_OR_RETURN(r.rollback_accepted_unix,
                     JsonInt(json, "rollback_accepted_unix", source));
  }
  // Snapshots and copies came later: a record without these keys is a
  // volume that is not a copy.
  if (json.contains("kind")) {
    ASSIGN_OR_RETURN(const std::string kind, JsonString(json, "kind", source));
    auto parsed = ParseRecordKind(kind);
    if (!parsed.ok()) return FieldError(source, "kind", "is not volume or snapshot");
    r.kind = *parsed;
  }
  if (json.contains("source_volume_id")) {
    ASSIGN_OR_RETURN(r.source_volume_id,
                     JsonString(json, "source_volume_id", source));
    if (!ValidateVolumeId(r.source_volume_id).ok()) {
      return FieldError(source, "source_volume_id", "is not a volume id");
    }
  }
  if (json.contains("copy_state")) {
    ASSIGN_OR_RETURN(const std::string state,
                     JsonString(json, "copy_state", source));
    auto parsed = ParseCopyState(state);
    if (!parsed.ok()) {
      return FieldError(source, "copy_state",
                        "is not none, pending, cut, ready or failed");
    }
    r.copy.state = *parsed;
    if (json.contains("copy_bytes_done")) {
      ASSIGN_OR_RETURN(r.copy.bytes_done, JsonUint(json, "copy_bytes_done", source));
    }
    if (json.contains("copy_bytes_total")) {
      ASSIGN_OR_RETURN(r.copy.bytes_total,
                       JsonUint(json, "copy_bytes_total", source));
    }
    if (json.contains("copy_error")) {
      ASSIGN_OR_RETURN(r.copy.error, JsonString(json, "copy_error", source));
    }
    if (json.contains("copy_updated_unix")) {
      ASSIGN_OR_RETURN(r.copy.updated_unix,
                       JsonInt(json, "copy_updated_unix", source));
    }
    if (json.contains("copy_cut_unix")) {
      ASSIGN_OR_RETURN(r.copy.cut_unix, JsonInt(json, "copy_cut_unix", source));
    }
  }
  if (r.kind == RecordKind::kSnapshot && r.source_volume_id.empty()) {
    return FieldError(source, "source_volume_id",
                      "is missing (a snapshot names its source)");
  }
  return r;
}

absl::Status CheckRecordWriteSize(std::string_view serialized,
                                  std::string_view volume_id) {
  if (serialized.size() > kMaxRecordWriteBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "volume ", std::string(volume_id.substr(0, 64)), ": record of ", serialized.size(),
        " bytes, at most ", kMaxRecordWriteBytes, " are written"));
  }
  return absl::OkStatus();
}

bool IsBadRecordError(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kInvalidArgument:
      return true;
    default:
      return false;
  }
}

}  // namespace sealvol::kms
