#include "kms/broker/key_broker_wire.h"

#include "absl/strings/str_cat.h"

namespace sealvol::broker {

v1::ReleaseKeyRequest ReleaseRequestToProto(const ReleaseRequest& request) {
  v1::ReleaseKeyRequest out;
  out.set_volume_id(request.volume_id);
  out.set_node_id(request.node_id);
  out.set_pod_token(request.pod_token);
  v1::PodInfo* pod = out.mutable_pod();
  pod->set_name(request.pod.name);
  pod->set_namespace_(request.pod.namespace_name);
  pod->set_uid(request.pod.uid);
  pod->set_service_account(request.pod.service_account);
  return out;
}

ReleaseRequest ReleaseRequestFromProto(const v1::ReleaseKeyRequest& request) {
  ReleaseRequest out;
  out.volume_id = request.volume_id();
  out.node_id = request.node_id();
  out.pod_token = request.pod_token();
  out.pod.name = request.pod().name();
  out.pod.namespace_name = request.pod().namespace_();
  out.pod.uid = request.pod().uid();
  out.pod.service_account = request.pod().service_account();
  return out;
}

std::string_view CopyKindName(CopyKind kind) {
  switch (kind) {
    case CopyKind::kSnapshot: return "snapshot";
    case CopyKind::kRestore: return "restore";
    case CopyKind::kClone: return "clone";
  }
  return "unknown";
}

v1::CopyKind CopyKindToProto(CopyKind kind) {
  switch (kind) {
    case CopyKind::kSnapshot: return v1::SNAPSHOT;
    case CopyKind::kRestore: return v1::RESTORE;
    case CopyKind::kClone: return v1::CLONE;
  }
  return v1::COPY_KIND_UNSPECIFIED;
}

absl::StatusOr<CopyKind> CopyKindFromProto(v1::CopyKind kind) {
  switch (kind) {
    case v1::SNAPSHOT: return CopyKind::kSnapshot;
    case v1::RESTORE: return CopyKind::kRestore;
    case v1::CLONE: return CopyKind::kClone;
    default: break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("kind ", static_cast<int>(kind), " is not a copy kind"));
}

v1::CopyState CopyStateToProto(kms::CopyState state) {
  switch (state) {
    case kms::CopyState::kNone: return v1::COPY_STATE_UNSPECIFIED;
    case kms::CopyState::kPending: return v1::COPY_PENDING;
    case kms::CopyState::kCut: return v1::COPY_CUT;
    case kms::CopyState::kReady: return v1::COPY_READY;
    case kms::CopyState::kFailed: return v1::COPY_FAILED;
  }
  return v1::COPY_STATE_UNSPECIFIED;
}

absl::StatusOr<kms::CopyState> CopyStateFromProto(v1::CopyState state) {
  switch (state) {
    case v1::COPY_STATE_UNSPECIFIED: return kms::CopyState::kNone;
    case v1::COPY_PENDING: return kms::CopyState::kPending;
    case v1::COPY_CUT: return kms::CopyState::kCut;
    case v1::COPY_READY: return kms::CopyState::kReady;
    case v1::COPY_FAILED: return kms::CopyState::kFailed;
    default: break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("state ", static_cast<int>(state), " is not a copy state"));
}

v1::StateCommitment StateCommitmentToProto(const kms::CommittedState& state) {
  v1::StateCommitment out;
  out.set_epoch(state.epoch);
  out.set_root(state.root);
  out.set_open(state.open);
  return out;
}

kms::CommittedState StateCommitmentFromProto(const v1::StateCommitment& state) {
  return {state.epoch(), state.root(), state.open()};
}

v1::CopyJob CopyJobToProto(const CopyJob& job) {
  v1::CopyJob out;
  out.set_target_id(job.target_id);
  out.set_source_id(job.source_id);
  out.set_kind(CopyKindToProto(job.kind));
  out.set_state(CopyStateToProto(job.state));
  out.set_capacity_bytes(job.capacity_bytes);
  out.set_bytes_done(job.bytes_done);
  out.set_bytes_total(job.bytes_total);
  return out;
}

absl::StatusOr<CopyJob> CopyJobFromProto(const v1::CopyJob& job) {
  CopyJob out;
  out.target_id = job.target_id();
  out.source_id = job.source_id();
  auto kind = CopyKindFromProto(job.kind());
  if (!kind.ok()) return kind.status();
  out.kind = *kind;
  auto state = CopyStateFromProto(job.state());
  if (!state.ok()) return state.status();
  out.state = *state;
  out.capacity_bytes = job.capacity_bytes();
  out.bytes_done = job.bytes_done();
  out.bytes_total = job.bytes_total();
  return out;
}

v1::ReportCopyRequest CopyReportToProto(const CopyReport& report,
                                        const std::string& node_id) {
  v1::ReportCopyRequest out;
  out.set_node_id(node_id);
  out.set_target_id(report.target_id);
  out.set_state(CopyStateToProto(report.state));
  out.set_bytes_done(report.bytes_done);
  out.set_bytes_total(report.bytes_total);
  out.set_error(report.error);
  out.set_format_id(report.format_id);
  if (report.closed_state.has_value()) {
    *out.mutable_closed_state() = StateCommitmentToProto(*report.closed_state);
  }
  return out;
}

absl::StatusOr<CopyReport> CopyReportFromProto(
    const v1::ReportCopyRequest& request) {
  CopyReport out;
  out.target_id = request.target_id();
  auto state = CopyStateFromProto(request.state());
  if (!state.ok()) return state.status();
  out.state = *state;
  out.bytes_done = request.bytes_done();
  out.bytes_total = request.bytes_total();
  out.error = request.error();
  out.format_id = request.format_id();
  if (request.has_closed_state()) {
    out.closed_state = StateCommitmentFromProto(request.closed_state());
  }
  return out;
}

}  // namespace sealvol::broker
