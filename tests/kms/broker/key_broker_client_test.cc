// How the node's KeyBroker client reads a failed call: the refusal reason
// comes from the broker's trailer, never from the message text, and the
// message reaches people as the broker wrote it. A scripted broker answers
// ReleaseKey with the status and trailer each test sets.
#include "kms/broker/key_broker_client.h"

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "kms/broker/refusal.h"
#include "tests/support/temp_dir.h"

namespace sealvol::broker {
namespace {

class ScriptedBroker final : public v1::KeyBroker::Service {
 public:
  // Set before a call; gRPC orders the write before the handler's read.
  grpc::Status answer = grpc::Status::OK;
  std::string reason_trailer;  // Empty: no trailer.

  grpc::Status ReleaseKey(grpc::ServerContext* context,
                          const v1::ReleaseKeyRequest*,
                          v1::ReleaseKeyResponse*) override {
    if (!reason_trailer.empty()) {
      context->AddTrailingMetadata(kRefusalReasonTrailer, reason_trailer);
    }
    return answer;
  }
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
  broker_.answer = grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                                "pod_mismatch: the token names pod web-1");
  broker_.reason_trailer = "pod_mismatch";
  const absl::Status s = Release();
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(RefusalReason(s), "pod_mismatch");
  EXPECT_EQ(s.message(), "pod_mismatch: the token names pod web-1");
}

// A message worded differently still carries its reason: nothing is parsed.
TEST_F(KeyBrokerClientTest, ReasonDoesNotDependOnTheWording) {
  broker_.answer = grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                "the registry holds another format id");
  broker_.reason_trailer = "already_formatted";
  const absl::Status s = Release();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(RefusalReason(s), "already_formatted");
  EXPECT_EQ(s.message(), "the registry holds another format id");
}

// A failure that is no refusal has no reason, even if its text begins like
// one (an error passed through from elsewhere).
TEST_F(KeyBrokerClientTest, TextThatLooksLikeAReasonIsNotOne) {
  broker_.answer = grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                                "node_mismatch: copied from a log line");
  const absl::Status s = Release();
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(RefusalReason(s), "");
  EXPECT_EQ(s.message(), "key broker: node_mismatch: copied from a log line");
}

// A trailer naming no reason this client knows (a newer broker) is a plain
// failure, not a refusal with a made-up reason.
TEST_F(KeyBrokerClientTest, UnknownReasonIsAPlainFailure) {
  broker_.answer =
      grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "reason from later");
  broker_.reason_trailer = "reason_from_later";
  const absl::Status s = Release();
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(RefusalReason(s), "");
  EXPECT_EQ(s.message(), "key broker: reason from later");
}

}  // namespace
}  // namespace sealvol::broker
