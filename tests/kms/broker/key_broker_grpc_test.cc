// The KeyBroker over real gRPC transports: a unix socket (with a 1000-call
// parallel load) and TCP with TLS and mTLS; plus the metrics endpoint.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "kms/http_client.h"
#include "kms/broker/key_broker_client.h"
#include "kms/broker/key_broker_service.h"
#include "kms/broker/refusal.h"
#include "nlohmann/json.hpp"
#include "tests/kms/broker/broker_test_env.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_ca.h"

namespace sealvol::broker {
namespace {

namespace fs = std::filesystem;
using testing::FakeKeyProvider;
using testing::IssuerEnv;
using testing::kNode;
using testing::kTenant;
using testing::MakeVolume;
using sealvol::testing::WriteFile;

constexpr char kVolume[] = "sv-0123456789abcdef0123456789abcdef";
constexpr char kOtherVolume[] = "sv-ffffffffffffffffffffffffffffffff";

class KeyBrokerGrpcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    keys_.AddVolume(MakeVolume(kVolume, kTenant), 0x42);
    keys_.AddVolume(MakeVolume(kOtherVolume, "team-b"), 0x24);
    auto audit = AuditLog::Open({.path = Path("audit.log")});
    ASSERT_TRUE(audit.ok()) << audit.status();
    audit_ = std::move(*audit);
    KeyBrokerOptions options;
    options.metrics = &metrics_;
    options.rate_limit.burst = 5000;
    service_ = std::make_unique<KeyBrokerService>(keys_, env_.verifier,
                                                  *audit_, options);
    WriteFile(Path("node-token"), env_.Mint(env_.NodeMint()) + "\n");
  }
  void TearDown() override {
    service_->EndWaits();
    if (server_.server != nullptr) server_.server->Shutdown();
    server_.server.reset();
    service_.reset();
    audit_.reset();
  }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  void StartUnix() {
    auto server = StartBrokerServer(
        {.listen = "unix://" + Path("broker.sock")}, *service_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  ReleaseRequest Params(const std::string& pod, const std::string& volume = kVolume) {
    auto mint = env_.PodMint(pod);
    return {.volume_id = volume,
            .node_id = kNode,
            .pod_token = env_.Mint(mint),
            .pod = {.name = pod,
                    .namespace_name = kTenant,
                    .uid = mint.pod_uid,
                    .service_account = mint.service_account}};
  }

  std::unique_ptr<KeyBrokerClient> Client(KeyBrokerClientOptions options) {
    options.node_token_file = Path("node-token");
    auto client = KeyBrokerClient::Create(options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? std::move(*client) : nullptr;
  }

  IssuerEnv env_{JwsAlgorithm::kEs256};
  sealvol::testing::TempDir tmp_{"sealvol-kbgrpc"};
  const fs::path dir_{tmp_.path()};
  FakeKeyProvider keys_;
  std::unique_ptr<AuditLog> audit_;
  BrokerMetrics metrics_;
  std::unique_ptr<KeyBrokerService> service_;
  BrokerServer server_;
};

TEST_F(KeyBrokerGrpcTest, ReleasesKeyOverUnixSocketIntoLockedMemory) {
  StartUnix();
  auto client = Client({.target = "unix://" + Path("broker.sock")});
  auto dek = client->ReleaseKey(Params("web-0"));
  ASSERT_TRUE(dek.ok()) << dek.status();
  ASSERT_EQ(dek->size(), 32u);
  for (size_t i = 0; i < dek->size(); ++i) ASSERT_EQ(dek->data()[i], 0x42);
  // Only root may connect to the socket.
  EXPECT_EQ(fs::status(Path("broker.sock")).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
}

TEST_F(KeyBrokerGrpcTest, VolumeStatusTellsExistingFromDeletedAndNothingMore) {
  StartUnix();
  auto client = Client({.target = "unix://" + Path("broker.sock")});
  const std::string deleted = "sv-00000000000000000000000000000000";
  const int64_t records = audit_->last_seq();
  auto exists = client->VolumesExist(kNode, {kVolume, deleted, kOtherVolume});
  ASSERT_TRUE(exists.ok()) << exists.status();
  ASSERT_EQ(exists->size(), 3u);
  EXPECT_TRUE(exists->at(kVolume));
  EXPECT_TRUE(exists->at(kOtherVolume));  // Any tenant: existence only.
  EXPECT_FALSE(exists->at(deleted));
  EXPECT_EQ(keys_.unwrap_calls(), 0) << "a status query unwrapped a key";
  EXPECT_EQ(audit_->last_seq(), records) << "a status query was audited";

  // More ids than one call carries: the client batches.
  std::vector<std::string> many;
  for (size_t i = 0; i < kMaxVolumeStatusIds + 10; ++i) {
    many.push_back(absl::StrCat("sv-", std::string(28, 'a'),
                                absl::Hex(i, absl::kZeroPad4)));
  }
  many.push_back(kVolume);
  exists = client->VolumesExist(kNode, many);
  ASSERT_TRUE(exists.ok()) << exists.status();
  ASSERT_EQ(exists->size(), many.size());
  EXPECT_FALSE(exists->at(many.front()));
  EXPECT_TRUE(exists->at(kVolume));
}

TEST_F(KeyBrokerGrpcTest, VolumeStatusRefusesAnotherNodesToken) {
  StartUnix();
  // node-2's plugin token, asking as node-1.
  WriteFile(Path("node-token"), env_.Mint(env_.NodeMint("node-2")) + "\n");
  auto client = Client({.target = "unix://" + Path("broker.sock")});
  auto exists = client->VolumesExist(kNode, {kVolume});
  ASSERT_FALSE(exists.ok());
  EXPECT_EQ(exists.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(RefusalReason(exists.status()), "node_identity_invalid")
      << exists.status();
  // A pod's token is no node identity either.
  WriteFile(Path("node-token"), env_.Mint(env_.PodMint("web-0")) + "\n");
  exists = client->VolumesExist(kNode, {kVolume});
  EXPECT_EQ(RefusalReason(exists.status()), "node_identity_invalid")
      << exists.status();
  // No token at all.
  WriteFile(Path("node-token"), "\n");
  exists = client->VolumesExist(kNode, {kVolume});
  EXPECT_EQ(RefusalReason(exists.status()), "node_identity_invalid")
      << exists.status();
  // Refusals are audited like every refusal (no volume, no tenant).
  std::ifstream in(Path("audit.log"));
  int refusals = 0;
  for (std::string line; std::getline(in, line);) {
    auto record = nlohmann::json::parse(line);
    EXPECT_EQ(record["decision"], "refuse");
    EXPECT_EQ(record["reason"], "node_identity_invalid");
    EXPECT_EQ(record["tenant"], "");
    ++refusals;
  }
  EXPECT_EQ(refusals, 3);
  EXPECT_EQ(metrics_.refusals("node_identity_invalid"), 3);
}

TEST_F(KeyBrokerGrpcTest, RefusalReachesTheNodeAsPermissionDeniedWithReason) {
  StartUnix();
  auto client = Client({.target = "unix://" + Path("broker.sock")});
  auto params = Params("web-0");
  params.pod.uid = "another-uid";
  auto dek = client->ReleaseKey(params);
  ASSERT_FALSE(dek.ok());
  EXPECT_EQ(dek.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(RefusalReason(dek.status()), "pod_mismatch");
  // Without the node's own token the broker does not even look.
  WriteFile(Path("node-token"), params.pod_token);
  dek = client->ReleaseKey(Params("web-0"));
  EXPECT_EQ(RefusalReason(dek.status()), "node_identity_invalid");
}

// Every reason after already_formatted was once lost on the way: the client
// maps names back over 0..kLastReason.
TEST_F(KeyBrokerGrpcTest, ReasonsAddedLaterReachTheNodeToo) {
  StartUnix();
  auto client = Client({.target = "unix://" + Path("broker.sock")});
  auto params = Params("web-0");
  params.pod_token.clear();  // A block publish; the broker has no pod lookup.
  auto dek = client->ReleaseKey(params);
  ASSERT_FALSE(dek.ok());
  EXPECT_EQ(RefusalReason(dek.status()), "no_token") << dek.status();
  params = Params("web-0");
  params.node_id = std::string(300, 'n');  // Over its bound.
  dek = client->ReleaseKey(params);
  EXPECT_EQ(RefusalReason(dek.status()), "invalid_request") << dek.status();
  absl::Status claim = client->ClaimFormat(kVolume, kNode, "0123");
  EXPECT_EQ(RefusalReason(claim), "invalid_format_id") << claim;
}

// A copy job end to end over the wire: listed, both keys into locked
// memory, the cut and the end reported; refusals keep their reason.
TEST_F(KeyBrokerGrpcTest, CopyJobsTravelTheWire) {
  const std::string snapshot = "sv-00000000000000000000000000000002";
  auto record = MakeVolume(snapshot, kTenant);
  record.kind = kms::RecordKind::kSnapshot;
  record.source_volume_id = kVolume;
  record.copy.state = kms::CopyState::kPending;
  record.capacity_bytes = 1 << 20;
  keys_.AddVolume(record, 0x77);
  StartUnix();
  auto client = Client({.target = "unix://" + Path("broker.sock")});
  auto jobs = client->CopyJobs(kNode);
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_EQ((*jobs)[0].target_id, snapshot);
  EXPECT_EQ((*jobs)[0].source_id, kVolume);
  EXPECT_EQ((*jobs)[0].kind, CopyKind::kSnapshot);
  EXPECT_EQ((*jobs)[0].state, kms::CopyState::kPending);
  EXPECT_EQ((*jobs)[0].capacity_bytes, 1u << 20);
  auto keys = client->ReleaseCopyKeys(kNode, snapshot);
  ASSERT_TRUE(keys.ok()) << keys.status();
  ASSERT_EQ(keys->source_dek.size(), 32u);
  ASSERT_EQ(keys->target_dek.size(), 32u);
  EXPECT_EQ(keys->source_dek.data()[5], 0x42);
  EXPECT_EQ(keys->target_dek.data()[5], 0x77);
  EXPECT_EQ(keys->source_id, kVolume);
  EXPECT_EQ(keys->kind, CopyKind::kSnapshot);
  EXPECT_EQ(keys->target_capacity_bytes, 1u << 20);
  auto state = client->ReportCopy(
      kNode, {.target_id = snapshot, .state = kms::CopyState::kCut});
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(*state, kms::CopyState::kCut);
  state = client->ReportCopy(
      kNode, {.target_id = snapshot,
              .state = kms::CopyState::kReady,
              .bytes_done = 1 << 20,
              .bytes_total = 1 << 20,
              .format_id = "0123456789abcdef0123456789abcdef",
              .closed_state = kms::CommittedState{1, std::string(64, 'e'), false}});
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(*state, kms::CopyState::kReady);
  EXPECT_EQ(keys_.GetVolume(snapshot)->format_id,
            "0123456789abcdef0123456789abcdef");
  keys = client->ReleaseCopyKeys(kNode, snapshot);
  EXPECT_EQ(RefusalReason(keys.status()), "copy_not_active") << keys.status();
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(client->CopyJobs(kNode)->empty());
}

// The long poll over the wire: a waiting CopyJobs answers as soon as a job
// for the node is created, and the node's CallCanceller ends a waiting
// call at once (the copy job runner's Stop).
TEST_F(KeyBrokerGrpcTest, CopyJobsLongPollAnswersANewJobAndEndsWhenCancelled) {
  StartUnix();
  auto client = Client({.target = "unix://" + Path("broker.sock")});
  absl::Time asked = absl::Now();
  auto waiting = std::async(std::launch::async, [&] {
    return client->CopyJobs(kNode, absl::Seconds(20));
  });
  absl::SleepFor(absl::Milliseconds(500));
  ASSERT_EQ(waiting.wait_for(std::chrono::seconds(0)), std::future_status::timeout)
      << "answered at once with no job for the node";
  const std::string snapshot = "sv-00000000000000000000000000000002";
  auto record = MakeVolume(snapshot, kTenant);
  record.kind = kms::RecordKind::kSnapshot;
  record.source_volume_id = kVolume;
  record.copy.state = kms::CopyState::kPending;
  record.node = kNode;
  keys_.AddVolume(record, 0x77);
  const absl::Time created = absl::Now();
  service_->CopyJobsChanged(kNode);
  ASSERT_EQ(waiting.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  const absl::Duration latency = absl::Now() - created;
  auto jobs = waiting.get();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_EQ((*jobs)[0].target_id, snapshot);
  EXPECT_LT(latency, absl::Milliseconds(500)) << latency;

  // No job for node-2: its call waits until cancelled.
  WriteFile(Path("node-token"), env_.Mint(env_.NodeMint("node-2")) + "\n");
  CallCanceller cancel;
  asked = absl::Now();
  waiting = std::async(std::launch::async, [&] {
    return client->CopyJobs("node-2", absl::Seconds(20), &cancel);
  });
  absl::SleepFor(absl::Milliseconds(500));
  ASSERT_EQ(waiting.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
  const absl::Time cancelled = absl::Now();
  cancel.Cancel();
  ASSERT_EQ(waiting.wait_for(std::chrono::seconds(5)), std::future_status::ready)
      << "the cancelled call still waits";
  EXPECT_LT(absl::Now() - cancelled, absl::Milliseconds(500));
  jobs = waiting.get();
  EXPECT_EQ(jobs.status().code(), absl::StatusCode::kCancelled) << jobs.status();
  // Cancelled is sticky: a later call ends at once.
  asked = absl::Now();
  jobs = client->CopyJobs("node-2", absl::Seconds(20), &cancel);
  EXPECT_EQ(jobs.status().code(), absl::StatusCode::kCancelled) << jobs.status();
  EXPECT_LT(absl::Now() - asked, absl::Milliseconds(500));
}

TEST_F(KeyBrokerGrpcTest, KmsOutageReachesTheNodeAsUnavailable) {
  StartUnix();
  auto client = Client({.target = "unix://" + Path("broker.sock")});
  keys_.FailUnwrap(true);
  auto dek = client->ReleaseKey(Params("web-0"));
  ASSERT_FALSE(dek.ok());
  EXPECT_EQ(dek.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(RefusalReason(dek.status()), "kms_error");
  // With the broker gone, the node sees Unavailable without a reason.
  server_.server->Shutdown();
  server_.server.reset();
  dek = client->ReleaseKey(Params("web-0"));
  EXPECT_EQ(dek.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(RefusalReason(dek.status()), "");
}

TEST_F(KeyBrokerGrpcTest, AThousandParallelCallsAreAnsweredAndAudited) {
  StartUnix();
  constexpr int kThreads = 50;
  constexpr int kCallsPerThread = 20;
  constexpr int kCalls = kThreads * kCallsPerThread;
  // Every fifth call asks for the other tenant's volume and must be refused.
  std::vector<ReleaseRequest> params;
  for (int i = 0; i < kCalls; ++i) {
    params.push_back(Params(absl::StrCat("pod-", i),
                            i % 5 == 4 ? kOtherVolume : kVolume));
  }
  auto client = Client({.target = "unix://" + Path("broker.sock")});
  std::atomic<int> granted{0}, refused{0}, wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int c = 0; c < kCallsPerThread; ++c) {
        const int i = t * kCallsPerThread + c;
        auto dek = client->ReleaseKey(params[i]);
        if (i % 5 == 4) {
          if (!dek.ok() && RefusalReason(dek.status()) == "namespace_mismatch") {
            ++refused;
          } else {
            ++wrong;
          }
        } else if (dek.ok() && dek->size() == 32 && dek->data()[0] == 0x42) {
          ++granted;
        } else {
          ++wrong;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(granted, kCalls * 4 / 5);
  EXPECT_EQ(refused, kCalls / 5);
  EXPECT_EQ(metrics_.grants(), kCalls * 4 / 5);
  EXPECT_EQ(metrics_.refusals("namespace_mismatch"), kCalls / 5);
  // One audit record per call, chained, none lost.
  auto verified = VerifyAuditFiles({Path("audit.log")}, {});
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->records, kCalls);
  std::set<std::string> pods;
  std::ifstream in(Path("audit.log"));
  for (std::string line; std::getline(in, line);) {
    pods.insert(nlohmann::json::parse(line)["pod"].get<std::string>());
  }
  EXPECT_EQ(pods.size(), static_cast<size_t>(kCalls));
}

TEST_F(KeyBrokerGrpcTest, ServesOverTlsAndRequiresClientCertsWithMtls) {
  sealvol::testing::TestCa ca;
  auto server_cert = ca.Issue("broker", "DNS:localhost,IP:127.0.0.1", true, 2);
  auto client_cert = ca.Issue("node-1", "DNS:node-1", false, 3);
  WriteFile(Path("ca.pem"), ca.cert_pem());
  WriteFile(Path("server.pem"), server_cert.cert_pem);
  WriteFile(Path("server.key"), server_cert.key_pem);
  WriteFile(Path("client.pem"), client_cert.cert_pem);
  WriteFile(Path("client.key"), client_cert.key_pem);

  // TCP without a certificate is refused at start-up.
  EXPECT_FALSE(StartBrokerServer({.listen = "127.0.0.1:0"}, *service_).ok());

  auto server = StartBrokerServer({.listen = "127.0.0.1:0",
                                   .tls_cert_file = Path("server.pem"),
                                   .tls_key_file = Path("server.key"),
                                   .client_ca_file = Path("ca.pem")},
                                  *service_);
  ASSERT_TRUE(server.ok()) << server.status();
  server_ = std::move(*server);
  ASSERT_GT(server_.port, 0);
  const std::string target = absl::StrCat("localhost:", server_.port);
  // Room for TLS handshakes under ThreadSanitizer on a loaded machine; the
  // refused handshakes below fail at once, not at the deadline.
  const absl::Duration timeout = absl::Seconds(30);

  auto mtls = Client({.target = target,
                      .ca_file = Path("ca.pem"),
                      .client_cert_file = Path("client.pem"),
                      .client_key_file = Path("client.key"),
                      .timeout = timeout});
  auto dek = mtls->ReleaseKey(Params("web-0"));
  ASSERT_TRUE(dek.ok()) << dek.status();
  EXPECT_EQ(dek->data()[0], 0x42);

  // No client certificate: the handshake fails, nothing is released.
  auto anonymous = Client({.target = target,
                           .ca_file = Path("ca.pem"),
                           .timeout = timeout});
  dek = anonymous->ReleaseKey(Params("web-1"));
  ASSERT_FALSE(dek.ok());
  EXPECT_EQ(dek.status().code(), absl::StatusCode::kUnavailable) << dek.status();

  // A client that trusts another CA refuses the broker.
  sealvol::testing::TestCa other;
  WriteFile(Path("other-ca.pem"), other.cert_pem());
  auto distrustful = Client({.target = target,
                             .ca_file = Path("other-ca.pem"),
                             .client_cert_file = Path("client.pem"),
                             .client_key_file = Path("client.key"),
                             .timeout = timeout});
  EXPECT_FALSE(distrustful->ReleaseKey(Params("web-2")).ok());
}

TEST_F(KeyBrokerGrpcTest, FormatClaimOverUnixSocketAndReleaseCarriesTheId) {
  StartUnix();
  auto client = Client({.target = "unix://" + Path("broker.sock")});
  const std::string first = "00112233445566778899aabbccddeeff";
  auto released = client->ReleaseVolumeKey(Params("web-0"));
  ASSERT_TRUE(released.ok()) << released.status();
  EXPECT_TRUE(released->format_id.empty());
  ASSERT_TRUE(client->ClaimFormat(kVolume, kNode, first).ok());
  ASSERT_TRUE(client->ClaimFormat(kVolume, kNode, first).ok()) << "not idempotent";
  released = client->ReleaseVolumeKey(Params("web-0"));
  ASSERT_TRUE(released.ok()) << released.status();
  EXPECT_EQ(released->format_id, first);
  absl::Status refused =
      client->ClaimFormat(kVolume, kNode, "ffeeddccbbaa99887766554433221100");
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_EQ(RefusalReason(refused), "already_formatted") << refused;
  EXPECT_NE(refused.message().find(first), std::string::npos) << refused;
}

TEST_F(KeyBrokerGrpcTest, StateCommitsTravelOverGrpcWithTheirRefusalReasons) {
  StartUnix();
  auto client = Client({.target = "unix://" + Path("broker.sock")});
  const std::string root(64, 'd');
  ASSERT_TRUE(client->ClaimFormat(kVolume, kNode, "00112233445566778899aabbccddeeff",
                                  kms::CommittedState{1, root, false}).ok());
  auto released = client->ReleaseVolumeKey(Params("web-0"));
  ASSERT_TRUE(released.ok()) << released.status();
  ASSERT_TRUE(released->expected_state.has_value());
  EXPECT_EQ(*released->expected_state, (kms::CommittedState{1, root, false}));
  ASSERT_TRUE(client->CommitState(kVolume, kNode, {2, root, true}, false).ok());
  absl::Status back = client->CommitState(kVolume, kNode, {1, root, false}, false);
  EXPECT_EQ(back.code(), absl::StatusCode::kFailedPrecondition) << back;
  EXPECT_EQ(RefusalReason(back), "state_regression") << back;
  EXPECT_TRUE(client->ReportRollback(kVolume, kNode, "rolled back: test").ok());
  // A reason past the format claim's maps back too (the client's table
  // covers every reason).
  absl::Status stranger = client->CommitState(kVolume, "node-9", {3, root, true}, false);
  EXPECT_EQ(RefusalReason(stranger), "node_identity_invalid") << stranger;
}

TEST_F(KeyBrokerGrpcTest, MetricsEndpointServesPrometheusText) {
  StartUnix();
  auto client = Client({.target = "unix://" + Path("broker.sock")});
  ASSERT_TRUE(client->ReleaseKey(Params("web-0")).ok());
  auto refused = Params("web-1");
  refused.pod.name = "web-2";
  ASSERT_FALSE(client->ReleaseKey(refused).ok());
  auto metrics_server = MetricsServer::Start("127.0.0.1:0", metrics_);
  ASSERT_TRUE(metrics_server.ok()) << metrics_server.status();
  auto response = kms::HttpClient(kms::HttpClientOptions()).Send(
      {.url = absl::StrCat("http://127.0.0.1:", (*metrics_server)->port(),
                           "/metrics")});
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  const std::string& body = response->body;
  EXPECT_NE(body.find("sealvol_broker_grants_total 1\n"), std::string::npos) << body;
  EXPECT_NE(body.find("sealvol_broker_refusals_total{reason=\"pod_mismatch\"} 1\n"),
            std::string::npos) << body;
  EXPECT_NE(body.find("sealvol_broker_kms_latency_seconds_count 1\n"),
            std::string::npos) << body;
  EXPECT_NE(body.find("sealvol_broker_kms_latency_seconds_bucket{le=\"+Inf\"} 1\n"),
            std::string::npos) << body;
  EXPECT_NE(body.find("sealvol_broker_kms_errors_total 0\n"), std::string::npos);
}

}  // namespace
}  // namespace sealvol::broker
