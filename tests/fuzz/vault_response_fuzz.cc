// Fuzzes how the Vault/OpenBao provider reads KMS answers. Every request is
// answered with the next response cut from the input (segments separated by
// "\n--\n"; a segment's first byte picks the HTTP status, the rest is the
// body); the real VaultKeyProvider runs unwrap, get, create, list, rotate
// and ping on them.
//
// The answers come from an in-process transport, so an input costs JSON
// parsing, not round trips. An input whose first byte is 0xFF is answered
// over loopback instead, by a cpp-httplib server through the real libcurl
// HttpClient (body cap, content type, status handling), at a few
// milliseconds an input.
#include <cstdlib>
#include <deque>
#include <string>
#include <string_view>

#include "base/check.h"
#include "base/mutex.h"
#include "httplib.h"
#include "kms/http_client.h"
#include "kms/vault_key_provider.h"
#include "tests/fuzz/fuzz_targets.h"
#include "tests/support/http_test_server.h"

namespace sealvol::fuzz {
namespace {

constexpr char kVolumeId[] = "sv-00112233445566778899aabbccddeeff";
constexpr uint8_t kOverLoopback = 0xFF;

// The scripted answers of one input, shared by both transports.
class Answers {
 public:
  void Load(std::string_view input) {
    static constexpr int kStatuses[] = {200, 200, 200, 200, 204, 400,
                                        403, 404, 412, 500, 503, 301};
    MutexLock lock(&mu_);
    queue_.clear();
    while (true) {
      const size_t cut = input.find("\n--\n");
      std::string_view segment = input.substr(0, cut);
      int status = 200;
      if (!segment.empty()) {
        status = kStatuses[static_cast<uint8_t>(segment[0]) %
                           std::size(kStatuses)];
        segment.remove_prefix(1);
      }
      queue_.emplace_back(status, std::string(segment));
      if (cut == std::string_view::npos) break;
      input.remove_prefix(cut + 4);
    }
  }

  // The next answer; 404 once the input is used up.
  std::pair<int, std::string> Next() {
    MutexLock lock(&mu_);
    if (queue_.empty()) return {404, R"({"errors":[]})"};
    auto next = std::move(queue_.front());
    queue_.pop_front();
    return next;
  }

 private:
  Mutex mu_;
  std::deque<std::pair<int, std::string>> queue_ ABSL_GUARDED_BY(mu_);
};

class InProcessTransport final : public kms::HttpTransport {
 public:
  explicit InProcessTransport(Answers* answers) : answers_(answers) {}
  absl::StatusOr<kms::HttpResponse> Send(
      const kms::HttpRequest&) const override {
    auto [status, body] = answers_->Next();
    return kms::HttpResponse{.status = status,
                             .content_type = "application/json",
                             .body = std::move(body),
                             .attempts = 1};
  }

 private:
  Answers* const answers_;
};

kms::VaultConfig Config(const std::string& address) {
  auto config = kms::VaultConfig::FromUri(
      "vault+http://" + address +
      "?max_attempts=1&timeout_ms=5000&connect_timeout_ms=2000");
  CHECK(config.ok());
  return *std::move(config);
}

struct Kms {
  Answers answers;
  std::unique_ptr<kms::VaultKeyProvider> in_process;
  // Started on the first input that asks for it.
  ::sealvol::testing::HttpTestServer server;
  std::unique_ptr<kms::VaultKeyProvider> over_loopback;
};

Kms& TheKms() {
  static Kms* k = [] {
    auto* kms = new Kms;
    ::setenv("VAULT_TOKEN", "fuzz-token", 1);
    kms->in_process = kms::VaultKeyProvider::OpenWithTransport(
        Config("127.0.0.1:8200"),
        std::make_unique<InProcessTransport>(&kms->answers));
    return kms;
  }();
  return *k;
}

kms::VaultKeyProvider& OverLoopback(Kms& kms) {
  if (kms.over_loopback != nullptr) return *kms.over_loopback;
  auto handler = [&kms](const httplib::Request&, httplib::Response& r) {
    auto [status, body] = kms.answers.Next();
    r.status = status;
    r.set_content(body, "application/json");
  };
  httplib::Server& server = kms.server.server();
  server.Get(".*", handler);
  server.Post(".*", handler);
  server.Put(".*", handler);
  server.Delete(".*", handler);
  server.Patch(".*", handler);
  // Without it, a response's header and body go out in two segments and
  // the second waits for the client's delayed ACK (~40 ms a request).
  server.set_tcp_nodelay(true);
  kms.server.Start();
  auto provider = kms::VaultKeyProvider::Open(
      Config("127.0.0.1:" + std::to_string(kms.server.port())));
  CHECK(provider.ok());
  kms.over_loopback = *std::move(provider);
  return *kms.over_loopback;
}

}  // namespace

int FuzzVaultResponse(const uint8_t* data, size_t size) {
  Kms& kms = TheKms();
  std::string_view input(reinterpret_cast<const char*>(data), size);
  kms::KeyProvider* provider = kms.in_process.get();
  if (!input.empty() && static_cast<uint8_t>(input[0]) == kOverLoopback) {
    input.remove_prefix(1);
    provider = &OverLoopback(kms);
  }
  kms.answers.Load(input);
  kms::KeyProvider& p = *provider;
  auto dek = p.UnwrapVolumeKey(kVolumeId);
  if (dek.ok()) CHECK_EQ(dek->size(), 32u);
  auto record = p.GetVolume(kVolumeId);
  if (record.ok()) CHECK_EQ(record->volume_id, kVolumeId);
  kms::CreateVolumeKeyRequest create;
  create.volume_id = kVolumeId;
  create.name = "pvc-1";
  create.tenant = "team-a";
  create.capacity_bytes = 1 << 20;
  auto created = p.CreateVolumeKey(create);
  if (created.ok()) {
    CHECK_EQ(created->volume_id, kVolumeId);
    CHECK_EQ(created->tenant, "team-a");
  }
  auto listed = p.ListVolumes("team-a");
  if (listed.ok()) {
    for (const auto& r : *listed) CHECK_EQ(r.tenant, "team-a");
  }
  (void)p.RotateTenantKey("team-a");
  (void)p.Ping();
  return 0;
}

}  // namespace sealvol::fuzz
