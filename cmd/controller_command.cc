#include "cmd/controller_command.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "base/durable_file.h"
#include "base/status_macros.h"
#include "cmd/exit_codes.h"
#include "cmd/log_format.h"
#include "cmd/service_process.h"
#include "csi/capabilities.h"
#include "csi/controller_service.h"
#include "csi/identity_service.h"
#include "httplib.h"
#include "kms/broker/audit_log.h"
#include "kms/broker/broker_metrics.h"
#include "kms/broker/jwks_cache.h"
#include "kms/broker/key_broker_service.h"
#include "kms/broker/pod_lookup.h"
#include "kms/broker/token_review.h"
#include "kms/broker/token_verifier.h"
#include "kms/key_provider.h"
#include "spdlog/spdlog.h"

namespace sealvol::cmd {

namespace {

struct ControllerFlags {
  std::string endpoint;
  std::string kms;
  std::string broker_listen;
  std::string broker_tls_cert, broker_tls_key, broker_client_ca;
  std::string jwks_file, jwks_url, oidc_issuer_url, jwks_ca_file;
  std::string jwks_bearer_token_file;
  std::string issuer;
  std::string audience = "sealvol";
  std::string node_service_account = "sealvol-system:sealvol-node";
  bool token_review = false;
  // Where TokenReviews go; the defaults are the in-cluster ones. A
  // controller outside the cluster names the API server, its CA and a
  // credential allowed to create tokenreviews.
  std::string token_review_url = broker::TokenReviewOptions().api_server_url;
  std::string token_review_ca_file = broker::TokenReviewOptions().ca_file;
  std::string token_review_token_file =
      broker::TokenReviewOptions().bearer_token_file;
  bool allow_tokens_without_node_claim = false;
  // Block volumes: the kubelet sends no pod token with their publish; with
  // this flag the broker confirms their pods through the API server above.
  bool attest_block_pods_via_api_server = false;
  std::string max_token_lifetime = "24h";
  // Snapshots and clones (docs/csi.md): off until the node plugins run the
  // copy jobs.
  bool enable_snapshots = false;
  std::string snapshot_cut_timeout = "30s";
  std::string audit_log;
  std::string metrics_listen;
  std::string log_level = "info";
};

int RunController(const ControllerFlags& f) {
  if (absl::Status s = SetLogLevel(f.log_level); !s.ok()) return FailService("controller", s);
  EscapeLogMessages();
  BlockSignals();

  auto provider = kms::OpenKeyProvider(f.kms);
  if (!provider.ok()) return FailService("controller: --kms", provider.status());

  // The KeyBroker runs in the controller: it is the only holder of KMS
  // credentials.
  std::unique_ptr<broker::JwksCache> jwks;
  std::unique_ptr<broker::TokenVerifier> verifier;
  std::unique_ptr<broker::AuditLog> audit;
  std::unique_ptr<broker::TokenReviewer> reviewer;
  std::unique_ptr<broker::PodLookup> pod_lookup;
  broker::BrokerMetrics metrics;
  std::unique_ptr<broker::KeyBrokerService> broker_service;
  broker::BrokerServer broker_server;
  std::unique_ptr<broker::MetricsServer> metrics_server;
  if (!f.broker_listen.empty()) {
    const int sources = !f.jwks_file.empty() + !f.jwks_url.empty() +
                        !f.oidc_issuer_url.empty();
    if (sources != 1 || f.issuer.empty() || f.audit_log.empty()) {
      return FailService("controller", absl::InvalidArgumentError(
                                    "--broker-listen needs exactly one of "
                                    "--jwks-file, --jwks-url, --oidc-issuer-url, "
                                    "and --issuer and --audit-log"));
    }
    auto cache = broker::JwksCache::Create(
        {.file = f.jwks_file,
         .url = f.jwks_url,
         .oidc_issuer_url = f.oidc_issuer_url,
         .ca_file = f.jwks_ca_file,
         .bearer_token_file = f.jwks_bearer_token_file});
    if (!cache.ok()) return FailService("controller: JWKS", cache.status());
    jwks = std::move(*cache);
    absl::Duration max_lifetime;
    if (!absl::ParseDuration(f.max_token_lifetime, &max_lifetime) ||
        max_lifetime <= absl::ZeroDuration()) {
      return FailService("controller", absl::InvalidArgumentError(
                                    "--max-token-lifetime " + f.max_token_lifetime +
                                    ": expected a positive duration such as 24h"));
    }
    verifier = std::make_unique<broker::TokenVerifier>(
        broker::TokenVerifierOptions{.issuer = f.issuer,
                                     .audience = f.audience,
                                     .max_lifetime = max_lifetime},
        *jwks);
    auto log = broker::AuditLog::Open({.path = f.audit_log});
    if (!log.ok()) return FailService("controller: --audit-log", log.status());
    audit = std::move(*log);
    broker::KeyBrokerOptions options;
    options.policy.node_service_account = f.node_service_account;
    options.policy.allow_tokens_without_node_claim =
        f.allow_tokens_without_node_claim;
    if (f.allow_tokens_without_node_claim) {
      spdlog::warn("--allow-tokens-without-node-claim: pod tokens that name no "
                   "node are accepted from any node that holds them");
    }
    options.metrics = &metrics;
    if (f.token_review || f.attest_block_pods_via_api_server) {
      if (!absl::StartsWith(f.token_review_url, "https://") &&
          !absl::StartsWith(f.token_review_url, "http://")) {
        return FailService("controller", absl::InvalidArgumentError(absl::StrCat(
                                      "--token-review-url: not an http(s) URL: '",
                                      f.token_review_url, "'")));
      }
      auto unreadable = [](const char* flag, const std::string& path) {
        return absl::InvalidArgumentError(absl::StrCat(
            flag, ": cannot read '", path,
            "' (outside the cluster, give the API server's CA and a token "
            "file allowed to create tokenreviews)"));
      };
      if (!f.token_review_ca_file.empty() &&
          access(f.token_review_ca_file.c_str(), R_OK) != 0) {
        return FailService("controller",
                    unreadable("--token-review-ca-file", f.token_review_ca_file));
      }
      if (access(f.token_review_token_file.c_str(), R_OK) != 0) {
        return FailService("controller", unreadable("--token-review-token-file",
                                             f.token_review_token_file));
      }
    }
    if (f.token_review) {
      reviewer = std::make_unique<broker::TokenReviewer>(broker::TokenReviewOptions{
          .api_server_url = f.token_review_url,
          .ca_file = f.token_review_ca_file,
          .bearer_token_file = f.token_review_token_file,
          .audience = f.audience});
      options.token_reviewer = reviewer.get();
    }
    if (f.attest_block_pods_via_api_server) {
      pod_lookup = std::make_unique<broker::PodLookup>(broker::PodLookupOptions{
          .api_server = {.url = f.token_review_url,
                         .ca_file = f.token_review_ca_file,
                         .bearer_token_file = f.token_review_token_file},
          .driver = csi::kDriverName});
      options.pod_lookup = pod_lookup.get();
      spdlog::info("--attest-block-pods-via-api-server: block volumes' pods "
                   "(publishes without a token) are confirmed through the "
                   "API server at {}", f.token_review_url);
    }
    broker_service = std::make_unique<broker::KeyBrokerService>(
        **provider, *verifier, *audit, options);
    auto started = broker::StartBrokerServer({.listen = f.broker_listen,
                                              .tls_cert_file = f.broker_tls_cert,
                                              .tls_key_file = f.broker_tls_key,
                                              .client_ca_file = f.broker_client_ca},
                                             *broker_service);
    if (!started.ok()) return FailService("controller: --broker-listen", started.status());
    broker_server = std::move(*started);
    spdlog::info("key broker listening on {}", f.broker_listen);
  }
  kms::KeyProvider* keys = provider->get();
  broker::AuditLog* audit_log = audit.get();
  // Ready when the KMS answers and, with the broker, the audit log takes
  // records (a broker that cannot audit refuses every key).
  auto readiness = [keys, audit_log]() -> absl::Status {
    if (audit_log != nullptr) {
      if (absl::Status s = audit_log->Health(); !s.ok()) {
        return absl::UnavailableError("audit log: " + std::string(s.message()));
      }
    }
    return keys->Ping();
  };
  if (!f.metrics_listen.empty()) {
    auto started =
        broker::MetricsServer::Start(f.metrics_listen, metrics, readiness);
    if (!started.ok()) return FailService("controller: --metrics-listen", started.status());
    metrics_server = std::move(*started);
    spdlog::info("metrics and readiness (/metrics, /readyz) on port {}",
                 metrics_server->port());
  }

  csi::ControllerOptions controller_options;
  controller_options.snapshots = f.enable_snapshots;
  if (!absl::ParseDuration(f.snapshot_cut_timeout,
                           &controller_options.snapshot_cut_timeout) ||
      controller_options.snapshot_cut_timeout <= absl::ZeroDuration()) {
    return FailService("controller", absl::InvalidArgumentError(
                                         "--snapshot-cut-timeout " +
                                         f.snapshot_cut_timeout +
                                         ": expected a positive duration such as 30s"));
  }
  if (broker_service != nullptr) {
    broker::KeyBrokerService* service = broker_service.get();
    controller_options.copy_job_created = [service](const std::string& node) {
      service->CopyJobsChanged(node);
    };
  }
  csi::IdentityService identity(kServiceVersion, readiness);
  csi::ControllerService controller(keys, controller_options);
  auto server = StartCsiServer(f.endpoint, {&identity, &controller});
  if (!server.ok()) return FailService("controller: --endpoint", server.status());
  spdlog::info("controller serving CSI on {} (kms {})", f.endpoint,
               keys->Describe());

  const int sig = WaitForSignal([&audit] {
    if (audit) {
      absl::Status s = audit->Rotate();
      spdlog::info("SIGHUP: audit log rotated{}",
                   s.ok() ? "" : ": " + std::string(s.message()));
    }
  });
  spdlog::info("controller: signal {}, shutting down", sig);
  (*server)->Shutdown();
  if (broker_server.server) {
    // Waiting CopyJobs calls answer now; Shutdown waits for every call.
    broker_service->EndWaits();
    broker_server.server->Shutdown();
  }
  return kExitOk;
}

}  // namespace

void RegisterControllerCommand(CLI::App& app, int& exit_code) {
  auto cf = std::make_shared<ControllerFlags>();
  CLI::App* controller = app.add_subcommand(
      "controller", "Run the CSI controller (Identity, Controller) and the KeyBroker");
  controller->add_option("--endpoint", cf->endpoint, "CSI socket, unix:///PATH")->required();
  controller->add_option("--kms", cf->kms, "Key provider: local:DIR or vault+https://...")
      ->required();
  controller->add_option("--broker-listen", cf->broker_listen,
                         "KeyBroker address: unix:///PATH or HOST:PORT (TLS)");
  controller->add_option("--broker-tls-cert", cf->broker_tls_cert, "PEM server certificate");
  controller->add_option("--broker-tls-key", cf->broker_tls_key, "PEM server key");
  controller->add_option("--broker-client-ca", cf->broker_client_ca,
                         "PEM CA for node client certificates (mTLS)");
  controller->add_option("--jwks-file", cf->jwks_file, "Issuer JWKS file");
  controller->add_option("--jwks-url", cf->jwks_url, "Issuer JWKS URL");
  controller->add_option("--oidc-issuer-url", cf->oidc_issuer_url, "OIDC discovery URL");
  controller->add_option("--jwks-ca-file", cf->jwks_ca_file, "CA bundle for JWKS over https");
  controller->add_option("--jwks-bearer-token-file", cf->jwks_bearer_token_file,
                         "Bearer token for JWKS/OIDC fetches");
  controller->add_option("--issuer", cf->issuer, "Expected token issuer (iss)");
  controller->add_option("--audience", cf->audience, "Expected token audience")
      ->capture_default_str();
  controller->add_option("--node-service-account", cf->node_service_account,
                         "NAMESPACE:NAME of the node plugins' service account")
      ->capture_default_str();
  controller->add_flag("--token-review", cf->token_review,
                       "Confirm pod tokens with the API server's TokenReview");
  controller->add_flag("--attest-block-pods-via-api-server",
                       cf->attest_block_pods_via_api_server,
                       "Release block volumes' keys (the kubelet sends no pod "
                       "token for them) to pods the API server confirms: on "
                       "this node, this uid and service account, using the "
                       "volume; off by default (docs/attestation.md)");
  controller->add_option("--token-review-url", cf->token_review_url,
                         "API server for TokenReview and block pod lookups "
                         "(outside the cluster: its URL)")
      ->capture_default_str();
  controller->add_option("--token-review-ca-file", cf->token_review_ca_file,
                         "PEM CA of the API server (empty: the system store)")
      ->capture_default_str();
  controller->add_option("--token-review-token-file", cf->token_review_token_file,
                         "Bearer token allowed to create tokenreviews (and, "
                         "for block pod lookups, to get pods, PVCs and PVs)")
      ->capture_default_str();
  controller->add_flag("--allow-tokens-without-node-claim",
                       cf->allow_tokens_without_node_claim,
                       "Accept pod tokens without a node claim (API servers "
                       "before Kubernetes 1.30); off by default");
  controller->add_option("--max-token-lifetime", cf->max_token_lifetime,
                         "Longest token lifetime (exp - iat, exp - nbf) accepted")
      ->capture_default_str();
  controller->add_flag("--enable-snapshots", cf->enable_snapshots,
                       "Serve snapshots and clones (CREATE_DELETE_SNAPSHOT, "
                       "LIST_SNAPSHOTS, CLONE_VOLUME); needs node plugins that "
                       "run copy jobs; off by default");
  controller->add_option("--snapshot-cut-timeout", cf->snapshot_cut_timeout,
                         "How long CreateSnapshot waits for the node's cut "
                         "before DEADLINE_EXCEEDED (the sidecar retries)")
      ->capture_default_str();
  controller->add_option("--audit-log", cf->audit_log, "Hash-chained audit log (JSON lines)");
  controller->add_option("--metrics-listen", cf->metrics_listen, "HOST:PORT for /metrics");
  controller->add_option("--log-level", cf->log_level, "trace|debug|info|warn|error")
      ->capture_default_str();
  controller->callback([cf, &exit_code] { exit_code = RunController(*cf); });
}

}  // namespace sealvol::cmd
