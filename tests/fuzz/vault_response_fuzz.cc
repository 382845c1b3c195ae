// Fuzzes how the Vault/OpenBao provider reads KMS answers. A cpp-httplib
// server on 127.0.0.1 answers every request with the next response cut from
// the input (segments separated by "\n--\n"; a segment's first byte picks
// the HTTP status, the rest is the body); then the real VaultKeyProvider runs
// unwrap, get, create, list, rotate and ping against it.
#include <cstdlib>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "base/check.h"
#include "httplib.h"
#include "kms/vault_key_provider.h"
#include "tests/fuzz/fuzz_targets.h"

namespace sealvol::fuzz {
namespace {

constexpr char kVolumeId[] = "sv-00112233445566778899aabbccddeeff";

struct Kms {
  httplib::Server server;
  std::thread thread;
  std::mutex mu;
  std::deque<std::pair<int, std::string>> responses;  // GUARDED_BY(mu)
  std::unique_ptr<kms::VaultKeyProvider> provider;
};

void Answer(Kms* kms, const httplib::Request&, httplib::Response& response) {
  std::lock_guard lock(kms->mu);
  if (kms->responses.empty()) {
    response.status = 404;
    response.set_content(R"({"errors":[]})", "application/json");
    return;
  }
  auto [status, body] = std::move(kms->responses.front());
  kms->responses.pop_front();
  response.status = status;
  response.set_content(body, "application/json");
}

Kms& TheKms() {
  static Kms* k = [] {
    auto* kms = new Kms;
    auto handler = [kms](const httplib::Request& q, httplib::Response& r) {
      Answer(kms, q, r);
    };
    kms->server.Get(".*", handler);
    kms->server.Post(".*", handler);
    kms->server.Put(".*", handler);
    kms->server.Delete(".*", handler);
    kms->server.Patch(".*", handler);
    const int port = kms->server.bind_to_any_port("127.0.0.1");
    CHECK_GT(port, 0);
    kms->thread = std::thread([kms] { kms->server.listen_after_bind(); });
    ::setenv("VAULT_TOKEN", "fuzz-token", 1);
    auto config = kms::VaultConfig::FromUri(
        "vault+http://127.0.0.1:" + std::to_string(port) +
        "?max_attempts=1&timeout_ms=5000&connect_timeout_ms=2000");
    CHECK(config.ok());
    auto provider = kms::VaultKeyProvider::Open(std::move(config).value());
    CHECK(provider.ok());
    kms->provider = std::move(provider).value();
    return kms;
  }();
  return *k;
}

void Load(Kms& kms, std::string_view input) {
  static constexpr int kStatuses[] = {200, 200, 200, 200, 204, 400,
                                      403, 404, 412, 500, 503, 301};
  std::lock_guard lock(kms.mu);
  kms.responses.clear();
  while (true) {
    const size_t cut = input.find("\n--\n");
    std::string_view segment = input.substr(0, cut);
    int status = 200;
    if (!segment.empty()) {
      status = kStatuses[static_cast<uint8_t>(segment[0]) % std::size(kStatuses)];
      segment.remove_prefix(1);
    }
    kms.responses.emplace_back(status, std::string(segment));
    if (cut == std::string_view::npos) break;
    input.remove_prefix(cut + 4);
  }
}

}  // namespace

int FuzzVaultResponse(const uint8_t* data, size_t size) {
  Kms& kms = TheKms();
  Load(kms, std::string_view(reinterpret_cast<const char*>(data), size));
  kms::KeyProvider& p = *kms.provider;
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
