// The Controller service's snapshot RPCs: CreateSnapshot, DeleteSnapshot and
// ListSnapshots (docs/csi.md, "Snapshots and clones"). A snapshot is a
// registry record of its own, with a fresh DEK; the node that holds the
// source cuts and copies it, and reports through the KeyBroker.
#include <algorithm>
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/grpc_status.h"
#include "base/status_macros.h"
#include "base/volume_id.h"
#include "csi/controller_records.h"
#include "csi/controller_service.h"
#include "csi/request_limits.h"
#include "spdlog/spdlog.h"

namespace sealvol::csi {

namespace {

constexpr char kKubernetesParamPrefix[] = "csi.storage.k8s.io/";

// The parameters a source volume's record passes on to its snapshot: what a
// volume restored from it must agree with, and its policy.
constexpr const char* kInheritedParams[] = {
    kParamTenant, kParamFsType, kParamAllowedServiceAccounts,
    kParamKmsKeyTemplate};

absl::Time DeadlineOf(const grpc::ServerContext* context) {
  if (context == nullptr) return absl::InfiniteFuture();
  const auto deadline = context->deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

grpc::Status NotEnabled(const char* rpc) {
  return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                      std::string(rpc) +
                          ": snapshots are not enabled on this controller "
                          "(sealvol controller --enable-snapshots)");
}

}  // namespace

absl::Status ControllerService::DoCreateSnapshot(
    const csipb::CreateSnapshotRequest& request, absl::Time deadline,
    csipb::CreateSnapshotResponse* response) {
  RETURN_IF_ERROR(CheckRequestSize(request));
  if (request.name().empty()) {
    return absl::InvalidArgumentError("CreateSnapshot: name is required");
  }
  if (request.source_volume_id().empty()) {
    return absl::InvalidArgumentError("CreateSnapshot " + request.name() +
                                      ": source_volume_id is required");
  }
  for (const auto& [key, value] : request.parameters()) {
    if (!absl::StartsWith(key, kKubernetesParamPrefix)) {
      return absl::InvalidArgumentError("CreateSnapshot " + request.name() +
                                        ": unknown parameter \"" + key + "\"");
    }
  }
  ASSIGN_OR_RETURN(const std::string snapshot_id, FindOrCreateSnapshot(request));
  return AwaitCut(snapshot_id, request.name(),
                  std::min(deadline, absl::Now() + options_.snapshot_cut_timeout),
                  response);
}

absl::StatusOr<std::string> ControllerService::FindOrCreateSnapshot(
    const csipb::CreateSnapshotRequest& request) {
  const std::string rpc = "CreateSnapshot " + request.name();
  const std::string& source_id = request.source_volume_id();
  MutexLock lock(&mutex_);
  ASSIGN_OR_RETURN(std::vector<kms::VolumeRecord> records,
                   keys_->ListVolumes(""));
  for (const kms::VolumeRecord& record : records) {
    if (record.kind != kms::RecordKind::kSnapshot ||
        record.name != request.name()) {
      continue;
    }
    if (record.source_volume_id != source_id) {
      return absl::AlreadyExistsError(
          rpc + ": snapshot " + record.volume_id +
          " already has this name with source volume " +
          record.source_volume_id);
    }
    return record.volume_id;
  }

  auto missing = [&] {
    return absl::NotFoundError(rpc + ": source volume " + source_id +
                               " does not exist");
  };
  if (!IsWellFormedVolumeId(source_id)) return missing();
  auto found = keys_->GetVolume(source_id);
  if (absl::IsNotFound(found.status())) return missing();
  RETURN_IF_ERROR(found.status());
  const kms::VolumeRecord& source = *found;
  if (source.kind != kms::RecordKind::kVolume) {
    return absl::NotFoundError(rpc + ": source volume " + source_id +
                               " does not exist (that id is a snapshot; "
                               "snapshots are taken of volumes)");
  }
  if (CopyInProgress(source.copy)) {
    return absl::UnavailableError(rpc + ": source volume " + source_id +
                                  " is still being copied (" +
                                  kms::DescribeCopy(source.copy) + ")");
  }
  if (source.copy.state == kms::CopyState::kFailed) {
    return absl::FailedPreconditionError(
        rpc + ": source volume " + source_id +
        " holds no data: its own copy failed (" + source.copy.error + ")");
  }

  kms::CreateVolumeKeyRequest create;
  create.volume_id = NewVolumeId();
  create.name = request.name();
  create.tenant = source.tenant;
  create.key_name_template = Param(source.parameters, kParamKmsKeyTemplate);
  create.capacity_bytes = source.capacity_bytes;
  for (const char* key : kInheritedParams) {
    if (auto it = source.parameters.find(key); it != source.parameters.end()) {
      create.parameters[key] = it->second;
    }
  }
  for (const auto& [key, value] : request.parameters()) {
    create.parameters[key] = value;  // volumesnapshot names: for audit.
  }
  create.kind = kms::RecordKind::kSnapshot;
  create.source_volume_id = source_id;
  if (source.format_id.empty()) {
    // Never formatted: an empty snapshot, complete now, no node work.
    create.initial_copy_state = kms::CopyState::kReady;
    create.node = source.node;
  } else {
    create.initial_copy_state = kms::CopyState::kPending;
    create.node = ImageNode(source);
    if (create.node.empty()) {
      return absl::FailedPreconditionError(
          rpc + ": source volume " + source_id +
          " has an image but no known node to cut it on");
    }
  }
  ASSIGN_OR_RETURN(kms::VolumeRecord record, CreateCopyRecord(create));
  spdlog::info("CreateSnapshot {}: created {} of volume {} for tenant {} "
               "({} bytes{}{}) under its own key; copy {}",
               request.name(), record.volume_id, source_id, record.tenant,
               record.capacity_bytes, record.node.empty() ? "" : ", node ",
               record.node, kms::CopyStateName(record.copy.state));
  return record.volume_id;
}

absl::Status ControllerService::AwaitCut(
    const std::string& snapshot_id, const std::string& name,
    absl::Time deadline, csipb::CreateSnapshotResponse* response) {
  const std::string rpc = "CreateSnapshot " + name;
  // CSI: CreateSnapshot returns once the snapshot is cut (the point in time
  // is fixed); ready_to_use stays false until the node has copied it.
  for (;;) {
    auto record = keys_->GetVolume(snapshot_id);
    if (absl::IsNotFound(record.status())) {
      return absl::AbortedError(rpc + ": snapshot " + snapshot_id +
                                " was deleted while it was being taken");
    }
    RETURN_IF_ERROR(record.status());
    switch (record->copy.state) {
      case kms::CopyState::kNone:
      case kms::CopyState::kCut:
      case kms::CopyState::kReady:
        FillSnapshot(*record, response->mutable_snapshot());
        return absl::OkStatus();
      case kms::CopyState::kFailed:
        if (record->copy.cut_unix == 0) {
          // Failed before its cut: no call returned it, so no one holds it.
          // Shred it; the sidecar's retry takes a new snapshot.
          MutexLock lock(&mutex_);
          absl::Status destroyed = keys_->DestroyVolumeKey(snapshot_id);
          if (!destroyed.ok() && !absl::IsNotFound(destroyed)) return destroyed;
          return absl::AbortedError(
              rpc + ": the node failed to cut volume " +
              record->source_volume_id + " (" + record->copy.error +
              "); snapshot " + snapshot_id +
              " was destroyed and the next retry takes a new one");
        }
        return absl::InternalError(
            rpc + ": snapshot " + snapshot_id + " of volume " +
            record->source_volume_id + " failed on node " + record->node +
            " after its cut (" + record->copy.error +
            "); delete it and take a new one");
      case kms::CopyState::kPending:
        break;
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          rpc + ": node " + record->node + " has not cut volume " +
          record->source_volume_id + " for snapshot " + snapshot_id +
          " yet (is the sealvol node plugin running there?); a retry waits "
          "for the same snapshot");
    }
    absl::SleepFor(std::min(options_.snapshot_poll_interval,
                            deadline - absl::Now()));
  }
}

absl::Status ControllerService::DoDeleteSnapshot(
    const csipb::DeleteSnapshotRequest& request) {
  RETURN_IF_ERROR(CheckRequestSize(request));
  const std::string& id = request.snapshot_id();
  if (id.empty()) {
    return absl::InvalidArgumentError("DeleteSnapshot: snapshot_id is required");
  }
  // An id of another form never named a sealvol snapshot: already gone.
  if (!IsWellFormedVolumeId(id)) return absl::OkStatus();
  MutexLock lock(&mutex_);
  auto record = keys_->GetVolume(id);
  if (absl::IsNotFound(record.status())) return absl::OkStatus();
  RETURN_IF_ERROR(record.status());
  if (record->kind != kms::RecordKind::kSnapshot) {
    // Not a snapshot: no snapshot of this id exists, and the volume stays.
    spdlog::warn("DeleteSnapshot {}: that id is a volume; nothing deleted "
                 "(DeleteVolume deletes volumes)",
                 id);
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(std::vector<kms::VolumeRecord> records,
                   keys_->ListVolumes(record->tenant));
  RETURN_IF_ERROR(CheckNotCopyingFrom(records, id, "DeleteSnapshot"));
  absl::Status status = keys_->DestroyVolumeKey(id);
  if (absl::IsNotFound(status)) return absl::OkStatus();
  RETURN_IF_ERROR(status);
  spdlog::info("DeleteSnapshot {}: key destroyed (crypto-shredded)", id);
  return absl::OkStatus();
}

absl::Status ControllerService::DoListSnapshots(
    const csipb::ListSnapshotsRequest& request,
    csipb::ListSnapshotsResponse* response) {
  RETURN_IF_ERROR(CheckRequestSize(request));
  if (request.max_entries() < 0) {
    return absl::InvalidArgumentError(
        "ListSnapshots: max_entries must not be negative");
  }
  // As in ListVolumes: the token is the id of the next snapshot to return.
  const std::string& token = request.starting_token();
  if (!token.empty() && !IsWellFormedVolumeId(token)) {
    return absl::AbortedError("ListSnapshots: starting_token \"" + token +
                              "\" was not issued by this plugin");
  }
  std::vector<kms::VolumeRecord> records;
  if (!request.snapshot_id().empty()) {
    // One snapshot; an unknown one (or another plugin's id) lists nothing.
    if (!IsWellFormedVolumeId(request.snapshot_id())) return absl::OkStatus();
    auto record = keys_->GetVolume(request.snapshot_id());
    if (absl::IsNotFound(record.status())) return absl::OkStatus();
    RETURN_IF_ERROR(record.status());
    records.push_back(std::move(*record));
  } else {
    ASSIGN_OR_RETURN(records, keys_->ListVolumes(""));
  }
  const std::string& source = request.source_volume_id();
  std::erase_if(records, [&](const kms::VolumeRecord& r) {
    return !IsListableSnapshot(r) ||
           (!source.empty() && r.source_volume_id != source);
  });
  response->set_next_token(FillPage(
      std::move(records), token, request.max_entries(),
      [response](const kms::VolumeRecord& record) {
        FillSnapshot(record, response->add_entries()->mutable_snapshot());
      }));
  return absl::OkStatus();
}

grpc::Status ControllerService::CreateSnapshot(
    grpc::ServerContext* context, const csipb::CreateSnapshotRequest* request,
    csipb::CreateSnapshotResponse* response) {
  if (!options_.snapshots) return NotEnabled("CreateSnapshot");
  return ToGrpcStatus(DoCreateSnapshot(*request, DeadlineOf(context), response));
}

grpc::Status ControllerService::DeleteSnapshot(
    grpc::ServerContext*, const csipb::DeleteSnapshotRequest* request,
    csipb::DeleteSnapshotResponse*) {
  if (!options_.snapshots) return NotEnabled("DeleteSnapshot");
  return ToGrpcStatus(DoDeleteSnapshot(*request));
}

grpc::Status ControllerService::ListSnapshots(
    grpc::ServerContext*, const csipb::ListSnapshotsRequest* request,
    csipb::ListSnapshotsResponse* response) {
  if (!options_.snapshots) return NotEnabled("ListSnapshots");
  return ToGrpcStatus(DoListSnapshots(*request, response));
}

}  // namespace sealvol::csi
