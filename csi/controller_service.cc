#include "csi/controller_service.h"

#include <algorithm>
#include <ctime>
#include <map>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "base/grpc_status.h"
#include "base/status_macros.h"
#include "base/volume_id.h"
#include "csi/capabilities.h"
#include "csi/controller_records.h"
#include "csi/request_limits.h"
#include "spdlog/spdlog.h"

namespace sealvol::csi {

namespace {

constexpr uint64_t kAlign = 4096;
constexpr char kKubernetesParamPrefix[] = "csi.storage.k8s.io/";

// The record parameters that define a volume: a second CreateVolume with
// the same name must agree on every one of them.
constexpr const char* kDefiningParams[] = {
    kParamTenant, kParamFsType, kParamAllowedServiceAccounts,
    kParamKmsKeyTemplate};

void FillVolume(const kms::VolumeRecord& record, csipb::Volume* volume) {
  volume->set_volume_id(record.volume_id);
  volume->set_capacity_bytes(static_cast<int64_t>(record.capacity_bytes));
  auto& context = *volume->mutable_volume_context();
  context[kContextTenant] = record.tenant;
  context[kContextFsType] = Param(record.parameters, kParamFsType);
  // The size at creation: what the node formats on first use. Later growth
  // reaches the node through NodeExpandVolume.
  auto initial = record.parameters.find(kContextCapacity);
  context[kContextCapacity] = initial != record.parameters.end()
                                  ? initial->second
                                  : std::to_string(record.capacity_bytes);
  if (!record.node.empty()) {
    (*volume->add_accessible_topology()->mutable_segments())[kTopologyKey] =
        record.node;
  }
  if (!record.source_volume_id.empty()) {
    auto* source = volume->mutable_content_source();
    if (Param(record.parameters, kParamContentSource) == "snapshot") {
      source->mutable_snapshot()->set_snapshot_id(record.source_volume_id);
    } else {
      source->mutable_volume()->set_volume_id(record.source_volume_id);
    }
  }
}

// The node a copy of a formatted source must live on is the source's; a
// requisite topology that names nodes but not that one cannot be met.
absl::Status CheckRequisiteAllows(const csipb::CreateVolumeRequest& request,
                                  const std::string& node) {
  bool names_nodes = false;
  for (const auto& topology : request.accessibility_requirements().requisite()) {
    auto it = topology.segments().find(kTopologyKey);
    if (it == topology.segments().end()) continue;
    if (it->second == node) return absl::OkStatus();
    names_nodes = true;
  }
  if (!names_nodes) return absl::OkStatus();
  return absl::ResourceExhaustedError(
      "CreateVolume " + request.name() + ": the source's image is on node " +
      node + ", which the requisite topology does not include (a copy is "
      "made and placed on the source's node)");
}

bool CapacityFits(uint64_t capacity, const csipb::CreateVolumeRequest& req) {
  if (!req.has_capacity_range()) return true;
  const auto& range = req.capacity_range();
  if (range.required_bytes() > 0 &&
      capacity < static_cast<uint64_t>(range.required_bytes())) {
    return false;
  }
  if (range.limit_bytes() > 0 &&
      capacity > static_cast<uint64_t>(range.limit_bytes())) {
    return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<uint64_t> CapacityForRange(const csipb::CapacityRange* range,
                                          uint64_t default_bytes,
                                          uint64_t max_bytes) {
  int64_t required = range ? range->required_bytes() : 0;
  int64_t limit = range ? range->limit_bytes() : 0;
  if (required < 0 || limit < 0) {
    return absl::InvalidArgumentError(
        "capacity range: bounds must not be negative");
  }
  uint64_t bytes;
  if (required > 0) {
    bytes = (static_cast<uint64_t>(required) + kAlign - 1) / kAlign * kAlign;
  } else if (limit > 0) {
    bytes = std::min<uint64_t>(default_bytes, static_cast<uint64_t>(limit));
    bytes = bytes / kAlign * kAlign;
  } else {
    bytes = default_bytes;
  }
  if (bytes == 0 || (limit > 0 && bytes > static_cast<uint64_t>(limit))) {
    return absl::OutOfRangeError(
        "capacity range [" + std::to_string(required) + ", " +
        std::to_string(limit) + "]: no multiple of 4096 bytes fits");
  }
  if (bytes > max_bytes) {
    return absl::OutOfRangeError("capacity " + std::to_string(bytes) +
                                 " bytes exceeds the maximum " +
                                 std::to_string(max_bytes));
  }
  return bytes;
}

struct ControllerService::VolumeSpec {
  std::string tenant;
  uint64_t capacity_bytes = 0;
  std::string node;
  std::map<std::string, std::string> parameters;  // As stored in the record.
  bool fs_type_given = false;  // By a parameter or a capability.
  // The content source: a snapshot or a volume id ("" = none).
  std::string source_id;
  bool source_is_snapshot = false;
};

absl::StatusOr<ControllerService::VolumeSpec>
ControllerService::ParseCreateRequest(const csipb::CreateVolumeRequest& request,
                                      const ControllerOptions& opts) {
  if (request.name().empty()) {
    return absl::InvalidArgumentError("CreateVolume: name is required");
  }
  if (request.volume_capabilities().empty()) {
    return absl::InvalidArgumentError(
        "CreateVolume " + request.name() + ": volume_capabilities is required");
  }
  VolumeSpec spec;
  if (request.has_volume_content_source()) {
    const auto& source = request.volume_content_source();
    if (!opts.snapshots) {
      return absl::InvalidArgumentError(
          "CreateVolume " + request.name() +
          ": volume content sources (clones, snapshots) are not enabled on "
          "this controller (sealvol controller --enable-snapshots)");
    }
    if (source.has_snapshot()) {
      spec.source_id = source.snapshot().snapshot_id();
      spec.source_is_snapshot = true;
    } else if (source.has_volume()) {
      spec.source_id = source.volume().volume_id();
    }
    if (spec.source_id.empty()) {
      return absl::InvalidArgumentError(
          "CreateVolume " + request.name() +
          ": volume_content_source names no snapshot_id or volume_id");
    }
  }
  std::string fs_type;
  for (const auto& [key, value] : request.parameters()) {
    if (key == kParamTenant) {
      spec.tenant = value;
    } else if (key == kParamFsType) {
      fs_type = value;
    } else if (key == kParamAllowedServiceAccounts ||
               key == kParamKmsKeyTemplate) {
      spec.parameters[key] = value;
    } else if (absl::StartsWith(key, kKubernetesParamPrefix)) {
      spec.parameters[key] = value;  // pvc/name, pv/name: kept for audit.
    } else {
      return absl::InvalidArgumentError("CreateVolume " + request.name() +
                                        ": unknown parameter \"" + key + "\"");
    }
  }
  if (spec.tenant.empty()) {
    return absl::InvalidArgumentError(
        "CreateVolume " + request.name() + ": parameter " + kParamTenant +
        " (the tenant) is required; run the provisioner with "
        "--extra-create-metadata");
  }
  for (const auto& capability : request.volume_capabilities()) {
    RETURN_IF_ERROR(CheckVolumeCapability(capability));
    if (fs_type.empty()) fs_type = FsTypeOf(capability, "");
  }
  spec.fs_type_given = !fs_type.empty();
  if (fs_type.empty()) fs_type = kDefaultFsType;
  if (!IsSupportedFsType(fs_type)) {
    return absl::InvalidArgumentError("CreateVolume " + request.name() +
                                      ": fsType \"" + fs_type +
                                      "\" is not supported (ext4, xfs)");
  }
  spec.parameters[kParamTenant] = spec.tenant;
  spec.parameters[kParamFsType] = fs_type;

  ASSIGN_OR_RETURN(
      spec.capacity_bytes,
      CapacityForRange(
          request.has_capacity_range() ? &request.capacity_range() : nullptr,
          opts.default_capacity_bytes, opts.max_capacity_bytes));

  // Volumes live on one node: the first preferred topology that names a
  // node wins, then the first requisite one.
  const auto& req = request.accessibility_requirements();
  for (const auto* list : {&req.preferred(), &req.requisite()}) {
    for (const auto& topology : *list) {
      auto it = topology.segments().find(kTopologyKey);
      if (it != topology.segments().end() && !it->second.empty()) {
        spec.node = it->second;
        break;
      }
    }
    if (!spec.node.empty()) break;
  }
  return spec;
}

ControllerService::ControllerService(kms::KeyProvider* keys,
                                     ControllerOptions options)
    : keys_(keys), options_(options) {}

absl::Status ControllerService::DoCreateVolume(
    const csipb::CreateVolumeRequest& request,
    csipb::CreateVolumeResponse* response) {
  RETURN_IF_ERROR(CheckRequestSize(request));
  ASSIGN_OR_RETURN(VolumeSpec spec, ParseCreateRequest(request, options_));

  MutexLock lock(&mutex_);
  ASSIGN_OR_RETURN(std::vector<kms::VolumeRecord> records,
                   keys_->ListVolumes(""));
  for (const auto& record : records) {
    if (record.kind != kms::RecordKind::kVolume ||
        record.name != request.name()) {
      continue;
    }
    if (record.source_volume_id != spec.source_id) {
      return absl::AlreadyExistsError(
          "CreateVolume " + request.name() + ": volume " + record.volume_id +
          " already has this name with a different volume_content_source");
    }
    for (const char* key : kDefiningParams) {
      // A copy takes its source's fsType when the request names none.
      if (key == std::string_view(kParamFsType) &&
          !record.source_volume_id.empty() && !spec.fs_type_given) {
        continue;
      }
      if (Param(record.parameters, key) != Param(spec.parameters, key)) {
        return absl::AlreadyExistsError(
            "CreateVolume " + request.name() + ": volume " + record.volume_id +
            " already has this name with a different " + key);
      }
    }
    if (!CapacityFits(record.capacity_bytes, request)) {
      return absl::AlreadyExistsError(
          "CreateVolume " + request.name() + ": volume " + record.volume_id +
          " already has this name with capacity " +
          std::to_string(record.capacity_bytes) + " bytes");
    }
    if (!record.source_volume_id.empty()) {
      return AnswerExistingCopy(request, record, response);
    }
    FillVolume(record, response->mutable_volume());
    return absl::OkStatus();
  }
  if (!spec.source_id.empty()) {
    return CreateCopy(request, std::move(spec), response);
  }

  kms::CreateVolumeKeyRequest create;
  create.volume_id = NewVolumeId();
  create.name = request.name();
  create.tenant = spec.tenant;
  create.key_name_template = Param(spec.parameters, kParamKmsKeyTemplate);
  create.capacity_bytes = spec.capacity_bytes;
  create.node = spec.node;
  create.parameters = spec.parameters;
  create.parameters[kContextCapacity] = std::to_string(spec.capacity_bytes);
  ASSIGN_OR_RETURN(kms::VolumeRecord record, keys_->CreateVolumeKey(create));
  spdlog::info("CreateVolume {}: created {} for tenant {} ({} bytes{}{})",
               request.name(), record.volume_id, record.tenant,
               record.capacity_bytes, record.node.empty() ? "" : ", node ",
               record.node);
  FillVolume(record, response->mutable_volume());
  return absl::OkStatus();
}

absl::StatusOr<kms::VolumeRecord> ControllerService::CreateCopyRecord(
    const kms::CreateVolumeKeyRequest& create) {
  ASSIGN_OR_RETURN(kms::VolumeRecord record, keys_->CreateVolumeKey(create));
  if (record.copy.state == kms::CopyState::kPending &&
      options_.copy_job_created) {
    options_.copy_job_created(record.node);
  }
  return record;
}

absl::Status ControllerService::CreateCopy(
    const csipb::CreateVolumeRequest& request, VolumeSpec spec,
    csipb::CreateVolumeResponse* response) {
  const std::string what = spec.source_is_snapshot ? "snapshot" : "volume";
  const std::string rpc = "CreateVolume " + request.name();
  auto missing = [&] {
    return absl::NotFoundError(rpc + ": source " + what + " " +
                               spec.source_id + " does not exist");
  };
  if (!IsWellFormedVolumeId(spec.source_id)) return missing();
  auto found = keys_->GetVolume(spec.source_id);
  if (absl::IsNotFound(found.status())) return missing();
  RETURN_IF_ERROR(found.status());
  const kms::VolumeRecord& source = *found;
  const kms::RecordKind wanted = spec.source_is_snapshot
                                     ? kms::RecordKind::kSnapshot
                                     : kms::RecordKind::kVolume;
  if (source.kind != wanted) {
    return absl::NotFoundError(rpc + ": source " + what + " " +
                               spec.source_id + " does not exist (that id is a " +
                               std::string(kms::RecordKindName(source.kind)) +
                               ")");
  }
  if (CopyInProgress(source.copy)) {
    return absl::UnavailableError(rpc + ": source " + what + " " +
                                  spec.source_id + " is not ready yet (" +
                                  kms::DescribeCopy(source.copy) + ")");
  }
  if (source.copy.state == kms::CopyState::kFailed) {
    return absl::FailedPreconditionError(
        rpc + ": source " + what + " " + spec.source_id +
        " holds no data: its own copy failed (" + source.copy.error + ")");
  }
  // Same tenant: the copy is wrapped under the tenant's KEK and released to
  // the tenant's pods only.
  if (source.tenant != spec.tenant) {
    return absl::InvalidArgumentError(
        rpc + ": source " + what + " " + spec.source_id +
        " belongs to another tenant than " + spec.tenant +
        " (a copy stays in its source's tenant)");
  }
  const std::string source_fs = Param(source.parameters, kParamFsType);
  if (spec.fs_type_given && !source_fs.empty() &&
      Param(spec.parameters, kParamFsType) != source_fs) {
    return absl::InvalidArgumentError(
        rpc + ": fsType " + Param(spec.parameters, kParamFsType) +
        " differs from the source's (" + source_fs + ")");
  }
  if (!source_fs.empty()) spec.parameters[kParamFsType] = source_fs;

  // At least the source's size (CSI: never smaller than the source); a
  // larger copy reads zeros beyond the source's end.
  const auto* range =
      request.has_capacity_range() ? &request.capacity_range() : nullptr;
  ASSIGN_OR_RETURN(uint64_t capacity,
                   CapacityForRange(range, source.capacity_bytes,
                                    options_.max_capacity_bytes));
  capacity = std::max(capacity, source.capacity_bytes);
  if (range != nullptr && range->limit_bytes() > 0 &&
      capacity > static_cast<uint64_t>(range->limit_bytes())) {
    return absl::OutOfRangeError(
        rpc + ": limit_bytes " + std::to_string(range->limit_bytes()) +
        " is smaller than the source " + what + "'s " +
        std::to_string(source.capacity_bytes) + " bytes");
  }

  kms::CreateVolumeKeyRequest create;
  create.volume_id = NewVolumeId();
  create.name = request.name();
  create.tenant = spec.tenant;
  create.key_name_template = Param(spec.parameters, kParamKmsKeyTemplate);
  create.capacity_bytes = capacity;
  create.parameters = spec.parameters;
  create.parameters[kContextCapacity] = std::to_string(capacity);
  create.parameters[kParamContentSource] = what;
  create.kind = kms::RecordKind::kVolume;
  create.source_volume_id = source.volume_id;
  if (source.format_id.empty()) {
    // Never formatted: nothing to copy. The copy is an empty volume, ready
    // now, and may live on any node.
    create.initial_copy_state = kms::CopyState::kReady;
    create.node = spec.node.empty() ? source.node : spec.node;
  } else {
    const std::string node = ImageNode(source);
    if (node.empty()) {
      return absl::FailedPreconditionError(
          rpc + ": source " + what + " " + source.volume_id +
          " has an image but no known node to copy it on");
    }
    RETURN_IF_ERROR(CheckRequisiteAllows(request, node));
    create.initial_copy_state = kms::CopyState::kPending;
    create.node = node;
  }
  ASSIGN_OR_RETURN(kms::VolumeRecord record, CreateCopyRecord(create));
  spdlog::info("CreateVolume {}: created {} for tenant {} ({} bytes) from {} {}"
               "{}{} under its own key; copy {}",
               request.name(), record.volume_id, record.tenant,
               record.capacity_bytes, what, source.volume_id,
               record.node.empty() ? "" : " on node ", record.node,
               kms::CopyStateName(record.copy.state));
  return AnswerExistingCopy(request, record, response);
}

absl::Status ControllerService::AnswerExistingCopy(
    const csipb::CreateVolumeRequest& request, const kms::VolumeRecord& record,
    csipb::CreateVolumeResponse* response) {
  const std::string rpc = "CreateVolume " + request.name();
  switch (record.copy.state) {
    case kms::CopyState::kPending:
    case kms::CopyState::kCut:
      // The provisioner retries ABORTED; the retry finds this record by name.
      return absl::AbortedError(
          rpc + ": copy in progress (" + CopyPercent(record.copy) + "): " +
          record.volume_id + " from " + record.source_volume_id + " on node " +
          record.node + ", " + kms::DescribeCopy(record.copy));
    case kms::CopyState::kFailed: {
      // Nothing of the failed copy was handed out: shred it, so that the
      // provisioner's next retry starts a new one.
      absl::Status destroyed = keys_->DestroyVolumeKey(record.volume_id);
      if (!destroyed.ok() && !absl::IsNotFound(destroyed)) return destroyed;
      spdlog::warn("CreateVolume {}: copy {} from {} failed on node {}: {}; "
                   "its key was destroyed, the next retry starts a new copy",
                   request.name(), record.volume_id, record.source_volume_id,
                   record.node, record.copy.error);
      return absl::AbortedError(rpc + ": the copy from " +
                                record.source_volume_id + " failed on node " +
                                record.node + " (" + record.copy.error +
                                "); the next retry starts a new copy");
    }
    case kms::CopyState::kNone:
    case kms::CopyState::kReady:
      break;
  }
  FillVolume(record, response->mutable_volume());
  return absl::OkStatus();
}

absl::Status ControllerService::DoDeleteVolume(
    const csipb::DeleteVolumeRequest& request) {
  RETURN_IF_ERROR(CheckRequestSize(request));
  if (request.volume_id().empty()) {
    return absl::InvalidArgumentError("DeleteVolume: volume_id is required");
  }
  // An id of another form never named a sealvol volume: already gone.
  if (!IsWellFormedVolumeId(request.volume_id())) return absl::OkStatus();
  MutexLock lock(&mutex_);
  auto record = keys_->GetVolume(request.volume_id());
  if (absl::IsNotFound(record.status())) return absl::OkStatus();
  RETURN_IF_ERROR(record.status());
  if (record->kind != kms::RecordKind::kVolume) {
    // Not a volume: no volume of this id exists, and the snapshot stays.
    spdlog::warn("DeleteVolume {}: that id is a snapshot; nothing deleted "
                 "(DeleteSnapshot deletes snapshots)",
                 request.volume_id());
    return absl::OkStatus();
  }
  if (options_.snapshots) {
    ASSIGN_OR_RETURN(std::vector<kms::VolumeRecord> records,
                     keys_->ListVolumes(record->tenant));
    RETURN_IF_ERROR(
        CheckNotCopyingFrom(records, request.volume_id(), "DeleteVolume"));
  }
  absl::Status status = keys_->DestroyVolumeKey(request.volume_id());
  if (absl::IsNotFound(status)) return absl::OkStatus();
  RETURN_IF_ERROR(status);
  spdlog::info("DeleteVolume {}: key destroyed (crypto-shredded)",
               request.volume_id());
  return absl::OkStatus();
}

absl::Status ControllerService::DoValidate(
    const csipb::ValidateVolumeCapabilitiesRequest& request,
    csipb::ValidateVolumeCapabilitiesResponse* response) {
  RETURN_IF_ERROR(CheckRequestSize(request));
  if (request.volume_id().empty()) {
    return absl::InvalidArgumentError(
        "ValidateVolumeCapabilities: volume_id is required");
  }
  if (request.volume_capabilities().empty()) {
    return absl::InvalidArgumentError("ValidateVolumeCapabilities " +
                                      request.volume_id() +
                                      ": volume_capabilities is required");
  }
  if (!IsWellFormedVolumeId(request.volume_id())) {
    return absl::NotFoundError("volume " + request.volume_id() +
                               " does not exist");
  }
  ASSIGN_OR_RETURN(kms::VolumeRecord record,
                   keys_->GetVolume(request.volume_id()));
  if (record.kind != kms::RecordKind::kVolume) {
    return absl::NotFoundError("volume " + request.volume_id() +
                               " does not exist (that id is a snapshot)");
  }
  const std::string fs_type = Param(record.parameters, kParamFsType);
  for (const auto& capability : request.volume_capabilities()) {
    absl::Status status = CheckVolumeCapability(capability);
    if (status.ok() && capability.has_mount() &&
        FsTypeOf(capability, fs_type) != fs_type) {
      status = absl::InvalidArgumentError("volume was created for fs_type " +
                                          fs_type);
    }
    if (!status.ok()) {
      // Unsupported is an answer, not an error: no `confirmed`.
      response->set_message(std::string(status.message()));
      return absl::OkStatus();
    }
  }
  auto* confirmed = response->mutable_confirmed();
  *confirmed->mutable_volume_capabilities() = request.volume_capabilities();
  *confirmed->mutable_volume_context() = request.volume_context();
  *confirmed->mutable_parameters() = request.parameters();
  return absl::OkStatus();
}

absl::Status ControllerService::DoListVolumes(
    const csipb::ListVolumesRequest& request,
    csipb::ListVolumesResponse* response) {
  RETURN_IF_ERROR(CheckRequestSize(request));
  if (request.max_entries() < 0) {
    return absl::InvalidArgumentError(
        "ListVolumes: max_entries must not be negative");
  }
  // The token is the id of the next volume to return; ids are listed in
  // order, so a token stays meaningful when volumes come and go.
  const std::string& token = request.starting_token();
  if (!token.empty() && !IsWellFormedVolumeId(token)) {
    return absl::AbortedError("ListVolumes: starting_token \"" + token +
                              "\" was not issued by this plugin");
  }
  ASSIGN_OR_RETURN(std::vector<kms::VolumeRecord> records,
                   keys_->ListVolumes(""));
  std::erase_if(records, [](const kms::VolumeRecord& r) {
    return r.kind != kms::RecordKind::kVolume;
  });
  response->set_next_token(FillPage(
      std::move(records), token, request.max_entries(),
      [response](const kms::VolumeRecord& record) {
        FillVolume(record, response->add_entries()->mutable_volume());
      }));
  return absl::OkStatus();
}

absl::Status ControllerService::DoExpand(
    const csipb::ControllerExpandVolumeRequest& request,
    csipb::ControllerExpandVolumeResponse* response) {
  RETURN_IF_ERROR(CheckRequestSize(request));
  if (request.volume_id().empty()) {
    return absl::InvalidArgumentError(
        "ControllerExpandVolume: volume_id is required");
  }
  if (!request.has_capacity_range()) {
    return absl::InvalidArgumentError("ControllerExpandVolume " +
                                      request.volume_id() +
                                      ": capacity_range is required");
  }
  if (request.has_volume_capability()) {
    RETURN_IF_ERROR(CheckVolumeCapability(request.volume_capability()));
  }
  if (!IsWellFormedVolumeId(request.volume_id())) {
    return absl::NotFoundError("volume " + request.volume_id() +
                               " does not exist");
  }
  MutexLock lock(&mutex_);
  ASSIGN_OR_RETURN(kms::VolumeRecord record,
                   keys_->GetVolume(request.volume_id()));
  if (record.kind != kms::RecordKind::kVolume) {
    return absl::NotFoundError("volume " + request.volume_id() +
                               " does not exist (that id is a snapshot)");
  }
  ASSIGN_OR_RETURN(uint64_t wanted,
                   CapacityForRange(&request.capacity_range(),
                                    record.capacity_bytes,
                                    options_.max_capacity_bytes));
  // Volumes never shrink; a smaller request is already satisfied.
  if (wanted > record.capacity_bytes) {
    record.capacity_bytes = wanted;
    RETURN_IF_ERROR(keys_->UpdateVolume(record));
    spdlog::info("ControllerExpandVolume {}: capacity now {} bytes",
                 record.volume_id, wanted);
  }
  response->set_capacity_bytes(static_cast<int64_t>(record.capacity_bytes));
  // The engine, the loop device and the filesystem grow on the node.
  response->set_node_expansion_required(true);
  return absl::OkStatus();
}

grpc::Status ControllerService::CreateVolume(
    grpc::ServerContext*, const csipb::CreateVolumeRequest* request,
    csipb::CreateVolumeResponse* response) {
  return ToGrpcStatus(DoCreateVolume(*request, response));
}

grpc::Status ControllerService::DeleteVolume(
    grpc::ServerContext*, const csipb::DeleteVolumeRequest* request,
    csipb::DeleteVolumeResponse*) {
  return ToGrpcStatus(DoDeleteVolume(*request));
}

grpc::Status ControllerService::ValidateVolumeCapabilities(
    grpc::ServerContext*,
    const csipb::ValidateVolumeCapabilitiesRequest* request,
    csipb::ValidateVolumeCapabilitiesResponse* response) {
  return ToGrpcStatus(DoValidate(*request, response));
}

grpc::Status ControllerService::ListVolumes(
    grpc::ServerContext*, const csipb::ListVolumesRequest* request,
    csipb::ListVolumesResponse* response) {
  return ToGrpcStatus(DoListVolumes(*request, response));
}

grpc::Status ControllerService::ControllerGetCapabilities(
    grpc::ServerContext*, const csipb::ControllerGetCapabilitiesRequest*,
    csipb::ControllerGetCapabilitiesResponse* response) {
  // No GET_CAPACITY: free space is a node's, and the controller cannot
  // state it truthfully. No PUBLISH_UNPUBLISH: nothing to attach.
  using Rpc = csipb::ControllerServiceCapability::RPC;
  std::vector<Rpc::Type> types = {Rpc::CREATE_DELETE_VOLUME, Rpc::LIST_VOLUMES,
                                  Rpc::EXPAND_VOLUME};
  if (options_.snapshots) {
    types.insert(types.end(), {Rpc::CREATE_DELETE_SNAPSHOT,
                               Rpc::LIST_SNAPSHOTS, Rpc::CLONE_VOLUME});
  }
  for (Rpc::Type type : types) {
    response->add_capabilities()->mutable_rpc()->set_type(type);
  }
  return grpc::Status::OK;
}

grpc::Status ControllerService::ControllerExpandVolume(
    grpc::ServerContext*, const csipb::ControllerExpandVolumeRequest* request,
    csipb::ControllerExpandVolumeResponse* response) {
  return ToGrpcStatus(DoExpand(*request, response));
}

}  // namespace sealvol::csi
