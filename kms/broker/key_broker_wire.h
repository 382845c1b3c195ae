// What both ends of the KeyBroker's gRPC wire share: the key-release
// request (the node's client builds it, the service decides it), the copy
// jobs, their keys and reports, their protobuf forms, and the per-call
// limits. Thread-compatible: plain values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"
#include "kms/key_provider.h"
#include "proto/sealvol/keybroker.pb.h"

namespace sealvol::broker {

// Pod identity as the kubelet wrote it into the volume context and the
// node forwarded it.
struct PodIdentity {
  std::string name;
  std::string namespace_name;
  std::string uid;
  std::string service_account;
};

// One key-release request, independent of gRPC.
struct ReleaseRequest {
  std::string volume_id;
  std::string node_id;
  std::string pod_token;  // Empty: a block volume's publish (no token).
  PodIdentity pod;
};

v1::ReleaseKeyRequest ReleaseRequestToProto(const ReleaseRequest& request);
ReleaseRequest ReleaseRequestFromProto(const v1::ReleaseKeyRequest& request);

// Most volume ids one VolumeStatus call carries; the client batches.
inline constexpr size_t kMaxVolumeStatusIds = 256;

// What a copy job makes, from its target's and its source's records: a
// snapshot of a volume, a volume restored from a snapshot, a volume cloned
// from a volume.
enum class CopyKind { kSnapshot, kRestore, kClone };

// "snapshot", "restore", "clone".
std::string_view CopyKindName(CopyKind kind);

// One copy job as CopyJobs lists it: its target is placed on the node that
// asks, and its state is kPending or kCut.
struct CopyJob {
  std::string target_id;
  std::string source_id;
  CopyKind kind = CopyKind::kSnapshot;
  kms::CopyState state = kms::CopyState::kPending;
  uint64_t capacity_bytes = 0;  // The target's size.
  uint64_t bytes_done = 0;      // Progress as last reported.
  uint64_t bytes_total = 0;
};

// The two keys of one copy job (ReleaseCopyKeys) and what the registry says
// of the source's image, as a key release says it of a volume's.
struct CopyKeys {
  crypto::SecretBytes source_dek;
  crypto::SecretBytes target_dek;
  std::string source_id;
  CopyKind kind = CopyKind::kSnapshot;
  kms::CopyState state = kms::CopyState::kPending;  // When the keys left.
  std::string source_format_id;  // "" = the source was never formatted.
  // The state the source's image must be at (unset: none committed; with
  // source_rollback_accepted only its epoch counts).
  std::optional<kms::CommittedState> source_expected_state;
  bool source_rollback_accepted = false;
  uint64_t target_capacity_bytes = 0;
};

// A node's report on a copy job (ReportCopy).
struct CopyReport {
  std::string target_id;
  // kPending or kCut with progress; kCut once the cut is durable; kReady
  // with format_id and closed_state; kFailed with error.
  kms::CopyState state = kms::CopyState::kPending;
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;
  std::string error;
  std::string format_id;  // kReady: the target image's.
  std::optional<kms::CommittedState> closed_state;  // kReady.
};

// Protobuf forms. The FromProto functions refuse values outside the enums
// (InvalidArgument naming the field); COPY_STATE_UNSPECIFIED reads as kNone.
v1::CopyKind CopyKindToProto(CopyKind kind);
absl::StatusOr<CopyKind> CopyKindFromProto(v1::CopyKind kind);
v1::CopyState CopyStateToProto(kms::CopyState state);
absl::StatusOr<kms::CopyState> CopyStateFromProto(v1::CopyState state);
v1::StateCommitment StateCommitmentToProto(const kms::CommittedState& state);
kms::CommittedState StateCommitmentFromProto(const v1::StateCommitment& state);

v1::CopyJob CopyJobToProto(const CopyJob& job);
absl::StatusOr<CopyJob> CopyJobFromProto(const v1::CopyJob& job);
v1::ReportCopyRequest CopyReportToProto(const CopyReport& report,
                                        const std::string& node_id);
absl::StatusOr<CopyReport> CopyReportFromProto(
    const v1::ReportCopyRequest& request);

}  // namespace sealvol::broker
