#include "cmd/csi_client_command.h"

#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/durable_file.h"
#include "base/grpc_status.h"
#include "base/status_macros.h"
#include "cmd/exit_codes.h"
#include "cmd/service_process.h"
#include "csi/capabilities.h"
#include "csi/controller_service.h"
#include "csi/node_service.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "proto/csi.grpc.pb.h"
#include "spdlog/spdlog.h"

namespace sealvol::cmd {

namespace {

namespace csipb = ::csi::v1;

int Fail(const std::string& what, const absl::Status& status) {
  return FailService(what, status);
}

absl::StatusOr<uint64_t> ParseSize(const std::string& text) {
  static const std::map<std::string, uint64_t> kUnits = {
      {"", 1},          {"Ki", 1ull << 10}, {"Mi", 1ull << 20},
      {"Gi", 1ull << 30}, {"Ti", 1ull << 40}, {"K", 1000},
      {"M", 1000000},   {"G", 1000000000}};
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) {
    ++digits;
  }
  auto unit = kUnits.find(text.substr(digits));
  if (digits == 0 || unit == kUnits.end()) {
    return absl::InvalidArgumentError("size " + text +
                                      ": expected N, NKi, NMi, NGi or NTi");
  }
  return std::stoull(text.substr(0, digits)) * unit->second;
}

// A pod's service-account token (a JWT); trailing white space dropped.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path, 1 << 20));
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) {
    text.pop_back();
  }
  return text;
}

struct CsiFlags {
  std::string endpoint;
  std::string volume_id;
  std::string name;
  std::string size;
  std::string tenant;
  std::vector<std::string> params;
  std::vector<std::string> context;
  std::string fs_type;
  std::vector<std::string> mount_flags;
  bool block = false;
  bool read_only = false;
  std::string node;
  std::string staging_path;
  std::string target;
  std::string path;
  std::string pod;  // NAMESPACE/NAME
  std::string pod_uid;
  std::string service_account = "default";
  std::string token_file;
  int max_entries = 0;
  bool json = false;
  std::string source_volume_id;    // CreateSnapshot's source, a clone's source
  std::string source_snapshot_id;  // a restore's source
  std::string snapshot_id;         // DeleteSnapshot, ListSnapshots filter
};

csipb::VolumeCapability Capability(const CsiFlags& f) {
  csipb::VolumeCapability cap;
  if (f.block) {
    cap.mutable_block();
  } else {
    cap.mutable_mount()->set_fs_type(f.fs_type);
    for (const auto& flag : f.mount_flags) cap.mutable_mount()->add_mount_flags(flag);
  }
  cap.mutable_access_mode()->set_mode(
      f.read_only ? csipb::VolumeCapability::AccessMode::SINGLE_NODE_READER_ONLY
                  : csipb::VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
  return cap;
}

absl::Status AddPairs(const std::vector<std::string>& pairs,
                      google::protobuf::Map<std::string, std::string>* out) {
  for (const auto& pair : pairs) {
    auto eq = pair.find('=');
    if (eq == std::string::npos) {
      return absl::InvalidArgumentError(pair + ": expected KEY=VALUE");
    }
    (*out)[pair.substr(0, eq)] = pair.substr(eq + 1);
  }
  return absl::OkStatus();
}

// The volume context the controller gives a volume, rebuilt from flags so an
// operator can stage without a kubelet.
absl::Status FillNodeContext(const CsiFlags& f,
                             google::protobuf::Map<std::string, std::string>* ctx) {
  if (!f.size.empty()) {
    auto size = ParseSize(f.size);
    if (!size.ok()) return size.status();
    (*ctx)[csi::kContextCapacity] = std::to_string(*size);
  }
  if (!f.fs_type.empty()) (*ctx)[csi::kContextFsType] = f.fs_type;
  return AddPairs(f.context, ctx);
}

absl::Status RunCsiCall(const std::string& verb, const CsiFlags& f) {
  auto channel = grpc::CreateChannel(f.endpoint, grpc::InsecureChannelCredentials());
  auto controller = csipb::Controller::NewStub(channel);
  auto node = csipb::Node::NewStub(channel);
  auto identity = csipb::Identity::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(3));

  if (verb == "info") {
    csipb::GetPluginInfoResponse info;
    if (auto s = identity->GetPluginInfo(&ctx, {}, &info); !s.ok()) {
      return FromGrpcStatus(s);
    }
    grpc::ClientContext probe_ctx;
    csipb::ProbeResponse probe;
    if (auto s = identity->Probe(&probe_ctx, {}, &probe); !s.ok()) {
      return FromGrpcStatus(s);
    }
    std::printf("%s %s ready=%s\n", info.name().c_str(),
                info.vendor_version().c_str(),
                probe.ready().value() ? "true" : "false");
    return absl::OkStatus();
  }
  if (verb == "create") {
    csipb::CreateVolumeRequest req;
    req.set_name(f.name);
    *req.add_volume_capabilities() = Capability(f);
    if (!f.size.empty()) {
      auto size = ParseSize(f.size);
      if (!size.ok()) return size.status();
      req.mutable_capacity_range()->set_required_bytes(static_cast<int64_t>(*size));
    }
    if (!f.tenant.empty()) (*req.mutable_parameters())[csi::kParamTenant] = f.tenant;
    if (auto s = AddPairs(f.params, req.mutable_parameters()); !s.ok()) return s;
    if (!f.node.empty()) {
      (*req.mutable_accessibility_requirements()->add_preferred()
            ->mutable_segments())[csi::kTopologyKey] = f.node;
    }
    if (!f.source_snapshot_id.empty() && !f.source_volume_id.empty()) {
      return absl::InvalidArgumentError(
          "--from-snapshot and --from-volume: give one content source");
    }
    if (!f.source_snapshot_id.empty()) {
      req.mutable_volume_content_source()->mutable_snapshot()->set_snapshot_id(
          f.source_snapshot_id);
    }
    if (!f.source_volume_id.empty()) {
      req.mutable_volume_content_source()->mutable_volume()->set_volume_id(
          f.source_volume_id);
    }
    csipb::CreateVolumeResponse res;
    if (auto s = controller->CreateVolume(&ctx, req, &res); !s.ok()) {
      return FromGrpcStatus(s);
    }
    std::printf("%s\t%lld\n", res.volume().volume_id().c_str(),
                static_cast<long long>(res.volume().capacity_bytes()));
    return absl::OkStatus();
  }
  if (verb == "delete") {
    csipb::DeleteVolumeRequest req;
    req.set_volume_id(f.volume_id);
    csipb::DeleteVolumeResponse res;
    return FromGrpcStatus(controller->DeleteVolume(&ctx, req, &res));
  }
  if (verb == "list") {
    csipb::ListVolumesRequest req;
    req.set_max_entries(f.max_entries);
    csipb::ListVolumesResponse res;
    if (auto s = controller->ListVolumes(&ctx, req, &res); !s.ok()) {
      return FromGrpcStatus(s);
    }
    for (const auto& entry : res.entries()) {
      const auto& v = entry.volume();
      auto tenant = v.volume_context().find(csi::kContextTenant);
      std::printf("%s\t%lld\t%s\n", v.volume_id().c_str(),
                  static_cast<long long>(v.capacity_bytes()),
                  tenant == v.volume_context().end() ? "" : tenant->second.c_str());
    }
    if (!res.next_token().empty()) std::printf("next\t%s\n", res.next_token().c_str());
    return absl::OkStatus();
  }
  if (verb == "snapshot") {
    csipb::CreateSnapshotRequest req;
    req.set_name(f.name);
    req.set_source_volume_id(f.source_volume_id);
    if (auto s = AddPairs(f.params, req.mutable_parameters()); !s.ok()) return s;
    csipb::CreateSnapshotResponse res;
    if (auto s = controller->CreateSnapshot(&ctx, req, &res); !s.ok()) {
      return FromGrpcStatus(s);
    }
    std::printf("%s\t%lld\tready=%s\n", res.snapshot().snapshot_id().c_str(),
                static_cast<long long>(res.snapshot().size_bytes()),
                res.snapshot().ready_to_use() ? "true" : "false");
    return absl::OkStatus();
  }
  if (verb == "delete-snapshot") {
    csipb::DeleteSnapshotRequest req;
    req.set_snapshot_id(f.snapshot_id);
    csipb::DeleteSnapshotResponse res;
    return FromGrpcStatus(controller->DeleteSnapshot(&ctx, req, &res));
  }
  if (verb == "snapshots") {
    csipb::ListSnapshotsRequest req;
    req.set_max_entries(f.max_entries);
    req.set_source_volume_id(f.source_volume_id);
    req.set_snapshot_id(f.snapshot_id);
    csipb::ListSnapshotsResponse res;
    if (auto s = controller->ListSnapshots(&ctx, req, &res); !s.ok()) {
      return FromGrpcStatus(s);
    }
    for (const auto& entry : res.entries()) {
      const auto& snap = entry.snapshot();
      std::printf("%s\t%s\t%lld\tready=%s\n", snap.snapshot_id().c_str(),
                  snap.source_volume_id().c_str(),
                  static_cast<long long>(snap.size_bytes()),
                  snap.ready_to_use() ? "true" : "false");
    }
    if (!res.next_token().empty()) std::printf("next\t%s\n", res.next_token().c_str());
    return absl::OkStatus();
  }
  if (verb == "stage") {
    csipb::NodeStageVolumeRequest req;
    req.set_volume_id(f.volume_id);
    req.set_staging_target_path(f.staging_path);
    *req.mutable_volume_capability() = Capability(f);
    if (auto s = FillNodeContext(f, req.mutable_volume_context()); !s.ok()) return s;
    csipb::NodeStageVolumeResponse res;
    return FromGrpcStatus(node->NodeStageVolume(&ctx, req, &res));
  }
  if (verb == "publish") {
    csipb::NodePublishVolumeRequest req;
    req.set_volume_id(f.volume_id);
    req.set_staging_target_path(f.staging_path);
    req.set_target_path(f.target);
    req.set_readonly(f.read_only);
    *req.mutable_volume_capability() = Capability(f);
    auto& vctx = *req.mutable_volume_context();
    if (auto s = FillNodeContext(f, &vctx); !s.ok()) return s;
    // The pod identity and token, as the kubelet passes them with
    // podInfoOnMount and tokenRequests.
    std::vector<std::string> pod = absl::StrSplit(f.pod, '/');
    if (pod.size() != 2 || pod[0].empty() || pod[1].empty()) {
      return absl::InvalidArgumentError("--pod " + f.pod + ": expected NAMESPACE/NAME");
    }
    vctx[csi::kPodNamespace] = pod[0];
    vctx[csi::kPodName] = pod[1];
    vctx[csi::kPodUid] = f.pod_uid;
    vctx[csi::kPodServiceAccount] = f.service_account;
    auto token = ReadTokenFile(f.token_file);
    if (!token.ok()) return token.status();
    vctx[csi::kPodTokens] =
        nlohmann::json{{csi::kTokenAudience, {{"token", *token}}}}.dump();
    csipb::NodePublishVolumeResponse res;
    return FromGrpcStatus(node->NodePublishVolume(&ctx, req, &res));
  }
  if (verb == "unpublish") {
    csipb::NodeUnpublishVolumeRequest req;
    req.set_volume_id(f.volume_id);
    req.set_target_path(f.target);
    csipb::NodeUnpublishVolumeResponse res;
    return FromGrpcStatus(node->NodeUnpublishVolume(&ctx, req, &res));
  }
  if (verb == "unstage") {
    csipb::NodeUnstageVolumeRequest req;
    req.set_volume_id(f.volume_id);
    req.set_staging_target_path(f.staging_path);
    csipb::NodeUnstageVolumeResponse res;
    return FromGrpcStatus(node->NodeUnstageVolume(&ctx, req, &res));
  }
  if (verb == "stats") {
    csipb::NodeGetVolumeStatsRequest req;
    req.set_volume_id(f.volume_id);
    req.set_volume_path(f.path);
    csipb::NodeGetVolumeStatsResponse res;
    if (auto s = node->NodeGetVolumeStats(&ctx, req, &res); !s.ok()) {
      return FromGrpcStatus(s);
    }
    for (const auto& usage : res.usage()) {
      std::printf("%s\ttotal=%lld\tused=%lld\tavailable=%lld\n",
                  csipb::VolumeUsage::Unit_Name(usage.unit()).c_str(),
                  static_cast<long long>(usage.total()),
                  static_cast<long long>(usage.used()),
                  static_cast<long long>(usage.available()));
    }
    std::printf("condition\t%s\t%s\n",
                res.volume_condition().abnormal() ? "abnormal" : "normal",
                res.volume_condition().message().c_str());
    return absl::OkStatus();
  }
  if (verb == "expand") {
    auto size = ParseSize(f.size);
    if (!size.ok()) return size.status();
    if (f.path.empty()) {
      csipb::ControllerExpandVolumeRequest req;
      req.set_volume_id(f.volume_id);
      req.mutable_capacity_range()->set_required_bytes(static_cast<int64_t>(*size));
      csipb::ControllerExpandVolumeResponse res;
      if (auto s = controller->ControllerExpandVolume(&ctx, req, &res); !s.ok()) {
        return FromGrpcStatus(s);
      }
      std::printf("%lld\tnode_expansion_required=%s\n",
                  static_cast<long long>(res.capacity_bytes()),
                  res.node_expansion_required() ? "true" : "false");
      return absl::OkStatus();
    }
    csipb::NodeExpandVolumeRequest req;
    req.set_volume_id(f.volume_id);
    req.set_volume_path(f.path);
    req.mutable_capacity_range()->set_required_bytes(static_cast<int64_t>(*size));
    *req.mutable_volume_capability() = Capability(f);
    csipb::NodeExpandVolumeResponse res;
    if (auto s = node->NodeExpandVolume(&ctx, req, &res); !s.ok()) {
      return FromGrpcStatus(s);
    }
    std::printf("%lld\n", static_cast<long long>(res.capacity_bytes()));
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError("unknown csi verb " + verb);
}

}  // namespace

void RegisterCsiClientCommand(CLI::App& app, int& exit_code) {
  auto f = std::make_shared<CsiFlags>();
  CLI::App* csi_app = app.add_subcommand(
      "csi", "Call a sealvol CSI endpoint (an operator's client, like csc)");
  csi_app->add_option("--endpoint", f->endpoint, "unix:///PATH of the controller or node")
      ->required();
  csi_app->require_subcommand(1);
  auto add = [&](const std::string& verb, const std::string& help) {
    CLI::App* sub = csi_app->add_subcommand(verb, help);
    sub->callback([f, verb, &exit_code] {
      absl::Status status = RunCsiCall(verb, *f);
      exit_code = status.ok() ? kExitOk : Fail("csi " + verb, status);
    });
    return sub;
  };
  CLI::App* info = add("info", "GetPluginInfo and Probe");
  (void)info;
  CLI::App* create = add("create", "CreateVolume; prints the volume id and its size");
  create->add_option("name", f->name, "Volume name (idempotency key)")->required();
  create->add_option("--size", f->size, "Capacity, e.g. 1Gi");
  create->add_option("--tenant", f->tenant, "Tenant namespace");
  create->add_option("--param", f->params, "StorageClass parameter KEY=VALUE");
  create->add_option("--fs", f->fs_type, "ext4 or xfs");
  create->add_flag("--block", f->block, "Block volume");
  create->add_option("--node", f->node, "Preferred node");
  create->add_option("--from-snapshot", f->source_snapshot_id,
                     "Restore this snapshot into the new volume");
  create->add_option("--from-volume", f->source_volume_id,
                     "Clone this volume into the new volume");
  CLI::App* snapshot = add(
      "snapshot", "CreateSnapshot; prints the snapshot id, its size and ready=");
  snapshot->add_option("name", f->name, "Snapshot name (idempotency key)")
      ->required();
  snapshot->add_option("--source", f->source_volume_id, "Source volume id")
      ->required();
  snapshot->add_option("--param", f->params,
                       "VolumeSnapshotClass parameter KEY=VALUE");
  CLI::App* del_snapshot = add("delete-snapshot", "DeleteSnapshot (crypto-shred)");
  del_snapshot->add_option("snapshot_id", f->snapshot_id)->required();
  CLI::App* snapshots = add(
      "snapshots", "ListSnapshots: id, source volume, size, ready=");
  snapshots->add_option("--source", f->source_volume_id, "Only this volume's");
  snapshots->add_option("--id", f->snapshot_id, "Only this snapshot");
  snapshots->add_option("--max", f->max_entries, "max_entries");
  CLI::App* del = add("delete", "DeleteVolume (crypto-shred)");
  del->add_option("volume_id", f->volume_id)->required();
  CLI::App* list = add("list", "ListVolumes");
  list->add_option("--max", f->max_entries, "max_entries");
  CLI::App* stage = add("stage", "NodeStageVolume");
  stage->add_option("volume_id", f->volume_id)->required();
  stage->add_option("--staging-path", f->staging_path)->required();
  stage->add_option("--size", f->size, "The volume's size (as created)")->required();
  stage->add_option("--fs", f->fs_type, "ext4 or xfs");
  stage->add_flag("--block", f->block, "Block volume");
  stage->add_option("--context", f->context, "Extra volume context KEY=VALUE");
  stage->add_option("--mount-flag", f->mount_flags, "Mount flag (repeatable)");
  CLI::App* publish = add("publish", "NodePublishVolume for a pod, with its token");
  publish->add_option("volume_id", f->volume_id)->required();
  publish->add_option("--staging-path", f->staging_path)->required();
  publish->add_option("--target", f->target)->required();
  publish->add_option("--pod", f->pod, "NAMESPACE/NAME")->required();
  publish->add_option("--pod-uid", f->pod_uid);
  publish->add_option("--service-account", f->service_account)->capture_default_str();
  publish->add_option("--token-file", f->token_file, "The pod's token (audience sealvol)")
      ->required();
  publish->add_option("--size", f->size);
  publish->add_option("--fs", f->fs_type);
  publish->add_flag("--block", f->block);
  publish->add_flag("--readonly", f->read_only);
  publish->add_option("--context", f->context);
  publish->add_option("--mount-flag", f->mount_flags, "Mount flag (repeatable)");
  CLI::App* unpublish = add("unpublish", "NodeUnpublishVolume");
  unpublish->add_option("volume_id", f->volume_id)->required();
  unpublish->add_option("--target", f->target)->required();
  CLI::App* unstage = add("unstage", "NodeUnstageVolume");
  unstage->add_option("volume_id", f->volume_id)->required();
  unstage->add_option("--staging-path", f->staging_path)->required();
  CLI::App* stats = add("stats", "NodeGetVolumeStats");
  stats->add_option("volume_id", f->volume_id)->required();
  stats->add_option("--path", f->path)->required();
  CLI::App* expand = add("expand",
                         "ControllerExpandVolume, or NodeExpandVolume with --path");
  expand->add_option("volume_id", f->volume_id)->required();
  expand->add_option("--size", f->size)->required();
  expand->add_option("--path", f->path, "Published path (node expansion)");
  expand->add_flag("--block", f->block);
}

}  // namespace sealvol::cmd
