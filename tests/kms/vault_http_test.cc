// The Vault provider's HTTP and JSON handling against a local HTTP server
// (cpp-httplib on 127.0.0.1) that answers with whatever a test scripts:
// malformed JSON, wrong types, missing fields, huge bodies, HTML error
// pages, 5xx/429 bursts, slowness, short-lived tokens. The real-Vault tests
// are in vault_key_provider_test.cc.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "base/mutex.h"
#include "httplib.h"
#include "kms/base64.h"
#include "kms/vault_key_provider.h"
#include "nlohmann/json.hpp"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"
#include "tests/support/http_test_server.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_ca.h"

namespace sealvol::kms {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

struct Reply {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
};

// Routes "METHOD /path" (query string excluded) to a scripted reply.
class ScriptedServer {
 public:
  using Handler = std::function<Reply(const httplib::Request&)>;

  explicit ScriptedServer(
      std::unique_ptr<httplib::Server> server = std::make_unique<httplib::Server>())
      : http_(std::move(server)) {
    auto dispatch = [this](const httplib::Request& req, httplib::Response& res) {
      Handler h;
      {
        MutexLock lock(&mu_);
        ++hits_[req.method + " " + req.path];
        last_headers_ = req.headers;
        auto it = routes_.find(req.method + " " + req.path);
        if (it != routes_.end()) h = it->second;
      }
      Reply r = h ? h(req) : Reply{404, R"({"errors":[]})"};
      res.status = r.status;
      res.set_content(r.body, r.content_type.c_str());
    };
    http_.server().Get(".*", dispatch);
    http_.server().Post(".*", dispatch);
    http_.server().Put(".*", dispatch);
    http_.server().Delete(".*", dispatch);
    http_.Start();
  }

  void On(const std::string& route, Handler h) {
    MutexLock lock(&mu_);
    routes_[route] = std::move(h);
  }
  void On(const std::string& route, Reply r) {
    On(route, [r](const httplib::Request&) { return r; });
  }
  int Hits(const std::string& route) {
    MutexLock lock(&mu_);
    return hits_[route];
  }
  std::string LastHeader(const std::string& name) {
    MutexLock lock(&mu_);
    auto it = last_headers_.find(name);
    return it == last_headers_.end() ? "" : it->second;
  }
  int port() const { return http_.port(); }

 private:
  Mutex mu_;
  std::map<std::string, Handler> routes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> hits_ ABSL_GUARDED_BY(mu_);
  httplib::Headers last_headers_ ABSL_GUARDED_BY(mu_);
  // Last: stopped (its handlers finished) before the members they use go.
  sealvol::testing::HttpTestServer http_;
};

constexpr char kToken[] = "hvs.test-token-d0n0tl0g";
constexpr char kVolumeId[] = "sv-00112233445566778899aabbccddeeff";
constexpr char kRecordPath[] =
    "/v1/secret/data/sealvol/volumes/sv-00112233445566778899aabbccddeeff";

json RecordBody(const std::string& wrapped = "vault:v1:abcd") {
  return {{"data",
           {{"data",
             {{"volume_id", kVolumeId},
              {"name", "pvc-1"},
              {"tenant", "team-a"},
              {"key_name", "sealvol-team-a"},
              {"key_version", 1},
              {"wrapped_dek", wrapped},
              {"capacity_bytes", 1024},
              {"node", ""},
              {"parameters", json::object()},
              {"created_unix", 1}}},
            {"metadata", {{"version", 1}}}}}};
}

class VaultHttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ofstream(dir_.file("token")) << kToken << "\n";
    server_.On("GET /v1/auth/token/lookup-self",
               Reply{200, R"({"data":{"ttl":0,"renewable":false}})"});
  }

  std::string Uri(const std::string& extra = "") {
    return "vault+http://127.0.0.1:" + std::to_string(server_.port()) +
           "?token_file=" + dir_.file("token") +
           "&timeout_ms=2000&max_attempts=3" + extra;
  }
  // The provider's session runs on the test's clock (Advance), so token
  // renewal is tested without sleeping.
  std::unique_ptr<VaultKeyProvider> Open(const std::string& extra = "") {
    auto config = VaultConfig::FromUri(Uri(extra));
    EXPECT_TRUE(config.ok()) << config.status();
    auto p = VaultKeyProvider::Open(*config, [this] {
      return std::chrono::steady_clock::time_point(
          std::chrono::milliseconds(now_ms_.load()));
    });
    EXPECT_TRUE(p.ok()) << p.status();
    return std::move(*p);
  }
  void Advance(std::chrono::milliseconds by) { now_ms_ += by.count(); }

  ScriptedServer server_;
  sealvol::testing::TempDir dir_{"sealvol-vault-http"};
  std::atomic<int64_t> now_ms_{3600 * 1000};
};

TEST(VaultConfigTest, ParsesEveryParameterAndDefaults) {
  auto c = VaultConfig::FromUri(
      "vault+https://kms.example:8200?transit=t2&key_template=prod-%24%7Bnamespace%7D"
      "&kv=kv2&kv_prefix=a/b&auth=kubernetes&role=sealvol&ca_file=/ca.pem"
      "&namespace=team&timeout_ms=1500&connect_timeout_ms=700&max_attempts=2");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->address, "https://kms.example:8200");
  EXPECT_EQ(c->transit_mount, "t2");
  EXPECT_EQ(c->key_name_template, "prod-${namespace}");
  EXPECT_EQ(c->kv_mount, "kv2");
  EXPECT_EQ(c->kv_prefix, "a/b");
  EXPECT_EQ(c->auth_method, "kubernetes");
  EXPECT_EQ(c->auth_mount, "kubernetes");
  EXPECT_EQ(c->jwt_file, "/var/run/secrets/kubernetes.io/serviceaccount/token");
  EXPECT_EQ(c->ca_file, "/ca.pem");
  EXPECT_EQ(c->vault_namespace, "team");
  EXPECT_EQ(c->timeout.count(), 1500);
  EXPECT_EQ(c->connect_timeout.count(), 700);
  EXPECT_EQ(c->max_attempts, 2);
  auto d = VaultConfig::FromUri("vault+http://127.0.0.1:8200");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->transit_mount, "transit");
  EXPECT_EQ(d->kv_mount, "secret");
  EXPECT_EQ(d->auth_method, "token");
}

TEST(VaultConfigTest, RejectsBadParameters) {
  for (const char* uri : {
           "vault+http://127.0.0.1:1?bogus=1",
           "vault+http://127.0.0.1:1?auth=ldap",
           "vault+http://127.0.0.1:1?auth=jwt",          // No role.
           "vault+http://127.0.0.1:1?auth=jwt&role=r",   // No jwt_file.
           "vault+http://127.0.0.1:1?transit=../sys",
           "vault+http://127.0.0.1:1?timeout_ms=-5",
           "vault+http://127.0.0.1:1?key_template=fixed-name",
           "vault+http://127.0.0.1:1?kv=%zz",
           "vault+http://user@127.0.0.1:1",
           "vault://127.0.0.1:1",
       }) {
    EXPECT_EQ(VaultConfig::FromUri(uri).status().code(),
              absl::StatusCode::kInvalidArgument)
        << uri;
  }
}

TEST_F(VaultHttpTest, TruncatedJsonIsAClearError) {
  server_.On("GET " + std::string(kRecordPath),
             Reply{200, RecordBody().dump().substr(0, 40)});
  auto p = Open();
  auto r = p->GetVolume(kVolumeId);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("malformed KMS response"));
  EXPECT_THAT(r.status().message(), HasSubstr("not valid JSON"));
}

TEST_F(VaultHttpTest, WrongTypesAndMissingFieldsAreNamed) {
  auto p = Open();
  json wrong = RecordBody();
  wrong["data"]["metadata"]["version"] = "one";
  server_.On("GET " + std::string(kRecordPath), Reply{200, wrong.dump()});
  auto r = p->GetVolume(kVolumeId);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("\"version\" is not an integer"));

  json missing = RecordBody();
  missing["data"]["data"].erase("wrapped_dek");
  server_.On("GET " + std::string(kRecordPath), Reply{200, missing.dump()});
  r = p->GetVolume(kVolumeId);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(r.status().message(), HasSubstr("\"wrapped_dek\" is missing"));

  server_.On("GET " + std::string(kRecordPath), Reply{200, "[1,2,3]"});
  EXPECT_EQ(p->GetVolume(kVolumeId).status().code(),
            absl::StatusCode::kUnavailable);

  // decrypt answers a number where the plaintext should be.
  server_.On("GET " + std::string(kRecordPath), Reply{200, RecordBody().dump()});
  server_.On("POST /v1/transit/decrypt/sealvol-team-a",
             Reply{200, R"({"data":{"plaintext":42}})"});
  auto dek = p->UnwrapVolumeKey(kVolumeId);
  EXPECT_EQ(dek.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(dek.status().message(), HasSubstr("plaintext"));
  // ... or a plaintext that is not a 256-bit key.
  server_.On("POST /v1/transit/decrypt/sealvol-team-a",
             Reply{200, R"({"data":{"plaintext":"AAAA"}})"});
  EXPECT_EQ(p->UnwrapVolumeKey(kVolumeId).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST_F(VaultHttpTest, DatakeyWithoutCiphertextStoresNothing) {
  server_.On("GET /v1/transit/keys/sealvol-team-a",
             Reply{200, R"({"data":{"type":"aes256-gcm96","derived":true,
                            "latest_version":1}})"});
  server_.On("POST /v1/transit/datakey/wrapped/sealvol-team-a",
             Reply{200, R"({"data":{"key_version":1}})"});
  auto p = Open();
  CreateVolumeKeyRequest req;
  req.volume_id = kVolumeId;
  req.tenant = "team-a";
  auto r = p->CreateVolumeKey(req);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("\"ciphertext\" is missing"));
  EXPECT_EQ(server_.Hits("POST " + std::string(kRecordPath)), 0);
}

TEST_F(VaultHttpTest, RefusesANonDerivedTransitKey) {
  server_.On("GET /v1/transit/keys/sealvol-team-a",
             Reply{200, R"({"data":{"type":"aes256-gcm96","derived":false}})"});
  auto p = Open();
  CreateVolumeKeyRequest req;
  req.volume_id = kVolumeId;
  req.tenant = "team-a";
  auto r = p->CreateVolumeKey(req);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("derived=true"));
}

TEST_F(VaultHttpTest, HugeBodyIsCappedNotBuffered) {
  std::string huge(5 << 20, 'x');
  server_.On("GET " + std::string(kRecordPath), Reply{200, huge});
  auto p = Open();
  auto r = p->GetVolume(kVolumeId);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(r.status().message(), HasSubstr("larger than"));
  EXPECT_EQ(server_.Hits("GET " + std::string(kRecordPath)), 1);
}

TEST_F(VaultHttpTest, HtmlErrorPageIsRecognised) {
  const std::string html =
      "<html><head><title>502 Bad Gateway</title></head><body>nginx</body>"
      "</html>";
  server_.On("GET " + std::string(kRecordPath), Reply{502, html, "text/html"});
  auto p = Open();
  auto r = p->GetVolume(kVolumeId);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("HTML page"));
  EXPECT_THAT(r.status().message(), HasSubstr("after 3 attempts"));
  // The same page with a 200 status.
  server_.On("GET " + std::string(kRecordPath), Reply{200, html, "text/html"});
  r = p->GetVolume(kVolumeId);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("HTML page"));
}

TEST_F(VaultHttpTest, RetriesServerErrorsAndRateLimitsThenSucceeds) {
  std::atomic<int> calls{0};
  server_.On("GET " + std::string(kRecordPath), [&](const httplib::Request&) {
    const int n = ++calls;
    if (n == 1) return Reply{503, R"({"errors":["sealed"]})"};
    if (n == 2) return Reply{429, R"({"errors":["slow down"]})"};
    return Reply{200, RecordBody().dump()};
  });
  auto p = Open();
  auto r = p->GetVolume(kVolumeId);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->tenant, "team-a");
  EXPECT_EQ(calls.load(), 3);
}

TEST_F(VaultHttpTest, NeverRetriesOtherClientErrors) {
  server_.On("GET " + std::string(kRecordPath),
             Reply{400, R"({"errors":["bad request"]})"});
  auto p = Open();
  auto r = p->GetVolume(kVolumeId);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("bad request"));
  EXPECT_EQ(server_.Hits("GET " + std::string(kRecordPath)), 1);
  // 404 maps to NotFound, once.
  server_.On("GET " + std::string(kRecordPath), Reply{404, R"({"errors":[]})"});
  EXPECT_EQ(p->GetVolume(kVolumeId).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(server_.Hits("GET " + std::string(kRecordPath)), 2);
}

TEST_F(VaultHttpTest, PermissionDeniedTriesOneFreshLoginThenGivesUp) {
  server_.On("GET " + std::string(kRecordPath),
             Reply{403, R"({"errors":["permission denied"]})"});
  auto p = Open();
  auto r = p->GetVolume(kVolumeId);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(r.status().message(), HasSubstr("permission denied"));
  EXPECT_EQ(server_.Hits("GET " + std::string(kRecordPath)), 2);
  EXPECT_EQ(server_.Hits("GET /v1/auth/token/lookup-self"), 2);
}

TEST_F(VaultHttpTest, ConnectionRefusedIsUnavailableAndNamesTheAddress) {
  // A port that was just free: bind without listening, note it, close.
  int port = 0;
  {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    socklen_t len = sizeof(addr);
    ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    port = ntohs(addr.sin_port);
    ::close(fd);
  }
  auto c = VaultConfig::FromUri("vault+http://127.0.0.1:" + std::to_string(port) +
                                "?token_file=" + dir_.file("token") +
                                "&max_attempts=2");
  ASSERT_TRUE(c.ok());
  auto p = VaultKeyProvider::Open(*c);
  ASSERT_TRUE(p.ok());
  auto r = (*p)->GetVolume(kVolumeId);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("127.0.0.1:" + std::to_string(port)));
  EXPECT_EQ((*p)->Ping().code(), absl::StatusCode::kUnavailable);
}

TEST_F(VaultHttpTest, SlowServerTimesOut) {
  server_.On("GET " + std::string(kRecordPath), [](const httplib::Request&) {
    // Sleeps: the timeout under test is libcurl's, on the real clock.
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    return Reply{200, RecordBody().dump()};
  });
  auto c = VaultConfig::FromUri(Uri() + "&timeout_ms=200&max_attempts=2");
  ASSERT_TRUE(c.ok());
  auto p = VaultKeyProvider::Open(*c);
  ASSERT_TRUE(p.ok());
  const auto start = std::chrono::steady_clock::now();
  auto r = (*p)->GetVolume(kVolumeId);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(elapsed, std::chrono::milliseconds(1400));
}

TEST_F(VaultHttpTest, SendsNamespaceAndTokenHeaders) {
  server_.On("GET " + std::string(kRecordPath), Reply{200, RecordBody().dump()});
  auto p = Open("&namespace=team-ns");
  ASSERT_TRUE(p->GetVolume(kVolumeId).ok());
  EXPECT_EQ(server_.LastHeader("X-Vault-Namespace"), "team-ns");
  EXPECT_EQ(server_.LastHeader("X-Vault-Token"), kToken);
}

TEST_F(VaultHttpTest, RenewsTheTokenBeforeItExpires) {
  server_.On("GET /v1/auth/token/lookup-self",
             Reply{200, R"({"data":{"ttl":3,"renewable":true}})"});
  server_.On("POST /v1/auth/token/renew-self",
             Reply{200, R"({"auth":{"lease_duration":3,"renewable":true}})"});
  server_.On("GET " + std::string(kRecordPath), Reply{200, RecordBody().dump()});
  auto p = Open();
  ASSERT_TRUE(p->GetVolume(kVolumeId).ok());
  EXPECT_EQ(server_.Hits("POST /v1/auth/token/renew-self"), 0);
  // Renewal is due at two thirds of the 3 s TTL (2 s), not before.
  Advance(std::chrono::milliseconds(1990));
  ASSERT_TRUE(p->GetVolume(kVolumeId).ok());
  EXPECT_EQ(server_.Hits("POST /v1/auth/token/renew-self"), 0);
  Advance(std::chrono::milliseconds(20));
  ASSERT_TRUE(p->GetVolume(kVolumeId).ok());
  EXPECT_EQ(server_.Hits("POST /v1/auth/token/renew-self"), 1);
  EXPECT_EQ(server_.Hits("GET /v1/auth/token/lookup-self"), 1);
  // The renewed token is good for another 2 s from the renewal.
  Advance(std::chrono::milliseconds(1990));
  ASSERT_TRUE(p->GetVolume(kVolumeId).ok());
  EXPECT_EQ(server_.Hits("POST /v1/auth/token/renew-self"), 1);
  Advance(std::chrono::milliseconds(20));
  ASSERT_TRUE(p->GetVolume(kVolumeId).ok());
  EXPECT_EQ(server_.Hits("POST /v1/auth/token/renew-self"), 2);
}

TEST_F(VaultHttpTest, ReadsTheTokenAgainWhenItExpiredUnrenewed) {
  server_.On("GET /v1/auth/token/lookup-self",
             Reply{200, R"({"data":{"ttl":3,"renewable":true}})"});
  server_.On("POST /v1/auth/token/renew-self",
             Reply{200, R"({"auth":{"lease_duration":3,"renewable":true}})"});
  server_.On("GET " + std::string(kRecordPath), Reply{200, RecordBody().dump()});
  auto p = Open();
  ASSERT_TRUE(p->GetVolume(kVolumeId).ok());
  // Idle past the TTL: too late to renew; the token file is read again.
  Advance(std::chrono::seconds(4));
  ASSERT_TRUE(p->GetVolume(kVolumeId).ok());
  EXPECT_EQ(server_.Hits("POST /v1/auth/token/renew-self"), 0);
  EXPECT_EQ(server_.Hits("GET /v1/auth/token/lookup-self"), 2);
}

TEST_F(VaultHttpTest, LogsInAgainWhenRenewalFails) {
  std::ofstream(dir_.file("jwt")) << "eyJ.test-jwt.sig\n";
  std::atomic<int> logins{0};
  server_.On("POST /v1/auth/jwt/login", [&](const httplib::Request& req) {
    auto body = json::parse(req.body);
    if (body["role"] != "team-a" || body["jwt"] != "eyJ.test-jwt.sig") {
      return Reply{400, R"({"errors":["bad login"]})"};
    }
    ++logins;
    return Reply{200, json{{"auth",
                            {{"client_token", "hvs.login-" +
                                                  std::to_string(logins.load())},
                             {"lease_duration", 3},
                             {"renewable", true}}}}
                          .dump()};
  });
  server_.On("POST /v1/auth/token/renew-self",
             Reply{403, R"({"errors":["permission denied"]})"});
  server_.On("GET " + std::string(kRecordPath), Reply{200, RecordBody().dump()});
  auto p = Open("&auth=jwt&role=team-a&jwt_file=" + dir_.file("jwt"));
  ASSERT_TRUE(p->GetVolume(kVolumeId).ok());
  EXPECT_EQ(server_.LastHeader("X-Vault-Token"), "hvs.login-1");
  Advance(std::chrono::milliseconds(2100));
  ASSERT_TRUE(p->GetVolume(kVolumeId).ok());
  EXPECT_EQ(server_.Hits("POST /v1/auth/token/renew-self"), 1);
  EXPECT_EQ(logins.load(), 2);
  EXPECT_EQ(server_.LastHeader("X-Vault-Token"), "hvs.login-2");
}

TEST_F(VaultHttpTest, DebugLogsHoldNoTokenOrKey) {
  std::ostringstream log;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log);
  auto logger = std::make_shared<spdlog::logger>("capture", sink);
  logger->set_level(spdlog::level::trace);
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(logger);

  uint8_t raw[32];
  for (int i = 0; i < 32; ++i) raw[i] = static_cast<uint8_t>(0xA0 + i);
  const std::string dek_b64 = Base64Encode(std::span<const uint8_t>(raw, 32));
  server_.On("GET " + std::string(kRecordPath), Reply{200, RecordBody().dump()});
  server_.On("POST /v1/transit/decrypt/sealvol-team-a",
             Reply{200, json{{"data", {{"plaintext", dek_b64}}}}.dump()});
  {
    auto p = Open();
    auto dek = p->UnwrapVolumeKey(kVolumeId);
    ASSERT_TRUE(dek.ok()) << dek.status();
    EXPECT_EQ(std::memcmp(dek->data(), raw, 32), 0);
    // Errors too: a refused request's message.
    server_.On("GET " + std::string(kRecordPath),
               Reply{403, R"({"errors":["permission denied"]})"});
    EXPECT_FALSE(p->GetVolume(kVolumeId).ok());
  }
  spdlog::set_default_logger(previous);
  const std::string text = log.str();
  EXPECT_THAT(text, HasSubstr("http: GET"));  // The capture did capture.
  EXPECT_EQ(text.find(kToken), std::string::npos);
  EXPECT_EQ(text.find(dek_b64), std::string::npos);
  EXPECT_EQ(text.find(std::string(reinterpret_cast<char*>(raw), 32)),
            std::string::npos);
}

// TLS verification against a CA generated here, with a local HTTPS server
// (cpp-httplib over OpenSSL): the right CA is accepted, a wrong CA and the
// system store are refused, without retries.
TEST_F(VaultHttpTest, TlsAcceptsTheRightCaAndRefusesOthers) {
  const std::string d = dir_.path();
  sealvol::testing::WriteLocalServerTls(d);
  ScriptedServer tls(std::make_unique<httplib::SSLServer>(
      (d + "/srv.pem").c_str(), (d + "/srv.key").c_str()));
  tls.On("GET /v1/auth/token/lookup-self",
         Reply{200, R"({"data":{"ttl":0,"renewable":false}})"});
  tls.On("GET " + std::string(kRecordPath), Reply{200, RecordBody().dump()});
  tls.On("GET /v1/sys/health", Reply{200, R"({"initialized":true})"});
  auto open = [&](const std::string& ca_param) {
    auto c = VaultConfig::FromUri("vault+https://127.0.0.1:" +
                                  std::to_string(tls.port()) + "?token_file=" +
                                  d + "/token" + ca_param);
    EXPECT_TRUE(c.ok()) << c.status();
    return std::move(*VaultKeyProvider::Open(*c));
  };
  auto good = open("&ca_file=" + d + "/ca.pem");
  auto r = good->GetVolume(kVolumeId);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(good->Ping().ok());

  for (const std::string& param : {"&ca_file=" + d + "/other.pem",
                                   std::string("")}) {
    auto bad = open(param);
    auto refused = bad->GetVolume(kVolumeId);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition)
        << param << ": " << refused.status();
    EXPECT_THAT(refused.status().message(), HasSubstr("TLS verification failed"));
  }
  // Only the good client's two requests (lookup and record) got through.
  EXPECT_EQ(tls.Hits("GET " + std::string(kRecordPath)), 1);
}

}  // namespace
}  // namespace sealvol::kms
