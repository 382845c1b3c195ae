// BrokerServiceTest: the fixture of the KeyBroker service tests. One test
// issuer per suite (key generation is slow), and per test a fresh TempDir
// holding the audit log, a FakeKeyProvider, metrics and the service over
// them. Derived fixtures add their volumes after SetUp().
#pragma once

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kms/broker/audit_log.h"
#include "kms/broker/key_broker_service.h"
#include "nlohmann/json.hpp"
#include "tests/kms/broker/broker_test_env.h"
#include "tests/support/temp_dir.h"

namespace sealvol::broker::testing {

class BrokerServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { env_ = new IssuerEnv(JwsAlgorithm::kEs256); }
  static void TearDownTestSuite() {
    delete env_;
    env_ = nullptr;
  }

  void SetUp() override {
    env_->clock.Set(absl::Now());
    auto audit = AuditLog::Open({.path = AuditPath()});
    ASSERT_TRUE(audit.ok()) << audit.status();
    audit_ = std::move(*audit);
    options_.metrics = &metrics_;
    Rebuild();
  }
  void TearDown() override {
    service_.reset();
    audit_.reset();
  }
  // A new service over the same keys, audit log and (changed) options_.
  void Rebuild() {
    service_ = std::make_unique<KeyBrokerService>(keys_, env_->verifier,
                                                  *audit_, options_);
  }
  std::string AuditPath() const { return tmp_.file("audit.log"); }
  std::string NodeToken(const std::string& node = kNode) const {
    return env_->Mint(env_->NodeMint(node));
  }
  // The audit log's records, oldest first.
  std::vector<nlohmann::json> AuditRecords() const {
    std::ifstream in(AuditPath());
    std::vector<nlohmann::json> out;
    for (std::string line; std::getline(in, line);) {
      out.push_back(nlohmann::json::parse(line));
    }
    return out;
  }

  static inline IssuerEnv* env_ = nullptr;
  ::sealvol::testing::TempDir tmp_{"sealvol-broker"};
  FakeKeyProvider keys_;
  std::unique_ptr<AuditLog> audit_;
  BrokerMetrics metrics_;
  KeyBrokerOptions options_;
  std::unique_ptr<KeyBrokerService> service_;
};

}  // namespace sealvol::broker::testing
