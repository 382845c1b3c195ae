#include "csi/node_service.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <utility>
#include <vector>

#include "base/grpc_status.h"
#include "base/injected_fault.h"
#include "base/status_macros.h"
#include "base/unique_fd.h"
#include "base/volume_id.h"
#include "csi/capabilities.h"
#include "csi/controller_service.h"
#include "csi/filesystem.h"
#include "csi/mounter.h"
#include "csi/request_limits.h"
#include "spdlog/spdlog.h"

namespace sealvol::csi {

NodeService::NodeService(NodeOptions options, VolumeKeySource* keys,
                         DataPath* data_path)
    : options_(std::move(options)),
      kubelet_(options_.kubelet_dir),
      stages_(options_.state_dir),
      keys_(keys),
      data_path_(data_path) {}

absl::StatusOr<int> NodeService::Recover() {
  RETURN_IF_ERROR(stages_.CreateRoot());
  ASSIGN_OR_RETURN(std::vector<std::string> ids, stages_.VolumeIds());
  int staged = 0;
  for (const auto& id : ids) {
    const std::string fuse_dir = stages_.WorkDir(id);
    auto record = stages_.Load(id);
    if (!record.ok()) {
      // Not staged: an image kept for later. A process killed in the middle
      // of an unstage may still have left its FUSE mount.
      if (data_path_->Device(id).ok()) continue;
      ASSIGN_OR_RETURN(bool stale, data_path_->StaleAt(fuse_dir));
      if (stale) {
        spdlog::warn("recover: volume {}: clearing a dead FUSE mount", id);
        RETURN_IF_ERROR(data_path_->ClearStale(fuse_dir));
      }
      continue;
    }
    ++staged;
    if (data_path_->Health(id).ok()) {
      spdlog::info("recover: volume {} staged and still served", id);
      continue;
    }
    // The data path died with the previous process (also in the middle of
    // a publish or an unstage): its mounts now return errors. Abort its FUSE
    // connection first, so that nothing below waits on the dead server, then
    // detach the mounts, the loop device and the FUSE mount so nothing leaks;
    // the next publish re-attests and brings the volume back. Targets are
    // recorded before they are mounted, so every one is known here.
    RETURN_IF_ERROR(data_path_->AbortStale(fuse_dir));
    for (const auto& [target, ro] : record->targets) {
      (void)ro;
      RETURN_IF_ERROR(DetachMountIfMounted(target));
    }
    if (!record->block) RETURN_IF_ERROR(DetachMountIfMounted(record->staging_path));
    RETURN_IF_ERROR(data_path_->Detach(id));
    RETURN_IF_ERROR(data_path_->ClearStale(fuse_dir));
    record->targets.clear();
    record->device.clear();
    RETURN_IF_ERROR(stages_.Save(*record));
    MutexLock lock(&mutex_);
    lost_[id] =
        "data path lost when the node plugin restarted; the next publish "
        "re-attests and reattaches it";
    spdlog::warn("recover: volume {}: {}", id, lost_[id]);
  }
  return staged;
}

absl::StatusOr<int> NodeService::ReapDeletedVolumes() {
  ASSIGN_OR_RETURN(std::vector<std::string> ids, stages_.VolumeIds());
  std::vector<std::string> unstaged;
  for (const std::string& id : ids) {
    if (absl::IsNotFound(stages_.Load(id).status())) unstaged.push_back(id);
  }
  if (unstaged.empty()) return 0;
  auto exists = keys_->VolumesExist(unstaged, options_.node_id);
  if (!exists.ok()) {
    return absl::UnavailableError(
        "reap: cannot ask the key broker which volumes still exist, keeping "
        "every image: " + std::string(exists.status().message()));
  }
  int removed = 0;
  for (const std::string& id : unstaged) {
    auto it = exists->find(id);
    if (it == exists->end() || it->second) continue;  // Exists, or unknown.
    // Deleted at the controller. Volume ids are never reused, so that answer
    // cannot become stale; what can change is this node's own state, which
    // is decided again under the volume's lock.
    VolumeLock lock(&locks_, id);
    if (!lock.status().ok()) continue;  // A CSI call is running: next pass.
    absl::Status status = RemoveDeletedVolume(id);
    if (!status.ok()) {
      spdlog::warn("reap: volume {}: {}", id, std::string(status.message()));
      continue;
    }
    ++removed;
  }
  return removed;
}

absl::Status NodeService::RemoveDeletedVolume(const std::string& id) {
  auto record = stages_.Load(id);
  if (!absl::IsNotFound(record.status())) {
    return absl::FailedPreconditionError(
        "volume " + id + " is staged (or its stage record is unreadable); kept");
  }
  if (!absl::IsNotFound(data_path_->Device(id).status())) {
    return absl::FailedPreconditionError("volume " + id +
                                         " is attached to the data path; kept");
  }
  const std::string work_dir = stages_.WorkDir(id);
  ASSIGN_OR_RETURN(bool stale, data_path_->StaleAt(work_dir));
  if (stale) {
    return absl::FailedPreconditionError("volume " + id + " still has " +
                                         work_dir + " mounted; kept");
  }
  ASSIGN_OR_RETURN(int64_t freed, stages_.RemoveVolume(id));
  spdlog::info("reap: volume {} was deleted at the controller; removed its "
               "{}directory ({} bytes freed)",
               id, freed >= 0 ? "image and " : "", freed >= 0 ? freed : 0);
  return absl::OkStatus();
}

absl::Status NodeService::Stage(const csipb::NodeStageVolumeRequest& request) {
  RETURN_IF_ERROR(CheckRequestSize(request));
  const std::string& id = request.volume_id();
  if (id.empty()) {
    return absl::InvalidArgumentError("NodeStageVolume: volume_id is required");
  }
  if (request.staging_target_path().empty()) {
    return absl::InvalidArgumentError("NodeStageVolume " + id +
                                      ": staging_target_path is required");
  }
  if (!request.has_volume_capability()) {
    return absl::InvalidArgumentError("NodeStageVolume " + id +
                                      ": volume_capability is required");
  }
  RETURN_IF_ERROR(CheckVolumeCapability(request.volume_capability()));
  if (!IsWellFormedVolumeId(id)) {
    return absl::NotFoundError("volume " + id + " is not a sealvol volume");
  }
  RETURN_IF_ERROR(kubelet_.Check(request.staging_target_path(),
                                 "NodeStageVolume: staging_target_path"));
  VolumeLock lock(&locks_, id);
  RETURN_IF_ERROR(lock.status());

  const bool block = request.volume_capability().has_block();
  auto existing = stages_.Load(id);
  if (existing.ok()) {
    if (existing->staging_path != request.staging_target_path() ||
        existing->block != block) {
      return absl::AlreadyExistsError(
          "volume " + id + " is already staged at " + existing->staging_path +
          (existing->block ? " as a block device" : " as a filesystem"));
    }
    return absl::OkStatus();
  }
  if (!absl::IsNotFound(existing.status())) return existing.status();

  StageRecord record;
  record.volume_id = id;
  record.staging_path = request.staging_target_path();
  record.block = block;
  const auto& context = request.volume_context();
  record.fs_type = FsTypeOf(request.volume_capability(), "");
  if (record.fs_type.empty()) {
    auto it = context.find(kContextFsType);
    record.fs_type = it != context.end() && !it->second.empty()
                         ? it->second
                         : std::string(kDefaultFsType);
  }
  if (request.volume_capability().has_mount()) {
    for (const auto& flag : request.volume_capability().mount().mount_flags()) {
      record.mount_flags.push_back(flag);
    }
  }
  // What mount would refuse only after the key was released is refused now.
  if (!block && !IsSupportedFsType(record.fs_type)) {
    return absl::InvalidArgumentError(
        "NodeStageVolume " + id + ": fs_type \"" + record.fs_type.substr(0, 64) +
        "\" is not supported (ext4, xfs)");
  }
  if (absl::Status flags = ParseMountFlags(record.mount_flags).status(); !flags.ok()) {
    return absl::InvalidArgumentError("NodeStageVolume " + id + ": " +
                                      std::string(flags.message()));
  }
  auto size = context.find(kContextCapacity);
  if (size == context.end() ||
      (record.size_bytes = std::strtoull(size->second.c_str(), nullptr, 10)) == 0 ||
      record.size_bytes % 4096 != 0) {
    return absl::InvalidArgumentError(
        "NodeStageVolume " + id + ": volume context lacks a valid " +
        kContextCapacity + " (was the volume created by sealvol?)");
  }
  RETURN_IF_ERROR(stages_.CreateVolumeDir(id));
  RETURN_IF_ERROR(stages_.Save(record));
  spdlog::info("NodeStageVolume {}: staged at {} ({}, {} bytes)", id,
               record.staging_path, block ? "block" : record.fs_type,
               record.size_bytes);
  return absl::OkStatus();
}

absl::Status NodeService::EnsureAttached(StageRecord& record,
                                         const broker::ReleasedVolumeKey& key) {
  const std::string& id = record.volume_id;
  auto device = data_path_->Device(id);
  if (device.ok()) {
    absl::Status health = data_path_->Health(id);
    if (!health.ok()) {
      return absl::UnavailableError("volume " + id + ": data path failed: " +
                                    std::string(health.message()));
    }
  } else {
    if (!absl::IsNotFound(device.status())) return device.status();
    // A mount left by a data path that died (node plugin restart) must go
    // before the volume is served again.
    if (!record.block) RETURN_IF_ERROR(DetachMountIfMounted(record.staging_path));
    const std::string work_dir = stages_.WorkDir(id);
    ASSIGN_OR_RETURN(bool stale, data_path_->StaleAt(work_dir));
    if (stale) RETURN_IF_ERROR(data_path_->ClearStale(work_dir));
    AttachOptions attach;
    attach.volume_id = id;
    attach.image_path = stages_.ImagePath(id);
    attach.work_dir = work_dir;
    attach.size_bytes = record.size_bytes;
    attach.registry_format_id = key.format_id;
    attach.claim_format = [this, id](
                              const std::string& format_id,
                              const std::optional<io::VolumeState>& first) {
      std::optional<kms::CommittedState> state;
      if (first.has_value()) state = ToCommittedState(*first);
      return keys_->ClaimFormat(id, options_.node_id, format_id, state);
    };
    if (key.expected_state.has_value()) {
      auto expected = ToVolumeState(*key.expected_state);
      if (!expected.ok()) return expected.status();
      attach.min_epoch = expected->epoch;
      if (!key.rollback_accepted) attach.expected_state = *expected;
    }
    attach.rollback_accepted = key.rollback_accepted;
    // Called again at Detach, possibly from the data path's destructor:
    // bound to the key source and node id, not to this service.
    attach.commit_state = [keys = keys_, node = options_.node_id, id](
                              const io::VolumeState& state, bool accept_rollback) {
      return keys->CommitState(id, node, ToCommittedState(state), accept_rollback);
    };
    attach.report_rollback = [keys = keys_, node = options_.node_id,
                              id](const std::string& detail) {
      return keys->ReportRollback(id, node, detail);
    };
    device = data_path_->Attach(attach, key.dek);
    if (!device.ok()) return device.status();
    MutexLock lock(&mutex_);
    lost_.erase(id);
  }
  record.device = *device;
  if (record.block) return absl::OkStatus();

  ASSIGN_OR_RETURN(std::string source, MountSource(record.staging_path));
  if (source == record.device) return absl::OkStatus();
  if (!source.empty()) {
    return absl::FailedPreconditionError("staging path " + record.staging_path +
                                         " already has " + source +
                                         " mounted on it");
  }
  auto formatted = EnsureFilesystem(record.device, record.fs_type);
  if (!formatted.ok()) {
    return absl::Status(formatted.status().code(),
                        "volume " + id + ": " +
                            std::string(formatted.status().message()));
  }
  if (*formatted) {
    spdlog::info("volume {}: created {} on {}", id, record.fs_type, record.device);
  } else if (record.fs_type == "ext4") {
    // A restore asked larger than its snapshot: the file system fills only
    // the snapshot's size. ext4 grows offline here (xfs online, below).
    if (absl::StatusOr<bool> grown = GrowUnmountedExt4(record.device);
        !grown.ok()) {
      return absl::Status(grown.status().code(),
                          "volume " + id + ": " +
                              std::string(grown.status().message()));
    }
  }
  // Mounted on the directory as resolved (no link followed), not on
  // whatever the path names by the time mount(2) looks it up.
  ASSIGN_OR_RETURN(UniqueFd staging,
                   kubelet_.MakeDirs(record.staging_path, 0750, "staging path"));
  const std::string staging_fd = "/proc/self/fd/" + std::to_string(staging.get());
  if (absl::Status mounted =
          MountFilesystem(record.device, staging_fd, record.fs_type,
                          record.mount_flags, /*read_only=*/false);
      !mounted.ok()) {
    return absl::Status(mounted.code(), "mount on " + record.staging_path +
                                            ": " + std::string(mounted.message()));
  }
  if (!*formatted && record.fs_type == "xfs") {
    // xfs grows only mounted; a no-op when it fills its device already.
    if (absl::Status grown = GrowFilesystem(record.device, staging_fd, "xfs");
        !grown.ok()) {
      return absl::Status(grown.code(), "volume " + id + ": " +
                                            std::string(grown.message()));
    }
  }
  InjectedCrash("mount");
  return absl::OkStatus();
}

absl::Status NodeService::Publish(
    const csipb::NodePublishVolumeRequest& request) {
  RETURN_IF_ERROR(CheckRequestSize(request));
  const std::string& id = request.volume_id();
  const std::string& target = request.target_path();
  if (id.empty()) {
    return absl::InvalidArgumentError("NodePublishVolume: volume_id is required");
  }
  if (target.empty()) {
    return absl::InvalidArgumentError("NodePublishVolume " + id +
                                      ": target_path is required");
  }
  if (!request.has_volume_capability()) {
    return absl::InvalidArgumentError("NodePublishVolume " + id +
                                      ": volume_capability is required");
  }
  if (request.staging_target_path().empty()) {
    return absl::InvalidArgumentError("NodePublishVolume " + id +
                                      ": staging_target_path is required");
  }
  RETURN_IF_ERROR(CheckVolumeCapability(request.volume_capability()));
  if (request.volume_capability().has_mount()) {
    std::vector<std::string> flags(
        request.volume_capability().mount().mount_flags().begin(),
        request.volume_capability().mount().mount_flags().end());
    if (absl::Status parsed = ParseMountFlags(flags).status(); !parsed.ok()) {
      return absl::InvalidArgumentError("NodePublishVolume " + id + ": " +
                                        std::string(parsed.message()));
    }
  }
  if (!IsWellFormedVolumeId(id)) {
    return absl::NotFoundError("volume " + id + " is not a sealvol volume");
  }
  RETURN_IF_ERROR(kubelet_.Check(target, "NodePublishVolume: target_path"));
  RETURN_IF_ERROR(kubelet_.Check(request.staging_target_path(),
                                 "NodePublishVolume: staging_target_path"));
  {
    // Neither path may hold the other: a bind of the staging mount onto or
    // into itself.
    const std::string& staging = request.staging_target_path();
    auto beneath = [](const std::string& a, const std::string& b) {
      return a == b || (a.size() > b.size() && a.compare(0, b.size(), b) == 0 &&
                        a[b.size()] == '/');
    };
    if (beneath(target, staging) || beneath(staging, target)) {
      return absl::InvalidArgumentError(
          "NodePublishVolume " + id + ": target_path " + target +
          " and staging_target_path " + staging + " overlap");
    }
  }
  VolumeLock lock(&locks_, id);
  RETURN_IF_ERROR(lock.status());

  auto record = stages_.Load(id);
  if (absl::IsNotFound(record.status())) {
    return absl::FailedPreconditionError("volume " + id + " is not staged");
  }
  if (!record.ok()) return record.status();
  if (record->staging_path != request.staging_target_path()) {
    return absl::FailedPreconditionError(
        "volume " + id + " is staged at " + record->staging_path + ", not " +
        request.staging_target_path());
  }
  if (record->block != request.volume_capability().has_block()) {
    return absl::InvalidArgumentError(
        "volume " + id + " was staged as " +
        (record->block ? "a block device" : "a filesystem"));
  }
  if (!record->block && (!IsSupportedFsType(record->fs_type) ||
                         !ParseMountFlags(record->mount_flags).ok())) {
    // A record of an older node version that staged anything it was given.
    return absl::FailedPreconditionError(
        "volume " + id + " was staged with an unsupported fs_type or mount "
        "flag; unstage and stage it again");
  }

  // Every publish attests, also when the volume is already open here: the
  // pod proves its own identity, not the first pod's.
  ASSIGN_OR_RETURN(PodAttestation attestation,
                   PodAttestationFrom(request.volume_context(), request.secrets(),
                                      record->block ? TokenRule::kAbsentForBlock
                                                    : TokenRule::kRequired));
  {
    ASSIGN_OR_RETURN(broker::ReleasedVolumeKey key,
                     keys_->ReleaseKey(id, options_.node_id, attestation.token,
                                       attestation.pod));
    InjectedCrash("key");
    absl::Status attached = EnsureAttached(*record, key);
    key.dek.Wipe();
    RETURN_IF_ERROR(attached);
  }

  const bool read_only = request.readonly() ||
                         request.volume_capability().access_mode().mode() ==
                             csipb::VolumeCapability::AccessMode::SINGLE_NODE_READER_ONLY;
  ASSIGN_OR_RETURN(bool mounted, IsMountPoint(target));
  if (mounted) {
    auto it = record->targets.find(target);
    if (it != record->targets.end() && it->second == read_only) {
      return stages_.Save(*record);  // Already published the same way.
    }
    return absl::AlreadyExistsError("target " + target +
                                    " is already mounted differently");
  }
  const std::string source =
      record->block ? record->device : record->staging_path;
  constexpr char kField[] = "NodePublishVolume: target_path";
  auto target_fd = record->block ? kubelet_.MakeFile(target, kField)
                                 : kubelet_.MakeDirs(target, 0750, kField);
  if (!target_fd.ok()) return target_fd.status();
  // Recorded before it is mounted: a node killed between the two finds the
  // target in the record on restart and clears it (Recover).
  record->targets[target] = read_only;
  RETURN_IF_ERROR(stages_.Save(*record));
  if (absl::Status bound = BindMountAt(source, target_fd->get(), target, read_only);
      !bound.ok()) {
    record->targets.erase(target);
    stages_.Save(*record).IgnoreError();  // A stale entry is harmless.
    return bound;
  }
  InjectedCrash("bind");
  spdlog::info("NodePublishVolume {}: published at {}{} for pod {}/{}", id,
               target, read_only ? " (read-only)" : "",
               attestation.pod.namespace_name, attestation.pod.name);
  return absl::OkStatus();
}

absl::Status NodeService::Unpublish(
    const csipb::NodeUnpublishVolumeRequest& request) {
  RETURN_IF_ERROR(CheckRequestSize(request));
  const std::string& id = request.volume_id();
  const std::string& target = request.target_path();
  if (id.empty()) {
    return absl::InvalidArgumentError("NodeUnpublishVolume: volume_id is required");
  }
  if (target.empty()) {
    return absl::InvalidArgumentError("NodeUnpublishVolume " + id +
                                      ": target_path is required");
  }
  if (!IsWellFormedVolumeId(id)) {
    return absl::NotFoundError("volume " + id + " is not a sealvol volume");
  }
  RETURN_IF_ERROR(kubelet_.Check(target, "NodeUnpublishVolume: target_path"));
  VolumeLock lock(&locks_, id);
  RETURN_IF_ERROR(lock.status());
  // Only what this node published for this volume at this path is undone;
  // a path the record does not hold is not ours to unmount or delete.
  auto record = stages_.Load(id);
  if (absl::IsNotFound(record.status()) ||
      (record.ok() && record->targets.count(target) == 0)) {
    spdlog::info("NodeUnpublishVolume {}: not published at {}; nothing to do",
                 id, target);
    return absl::OkStatus();
  }
  if (!record.ok()) return record.status();
  RETURN_IF_ERROR(UnmountIfMounted(target));
  InjectedCrash("target-unmount");
  RETURN_IF_ERROR(kubelet_.Remove(target, "NodeUnpublishVolume: target_path"));
  record->targets.erase(target);
  RETURN_IF_ERROR(stages_.Save(*record));
  spdlog::info("NodeUnpublishVolume {}: {} unpublished", id, target);
  return absl::OkStatus();
}

absl::Status NodeService::Unstage(
    const csipb::NodeUnstageVolumeRequest& request) {
  RETURN_IF_ERROR(CheckRequestSize(request));
  const std::string& id = request.volume_id();
  if (id.empty()) {
    return absl::InvalidArgumentError("NodeUnstageVolume: volume_id is required");
  }
  if (request.staging_target_path().empty()) {
    return absl::InvalidArgumentError("NodeUnstageVolume " + id +
                                      ": staging_target_path is required");
  }
  if (!IsWellFormedVolumeId(id)) return absl::OkStatus();
  RETURN_IF_ERROR(kubelet_.Check(request.staging_target_path(),
                                 "NodeUnstageVolume: staging_target_path"));
  VolumeLock lock(&locks_, id);
  RETURN_IF_ERROR(lock.status());
  auto record = stages_.Load(id);
  if (absl::IsNotFound(record.status())) return absl::OkStatus();
  if (!record.ok()) return record.status();
  if (record->staging_path != request.staging_target_path()) {
    // Not staged there: nothing at that path is this volume's to unmount.
    return absl::NotFoundError("volume " + id + " is staged at " +
                               record->staging_path + ", not at " +
                               request.staging_target_path());
  }
  for (const auto& [target, ro] : record->targets) {
    (void)ro;
    ASSIGN_OR_RETURN(bool mounted, IsMountPoint(target));
    if (mounted) {
      return absl::FailedPreconditionError("volume " + id +
                                           " is still published at " + target);
    }
  }
  if (!record->block) RETURN_IF_ERROR(UnmountIfMounted(record->staging_path));
  InjectedCrash("staging-unmount");
  // Closing the engine flushes, marks the image clean and zeroizes the key.
  RETURN_IF_ERROR(data_path_->Detach(id));
  RETURN_IF_ERROR(stages_.Remove(id));
  {
    MutexLock l(&mutex_);
    lost_.erase(id);
  }
  spdlog::info("NodeUnstageVolume {}: closed, key wiped", id);
  return absl::OkStatus();
}

absl::Status NodeService::Stats(const csipb::NodeGetVolumeStatsRequest& request,
                                csipb::NodeGetVolumeStatsResponse* response) {
  RETURN_IF_ERROR(CheckRequestSize(request));
  const std::string& id = request.volume_id();
  const std::string& path = request.volume_path();
  if (id.empty()) {
    return absl::InvalidArgumentError("NodeGetVolumeStats: volume_id is required");
  }
  if (path.empty()) {
    return absl::InvalidArgumentError("NodeGetVolumeStats " + id +
                                      ": volume_path is required");
  }
  if (!IsWellFormedVolumeId(id)) {
    return absl::NotFoundError("volume " + id + " is not a sealvol volume");
  }
  ASSIGN_OR_RETURN(StageRecord record, stages_.Load(id));
  const bool known_path = path == record.staging_path || record.targets.count(path);
  if (!known_path) {
    return absl::NotFoundError("volume " + id + " is not published at " + path);
  }

  std::string problem;
  {
    MutexLock lock(&mutex_);
    if (auto it = lost_.find(id); it != lost_.end()) problem = it->second;
  }
  if (problem.empty()) {
    absl::Status health = data_path_->Health(id);
    if (absl::IsNotFound(health)) {
      problem = "volume is staged but not served (no publish yet)";
    } else if (!health.ok()) {
      problem = std::string(health.message());
    }
  }
  auto* condition = response->mutable_volume_condition();
  condition->set_abnormal(!problem.empty());
  condition->set_message(problem.empty() ? "volume is served normally" : problem);
  if (!problem.empty()) return absl::OkStatus();

  using Usage = csipb::VolumeUsage;
  if (record.block) {
    ASSIGN_OR_RETURN(uint64_t size, BlockDeviceSize(record.device));
    auto* bytes = response->add_usage();
    bytes->set_unit(Usage::BYTES);
    bytes->set_total(static_cast<int64_t>(size));
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(FilesystemUsage usage, UsageOf(path));
  auto* bytes = response->add_usage();
  bytes->set_unit(Usage::BYTES);
  bytes->set_total(static_cast<int64_t>(usage.total_bytes));
  bytes->set_available(static_cast<int64_t>(usage.available_bytes));
  bytes->set_used(static_cast<int64_t>(usage.used_bytes));
  auto* inodes = response->add_usage();
  inodes->set_unit(Usage::INODES);
  inodes->set_total(static_cast<int64_t>(usage.total_inodes));
  inodes->set_available(static_cast<int64_t>(usage.free_inodes));
  inodes->set_used(static_cast<int64_t>(usage.used_inodes));
  return absl::OkStatus();
}

absl::Status NodeService::Expand(const csipb::NodeExpandVolumeRequest& request,
                                 csipb::NodeExpandVolumeResponse* response) {
  RETURN_IF_ERROR(CheckRequestSize(request));
  const std::string& id = request.volume_id();
  const std::string& path = request.volume_path();
  if (id.empty()) {
    return absl::InvalidArgumentError("NodeExpandVolume: volume_id is required");
  }
  if (path.empty()) {
    return absl::InvalidArgumentError("NodeExpandVolume " + id +
                                      ": volume_path is required");
  }
  if (request.has_volume_capability()) {
    RETURN_IF_ERROR(CheckVolumeCapability(request.volume_capability()));
  }
  if (!IsWellFormedVolumeId(id)) {
    return absl::NotFoundError("volume " + id + " is not a sealvol volume");
  }
  VolumeLock lock(&locks_, id);
  RETURN_IF_ERROR(lock.status());
  ASSIGN_OR_RETURN(StageRecord record, stages_.Load(id));
  if (path != record.staging_path && !record.targets.count(path)) {
    return absl::NotFoundError("volume " + id + " is not published at " + path);
  }
  ASSIGN_OR_RETURN(uint64_t wanted,
                   CapacityForRange(request.has_capacity_range()
                                        ? &request.capacity_range()
                                        : nullptr,
                                    record.size_bytes, ControllerOptions{}.max_capacity_bytes));
  const bool attached = data_path_->Device(id).ok();
  if (wanted > record.size_bytes && attached) {
    // Engine first (no data moves), then the loop device sees the new size,
    // then the filesystem grows into it, online.
    RETURN_IF_ERROR(data_path_->Grow(id, wanted));
  }
  if (wanted > record.size_bytes) {
    record.size_bytes = wanted;
    RETURN_IF_ERROR(stages_.Save(record));
  }
  if (attached && !record.block) {
    RETURN_IF_ERROR(GrowFilesystem(record.device, record.staging_path, record.fs_type));
  }
  spdlog::info("NodeExpandVolume {}: {} bytes{}", id, record.size_bytes,
               attached ? "" : " (applied at the next attach)");
  response->set_capacity_bytes(static_cast<int64_t>(record.size_bytes));
  return absl::OkStatus();
}

grpc::Status NodeService::NodeStageVolume(
    grpc::ServerContext*, const csipb::NodeStageVolumeRequest* request,
    csipb::NodeStageVolumeResponse*) {
  return ToGrpcStatus(Stage(*request));
}

grpc::Status NodeService::NodeUnstageVolume(
    grpc::ServerContext*, const csipb::NodeUnstageVolumeRequest* request,
    csipb::NodeUnstageVolumeResponse*) {
  return ToGrpcStatus(Unstage(*request));
}

grpc::Status NodeService::NodePublishVolume(
    grpc::ServerContext*, const csipb::NodePublishVolumeRequest* request,
    csipb::NodePublishVolumeResponse*) {
  absl::Status status = Publish(*request);
  if (!status.ok()) {
    spdlog::warn("NodePublishVolume {}: {}", request->volume_id(),
                 std::string(status.message()));
  }
  return ToGrpcStatus(status);
}

grpc::Status NodeService::NodeUnpublishVolume(
    grpc::ServerContext*, const csipb::NodeUnpublishVolumeRequest* request,
    csipb::NodeUnpublishVolumeResponse*) {
  return ToGrpcStatus(Unpublish(*request));
}

grpc::Status NodeService::NodeGetVolumeStats(
    grpc::ServerContext*, const csipb::NodeGetVolumeStatsRequest* request,
    csipb::NodeGetVolumeStatsResponse* response) {
  return ToGrpcStatus(Stats(*request, response));
}

grpc::Status NodeService::NodeExpandVolume(
    grpc::ServerContext*, const csipb::NodeExpandVolumeRequest* request,
    csipb::NodeExpandVolumeResponse* response) {
  return ToGrpcStatus(Expand(*request, response));
}

grpc::Status NodeService::NodeGetCapabilities(
    grpc::ServerContext*, const csipb::NodeGetCapabilitiesRequest*,
    csipb::NodeGetCapabilitiesResponse* response) {
  using Rpc = csipb::NodeServiceCapability::RPC;
  for (auto type : {Rpc::STAGE_UNSTAGE_VOLUME, Rpc::GET_VOLUME_STATS,
                    Rpc::EXPAND_VOLUME, Rpc::VOLUME_CONDITION}) {
    response->add_capabilities()->mutable_rpc()->set_type(type);
  }
  return grpc::Status::OK;
}

grpc::Status NodeService::NodeGetInfo(grpc::ServerContext*,
                                      const csipb::NodeGetInfoRequest*,
                                      csipb::NodeGetInfoResponse* response) {
  response->set_node_id(options_.node_id);
  (*response->mutable_accessible_topology()->mutable_segments())[kTopologyKey] =
      options_.node_id;
  return grpc::Status::OK;
}

}  // namespace sealvol::csi
