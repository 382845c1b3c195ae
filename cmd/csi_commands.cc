#include "cmd/csi_commands.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "base/durable_file.h"
#include "base/status_macros.h"
#include "cmd/exit_codes.h"
#include "cmd/log_format.h"
#include "csi/capabilities.h"
#include "csi/controller_service.h"
#include "csi/fuse_data_path.h"
#include "csi/grpc_status.h"
#include "csi/identity_service.h"
#include "csi/node_service.h"
#include "csi/volume_key_source.h"
#include "grpcpp/grpcpp.h"
#include "httplib.h"
#include "kms/broker/audit_log.h"
#include "kms/broker/broker_metrics.h"
#include "kms/broker/jwks_cache.h"
#include "kms/broker/key_broker_client.h"
#include "kms/broker/key_broker_service.h"
#include "kms/broker/pod_lookup.h"
#include "kms/broker/token_review.h"
#include "kms/broker/token_verifier.h"
#include "kms/key_provider.h"
#include "nlohmann/json.hpp"
#include "proto/csi.grpc.pb.h"
#include "spdlog/spdlog.h"

namespace sealvol::cmd {

namespace {

namespace csipb = ::csi::v1;

constexpr char kVersion[] = "0.1.0";

int Fail(const std::string& what, const absl::Status& status) {
  return cmd::Fail(what, status, CommandFamily::kService);
}

absl::Status SetLogLevel(const std::string& level) {
  auto parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError("--log-level: unknown level " + level);
  }
  spdlog::set_level(parsed);
  return absl::OkStatus();
}

// Blocks SIGINT/SIGTERM/SIGHUP in every thread (call before starting any),
// so WaitForSignal can take them synchronously.
void BlockSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

// Returns the signal that arrived; calls `on_hup` for each SIGHUP.
int WaitForSignal(const std::function<void()>& on_hup) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGHUP) {
      if (on_hup) on_hup();
      continue;
    }
    return sig;
  }
}

// Binds the CSI endpoint ("unix:///path"), replacing a stale socket file.
absl::StatusOr<std::unique_ptr<grpc::Server>> StartCsiServer(
    const std::string& endpoint, const std::vector<grpc::Service*>& services) {
  constexpr std::string_view kUnix = "unix://";
  if (endpoint.rfind(kUnix, 0) != 0) {
    return absl::InvalidArgumentError("--endpoint " + endpoint +
                                      ": must be unix:///PATH");
  }
  const std::string path = endpoint.substr(kUnix.size());
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::FailedPreconditionError("remove stale socket " + path + ": " +
                                         std::strerror(errno));
  }
  grpc::ServerBuilder builder;
  builder.AddListeningPort(endpoint, grpc::InsecureServerCredentials());
  for (grpc::Service* service : services) builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    return absl::UnavailableError("listen on " + endpoint + ": failed");
  }
  chmod(path.c_str(), 0600);  // Only root (the kubelet, sidecars) may call.
  return server;
}

// ------------------------------------------------------------- controller

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
  std::string audit_log;
  std::string metrics_listen;
  std::string log_level = "info";
};

int RunController(const ControllerFlags& f) {
  if (absl::Status s = SetLogLevel(f.log_level); !s.ok()) return Fail("controller", s);
  EscapeLogMessages();
  BlockSignals();

  auto provider = kms::OpenKeyProvider(f.kms);
  if (!provider.ok()) return Fail("controller: --kms", provider.status());

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
      return Fail("controller", absl::InvalidArgumentError(
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
    if (!cache.ok()) return Fail("controller: JWKS", cache.status());
    jwks = std::move(*cache);
    absl::Duration max_lifetime;
    if (!absl::ParseDuration(f.max_token_lifetime, &max_lifetime) ||
        max_lifetime <= absl::ZeroDuration()) {
      return Fail("controller", absl::InvalidArgumentError(
                                    "--max-token-lifetime " + f.max_token_lifetime +
                                    ": expected a positive duration such as 24h"));
    }
    verifier = std::make_unique<broker::TokenVerifier>(
        broker::TokenVerifierOptions{.issuer = f.issuer,
                                     .audience = f.audience,
                                     .max_lifetime = max_lifetime},
        *jwks);
    auto log = broker::AuditLog::Open({.path = f.audit_log});
    if (!log.ok()) return Fail("controller: --audit-log", log.status());
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
        return Fail("controller", absl::InvalidArgumentError(absl::StrCat(
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
        return Fail("controller",
                    unreadable("--token-review-ca-file", f.token_review_ca_file));
      }
      if (access(f.token_review_token_file.c_str(), R_OK) != 0) {
        return Fail("controller", unreadable("--token-review-token-file",
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
    if (!started.ok()) return Fail("controller: --broker-listen", started.status());
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
    if (!started.ok()) return Fail("controller: --metrics-listen", started.status());
    metrics_server = std::move(*started);
    spdlog::info("metrics and readiness (/metrics, /readyz) on port {}",
                 metrics_server->port());
  }

  csi::IdentityService identity(kVersion, readiness);
  csi::ControllerService controller(keys);
  auto server = StartCsiServer(f.endpoint, {&identity, &controller});
  if (!server.ok()) return Fail("controller: --endpoint", server.status());
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
  if (broker_server.server) broker_server.server->Shutdown();
  return kExitOk;
}

// ------------------------------------------------------------------- node

struct NodeFlags {
  std::string endpoint;
  std::string node_id;
  std::string state_dir = "/var/lib/sealvol";
  std::string kubelet_dir = csi::kDefaultKubeletDir;
  std::string broker;
  std::string broker_ca, broker_client_cert, broker_client_key;
  std::string broker_server_name;
  std::string node_token_file;
  std::string metrics_listen;
  std::string reap_interval = "10m";
  std::string log_level = "info";
};

// Runs NodeService::ReapDeletedVolumes once right away (after Recover) and
// then every `interval`, on its own thread, until destroyed.
class NodeReaper {
 public:
  NodeReaper(csi::NodeService* node, absl::Duration interval)
      : node_(node), interval_(interval), thread_([this] { Run(); }) {}
  ~NodeReaper() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }

 private:
  void Run() {
    std::unique_lock lock(mu_);
    while (!stop_) {
      lock.unlock();
      auto removed = node_->ReapDeletedVolumes();
      if (!removed.ok()) {
        spdlog::warn("{}; next try in {}", std::string(removed.status().message()),
                     absl::FormatDuration(interval_));
      } else if (*removed > 0) {
        spdlog::info("reap: removed {} deleted volume(s)", *removed);
      }
      lock.lock();
      wake_.wait_for(lock, absl::ToChronoNanoseconds(interval_),
                     [this] { return stop_; });
    }
  }

  csi::NodeService* const node_;
  const absl::Duration interval_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;  // Guarded by mu_.
  std::thread thread_;  // Last: starts after the members above exist.
};

// /metrics and /healthz for the node: staged volumes and their health.
class NodeMetricsServer {
 public:
  static absl::StatusOr<std::unique_ptr<NodeMetricsServer>> Start(
      const std::string& listen, std::function<std::string()> render) {
    auto colon = listen.rfind(':');
    if (colon == std::string::npos) {
      return absl::InvalidArgumentError("--metrics-listen " + listen +
                                        ": expected HOST:PORT");
    }
    auto out = std::unique_ptr<NodeMetricsServer>(new NodeMetricsServer);
    out->server_.Get("/metrics", [render](const httplib::Request&,
                                          httplib::Response& res) {
      res.set_content(render(), "text/plain; version=0.0.4");
    });
    out->server_.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("ok\n", "text/plain");
    });
    const std::string host = listen.substr(0, colon);
    const int port = std::atoi(listen.c_str() + colon + 1);
    if (!out->server_.bind_to_port(host.c_str(), port)) {
      return absl::UnavailableError("--metrics-listen " + listen + ": bind failed");
    }
    out->thread_ = std::thread([s = &out->server_] { s->listen_after_bind(); });
    return out;
  }
  ~NodeMetricsServer() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

 private:
  NodeMetricsServer() = default;
  httplib::Server server_;
  std::thread thread_;
};

int RunNode(const NodeFlags& f) {
  if (absl::Status s = SetLogLevel(f.log_level); !s.ok()) return Fail("node", s);
  EscapeLogMessages();
  BlockSignals();
  if (mkdir(f.state_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Fail("node", absl::FailedPreconditionError("create --state-dir " +
                                                      f.state_dir + ": " +
                                                      std::strerror(errno)));
  }
  auto client = broker::KeyBrokerClient::Create(
      {.target = f.broker,
       .ca_file = f.broker_ca,
       .client_cert_file = f.broker_client_cert,
       .client_key_file = f.broker_client_key,
       .tls_server_name = f.broker_server_name,
       .node_token_file = f.node_token_file});
  if (!client.ok()) return Fail("node: --broker", client.status());
  csi::BrokerKeySource keys(std::move(*client));
  csi::FuseDataPath data_path;
  csi::NodeService node({.node_id = f.node_id,
                         .state_dir = f.state_dir,
                         .kubelet_dir = f.kubelet_dir},
                        &keys, &data_path);
  auto recovered = node.Recover();
  if (!recovered.ok()) return Fail("node: recover", recovered.status());
  spdlog::info("node {}: {} staged volume(s) found in {}", f.node_id,
               *recovered, f.state_dir);
  absl::Duration reap_interval;
  if (!absl::ParseDuration(f.reap_interval, &reap_interval) ||
      reap_interval < absl::ZeroDuration()) {
    return Fail("node", absl::InvalidArgumentError(
                            "--reap-interval " + f.reap_interval +
                            ": expected a duration such as 10m, 90s or 0"));
  }

  const std::string state_dir = f.state_dir;
  csi::IdentityService identity(kVersion, [state_dir]() -> absl::Status {
    if (access("/dev/fuse", R_OK | W_OK) != 0) {
      return absl::UnavailableError("/dev/fuse is not accessible");
    }
    if (access(state_dir.c_str(), W_OK) != 0) {
      return absl::UnavailableError("state dir " + state_dir + " is not writable");
    }
    return absl::OkStatus();
  });
  auto server = StartCsiServer(f.endpoint, {&identity, &node});
  if (!server.ok()) return Fail("node: --endpoint", server.status());

  std::unique_ptr<NodeMetricsServer> metrics;
  if (!f.metrics_listen.empty()) {
    auto started = NodeMetricsServer::Start(f.metrics_listen, [state_dir] {
      // Staged volumes are the stage records on disk.
      int staged = 0;
      std::error_code ec;
      for (const auto& entry : std::filesystem::directory_iterator(
               state_dir + "/volumes", ec)) {
        if (std::filesystem::exists(entry.path() / "stage.json")) ++staged;
      }
      return "# HELP sealvol_node_staged_volumes Volumes staged on this node.\n"
             "# TYPE sealvol_node_staged_volumes gauge\n"
             "sealvol_node_staged_volumes " + std::to_string(staged) + "\n";
    });
    if (!started.ok()) return Fail("node: --metrics-listen", started.status());
    metrics = std::move(*started);
  }
  spdlog::info("node {} serving CSI on {} (broker {})", f.node_id, f.endpoint,
               f.broker);
  std::unique_ptr<NodeReaper> reaper;
  if (reap_interval > absl::ZeroDuration()) {
    reaper = std::make_unique<NodeReaper>(&node, reap_interval);
  }
  const int sig = WaitForSignal(nullptr);
  spdlog::info("node: signal {}, shutting down", sig);
  reaper.reset();
  (*server)->Shutdown();
  return kExitOk;
}

// -------------------------------------------------------------- csi client

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
      return csi::FromGrpcStatus(s);
    }
    grpc::ClientContext probe_ctx;
    csipb::ProbeResponse probe;
    if (auto s = identity->Probe(&probe_ctx, {}, &probe); !s.ok()) {
      return csi::FromGrpcStatus(s);
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
    csipb::CreateVolumeResponse res;
    if (auto s = controller->CreateVolume(&ctx, req, &res); !s.ok()) {
      return csi::FromGrpcStatus(s);
    }
    std::printf("%s\t%lld\n", res.volume().volume_id().c_str(),
                static_cast<long long>(res.volume().capacity_bytes()));
    return absl::OkStatus();
  }
  if (verb == "delete") {
    csipb::DeleteVolumeRequest req;
    req.set_volume_id(f.volume_id);
    csipb::DeleteVolumeResponse res;
    return csi::FromGrpcStatus(controller->DeleteVolume(&ctx, req, &res));
  }
  if (verb == "list") {
    csipb::ListVolumesRequest req;
    req.set_max_entries(f.max_entries);
    csipb::ListVolumesResponse res;
    if (auto s = controller->ListVolumes(&ctx, req, &res); !s.ok()) {
      return csi::FromGrpcStatus(s);
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
  if (verb == "stage") {
    csipb::NodeStageVolumeRequest req;
    req.set_volume_id(f.volume_id);
    req.set_staging_target_path(f.staging_path);
    *req.mutable_volume_capability() = Capability(f);
    if (auto s = FillNodeContext(f, req.mutable_volume_context()); !s.ok()) return s;
    csipb::NodeStageVolumeResponse res;
    return csi::FromGrpcStatus(node->NodeStageVolume(&ctx, req, &res));
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
    return csi::FromGrpcStatus(node->NodePublishVolume(&ctx, req, &res));
  }
  if (verb == "unpublish") {
    csipb::NodeUnpublishVolumeRequest req;
    req.set_volume_id(f.volume_id);
    req.set_target_path(f.target);
    csipb::NodeUnpublishVolumeResponse res;
    return csi::FromGrpcStatus(node->NodeUnpublishVolume(&ctx, req, &res));
  }
  if (verb == "unstage") {
    csipb::NodeUnstageVolumeRequest req;
    req.set_volume_id(f.volume_id);
    req.set_staging_target_path(f.staging_path);
    csipb::NodeUnstageVolumeResponse res;
    return csi::FromGrpcStatus(node->NodeUnstageVolume(&ctx, req, &res));
  }
  if (verb == "stats") {
    csipb::NodeGetVolumeStatsRequest req;
    req.set_volume_id(f.volume_id);
    req.set_volume_path(f.path);
    csipb::NodeGetVolumeStatsResponse res;
    if (auto s = node->NodeGetVolumeStats(&ctx, req, &res); !s.ok()) {
      return csi::FromGrpcStatus(s);
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
        return csi::FromGrpcStatus(s);
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
      return csi::FromGrpcStatus(s);
    }
    std::printf("%lld\n", static_cast<long long>(res.capacity_bytes()));
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError("unknown csi verb " + verb);
}

}  // namespace

void RegisterCsiCommands(CLI::App& app, int& exit_code) {
  // ---- sealvol controller
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
  controller->add_option("--audit-log", cf->audit_log, "Hash-chained audit log (JSON lines)");
  controller->add_option("--metrics-listen", cf->metrics_listen, "HOST:PORT for /metrics");
  controller->add_option("--log-level", cf->log_level, "trace|debug|info|warn|error")
      ->capture_default_str();
  controller->callback([cf, &exit_code] { exit_code = RunController(*cf); });

  // ---- sealvol node
  auto nf = std::make_shared<NodeFlags>();
  CLI::App* node = app.add_subcommand(
      "node", "Run the CSI node plugin (Identity, Node) and the volume data path");
  node->add_option("--endpoint", nf->endpoint, "CSI socket, unix:///PATH")->required();
  node->add_option("--node-id", nf->node_id, "This node's name")->required();
  node->add_option("--state-dir", nf->state_dir, "Backing images and stage records")
      ->capture_default_str();
  node->add_option("--kubelet-dir", nf->kubelet_dir,
                   "The kubelet's root directory: staging and target paths "
                   "must lie beneath it")
      ->capture_default_str();
  node->add_option("--broker", nf->broker, "KeyBroker: unix:///PATH or HOST:PORT (TLS)")
      ->required();
  node->add_option("--broker-ca", nf->broker_ca, "PEM CA of the broker's certificate");
  node->add_option("--broker-client-cert", nf->broker_client_cert, "PEM client cert (mTLS)");
  node->add_option("--broker-client-key", nf->broker_client_key, "PEM client key (mTLS)");
  node->add_option("--broker-server-name", nf->broker_server_name,
                   "Name expected in the broker's certificate");
  node->add_option("--node-token-file", nf->node_token_file,
                   "The node plugin's projected service-account token");
  node->add_option("--metrics-listen", nf->metrics_listen, "HOST:PORT for /metrics");
  node->add_option("--reap-interval", nf->reap_interval,
                   "How often to remove the images of volumes deleted at the "
                   "controller (first pass at start-up); 0 = never")
      ->capture_default_str();
  node->add_option("--log-level", nf->log_level, "trace|debug|info|warn|error")
      ->capture_default_str();
  node->callback([nf, &exit_code] { exit_code = RunNode(*nf); });

  // ---- sealvol csi VERB
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
