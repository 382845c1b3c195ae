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

struct VolumeSpec {
  std::string tenant;
  uint64_t capacity_bytes = 0;
  std::string node;
  std::map<std::string, std::string> parameters;  // As stored in the record.
};

absl::StatusOr<VolumeSpec> ParseCreateRequest(
    const csipb::CreateVolumeRequest& request, const ControllerOptions& opts) {
  if (request.name().empty()) {
    return absl::InvalidArgumentError("CreateVolume: name is required");
  }
  if (request.volume_capabilities().empty()) {
    return absl::InvalidArgumentError(
        "CreateVolume " + request.name() + ": volume_capabilities is required");
  }
  if (request.has_volume_content_source()) {
    // A copy would need its own DEK and a re-encryption; not offered yet.
    return absl::InvalidArgumentError(
        "CreateVolume " + request.name() +
        ": volume content sources (clones, snapshots) are not supported");
  }
  VolumeSpec spec;
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

std::string Param(const std::map<std::string, std::string>& params,
                  const char* key) {
  auto it = params.find(key);
  return it == params.end() ? std::string() : it->second;
}

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
    if (record.name != request.name()) continue;
    for (const char* key : kDefiningParams) {
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
    FillVolume(record, response->mutable_volume());
    return absl::OkStatus();
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

absl::Status ControllerService::DoDeleteVolume(
    const csipb::DeleteVolumeRequest& request) {
  RETURN_IF_ERROR(CheckRequestSize(request));
  if (request.volume_id().empty()) {
    return absl::InvalidArgumentError("DeleteVolume: volume_id is required");
  }
  // An id of another form never named a sealvol volume: already gone.
  if (!IsWellFormedVolumeId(request.volume_id())) return absl::OkStatus();
  MutexLock lock(&mutex_);
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
  std::sort(records.begin(), records.end(),
            [](const auto& a, const auto& b) {
              return a.volume_id < b.volume_id;
            });
  const size_t max = request.max_entries() > 0
                         ? static_cast<size_t>(request.max_entries())
                         : records.size();
  size_t listed = 0;
  for (const auto& record : records) {
    if (!token.empty() && record.volume_id < token) continue;
    if (listed == max) {
      response->set_next_token(record.volume_id);
      break;
    }
    FillVolume(record, response->add_entries()->mutable_volume());
    ++listed;
  }
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
  for (auto type : {csipb::ControllerServiceCapability::RPC::CREATE_DELETE_VOLUME,
                    csipb::ControllerServiceCapability::RPC::LIST_VOLUMES,
                    csipb::ControllerServiceCapability::RPC::EXPAND_VOLUME}) {
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
