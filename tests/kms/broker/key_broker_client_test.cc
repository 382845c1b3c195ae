// How the node's KeyBroker client reads a failed call: the refusal reason
// comes from the broker's trailer, never from the message text, and the
// message reaches people as the broker wrote it. A scripted broker answers
// ReleaseKey with the status and trailer each test sets.
#include "kms/broker/key_broker_client.h"

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <utility>

#include "base/mutex.h"
#include "gtest/gtest.h"
#include "kms/broker/refusal.h"
#include "tests/support/temp_dir.h"

namespace sealvol::broker {
namespace {

class ScriptedBroker final : public v1::KeyBroker::Service {
 public:
  // What the next ReleaseKey answers. Locked: gRPC's own ordering between
  // the test's thread and the handler's is invisible to TSan.
  void Script(grpc::Status answer, std::string reason_trailer = "") {
    MutexLock lock(&mu_);
    answer_ = std::move(answer);
    reason_trailer_ = std::move(reason_trailer);  // Empty: no trailer.
  }

  grpc::Status ReleaseKey(grpc::ServerContext* context,
                          const v1::ReleaseKeyRequest*,
                          v1::ReleaseKeyResponse*) override {
    MutexLock lock(&mu_);
    if (!reason_trailer_.empty()) {
      context->AddTrailingMetadata(kRefusalReasonTrailer, reason_trailer_);
    }
    return answer_;
  }

 private:
  Mutex mu_;
  grpc::Status answer_ ABSL_GUARDED_BY(mu_) = grpc::Status::OK;
  std::string reason_trailer_ ABSL_GUARDED_BY(mu_);
};

class KeyBrokerClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string target = "unix://" + dir_.file("broker.sock");
    grpc::ServerBuilder builder;
    builder.AddListeningPort(target, grpc::InsecureServerCredentials());
    builder.RegisterService(&broker_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    sealvol::testing::WriteFile(dir_.file("node-token"), "node-token\n");
    auto client = KeyBrokerClient::Create(
        {.target = target, .node_token_file = dir_.file("node-token")});
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
  }

  absl::Status Release() {
    return client_
        ->ReleaseKey({.volume_id = "sv-0123456789abcdef0123456789abcdef",
                      .node_id = "node-1",
                      .pod_token = "pod-token"})
        .status();
  }

  sealvol::testing::TempDir dir_{"sealvol-broker-client"};
  ScriptedBroker broker_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<KeyBrokerClient> client_;
};

TEST_F(KeyBrokerClientTest, ReasonComesFromTheTrailerAndTheTextStaysAsSent) {
  broker_.Script(grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                              "pod_mismatch: the token names pod web-1"),
                 "pod_mismatch");
  const absl::Status s = Release();
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(RefusalReason(s), "pod_mismatch");
  EXPECT_EQ(s.message(), "pod_mismatch: the token names pod web-1");
}

// A message worded differently still carries its reason: nothing is parsed.
TEST_F(KeyBrokerClientTest, ReasonDoesNotDependOnTheWording) {
  broker_.Script(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                              "the registry holds another format id"),
                 "already_formatted");
  const absl::Status s = Release();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(RefusalReason(s), "already_formatted");
  EXPECT_EQ(s.message(), "the registry holds another format id");
}

// A failure that is no refusal has no reason, even if its text begins like
// one (an error passed through from elsewhere).
TEST_F(KeyBrokerClientTest, TextThatLooksLikeAReasonIsNotOne) {
  broker_.Script(grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                              "node_mismatch: copied from a log line"));
  const absl::Status s = Release();
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(RefusalReason(s), "");
  EXPECT_EQ(s.message(), "key broker: node_mismatch: copied from a log line");
}

// A trailer naming no reason this client knows (a newer broker) is a plain
// failure, not a refusal with a made-up reason.
TEST_F(KeyBrokerClientTest, UnknownReasonIsAPlainFailure) {
  broker_.Script(
      grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "reason from later"),
      "reason_from_later");
  const absl::Status s = Release();
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(RefusalReason(s), "");
  EXPECT_EQ(s.message(), "key broker: reason from later");
}

}  // namespace
}  // namespace sealvol::broker
