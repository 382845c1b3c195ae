// Runs gRPC services on a unix socket in a fresh temporary directory, as the
// real processes do, and hands out a channel to it. For tests only.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>

#include "grpcpp/grpcpp.h"

namespace sealvol::csi {

class GrpcTestServer {
 public:
  explicit GrpcTestServer(std::initializer_list<grpc::Service*> services) {
    char dir_template[] = "/tmp/sealvol-csi-test-XXXXXX";
    dir_ = mkdtemp(dir_template);
    endpoint_ = "unix://" + dir_ + "/csi.sock";
    grpc::ServerBuilder builder;
    builder.AddListeningPort(endpoint_, grpc::InsecureServerCredentials());
    for (grpc::Service* service : services) builder.RegisterService(service);
    server_ = builder.BuildAndStart();
    channel_ =
        grpc::CreateChannel(endpoint_, grpc::InsecureChannelCredentials());
  }
  ~GrpcTestServer() {
    server_->Shutdown();
    std::filesystem::remove_all(dir_);
  }
  bool started() const { return server_ != nullptr; }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::string endpoint_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

}  // namespace sealvol::csi
