// KeyBrokerService is the gRPC KeyBroker (proto/sealvol/keybroker.proto):
// it releases a volume's DEK to a node for one attested pod, and writes an
// audit record for every grant and every refusal. Thread-safe: gRPC calls
// ReleaseKey from many threads.
//
// Wiring it into `sealvol controller` (flags in docs/attestation.md):
//
//   auto jwks = JwksCache::Create({.file = jwks_file});       // or url/oidc
//   TokenVerifier verifier({.issuer = issuer, .audience = "sealvol"}, **jwks);
//   auto audit = AuditLog::Open({.path = audit_log_file});
//   BrokerMetrics metrics;                       // + MetricsServer::Start
//   KeyBrokerOptions options;                    // node SA, rate limits,
//   options.metrics = &metrics;                  // optional TokenReviewer
//   KeyBrokerService service(*provider, verifier, **audit, options);
//   auto server = StartBrokerServer({.listen = "unix:///run/sealvol/kb.sock"},
//                                   service);
//   ... on SIGHUP: (*audit)->Rotate();  on exit: server->server->Shutdown();
//
// Every object passed by reference must outlive the service and the server.
// The node authenticates with its own token in gRPC metadata
// `authorization: Bearer <JWT>`.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/mutex.h"
#include "crypto/secret_bytes.h"
#include "kms/broker/attestation_policy.h"
#include "kms/broker/audit_log.h"
#include "kms/broker/broker_metrics.h"
#include "kms/broker/copy_job_changes.h"
#include "kms/broker/key_broker_wire.h"
#include "kms/broker/pod_lookup.h"
#include "kms/broker/rate_limiter.h"
#include "kms/broker/token_review.h"
#include "kms/broker/token_verifier.h"
#include "kms/key_provider.h"
#include "proto/sealvol/keybroker.grpc.pb.h"

namespace sealvol::broker {

struct KeyBrokerOptions {
  AttestationPolicyOptions policy;
  RateLimiterOptions rate_limit;
  BrokerMetrics* metrics = nullptr;              // Optional.
  const TokenReviewer* token_reviewer = nullptr;  // Optional (--token-review).
  // Optional (--attest-block-pods-via-api-server): a request without a pod
  // token is decided by what the API server says about the pod
  // (AttestationPolicy::CheckObservedPod). Null: such requests are refused
  // (no_token).
  const PodLookup* pod_lookup = nullptr;
  // How often a waiting CopyJobs call (a long poll) reads the registry
  // again while its node has no job: a job created by another controller
  // replica is found within this; this process's own jobs wake it at once
  // (CopyJobsChanged).
  absl::Duration copy_jobs_recheck = absl::Seconds(3);
};

// The longest a CopyJobs call waits for a job, whatever the node asks.
inline constexpr absl::Duration kMaxCopyJobsWait = absl::Seconds(30);

// How a CopyJobs call may wait for its node's first job (a long poll).
struct CopyJobsWait {
  // As the node asked; capped at kMaxCopyJobsWait. Zero: answer at once.
  absl::Duration wait = absl::ZeroDuration();
  // The call's own deadline: the answer leaves a little before it.
  absl::Time deadline = absl::InfiniteFuture();
  // True once the caller went away (checked at each registry read).
  std::function<bool()> cancelled;
};

// Existence of one volume in the registry (VolumeStatus).
struct VolumeExistence {
  std::string volume_id;
  bool exists = false;
};


struct ReleasedKey {
  crypto::SecretBytes dek;
  int64_t key_version = 0;
  std::string format_id;  // The registry's; empty = never formatted.
  // The state the image must match (unset when the registry holds none);
  // with rollback_accepted, only its epoch counts (the restored image is
  // opened past it, unchecked).
  std::optional<kms::CommittedState> expected_state;
  bool rollback_accepted = false;  // That acceptance is pending.
};

// What ClaimFormat decided when it accepted the claim.
struct FormatClaimResult {
  std::string format_id;
  bool recorded = false;  // False: the registry already held this id.
};

class KeyBrokerService final : public v1::KeyBroker::Service {
 public:
  KeyBrokerService(kms::KeyProvider& keys, const TokenVerifier& verifier,
                   AuditLog& audit, KeyBrokerOptions options);

  grpc::Status ReleaseKey(grpc::ServerContext* context,
                          const v1::ReleaseKeyRequest* request,
                          v1::ReleaseKeyResponse* response) override;

  grpc::Status VolumeStatus(grpc::ServerContext* context,
                            const v1::VolumeStatusRequest* request,
                            v1::VolumeStatusResponse* response) override;

  grpc::Status ClaimFormat(grpc::ServerContext* context,
                           const v1::ClaimFormatRequest* request,
                           v1::ClaimFormatResponse* response) override;

  // Records that `node_id` formatted the volume's image with `format_id`
  // (KeyProvider::ClaimFormat), once per volume. The caller is
  // authenticated like VolumeStates. OK when recorded now or already
  // recorded with the same id; FailedPrecondition "already_formatted: ..."
  // when the registry holds another id; PermissionDenied / ResourceExhausted
  // refusals as for Release; volume_not_found; Unavailable "kms_error"
  // when the registry cannot be read or written; InvalidArgument for a
  // malformed format id. Every outcome is audited before it is returned; if
  // the record cannot be written the call fails Unavailable (a claim already
  // stored stays stored, and the node's retry is then answered as a match).
  // `state`, when set, is the new image's first state, recorded with the
  // claim (KeyProvider::ClaimFormat).
  absl::StatusOr<FormatClaimResult> ClaimVolumeFormat(
      const std::string& volume_id, const std::string& node_id,
      const std::string& format_id, std::string_view node_token,
      const std::optional<kms::CommittedState>& state = std::nullopt);

  grpc::Status CommitState(grpc::ServerContext* context,
                           const v1::CommitStateRequest* request,
                           v1::CommitStateResponse* response) override;

  grpc::Status ReportRollback(grpc::ServerContext* context,
                              const v1::ReportRollbackRequest* request,
                              v1::ReportRollbackResponse* response) override;

  // Commits the state of the volume's image (KeyProvider::CommitState) for
  // the node the volume is placed on, authenticated like VolumeStates.
  // Refusals: node_identity_invalid, node_not_owner, rate_limited,
  // volume_not_found, invalid_state (a malformed root), state_regression
  // (FailedPrecondition: the epoch would go back, a closed session would
  // reopen, or accept_rollback has nothing pending), kms_error
  // (Unavailable). Every outcome is audited before it is returned
  // (state_opened / state_committed / rollback_consumed, or the refusal);
  // Unavailable if the audit record cannot be written.
  absl::Status CommitVolumeState(const std::string& volume_id,
                                 const std::string& node_id,
                                 const kms::CommittedState& state,
                                 bool accept_rollback,
                                 std::string_view node_token);

  // Audits a node's refusal of a rolled-back image (decision refuse,
  // reason rolled_back, the registry's state and the node's `detail`).
  // Authenticated and placement-checked like CommitVolumeState; OK once
  // the record is durable.
  absl::Status ReportVolumeRollback(const std::string& volume_id,
                                    const std::string& node_id,
                                    const std::string& detail,
                                    std::string_view node_token);

  // Which of `volume_ids` still have a registry record. The caller is
  // authenticated like Release (node token, node identity, rate limit: one
  // token per call). Returns existence only. Successful calls are not
  // audited (they release nothing and nodes ask periodically); refusals are,
  // like every other refusal. NotFound from the registry means deleted;
  // any other registry error fails the whole call (Unavailable), so a node
  // never mistakes an outage for a deletion.
  absl::StatusOr<std::vector<VolumeExistence>> VolumeStates(
      const std::string& node_id, const std::vector<std::string>& volume_ids,
      std::string_view node_token);

  grpc::Status CopyJobs(grpc::ServerContext* context,
                        const v1::CopyJobsRequest* request,
                        v1::CopyJobsResponse* response) override;

  grpc::Status ReleaseCopyKeys(grpc::ServerContext* context,
                               const v1::ReleaseCopyKeysRequest* request,
                               v1::ReleaseCopyKeysResponse* response) override;

  grpc::Status ReportCopy(grpc::ServerContext* context,
                          const v1::ReportCopyRequest* request,
                          v1::ReportCopyResponse* response) override;

  // Copy jobs (snapshots, restores, clones; docs/attestation.md, "Copy
  // jobs"), in key_broker_copies.cc.
  //
  // The records placed on `node_id` whose copy is pending or cut. The
  // caller is authenticated like VolumeStates (one request of its budget,
  // however long it waits); not audited unless refused. Unavailable
  // "kms_error" when the registry cannot be listed.
  //
  // With `wait`, a long poll: while the node has no job, the answer waits
  // until CopyJobsChanged(node_id) in this process (then the registry is
  // read again), the wait ends (kMaxCopyJobsWait at most, and shortly
  // before the call's deadline), the caller is gone, or EndWaits(). Every
  // options.copy_jobs_recheck meanwhile the registry is read again (jobs
  // of another replica). The answer is empty only at the end of the wait,
  // or earlier when the caller is gone or the broker shuts down.
  absl::StatusOr<std::vector<CopyJob>> ListCopyJobs(
      const std::string& node_id, std::string_view node_token,
      const CopyJobsWait& wait = {});

  // Tells the waiting CopyJobs calls of `node_id` that its jobs changed
  // (the controller created one). Cheap; call it after the registry write.
  void CopyJobsChanged(const std::string& node_id);
  // Ends every waiting CopyJobs call, now and later (each answers what it
  // has): call it before the server's Shutdown, which waits for calls.
  void EndWaits();

  // The source's and the target's keys of the copy job of `target_id`, for
  // the node that runs it. No pod is involved: the attestation is the
  // node's own token and the registry's job for it. Refusals (each
  // audited): the preamble's (invalid_request, node_identity_invalid,
  // rate_limited, volume_not_found), node_not_owner (the target is not
  // placed on the caller), copy_not_active (the target's copy is not
  // pending or cut, or its source is itself an unfinished copy),
  // volume_not_found (the source is gone), source_not_on_node,
  // namespace_mismatch (source and target of different tenants),
  // kms_error. A grant writes one record per key (reason
  // copy_key_released), both durable before the keys are returned; if
  // they cannot be written the keys are wiped and Unavailable returned.
  absl::StatusOr<CopyKeys> ReleaseCopyJobKeys(const std::string& node_id,
                                              const std::string& target_id,
                                              std::string_view node_token);

  // Records the node's report on the copy job of `report.target_id`
  // (KeyProvider::UpdateCopy); for kReady first the target image's format
  // claim with its closing state as the first state
  // (KeyProvider::ClaimFormat), so that the target opens like any volume.
  // Returns the job's state after the report. Refusals (each audited): the
  // preamble's, node_not_owner, invalid_request (no state, a failure
  // without an error, bytes beyond the total), invalid_format_id and
  // invalid_state (a ready report's), copy_not_active (the job ended; the
  // repeat of a ready report with the registry's format id is accepted),
  // already_formatted, kms_error. The cut, the end and every refusal are
  // audited (copy_cut, copy_ready, copy_failed); progress is not.
  absl::StatusOr<kms::CopyState> ReportCopyJob(const std::string& node_id,
                                               const CopyReport& report,
                                               std::string_view node_token);

  // The decision itself: bounds every field (invalid_request), verifies both
  // tokens (or, for a request without a pod token and with a pod_lookup,
  // asks the API server about the pod), checks the volume's placement
  // (node_not_owner) and the policy,
  // places a volume that has no node yet on the asking node, unwraps the key
  // and writes the audit record. A grant is returned only once its audit
  // record is durable; if the record cannot be written the key is wiped and
  // Unavailable returned (fail closed).
  absl::StatusOr<ReleasedKey> Release(const ReleaseRequest& request,
                                      std::string_view node_token);

  // A request field and its size limit (invalid_request beyond it).
  struct FieldBound {
    std::string_view value;
    const char* name;
    size_t max;
  };

 private:
  // Which per-node rate bucket a call spends: key releases, format claims
  // and status queries share one; state commits and rollback reports have
  // their own.
  enum class Budget { kRequests, kStateCommits };
  // Where the volume of a node call must be placed.
  enum class Placement {
    kHereOrUnplaced,  // On the caller, or on no node yet (CheckPlacement).
    kHere,            // On the caller (copies: placed when created).
  };
  // What a node-authenticated call about one volume checks before its own
  // work, in this order: every field within its bound (the two ids always),
  // the caller's node token and rate budget, the request's own values
  // (`input`: its refusal, computed by the caller; checked only once the
  // caller is known), the volume's registry record, and its placement.
  struct NodeVolumeCall {
    const std::string& volume_id;
    const std::string& node_id;
    Budget budget = Budget::kRequests;
    std::vector<FieldBound> fields = {};
    absl::Status input = absl::OkStatus();
    Placement placement = Placement::kHereOrUnplaced;
  };
  // The one preamble of ReleaseKey, ClaimFormat, CommitState and
  // ReportRollback: the checks of `call`. Returns the volume's record (its
  // tenant also put in `record`), or the refusal, not yet audited: the
  // caller audits it in its own words.
  absl::StatusOr<kms::VolumeRecord> BeginVolumeCall(const NodeVolumeCall& call,
                                                    std::string_view node_token,
                                                    AuditRecord& record);
  // The first two of those checks, for calls about no single volume
  // (VolumeStatus): `node_id` and `fields` within their bounds, the node
  // token and the rate budget.
  absl::Status AuthenticateCall(const std::string& node_id,
                                const std::vector<FieldBound>& fields,
                                std::string_view node_token, Budget budget);
  // Verifies the caller's node token against `node_id` and charges its rate
  // budget. A refusal status (refusal.h) otherwise.
  absl::Status AuthenticateNode(std::string_view node_token,
                                const std::string& node_id,
                                Budget budget = Budget::kRequests);
  // Records `node_id` as the node of a volume placed on none yet;
  // node_not_owner when another node got there first.
  absl::Status PlaceVolume(const std::string& volume_id,
                           const std::string& node_id);
  // Step 3 of Release: the pod by its token, or without one through the API
  // server. Fills the record's token id.
  absl::Status AttestPod(const ReleaseRequest& request,
                         const kms::VolumeRecord& volume, AuditRecord& record);

  // Appends `record` to the audit log: Unavailable naming the log if that
  // fails (nothing may be granted or refused unaudited).
  absl::Status Audit(const AuditRecord& record);
  // Completes `record` as a refusal (reason: the status's refusal reason,
  // else "internal"; message: `what` and the status's), counts it and
  // audits it. Returns `status`, or the audit failure.
  absl::Status AuditRefusal(AuditRecord& record, std::string_view what,
                            absl::Status status);
  // The refusal for a failed registry call during `what`: volume_not_found
  // for an absent or malformed volume id, kms_error (counted) otherwise.
  absl::Status RegistryRefusal(std::string_view what,
                               const absl::Status& status,
                               std::string_view volume_id);

  kms::KeyProvider& keys_;
  const TokenVerifier& verifier_;
  AuditLog& audit_;
  const KeyBrokerOptions options_;
  const AttestationPolicy policy_;
  RateLimiter rate_limiter_;
  // The registry's jobs of one node, read once.
  absl::StatusOr<std::vector<CopyJob>> ReadCopyJobs(const std::string& node_id);

  // Serializes first placements (read, check, write of one record).
  Mutex place_mu_;
  CopyJobChanges copy_job_changes_;
};

// Where and how the broker listens.
struct BrokerServerOptions {
  // "unix:///path/to.sock" (single host; no TLS) or "HOST:PORT" (TLS
  // required). PORT 0 picks a free port.
  std::string listen;
  std::string tls_cert_file;   // PEM server certificate chain.
  std::string tls_key_file;    // PEM private key.
  std::string client_ca_file;  // When set: mTLS, client certs required and
                               // verified against this CA.
};

struct BrokerServer {
  std::unique_ptr<grpc::Server> server;
  int port = 0;  // The bound TCP port; 0 for unix sockets.
};

// Builds and starts a gRPC server that serves only `service`. To serve the
// broker from an existing server instead, register the service and use
// BrokerServerCredentials for its port.
absl::StatusOr<BrokerServer> StartBrokerServer(
    const BrokerServerOptions& options, KeyBrokerService& service);

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>>
BrokerServerCredentials(const BrokerServerOptions& options);

}  // namespace sealvol::broker
