// Runs gRPC services on a unix socket in a fresh temporary directory, as the
// real processes do, and hands out a channel to it. For tests only.
#pragma once

#include <memory>
#include <string>

#include "grpcpp/grpcpp.h"
#include "tests/support/temp_dir.h"

namespace sealvol::csi {

class GrpcTestServer {
 public:
  explicit GrpcTestServer(std::initializer_list<grpc::Service*> services) {
    endpoint_ = "unix://" + dir_.file("csi.sock");
    grpc::ServerBuilder builder;
    builder.AddListeningPort(endpoint_, grpc::InsecureServerCredentials());
    for (grpc::Service* service : services) builder.RegisterService(service);
    server_ = builder.BuildAndStart();
    channel_ =
        grpc::CreateChannel(endpoint_, grpc::InsecureChannelCredentials());
  }
  ~GrpcTestServer() { server_->Shutdown(); }
  bool started() const { return server_ != nullptr; }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  const std::string& dir() const { return dir_.path(); }

 private:
  sealvol::testing::TempDir dir_{"sealvol-csi-test"};
  std::string endpoint_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

}  // namespace sealvol::csi
