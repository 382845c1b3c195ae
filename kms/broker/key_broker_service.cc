#include "kms/broker/key_broker_service.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/server_credentials.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/durable_file.h"
#include "base/grpc_status.h"
#include "base/status_macros.h"
#include "kms/broker/refusal.h"
#include "kms/identifiers.h"

namespace sealvol::broker {
namespace {

constexpr char kUnixPrefix[] = "unix://";
// Certificates, keys and CA bundles.
constexpr size_t kMaxPemFileSize = 1 << 20;

// A failed call's gRPC status, its refusal reason also in a trailer.
grpc::Status RefusalToGrpc(grpc::ServerContext* context,
                           const absl::Status& status) {
  const std::string reason = RefusalReason(status);
  if (!reason.empty()) {
    context->AddTrailingMetadata(kRefusalReasonTrailer, reason);
  }
  return ToGrpcStatus(status);
}

// The caller's node token from `authorization: Bearer <JWT>`, or "".
std::string BearerToken(const grpc::ServerContext& context) {
  const auto& metadata = context.client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    const std::string value(it->second.data(), it->second.size());
    if (absl::StartsWith(value, "Bearer ")) return value.substr(7);
  }
  return "";
}

// Size limits of KeyBroker requests (docs/attestation.md): volume ids as
// CSI strings, node ids as CSI node ids, pod fields as Kubernetes names.
constexpr size_t kMaxVolumeIdBytes = 128;
constexpr size_t kMaxNodeIdBytes = 256;
constexpr size_t kMaxKubernetesNameBytes = 253;
constexpr size_t kMaxUidBytes = 128;

absl::Status CheckFieldSize(std::string_view value, const char* field,
                            size_t max) {
  if (value.size() <= max) return absl::OkStatus();
  return RefusalStatus(Reason::kInvalidRequest,
                       absl::StrCat(field, " is ", value.size(),
                                    " bytes, at most ", max, " allowed"));
}

// The pod fields of a key release, with their bounds (the ids are checked
// by the preamble of every node call).
std::vector<KeyBrokerService::FieldBound> PodFieldBounds(
    const ReleaseRequest& r, size_t max_token_bytes) {
  return {{r.pod_token, "pod_token", max_token_bytes},
          {r.pod.name, "pod.name", kMaxKubernetesNameBytes},
          {r.pod.namespace_name, "pod.namespace", kMaxKubernetesNameBytes},
          {r.pod.uid, "pod.uid", kMaxUidBytes},
          {r.pod.service_account, "pod.service_account",
           kMaxKubernetesNameBytes}};
}

}  // namespace

KeyBrokerService::KeyBrokerService(kms::KeyProvider& keys,
                                   const TokenVerifier& verifier,
                                   AuditLog& audit, KeyBrokerOptions options)
    : keys_(keys),
      verifier_(verifier),
      audit_(audit),
      options_(std::move(options)),
      policy_(options_.policy),
      rate_limiter_(options_.rate_limit) {}

absl::Status KeyBrokerService::AuthenticateNode(std::string_view node_token,
                                                const std::string& node_id,
                                                Budget budget) {
  auto node = verifier_.Verify(node_token);
  if (!node.ok()) {
    return RefusalStatus(
        Reason::kNodeIdentityInvalid,
        absl::StrCat("node token: ", std::string(node.status().message())));
  }
  RETURN_IF_ERROR(policy_.CheckNode(*node, node_id));
  // State commits have a bucket of their own: every publish now costs a
  // release and two commits, and a burst of pod starts must not spend the
  // releases' budget on commits (or the reverse).
  const std::string bucket = budget == Budget::kStateCommits
                                 ? node->node_name + "\n(state)"
                                 : node->node_name;
  if (!rate_limiter_.Allow(bucket)) {
    return RefusalStatus(
        Reason::kRateLimited,
        absl::StrCat("node ", node->node_name, " exceeded its request rate"));
  }
  return absl::OkStatus();
}

absl::Status KeyBrokerService::AuthenticateCall(
    const std::string& node_id, const std::vector<FieldBound>& fields,
    std::string_view node_token, Budget budget) {
  RETURN_IF_ERROR(CheckFieldSize(node_id, "node_id", kMaxNodeIdBytes));
  for (const FieldBound& field : fields) {
    RETURN_IF_ERROR(CheckFieldSize(field.value, field.name, field.max));
  }
  return AuthenticateNode(node_token, node_id, budget);
}

absl::StatusOr<kms::VolumeRecord> KeyBrokerService::BeginVolumeCall(
    const NodeVolumeCall& call, std::string_view node_token,
    AuditRecord& record) {
  RETURN_IF_ERROR(
      CheckFieldSize(call.volume_id, "volume_id", kMaxVolumeIdBytes));
  RETURN_IF_ERROR(
      AuthenticateCall(call.node_id, call.fields, node_token, call.budget));
  RETURN_IF_ERROR(call.input);
  auto volume = keys_.GetVolume(call.volume_id);
  if (!volume.ok()) {
    return RegistryRefusal("registry lookup", volume.status(), call.volume_id);
  }
  record.tenant = volume->tenant;
  // Keys, claims and commits follow placement: only the node the volume
  // lives on gets them.
  RETURN_IF_ERROR(policy_.CheckPlacement(*volume, call.node_id));
  if (call.placement == Placement::kHere && volume->node != call.node_id) {
    return RefusalStatus(
        Reason::kNodeNotOwner,
        absl::StrCat("volume ", call.volume_id, " is placed on no node"));
  }
  return volume;
}

absl::Status KeyBrokerService::Audit(const AuditRecord& record) {
  if (absl::Status logged = audit_.Append(record); !logged.ok()) {
    return absl::UnavailableError(
        absl::StrCat("audit log: ", std::string(logged.message())));
  }
  return absl::OkStatus();
}

absl::Status KeyBrokerService::AuditRefusal(AuditRecord& record,
                                            std::string_view what,
                                            absl::Status status) {
  std::string reason = RefusalReason(status);
  if (reason.empty()) reason = "internal";
  record.decision = kDecisionRefuse;
  record.reason = reason;
  record.message = what.empty() ? std::string(status.message())
                                : absl::StrCat(std::string(what), ": ",
                                               std::string(status.message()));
  if (options_.metrics != nullptr) options_.metrics->RecordRefusal(reason);
  RETURN_IF_ERROR(Audit(record));
  return status;
}

absl::Status KeyBrokerService::RegistryRefusal(std::string_view what,
                                               const absl::Status& status,
                                               std::string_view volume_id) {
  if (absl::IsNotFound(status) || absl::IsInvalidArgument(status)) {
    return RefusalStatus(
        Reason::kVolumeNotFound,
        absl::StrCat("no volume ", std::string(volume_id.substr(0, 128))));
  }
  if (options_.metrics != nullptr) options_.metrics->RecordKmsError();
  return RefusalStatus(Reason::kKmsError,
                       absl::StrCat(std::string(what), ": ",
                                    std::string(status.message())));
}

absl::StatusOr<std::vector<VolumeExistence>> KeyBrokerService::VolumeStates(
    const std::string& node_id, const std::vector<std::string>& volume_ids,
    std::string_view node_token) {
  if (absl::Status s =
          AuthenticateCall(node_id, {}, node_token, Budget::kRequests);
      !s.ok()) {
    AuditRecord record;
    record.node = node_id;
    return AuditRefusal(record, "volume status", s);
  }
  if (volume_ids.size() > kMaxVolumeStatusIds) {
    return absl::InvalidArgumentError(absl::StrCat(
        "volume status: ", volume_ids.size(), " ids asked, at most ",
        kMaxVolumeStatusIds, " per call"));
  }
  std::vector<VolumeExistence> out;
  out.reserve(volume_ids.size());
  for (const std::string& id : volume_ids) {
    if (id.size() > kMaxVolumeIdBytes) {
      return RefusalStatus(Reason::kInvalidRequest,
                           absl::StrCat("volume_ids has an entry of ", id.size(),
                                        " bytes, at most ", kMaxVolumeIdBytes,
                                        " allowed"));
    }
    auto volume = keys_.GetVolume(id);
    if (volume.ok()) {
      out.push_back({id, true});
    } else if (absl::IsNotFound(volume.status())) {
      out.push_back({id, false});
    } else if (absl::IsInvalidArgument(volume.status())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "volume status: ", id.substr(0, 128), " is not a volume id"));
    } else {
      if (options_.metrics != nullptr) options_.metrics->RecordKmsError();
      return absl::UnavailableError(
          absl::StrCat("volume status: registry lookup of ", id, ": ",
                       std::string(volume.status().message())));
    }
  }
  return out;
}

absl::StatusOr<FormatClaimResult> KeyBrokerService::ClaimVolumeFormat(
    const std::string& volume_id, const std::string& node_id,
    const std::string& format_id, std::string_view node_token,
    const std::optional<kms::CommittedState>& state) {
  AuditRecord record;
  record.volume = volume_id;
  record.node = node_id;
  auto refuse = [&](absl::Status status) {
    return AuditRefusal(record, "format claim", std::move(status));
  };
  absl::Status input = kms::ValidateFormatId(format_id);
  if (!input.ok()) {
    input = RefusalStatus(Reason::kInvalidFormatId,
                          std::string(input.message()));
  } else if (state.has_value()) {
    if (absl::Status s = kms::ValidateStateRoot(state->root); !s.ok()) {
      input = RefusalStatus(Reason::kInvalidState, std::string(s.message()));
    }
  }
  // Read first so that the audit tells a new claim from a repeated one.
  auto before = BeginVolumeCall(
      {.volume_id = volume_id, .node_id = node_id, .input = std::move(input)},
      node_token, record);
  if (!before.ok()) return refuse(before.status());
  kms::VolumeRecord after = *before;
  if (before->format_id.empty()) {
    auto claimed = keys_.ClaimFormat(
        volume_id, {.format_id = format_id,
                    .node = node_id,
                    .unix_time = absl::ToUnixSeconds(absl::Now()),
                    .state = state});
    if (!claimed.ok()) {
      return refuse(
          RegistryRefusal("registry update", claimed.status(), volume_id));
    }
    after = *std::move(claimed);
  }
  if (after.format_id != format_id) {
    return refuse(RefusalStatus(
        Reason::kAlreadyFormatted,
        absl::StrCat("volume ", volume_id, " was formatted with format id ",
                     after.format_id, " by node ", after.formatted_node,
                     " at unix time ", after.formatted_unix, "; node ", node_id,
                     " reports format id ", format_id,
                     ": an image of this volume was lost or replaced and is "
                     "not formatted again under the same key")));
  }
  const bool recorded = before->format_id.empty();
  record.decision = kDecisionGrant;
  record.reason = recorded ? "format_claimed" : "format_matches";
  record.message = absl::StrCat(
      recorded ? "format claim: recorded format id "
               : "format claim: the registry already holds format id ",
      format_id,
      recorded && after.state.has_value()
          ? absl::StrCat(", first state ", kms::DescribeState(*after.state))
          : "");
  RETURN_IF_ERROR(Audit(record));
  return FormatClaimResult{format_id, recorded};
}

absl::Status KeyBrokerService::CommitVolumeState(
    const std::string& volume_id, const std::string& node_id,
    const kms::CommittedState& state, bool accept_rollback,
    std::string_view node_token) {
  AuditRecord record;
  record.volume = volume_id;
  record.node = node_id;
  auto refuse = [&](absl::Status status) {
    return AuditRefusal(
        record, absl::StrCat("commit state (", kms::DescribeState(state), ")"),
        std::move(status));
  };
  absl::Status input = kms::ValidateStateRoot(state.root);
  if (!input.ok()) {
    input = RefusalStatus(Reason::kInvalidState, std::string(input.message()));
  }
  // Only the node the volume is placed on has its image.
  auto before = BeginVolumeCall({.volume_id = volume_id,
                                 .node_id = node_id,
                                 .budget = Budget::kStateCommits,
                                 .input = std::move(input)},
                                node_token, record);
  if (!before.ok()) return refuse(before.status());
  auto after = keys_.CommitState(
      volume_id, {.state = state,
                  .node = node_id,
                  .unix_time = absl::ToUnixSeconds(absl::Now()),
                  .accept_rollback = accept_rollback});
  if (absl::IsFailedPrecondition(after.status())) {
    return refuse(RefusalStatus(Reason::kStateRegression,
                                std::string(after.status().message())));
  }
  if (!after.ok()) {
    return refuse(RegistryRefusal("registry update", after.status(), volume_id));
  }
  record.decision = kDecisionGrant;
  if (accept_rollback) {
    record.reason = "rollback_consumed";
    record.message = absl::StrCat(
        "state committed from the restored image (", kms::DescribeState(state),
        "), accepted by ", after->rollback_accepted_by, " at unix time ",
        after->rollback_accepted_unix, "; the registry held ",
        before->state.has_value() ? kms::DescribeState(*before->state)
                                  : std::string("no state"));
  } else {
    record.reason = state.open ? "state_opened" : "state_committed";
    record.message = absl::StrCat(
        state.open ? "session opened: " : "session closed: ",
        kms::DescribeState(state));
    // An open after a session whose close was never committed: its image
    // was accepted as found (docs/security.md, unclean-shutdown window).
    if (state.open && before->state.has_value() && before->state->open) {
      absl::StrAppend(&record.message, "; the previous session (epoch ",
                      before->state->epoch,
                      ") was never closed: its image was accepted as found");
    }
  }
  return Audit(record);
}

absl::Status KeyBrokerService::ReportVolumeRollback(
    const std::string& volume_id, const std::string& node_id,
    const std::string& detail, std::string_view node_token) {
  AuditRecord record;
  record.volume = volume_id;
  record.node = node_id;
  auto refuse = [&](absl::Status status) {
    return AuditRefusal(record, "rollback report", std::move(status));
  };
  // The detail is the engine's message: two states and a path.
  constexpr size_t kMaxDetailBytes = 1024;
  auto volume = BeginVolumeCall(
      {.volume_id = volume_id,
       .node_id = node_id,
       .budget = Budget::kStateCommits,
       .fields = {{detail, "detail", kMaxDetailBytes}}},
      node_token, record);
  if (!volume.ok()) return refuse(volume.status());
  record.decision = kDecisionRefuse;
  record.reason = std::string(ReasonName(Reason::kRolledBack));
  record.message = absl::StrCat(
      "image refused as rolled back; the registry holds ",
      volume->state.has_value() ? kms::DescribeState(*volume->state)
                                : std::string("no state"),
      "; the node reports: ", detail);
  if (options_.metrics != nullptr) {
    options_.metrics->RecordRefusal(record.reason);
  }
  return Audit(record);
}

absl::Status KeyBrokerService::PlaceVolume(const std::string& volume_id,
                                           const std::string& node_id) {
  MutexLock lock(&place_mu_);
  auto fresh = keys_.GetVolume(volume_id);
  if (!fresh.ok()) {
    return RefusalStatus(Reason::kKmsError,
                         absl::StrCat("registry lookup: ",
                                      std::string(fresh.status().message())));
  }
  RETURN_IF_ERROR(policy_.CheckPlacement(*fresh, node_id));
  if (!fresh->node.empty()) return absl::OkStatus();  // Placed meanwhile.
  fresh->node = node_id;
  if (absl::Status s = keys_.UpdateVolume(*fresh); !s.ok()) {
    return RefusalStatus(Reason::kKmsError,
                         absl::StrCat("record the volume's node: ",
                                      std::string(s.message())));
  }
  return absl::OkStatus();
}

absl::Status KeyBrokerService::AttestPod(const ReleaseRequest& request,
                                         const kms::VolumeRecord& volume,
                                         AuditRecord& record) {
  if (!request.pod_token.empty()) {
    ASSIGN_OR_RETURN(auto pod, verifier_.Verify(request.pod_token));
    record.token_id = TokenId(request.pod_token, pod.jti);
    RETURN_IF_ERROR(
        policy_.CheckPod(pod, request.pod, request.node_id, volume));
    if (options_.token_reviewer != nullptr) {
      RETURN_IF_ERROR(options_.token_reviewer->Review(request.pod_token, pod));
    }
    return absl::OkStatus();
  }
  // No token: the kubelet sends none with a block volume's publish. Only
  // with the operator's opt-in, and only for a pod the API server confirms
  // (the policy also requires the volume to be a block volume of the pod).
  if (options_.pod_lookup == nullptr) {
    return RefusalStatus(
        Reason::kNoToken,
        "the request carries no pod token; pods of block volumes are "
        "confirmed through the API server only with "
        "--attest-block-pods-via-api-server");
  }
  ASSIGN_OR_RETURN(auto observed,
                   options_.pod_lookup->Observe(request.pod, request.volume_id));
  return policy_.CheckObservedPod(observed, request.pod, request.node_id,
                                  volume);
}

absl::StatusOr<ReleasedKey> KeyBrokerService::Release(
    const ReleaseRequest& request, std::string_view node_token) {
  AuditRecord record;
  record.volume = request.volume_id;
  record.namespace_name = request.pod.namespace_name;
  record.pod = request.pod.name;
  record.pod_uid = request.pod.uid;
  record.service_account = request.pod.service_account;
  record.node = request.node_id;
  record.token_id =
      request.pod_token.empty() ? "" : TokenId(request.pod_token, "");
  record.attestation = !request.pod_token.empty() ? kAttestationToken
                       : options_.pod_lookup != nullptr ? kAttestationApiServer
                                                        : kAttestationNone;

  auto refuse = [&](absl::Status status) {
    return AuditRefusal(record, "", std::move(status));
  };

  // 0-2. Every field within its bound, before anything else is done with
  // it; who asks: the node plugin, by its own token; which volume, whose,
  // and placed on that node (keys follow placement).
  auto volume = BeginVolumeCall(
      {.volume_id = request.volume_id,
       .node_id = request.node_id,
       .fields = PodFieldBounds(request, verifier_.options().max_token_bytes)},
      node_token, record);
  if (!volume.ok()) return refuse(volume.status());

  // 3. For whom: the pod, by its token (or, without one, by the API
  // server's word), against the volume's policy.
  if (absl::Status s = AttestPod(request, *volume, record); !s.ok()) {
    return refuse(s);
  }

  // 4. A volume placed on no node yet (created without topology) is placed
  // on the first node that is granted its key, before the key leaves.
  if (volume->node.empty()) {
    if (absl::Status s = PlaceVolume(request.volume_id, request.node_id);
        !s.ok()) {
      return refuse(s);
    }
  }

  // 5. The key: of the record read in step 2, which the policy checked and
  // the audit record names (a second registry read could see a record a
  // rotation replaced meanwhile).
  const absl::Time start = absl::Now();
  auto dek = keys_.UnwrapRecordKey(*volume);
  if (options_.metrics != nullptr) {
    options_.metrics->RecordKmsLatency(absl::Now() - start);
  }
  if (!dek.ok()) {
    if (options_.metrics != nullptr) options_.metrics->RecordKmsError();
    return refuse(RefusalStatus(
        Reason::kKmsError,
        absl::StrCat("unwrap: ", std::string(dek.status().message()))));
  }
  // 6. An operator's acceptance of a restored image is audited with every
  // release that hands it on (the node then opens the image unchecked).
  if (volume->rollback_pending) {
    AuditRecord accepted = record;
    accepted.decision = kDecisionGrant;
    accepted.reason = "rollback_accepted";
    accepted.message = absl::StrCat(
        "a rolled-back image is accepted at this open: restore accepted by ",
        volume->rollback_accepted_by, " at unix time ",
        volume->rollback_accepted_unix, "; the registry held ",
        volume->state.has_value() ? kms::DescribeState(*volume->state)
                                  : std::string("no state"));
    if (absl::Status logged = Audit(accepted); !logged.ok()) {
      dek->Wipe();
      return logged;
    }
  }
  record.decision = kDecisionGrant;
  record.reason = "granted";
  record.key_version = volume->key_version;
  record.message = record.attestation == kAttestationApiServer
                       ? "key released (no pod token: block volume, pod "
                         "confirmed by the API server)"
                       : "key released";
  if (absl::Status logged = Audit(record); !logged.ok()) {
    dek->Wipe();
    return logged;
  }
  if (options_.metrics != nullptr) options_.metrics->RecordGrant();
  ReleasedKey released{std::move(*dek), volume->key_version, volume->format_id};
  // With an acceptance pending the node opens the image unchecked, but
  // still past the registry's epoch (so older copies stay refused).
  released.rollback_accepted = volume->rollback_pending;
  released.expected_state = volume->state;
  return released;
}

grpc::Status KeyBrokerService::VolumeStatus(
    grpc::ServerContext* context, const v1::VolumeStatusRequest* request,
    v1::VolumeStatusResponse* response) {
  std::vector<std::string> ids(request->volume_ids().begin(),
                               request->volume_ids().end());
  auto states = VolumeStates(request->node_id(), ids, BearerToken(*context));
  if (!states.ok()) {
    return RefusalToGrpc(context, states.status());
  }
  for (const VolumeExistence& state : *states) {
    v1::VolumeState* out = response->add_volumes();
    out->set_volume_id(state.volume_id);
    out->set_state(state.exists ? v1::VolumeState::EXISTS
                                : v1::VolumeState::DELETED);
  }
  return grpc::Status::OK;
}

grpc::Status KeyBrokerService::ClaimFormat(
    grpc::ServerContext* context, const v1::ClaimFormatRequest* request,
    v1::ClaimFormatResponse* response) {
  std::optional<kms::CommittedState> state;
  if (request->has_state()) state = StateCommitmentFromProto(request->state());
  auto claimed = ClaimVolumeFormat(request->volume_id(), request->node_id(),
                                   request->format_id(), BearerToken(*context),
                                   state);
  if (!claimed.ok()) {
    return RefusalToGrpc(context, claimed.status());
  }
  response->set_format_id(claimed->format_id);
  response->set_recorded(claimed->recorded);
  return grpc::Status::OK;
}

grpc::Status KeyBrokerService::ReleaseKey(grpc::ServerContext* context,
                                          const v1::ReleaseKeyRequest* request,
                                          v1::ReleaseKeyResponse* response) {
  const std::string node_token = BearerToken(*context);
  const ReleaseRequest release = ReleaseRequestFromProto(*request);
  auto released = Release(release, node_token);
  if (!released.ok()) {
    return RefusalToGrpc(context, released.status());
  }
  // This copy lives in gRPC's heap until it is serialized and freed; see
  // docs/attestation.md ("Where the DEK travels").
  response->set_dek(released->dek.data(), released->dek.size());
  response->set_key_version(released->key_version);
  response->set_format_id(released->format_id);
  if (released->expected_state.has_value()) {
    *response->mutable_expected_state() =
        StateCommitmentToProto(*released->expected_state);
  }
  response->set_rollback_accepted(released->rollback_accepted);
  return grpc::Status::OK;
}

grpc::Status KeyBrokerService::CommitState(grpc::ServerContext* context,
                                           const v1::CommitStateRequest* request,
                                           v1::CommitStateResponse* response) {
  (void)response;
  const kms::CommittedState state = StateCommitmentFromProto(request->state());
  absl::Status committed =
      CommitVolumeState(request->volume_id(), request->node_id(), state,
                        request->accept_rollback(), BearerToken(*context));
  if (!committed.ok()) {
    return RefusalToGrpc(context, committed);
  }
  return grpc::Status::OK;
}

grpc::Status KeyBrokerService::ReportRollback(
    grpc::ServerContext* context, const v1::ReportRollbackRequest* request,
    v1::ReportRollbackResponse* response) {
  (void)response;
  absl::Status reported =
      ReportVolumeRollback(request->volume_id(), request->node_id(),
                           request->detail(), BearerToken(*context));
  if (!reported.ok()) {
    return RefusalToGrpc(context, reported);
  }
  return grpc::Status::OK;
}

grpc::Status KeyBrokerService::CopyJobs(grpc::ServerContext* context,
                                        const v1::CopyJobsRequest* request,
                                        v1::CopyJobsResponse* response) {
  CopyJobsWait wait{.wait = absl::Seconds(request->wait_seconds()),
                    .cancelled = [context] { return context->IsCancelled(); }};
  const auto deadline = context->deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    wait.deadline = absl::FromChrono(deadline);
  }
  auto jobs = ListCopyJobs(request->node_id(), BearerToken(*context), wait);
  if (!jobs.ok()) return RefusalToGrpc(context, jobs.status());
  for (const CopyJob& job : *jobs) *response->add_jobs() = CopyJobToProto(job);
  return grpc::Status::OK;
}

grpc::Status KeyBrokerService::ReleaseCopyKeys(
    grpc::ServerContext* context, const v1::ReleaseCopyKeysRequest* request,
    v1::ReleaseCopyKeysResponse* response) {
  auto keys = ReleaseCopyJobKeys(request->node_id(), request->target_id(),
                                 BearerToken(*context));
  if (!keys.ok()) return RefusalToGrpc(context, keys.status());
  // These copies live in gRPC's heap until they are serialized and freed;
  // see docs/attestation.md ("Where the DEK travels").
  response->set_source_dek(keys->source_dek.data(), keys->source_dek.size());
  response->set_target_dek(keys->target_dek.data(), keys->target_dek.size());
  response->set_source_id(keys->source_id);
  response->set_kind(CopyKindToProto(keys->kind));
  response->set_source_format_id(keys->source_format_id);
  if (keys->source_expected_state.has_value()) {
    *response->mutable_source_expected_state() =
        StateCommitmentToProto(*keys->source_expected_state);
  }
  response->set_source_rollback_accepted(keys->source_rollback_accepted);
  response->set_target_capacity_bytes(keys->target_capacity_bytes);
  response->set_state(CopyStateToProto(keys->state));
  return grpc::Status::OK;
}

grpc::Status KeyBrokerService::ReportCopy(grpc::ServerContext* context,
                                          const v1::ReportCopyRequest* request,
                                          v1::ReportCopyResponse* response) {
  auto report = CopyReportFromProto(*request);
  if (!report.ok()) {
    // An enum value this broker does not know: refused like any bad field.
    AuditRecord record;
    record.volume = request->target_id().substr(0, 128);
    record.node = request->node_id().substr(0, 256);
    return RefusalToGrpc(
        context, AuditRefusal(record, "copy report",
                              RefusalStatus(Reason::kInvalidRequest,
                                            std::string(report.status().message()))));
  }
  auto state = ReportCopyJob(request->node_id(), *report, BearerToken(*context));
  if (!state.ok()) return RefusalToGrpc(context, state.status());
  response->set_state(CopyStateToProto(*state));
  return grpc::Status::OK;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>>
BrokerServerCredentials(const BrokerServerOptions& options) {
  if (absl::StartsWith(options.listen, kUnixPrefix)) {
    return grpc::InsecureServerCredentials();
  }
  if (options.tls_cert_file.empty() || options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "broker listen ", options.listen,
        ": a TCP listener needs --broker-tls-cert and --broker-tls-key"));
  }
  grpc::SslServerCredentialsOptions ssl;
  ASSIGN_OR_RETURN(auto cert,
                   ReadSmallFile(options.tls_cert_file, kMaxPemFileSize));
  ASSIGN_OR_RETURN(auto key,
                   ReadSmallFile(options.tls_key_file, kMaxPemFileSize));
  ssl.pem_key_cert_pairs.push_back({key, cert});
  if (!options.client_ca_file.empty()) {
    ASSIGN_OR_RETURN(auto ca,
                     ReadSmallFile(options.client_ca_file, kMaxPemFileSize));
    ssl.pem_root_certs = ca;
    ssl.client_certificate_request =
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

absl::StatusOr<BrokerServer> StartBrokerServer(
    const BrokerServerOptions& options, KeyBrokerService& service) {
  ASSIGN_OR_RETURN(auto credentials, BrokerServerCredentials(options));
  std::string socket_path;
  if (absl::StartsWith(options.listen, kUnixPrefix)) {
    socket_path = options.listen.substr(sizeof(kUnixPrefix) - 1);
    struct stat st;
    if (::lstat(socket_path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
      ::unlink(socket_path.c_str());  // A stale socket from a previous run.
    }
  }
  BrokerServer result;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, credentials, &result.port);
  builder.RegisterService(&service);
  result.server = builder.BuildAndStart();
  if (result.server == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("broker: cannot listen on ", options.listen));
  }
  if (!socket_path.empty()) {
    // Only root (the node plugin) may connect.
    ::chmod(socket_path.c_str(), 0600);
    result.port = 0;
  }
  return result;
}

}  // namespace sealvol::broker
