// Shared fixtures for the broker tests: an in-memory KeyProvider, a test
// issuer with its JWKS, a verifier on a controllable clock, and token
// minting for pods and nodes.
#pragma once

#include <atomic>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "crypto/secret_bytes.h"
#include "gtest/gtest.h"
#include "kms/broker/jwks_cache.h"
#include "kms/broker/test_issuer.h"
#include "kms/broker/token_verifier.h"
#include "kms/key_provider.h"

namespace sealvol::broker::testing {

inline constexpr char kIssuer[] = "https://issuer.test";
inline constexpr char kTenant[] = "team-a";
inline constexpr char kNode[] = "node-1";

// KeyProvider fake: volumes, and plaintext DEKs by wrapped key, in maps.
// Only the calls the broker makes do anything; the rest say Unimplemented.
class FakeKeyProvider final : public kms::KeyProvider {
 public:
  // Stores `record` with a DEK of bytes `dek_fill`; a record without a
  // wrapped key gets one named after its id and key version.
  void AddVolume(kms::VolumeRecord record, uint8_t dek_fill) {
    std::lock_guard lock(mu_);
    if (record.wrapped_dek.empty()) {
      record.wrapped_dek = absl::StrCat("fake:", record.volume_id, ":v",
                                        record.key_version);
    }
    deks_[record.wrapped_dek] = dek_fill;
    volumes_[record.volume_id] = std::move(record);
  }
  // The next GetVolume returns the stored record, then `record` (DEK of
  // `dek_fill`) replaces it: a rotation landing between two registry reads.
  void ReplaceAfterNextRead(kms::VolumeRecord record, uint8_t dek_fill) {
    std::lock_guard lock(mu_);
    replacement_ = std::make_pair(std::move(record), dek_fill);
  }
  void FailUnwrap(bool fail) { fail_unwrap_ = fail; }
  int unwrap_calls() const { return unwrap_calls_; }
  int read_calls() const { return read_calls_; }

  absl::StatusOr<kms::VolumeRecord> CreateVolumeKey(
      const kms::CreateVolumeKeyRequest&) override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<crypto::SecretBytes> UnwrapVolumeKey(
      std::string_view volume_id) override {
    auto record = GetVolume(volume_id);
    if (!record.ok()) return record.status();
    return UnwrapRecordKey(*record);
  }
  absl::StatusOr<crypto::SecretBytes> UnwrapRecordKey(
      const kms::VolumeRecord& record) override {
    ++unwrap_calls_;
    if (fail_unwrap_) return absl::UnavailableError("fake KMS down");
    std::lock_guard lock(mu_);
    auto it = deks_.find(record.wrapped_dek);
    if (it == deks_.end()) return absl::DataLossError("unknown wrapped key");
    auto dek = crypto::SecretBytes::Allocate(32);
    if (!dek.ok()) return dek.status();
    std::fill(dek->data(), dek->data() + 32, it->second);
    return dek;
  }
  absl::StatusOr<kms::VolumeRecord> GetVolume(
      std::string_view volume_id) override {
    kms::VolumeRecord out;
    {
      std::lock_guard lock(mu_);
      ++read_calls_;
      auto it = volumes_.find(std::string(volume_id));
      if (it == volumes_.end()) {
        return absl::NotFoundError(
            absl::StrCat("volume ", std::string(volume_id)));
      }
      out = it->second;
    }
    if (std::optional<std::pair<kms::VolumeRecord, uint8_t>> next =
            TakeReplacement()) {
      AddVolume(std::move(next->first), next->second);
    }
    return out;
  }
  absl::Status UpdateVolume(const kms::VolumeRecord& record) override {
    std::lock_guard lock(mu_);
    auto it = volumes_.find(record.volume_id);
    if (it == volumes_.end()) return absl::NotFoundError("no volume");
    it->second.capacity_bytes = record.capacity_bytes;
    it->second.node = record.node;
    it->second.parameters = record.parameters;
    ++updates_;
    return absl::OkStatus();
  }
  absl::StatusOr<kms::VolumeRecord> ClaimFormat(
      std::string_view volume_id, const kms::FormatClaim& claim) override {
    if (fail_claims_) return absl::UnavailableError("fake KMS down");
    std::lock_guard lock(mu_);
    auto it = volumes_.find(std::string(volume_id));
    if (it == volumes_.end()) {
      return absl::NotFoundError(absl::StrCat("volume ", std::string(volume_id)));
    }
    if (it->second.format_id.empty()) {
      it->second.format_id = claim.format_id;
      it->second.formatted_node = claim.node;
      it->second.formatted_unix = claim.unix_time;
      if (claim.state.has_value() && !it->second.state.has_value()) {
        it->second.state = claim.state;
        it->second.state_node = claim.node;
      }
    }
    return it->second;
  }
  absl::StatusOr<kms::VolumeRecord> CommitState(
      std::string_view volume_id, const kms::StateCommit& commit) override {
    if (fail_claims_) return absl::UnavailableError("fake KMS down");
    std::lock_guard lock(mu_);
    auto it = volumes_.find(std::string(volume_id));
    if (it == volumes_.end()) {
      return absl::NotFoundError(absl::StrCat("volume ", std::string(volume_id)));
    }
    kms::VolumeRecord changed = it->second;
    if (absl::Status s = kms::ApplyStateCommit(changed, commit); !s.ok()) return s;
    it->second = changed;
    return changed;
  }
  absl::StatusOr<kms::VolumeRecord> AcceptRollback(std::string_view volume_id,
                                                   std::string_view by,
                                                   int64_t unix_time) override {
    std::lock_guard lock(mu_);
    auto it = volumes_.find(std::string(volume_id));
    if (it == volumes_.end()) {
      return absl::NotFoundError(absl::StrCat("volume ", std::string(volume_id)));
    }
    it->second.rollback_pending = true;
    it->second.rollback_accepted_by = std::string(by);
    it->second.rollback_accepted_unix = unix_time;
    return it->second;
  }
  void FailClaims(bool fail) { fail_claims_ = fail; }
  int updates() const { return updates_; }
  absl::StatusOr<std::vector<kms::VolumeRecord>> ListVolumes(
      std::string_view) override {
    return absl::UnimplementedError("fake");
  }
  absl::Status DestroyVolumeKey(std::string_view) override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<kms::RotationResult> RotateTenantKey(std::string_view) override {
    return absl::UnimplementedError("fake");
  }
  absl::Status Ping() override { return absl::OkStatus(); }
  std::string Describe() const override { return "fake"; }

 private:
  std::optional<std::pair<kms::VolumeRecord, uint8_t>> TakeReplacement() {
    std::lock_guard lock(mu_);
    return std::exchange(replacement_, std::nullopt);
  }

  std::mutex mu_;
  std::map<std::string, kms::VolumeRecord> volumes_;
  std::map<std::string, uint8_t> deks_;  // By wrapped key.
  std::optional<std::pair<kms::VolumeRecord, uint8_t>> replacement_;
  std::atomic<bool> fail_unwrap_{false};
  std::atomic<bool> fail_claims_{false};
  std::atomic<int> unwrap_calls_{0};
  std::atomic<int> read_calls_{0};
  std::atomic<int> updates_{0};
};

inline kms::VolumeRecord MakeVolume(const std::string& id,
                                    const std::string& tenant) {
  kms::VolumeRecord v;
  v.volume_id = id;
  v.tenant = tenant;
  v.key_name = "sealvol-" + tenant;
  v.key_version = 3;
  v.node = kNode;  // Placed on the test's node, as CreateVolume records it.
  return v;
}

// Clock the tests can move. Thread-safe.
class TestClock {
 public:
  absl::Time Now() const { return absl::FromUnixNanos(nanos_.load()); }
  void Set(absl::Time t) { nanos_ = absl::ToUnixNanos(t); }
  void Advance(absl::Duration d) { nanos_ += absl::ToInt64Nanoseconds(d); }

 private:
  std::atomic<int64_t> nanos_{absl::ToUnixNanos(absl::Now())};
};

// An issuer, its JWKS cache and a verifier on `clock`.
struct IssuerEnv {
  explicit IssuerEnv(JwsAlgorithm alg = JwsAlgorithm::kRs256)
      : issuer(*TestIssuer::Generate(alg)),
        jwks(JwksCache::FromKeySet(*KeySet::Parse(issuer.Jwks()))),
        verifier(
            TokenVerifierOptions{.issuer = kIssuer,
                                 .now = [this] { return clock.Now(); }},
            *jwks) {}

  MintOptions PodMint(const std::string& pod = "web-0",
                      const std::string& ns = kTenant) const {
    MintOptions m;
    m.issuer = kIssuer;
    m.namespace_name = ns;
    m.service_account = "trainer";
    m.pod_name = pod;
    m.pod_uid = "uid-" + pod;
    m.node_name = kNode;
    m.not_before = clock.Now();
    return m;
  }
  MintOptions NodeMint(const std::string& node = kNode) const {
    MintOptions m;
    m.issuer = kIssuer;
    m.namespace_name = "sealvol-system";
    m.service_account = "sealvol-node";
    m.pod_name = "sealvol-node-x";
    m.pod_uid = "uid-sealvol-node-x";
    m.node_name = node;
    m.not_before = clock.Now();
    return m;
  }
  std::string Mint(const MintOptions& m) const {
    auto token = issuer.Mint(m);
    EXPECT_TRUE(token.ok()) << token.status();
    return token.ok() ? *token : "";
  }

  TestClock clock;
  TestIssuer issuer;
  std::unique_ptr<JwksCache> jwks;
  TokenVerifier verifier;
};

}  // namespace sealvol::broker::testing
