// A cpp-httplib server on 127.0.0.1 with a free port, run on its own thread
// for the duration of a test.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "httplib.h"

namespace sealvol::broker::testing {

class HttpTestServer {
 public:
  HttpTestServer() : server_(std::make_unique<httplib::Server>()) {}
  ~HttpTestServer() { Stop(); }

  httplib::Server& server() { return *server_; }

  // Binds and starts serving; returns the base URL.
  std::string Start() {
    port_ = server_->bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_->listen_after_bind(); });
    while (!server_->is_running()) std::this_thread::yield();
    return url();
  }
  void Stop() {
    server_->stop();
    if (thread_.joinable()) thread_.join();
  }
  std::string url() const { return absl::StrCat("http://127.0.0.1:", port_); }
  int port() const { return port_; }

 private:
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace sealvol::broker::testing
