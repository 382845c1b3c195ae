#include "kms/broker/key_broker_client.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>
#include <utility>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "base/durable_file.h"
#include "base/grpc_status.h"
#include "base/status_macros.h"
#include "kms/broker/refusal.h"
#include "kms/identifiers.h"

namespace sealvol::broker {
namespace {

constexpr size_t kDekSize = 32;

// CA bundles, client certificates and keys, node tokens.
constexpr size_t kMaxFileSize = 1 << 20;

// A failed call as a Status: a refusal keeps the broker's message and
// carries the reason the broker sent in its trailer; any other failure is
// prefixed "key broker: ".
absl::Status FromGrpc(const grpc::Status& grpc_status,
                      const grpc::ClientContext& context) {
  absl::Status status = FromGrpcStatus(grpc_status);
  const auto& trailers = context.GetServerTrailingMetadata();
  if (auto it = trailers.find(kRefusalReasonTrailer); it != trailers.end()) {
    const std::string_view name(it->second.data(), it->second.size());
    if (std::optional<Reason> reason = ReasonFromName(name)) {
      return WithRefusalReason(std::move(status), *reason);
    }
  }
  return absl::Status(status.code(),
                      absl::StrCat("key broker: ", status.message()));
}

}  // namespace

KeyBrokerClient::KeyBrokerClient(KeyBrokerClientOptions options,
                                 std::shared_ptr<grpc::Channel> channel)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      stub_(v1::KeyBroker::NewStub(channel_)) {}

absl::StatusOr<std::unique_ptr<KeyBrokerClient>> KeyBrokerClient::Create(
    const KeyBrokerClientOptions& options) {
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  grpc::ChannelArguments args;
  if (absl::StartsWith(options.target, "unix://")) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    if (options.ca_file.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "key broker ", options.target, ": TCP needs TLS (a CA file)"));
    }
    grpc::SslCredentialsOptions ssl;
    ASSIGN_OR_RETURN(auto ca, ReadSmallFile(options.ca_file, kMaxFileSize));
    ssl.pem_root_certs = ca;
    if (!options.client_cert_file.empty()) {
      ASSIGN_OR_RETURN(auto cert,
                       ReadSmallFile(options.client_cert_file, kMaxFileSize));
      ASSIGN_OR_RETURN(auto key,
                       ReadSmallFile(options.client_key_file, kMaxFileSize));
      ssl.pem_cert_chain = cert;
      ssl.pem_private_key = key;
    }
    credentials = grpc::SslCredentials(ssl);
    if (!options.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(options.tls_server_name);
    }
  }
  auto channel = grpc::CreateCustomChannel(options.target, credentials, args);
  return std::unique_ptr<KeyBrokerClient>(
      new KeyBrokerClient(options, std::move(channel)));
}

void KeyBrokerClient::Reconnect() const {
  // After an outage the channel waits out gRPC's exponential reconnect
  // backoff (up to two minutes) and fails every call at once meanwhile. A
  // call is the moment to try again, so that a retry (the kubelet's next
  // publish) succeeds as soon as the broker is back: reset the backoff and
  // give the new attempt a moment (bounded) to finish either way.
  grpc_connectivity_state state = channel_->GetState(/*try_to_connect=*/true);
  if (state == GRPC_CHANNEL_READY) return;
  const auto deadline = std::chrono::system_clock::now() +
                        std::min(absl::ToChronoSeconds(options_.timeout),
                                 std::chrono::seconds(2));
  if (state == GRPC_CHANNEL_TRANSIENT_FAILURE) {
    grpc::experimental::ChannelResetConnectionBackoff(channel_.get());
  }
  while (state != GRPC_CHANNEL_READY && state != GRPC_CHANNEL_SHUTDOWN) {
    if (!channel_->WaitForStateChange(state, deadline)) return;
    const grpc_connectivity_state next = channel_->GetState(true);
    // A fresh attempt that failed again: the broker is down; the call
    // reports it.
    if (next == GRPC_CHANNEL_TRANSIENT_FAILURE && state != GRPC_CHANNEL_TRANSIENT_FAILURE) return;
    state = next;
  }
}

absl::Status KeyBrokerClient::PrepareContext(
    grpc::ClientContext& context) const {
  auto node_token = ReadSmallFile(options_.node_token_file, kMaxFileSize);
  if (!node_token.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "node token ", options_.node_token_file, ": cannot be read"));
  }
  Reconnect();
  context.set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout));
  context.AddMetadata(
      "authorization",
      absl::StrCat("Bearer ",
                   std::string(absl::StripAsciiWhitespace(*node_token))));
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, bool>> KeyBrokerClient::VolumesExist(
    const std::string& node_id, const std::vector<std::string>& volume_ids) {
  std::map<std::string, bool> out;
  for (size_t begin = 0; begin < volume_ids.size();
       begin += kMaxVolumeStatusIds) {
    const size_t end = std::min(volume_ids.size(), begin + kMaxVolumeStatusIds);
    v1::VolumeStatusRequest request;
    request.set_node_id(node_id);
    for (size_t i = begin; i < end; ++i) request.add_volume_ids(volume_ids[i]);
    grpc::ClientContext context;
    if (absl::Status s = PrepareContext(context); !s.ok()) return s;
    v1::VolumeStatusResponse response;
    const grpc::Status status = stub_->VolumeStatus(&context, request, &response);
    if (!status.ok()) return FromGrpc(status, context);
    if (static_cast<size_t>(response.volumes_size()) != end - begin) {
      return absl::DataLossError(absl::StrCat(
          "key broker answered ", response.volumes_size(),
          " volume states for ", end - begin, " ids"));
    }
    for (int i = 0; i < response.volumes_size(); ++i) {
      const v1::VolumeState& state = response.volumes(i);
      if (state.volume_id() != volume_ids[begin + i] ||
          (state.state() != v1::VolumeState::EXISTS &&
           state.state() != v1::VolumeState::DELETED)) {
        return absl::DataLossError(absl::StrCat(
            "key broker answered an unexpected state for volume ",
            volume_ids[begin + i]));
      }
      out[state.volume_id()] = state.state() == v1::VolumeState::EXISTS;
    }
  }
  return out;
}

absl::StatusOr<crypto::SecretBytes> KeyBrokerClient::ReleaseKey(
    const ReleaseRequest& params) {
  ASSIGN_OR_RETURN(auto released, ReleaseVolumeKey(params));
  return std::move(released.dek);
}

absl::Status KeyBrokerClient::ClaimFormat(
    const std::string& volume_id, const std::string& node_id,
    const std::string& format_id,
    const std::optional<kms::CommittedState>& state) {
  v1::ClaimFormatRequest request;
  request.set_volume_id(volume_id);
  request.set_node_id(node_id);
  request.set_format_id(format_id);
  if (state.has_value()) *request.mutable_state() = StateCommitmentToProto(*state);
  grpc::ClientContext context;
  if (absl::Status s = PrepareContext(context); !s.ok()) return s;
  v1::ClaimFormatResponse response;
  const grpc::Status status = stub_->ClaimFormat(&context, request, &response);
  if (!status.ok()) return FromGrpc(status, context);
  if (response.format_id() != format_id) {
    return absl::DataLossError(absl::StrCat(
        "key broker accepted the format claim of volume ", volume_id,
        " but answered format id ", response.format_id().substr(0, 64),
        ", not ", format_id));
  }
  return absl::OkStatus();
}

absl::Status KeyBrokerClient::CommitState(const std::string& volume_id,
                                          const std::string& node_id,
                                          const kms::CommittedState& state,
                                          bool accept_rollback) {
  v1::CommitStateRequest request;
  request.set_volume_id(volume_id);
  request.set_node_id(node_id);
  *request.mutable_state() = StateCommitmentToProto(state);
  request.set_accept_rollback(accept_rollback);
  grpc::ClientContext context;
  if (absl::Status s = PrepareContext(context); !s.ok()) return s;
  v1::CommitStateResponse response;
  const grpc::Status status = stub_->CommitState(&context, request, &response);
  if (!status.ok()) return FromGrpc(status, context);
  return absl::OkStatus();
}

absl::Status KeyBrokerClient::ReportRollback(const std::string& volume_id,
                                             const std::string& node_id,
                                             const std::string& detail) {
  v1::ReportRollbackRequest request;
  request.set_volume_id(volume_id);
  request.set_node_id(node_id);
  request.set_detail(detail.substr(0, 1024));
  grpc::ClientContext context;
  if (absl::Status s = PrepareContext(context); !s.ok()) return s;
  v1::ReportRollbackResponse response;
  const grpc::Status status = stub_->ReportRollback(&context, request, &response);
  if (!status.ok()) return FromGrpc(status, context);
  return absl::OkStatus();
}

absl::StatusOr<ReleasedVolumeKey> KeyBrokerClient::ReleaseVolumeKey(
    const ReleaseRequest& params) {
  const v1::ReleaseKeyRequest request = ReleaseRequestToProto(params);

  grpc::ClientContext context;
  if (absl::Status s = PrepareContext(context); !s.ok()) return s;
  v1::ReleaseKeyResponse response;
  const grpc::Status status = stub_->ReleaseKey(&context, request, &response);
  if (!status.ok()) return FromGrpc(status, context);

  std::string* dek = response.mutable_dek();
  auto secret = crypto::SecretBytes::CopyFrom(std::span<const uint8_t>(
      reinterpret_cast<const uint8_t*>(dek->data()), dek->size()));
  const size_t size = dek->size();
  OPENSSL_cleanse(dek->data(), dek->size());
  if (!secret.ok()) return secret.status();
  if (size != kDekSize) {
    return absl::DataLossError(absl::StrCat(
        "key broker returned a ", size, "-byte key for volume ",
        params.volume_id, ", expected ", kDekSize));
  }
  if (!response.format_id().empty() &&
      !kms::ValidateFormatId(response.format_id()).ok()) {
    return absl::DataLossError(absl::StrCat(
        "key broker returned a malformed format id for volume ",
        params.volume_id));
  }
  ReleasedVolumeKey released{*std::move(secret), response.format_id()};
  if (response.has_expected_state()) {
    const v1::StateCommitment& expected = response.expected_state();
    if (!kms::ValidateStateRoot(expected.root()).ok()) {
      return absl::DataLossError(absl::StrCat(
          "key broker returned a malformed state root for volume ",
          params.volume_id));
    }
    released.expected_state = StateCommitmentFromProto(expected);
  }
  released.rollback_accepted = response.rollback_accepted();
  return released;
}

absl::StatusOr<std::vector<CopyJob>> KeyBrokerClient::CopyJobs(
    const std::string& node_id, absl::Duration wait, CallCanceller* cancel) {
  v1::CopyJobsRequest request;
  request.set_node_id(node_id);
  const int64_t wait_seconds =
      std::clamp<int64_t>(absl::ToInt64Seconds(absl::Ceil(wait, absl::Seconds(1))),
                          0, std::numeric_limits<uint32_t>::max());
  request.set_wait_seconds(static_cast<uint32_t>(wait_seconds));
  grpc::ClientContext context;
  CallCanceller::Registration registration(cancel,
                                           [&context] { context.TryCancel(); });
  if (!registration.ok()) {
    return absl::CancelledError("key broker: copy jobs: the call was cancelled");
  }
  if (absl::Status s = PrepareContext(context); !s.ok()) return s;
  // The broker answers shortly before the deadline at the latest.
  context.set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout +
                                          absl::Seconds(wait_seconds)));
  v1::CopyJobsResponse response;
  const grpc::Status status = stub_->CopyJobs(&context, request, &response);
  if (!status.ok()) return FromGrpc(status, context);
  std::vector<CopyJob> jobs;
  for (const v1::CopyJob& job : response.jobs()) {
    auto parsed = CopyJobFromProto(job);
    if (!parsed.ok()) {
      return absl::DataLossError(absl::StrCat(
          "key broker listed copy job ", job.target_id().substr(0, 128),
          " with ", parsed.status().message()));
    }
    jobs.push_back(*std::move(parsed));
  }
  return jobs;
}

absl::StatusOr<CopyKeys> KeyBrokerClient::ReleaseCopyKeys(
    const std::string& node_id, const std::string& target_id) {
  v1::ReleaseCopyKeysRequest request;
  request.set_node_id(node_id);
  request.set_target_id(target_id);
  grpc::ClientContext context;
  if (absl::Status s = PrepareContext(context); !s.ok()) return s;
  v1::ReleaseCopyKeysResponse response;
  const grpc::Status status =
      stub_->ReleaseCopyKeys(&context, request, &response);
  if (!status.ok()) return FromGrpc(status, context);

  // Both keys leave the protobuf at once, wiped there whatever happens next.
  auto take = [](std::string* bytes) -> absl::StatusOr<crypto::SecretBytes> {
    auto secret = crypto::SecretBytes::CopyFrom(std::span<const uint8_t>(
        reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size()));
    const size_t size = bytes->size();
    OPENSSL_cleanse(bytes->data(), bytes->size());
    if (!secret.ok()) return secret.status();
    if (size != kDekSize) {
      return absl::DataLossError(
          absl::StrCat("a ", size, "-byte key, expected ", kDekSize));
    }
    return secret;
  };
  auto source_dek = take(response.mutable_source_dek());
  auto target_dek = take(response.mutable_target_dek());
  auto malformed = [&](const std::string& what) {
    return absl::DataLossError(absl::StrCat(
        "key broker returned ", what, " for the copy job of ", target_id));
  };
  if (!source_dek.ok()) return malformed(std::string(source_dek.status().message()));
  if (!target_dek.ok()) return malformed(std::string(target_dek.status().message()));
  auto kind = CopyKindFromProto(response.kind());
  auto state = CopyStateFromProto(response.state());
  if (!kind.ok() || !state.ok()) return malformed("an unknown kind or state");
  if (!response.source_format_id().empty() &&
      !kms::ValidateFormatId(response.source_format_id()).ok()) {
    return malformed("a malformed source format id");
  }
  CopyKeys keys{.source_dek = *std::move(source_dek),
                .target_dek = *std::move(target_dek),
                .source_id = response.source_id(),
                .kind = *kind,
                .state = *state,
                .source_format_id = response.source_format_id(),
                .source_rollback_accepted = response.source_rollback_accepted(),
                .target_capacity_bytes = response.target_capacity_bytes()};
  if (response.has_source_expected_state()) {
    if (!kms::ValidateStateRoot(response.source_expected_state().root()).ok()) {
      return malformed("a malformed source state root");
    }
    keys.source_expected_state =
        StateCommitmentFromProto(response.source_expected_state());
  }
  return keys;
}

absl::StatusOr<kms::CopyState> KeyBrokerClient::ReportCopy(
    const std::string& node_id, const CopyReport& report) {
  const v1::ReportCopyRequest request = CopyReportToProto(report, node_id);
  grpc::ClientContext context;
  if (absl::Status s = PrepareContext(context); !s.ok()) return s;
  v1::ReportCopyResponse response;
  const grpc::Status status = stub_->ReportCopy(&context, request, &response);
  if (!status.ok()) return FromGrpc(status, context);
  auto state = CopyStateFromProto(response.state());
  if (!state.ok()) {
    return absl::DataLossError(absl::StrCat(
        "key broker answered the copy report of ", report.target_id,
        " with an unknown state"));
  }
  return *state;
}

}  // namespace sealvol::broker
