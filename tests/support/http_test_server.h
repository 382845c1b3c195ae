// HttpTestServer runs a cpp-httplib server (a plain one, or an
// httplib::SSLServer the test made) on 127.0.0.1 with a free port, on its
// own thread, for the duration of a test. Thread-safe as httplib::Server.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "httplib.h"

namespace sealvol::testing {

class HttpTestServer {
 public:
  explicit HttpTestServer(std::unique_ptr<httplib::Server> server =
                              std::make_unique<httplib::Server>())
      : server_(std::move(server)) {}
  ~HttpTestServer() { Stop(); }
  HttpTestServer(const HttpTestServer&) = delete;
  HttpTestServer& operator=(const HttpTestServer&) = delete;

  // Where the test adds its handlers, before Start.
  httplib::Server& server() { return *server_; }

  // Binds a free port and serves until Stop; returns the base URL (http).
  // Aborts the test binary if no port can be bound.
  std::string Start() {
    port_ = server_->bind_to_any_port("127.0.0.1");
    if (port_ <= 0) {
      std::fprintf(stderr, "HttpTestServer: no port on 127.0.0.1\n");
      std::abort();
    }
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

}  // namespace sealvol::testing
