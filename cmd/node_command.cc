#include "cmd/node_command.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "base/mutex.h"
#include "cmd/exit_codes.h"
#include "cmd/log_format.h"
#include "cmd/service_process.h"
#include "csi/copy_job_runner.h"
#include "csi/fuse_data_path.h"
#include "csi/identity_service.h"
#include "csi/kubelet_paths.h"
#include "csi/node_service.h"
#include "csi/volume_key_source.h"
#include "httplib.h"
#include "kms/broker/key_broker_client.h"
#include "spdlog/spdlog.h"

namespace sealvol::cmd {

namespace {

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
  std::string copy_poll_interval = "3s";
  std::string copy_wait = "30s";
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
      MutexLock lock(&mu_);
      stop_ = true;
    }
    wake_.SignalAll();
    thread_.join();
  }

 private:
  void Run() {
    for (;;) {
      {
        MutexLock lock(&mu_);
        if (stop_) return;
      }
      auto removed = node_->ReapDeletedVolumes();
      if (!removed.ok()) {
        spdlog::warn("{}; next try in {}",
                     std::string(removed.status().message()),
                     absl::FormatDuration(interval_));
      } else if (*removed > 0) {
        spdlog::info("reap: removed {} deleted volume(s)", *removed);
      }
      const auto deadline = std::chrono::steady_clock::now() +
                            absl::ToChronoNanoseconds(interval_);
      MutexLock lock(&mu_);
      while (!stop_ && wake_.WaitUntil(&mu_, deadline)) {
      }
    }
  }

  csi::NodeService* const node_;
  const absl::Duration interval_;
  Mutex mu_;
  CondVar wake_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
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
  if (absl::Status s = SetLogLevel(f.log_level); !s.ok()) return FailService("node", s);
  EscapeLogMessages();
  BlockSignals();
  if (mkdir(f.state_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return FailService("node", absl::FailedPreconditionError("create --state-dir " +
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
  if (!client.ok()) return FailService("node: --broker", client.status());
  csi::BrokerKeySource keys(std::move(*client));
  csi::FuseDataPath data_path;
  csi::NodeService node({.node_id = f.node_id,
                         .state_dir = f.state_dir,
                         .kubelet_dir = f.kubelet_dir},
                        &keys, &data_path);
  auto recovered = node.Recover();
  if (!recovered.ok()) return FailService("node: recover", recovered.status());
  spdlog::info("node {}: {} staged volume(s) found in {}", f.node_id,
               *recovered, f.state_dir);
  absl::Duration reap_interval;
  if (!absl::ParseDuration(f.reap_interval, &reap_interval) ||
      reap_interval < absl::ZeroDuration()) {
    return FailService("node", absl::InvalidArgumentError(
                            "--reap-interval " + f.reap_interval +
                            ": expected a duration such as 10m, 90s or 0"));
  }

  absl::Duration copy_poll_interval;
  if (!absl::ParseDuration(f.copy_poll_interval, &copy_poll_interval) ||
      copy_poll_interval < absl::ZeroDuration()) {
    return FailService("node", absl::InvalidArgumentError(
                            "--copy-poll-interval " + f.copy_poll_interval +
                            ": expected a duration such as 3s, 1m or 0"));
  }
  absl::Duration copy_wait;
  if (!absl::ParseDuration(f.copy_wait, &copy_wait) ||
      copy_wait < absl::ZeroDuration()) {
    return FailService("node", absl::InvalidArgumentError(
                            "--copy-wait " + f.copy_wait +
                            ": expected a duration such as 30s or 0"));
  }

  const std::string state_dir = f.state_dir;
  csi::IdentityService identity(kServiceVersion, [state_dir]() -> absl::Status {
    if (access("/dev/fuse", R_OK | W_OK) != 0) {
      return absl::UnavailableError("/dev/fuse is not accessible");
    }
    if (access(state_dir.c_str(), W_OK) != 0) {
      return absl::UnavailableError("state dir " + state_dir + " is not writable");
    }
    return absl::OkStatus();
  });
  auto server = StartCsiServer(f.endpoint, {&identity, &node});
  if (!server.ok()) return FailService("node: --endpoint", server.status());

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
    if (!started.ok()) return FailService("node: --metrics-listen", started.status());
    metrics = std::move(*started);
  }
  spdlog::info("node {} serving CSI on {} (broker {})", f.node_id, f.endpoint,
               f.broker);
  std::unique_ptr<NodeReaper> reaper;
  if (reap_interval > absl::ZeroDuration()) {
    reaper = std::make_unique<NodeReaper>(&node, reap_interval);
  }
  // Snapshots, restores and clones of the volumes on this node.
  csi::CopyJobRunner copies({.node_id = f.node_id,
                             .poll_interval = copy_poll_interval,
                             .job_wait = copy_wait},
                            &keys, &data_path, node.stages(),
                            node.volume_locks());
  if (copy_poll_interval > absl::ZeroDuration()) copies.Start();
  const int sig = WaitForSignal(nullptr);
  spdlog::info("node: signal {}, shutting down", sig);
  copies.Stop();
  reaper.reset();
  (*server)->Shutdown();
  return kExitOk;
}

}  // namespace

void RegisterNodeCommand(CLI::App& app, int& exit_code) {
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
  node->add_option("--copy-poll-interval", nf->copy_poll_interval,
                   "Least time between two asks of the broker for snapshot, "
                   "restore and clone jobs of this node's volumes when the "
                   "last one found nothing to do at once; 0 = never ask")
      ->capture_default_str();
  node->add_option("--copy-wait", nf->copy_wait,
                   "How long one ask lets the broker wait for a new job (a "
                   "long poll, capped at 30s by the broker), so that a job "
                   "starts as soon as it is created; 0 = plain polling")
      ->capture_default_str();
  node->add_option("--log-level", nf->log_level, "trace|debug|info|warn|error")
      ->capture_default_str();
  node->callback([nf, &exit_code] { exit_code = RunNode(*nf); });
}

}  // namespace sealvol::cmd
