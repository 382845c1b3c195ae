#include "cmd/token_commands.h"

#include <fcntl.h>
#include <unistd.h>

#include <iostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "base/durable_file.h"
#include "cmd/exit_codes.h"
#include "kms/broker/jwks_cache.h"
#include "kms/broker/refusal.h"
#include "kms/broker/test_issuer.h"
#include "kms/broker/token_verifier.h"
#include "nlohmann/json.hpp"

namespace sealvol::cmd {
namespace {

constexpr char kTestsOnly[] =
    "FOR TESTS ONLY: a stand-in for the Kubernetes service-account token "
    "issuer. Never use its keys or tokens in production.";

// Issuer keys and tokens are small.
constexpr size_t kMaxFileSize = 1 << 20;

absl::StatusOr<broker::TestIssuer> LoadIssuer(const std::string& path) {
  auto pem = ReadSmallFile(path, kMaxFileSize);
  if (!pem.ok()) return pem.status();
  return broker::TestIssuer::FromPem(*pem);
}

// "2026-11-28T10:00:00Z" or a signed offset from now such as "+5m", "-2h".
absl::StatusOr<absl::Time> ParseWhen(const std::string& text) {
  if (text.empty()) return absl::Now();
  if (text[0] == '+' || text[0] == '-') {
    absl::Duration d;
    if (!absl::ParseDuration(text.substr(1), &d)) {
      return absl::InvalidArgumentError(absl::StrCat("bad offset ", text));
    }
    return text[0] == '+' ? absl::Now() + d : absl::Now() - d;
  }
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, text, &t, &err)) {
    return absl::InvalidArgumentError(absl::StrCat("bad time ", text, ": ", err));
  }
  return t;
}

int Fail(const absl::Status& status, const char* what) {
  return cmd::Fail(absl::StrCat("token ", what), status,
                   CommandFamily::kService);
}

void AddKeygen(CLI::App* token, int& exit_code) {
  struct Flags {
    std::string out;
    std::string alg = "ES256";
  };
  auto f = std::make_shared<Flags>();
  CLI::App* c = token->add_subcommand(
      "keygen", absl::StrCat("Generate a test issuer signing key. ", kTestsOnly));
  c->add_option("--out", f->out, "Write the PEM key here (mode 0600); "
                                 "default stdout");
  c->add_option("--alg", f->alg, "RS256 or ES256")
      ->check(CLI::IsMember({"RS256", "ES256"}))
      ->capture_default_str();
  c->callback([f, &exit_code] {
    auto issuer = broker::TestIssuer::Generate(
        f->alg == "RS256" ? broker::JwsAlgorithm::kRs256
                          : broker::JwsAlgorithm::kEs256);
    if (!issuer.ok()) return void(exit_code = Fail(issuer.status(), "keygen"));
    auto pem = issuer->PrivateKeyPem();
    if (!pem.ok()) return void(exit_code = Fail(pem.status(), "keygen"));
    if (f->out.empty()) {
      std::cout << *pem;
    } else {
      const int fd = ::open(f->out.c_str(),
                            O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (fd < 0 || ::write(fd, pem->data(), pem->size()) !=
                        static_cast<ssize_t>(pem->size())) {
        if (fd >= 0) ::close(fd);
        std::cerr << "token keygen: cannot write " << f->out << "\n";
        return void(exit_code = kExitError);
      }
      ::close(fd);
    }
    std::cerr << "kid " << issuer->kid() << "\n";
    exit_code = kExitOk;
  });
}

void AddJwks(CLI::App* token, int& exit_code) {
  auto key = std::make_shared<std::string>();
  CLI::App* c = token->add_subcommand(
      "jwks", absl::StrCat("Print the JWKS (public key) of a test issuer key, "
                           "for the broker's --jwks-file. ",
                           kTestsOnly));
  c->add_option("--issuer-key", *key, "PEM key from `token keygen`")->required();
  c->callback([key, &exit_code] {
    auto issuer = LoadIssuer(*key);
    if (!issuer.ok()) return void(exit_code = Fail(issuer.status(), "jwks"));
    std::cout << issuer->Jwks() << "\n";
    exit_code = kExitOk;
  });
}

void AddMint(CLI::App* token, int& exit_code) {
  struct Flags {
    std::string key;
    broker::MintOptions mint;
    std::string ttl = "1h";
    std::string not_before;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* c = token->add_subcommand(
      "mint",
      absl::StrCat(
          "Mint a Kubernetes-style projected service-account token. A node "
          "plugin's token: --namespace sealvol-system --service-account "
          "sealvol-node --node NODE. ",
          kTestsOnly));
  c->add_option("--issuer-key", f->key, "PEM key from `token keygen`")
      ->required();
  c->add_option("--issuer", f->mint.issuer, "iss claim")->required();
  c->add_option("--audience", f->mint.audience, "aud claim")
      ->capture_default_str();
  c->add_option("--namespace", f->mint.namespace_name, "Pod namespace")
      ->required();
  c->add_option("--service-account", f->mint.service_account,
                "Service account name")
      ->required();
  c->add_option("--service-account-uid", f->mint.service_account_uid,
                "Default: random");
  c->add_option("--pod", f->mint.pod_name, "Pod name (bound-pod claim)");
  c->add_option("--pod-uid", f->mint.pod_uid, "Pod uid");
  c->add_option("--node", f->mint.node_name, "Node name (node claim)");
  c->add_option("--node-uid", f->mint.node_uid, "Default: random");
  c->add_option("--jti", f->mint.jti, "Token id; default random");
  c->add_option("--ttl", f->ttl, "Lifetime, e.g. 10m, 1h")->capture_default_str();
  c->add_option("--not-before", f->not_before,
                "RFC 3339 time or offset from now (+5m, -2h); default now");
  c->callback([f, &exit_code] {
    auto issuer = LoadIssuer(f->key);
    if (!issuer.ok()) return void(exit_code = Fail(issuer.status(), "mint"));
    if (!absl::ParseDuration(f->ttl, &f->mint.ttl)) {
      std::cerr << "token mint: bad --ttl " << f->ttl << "\n";
      return void(exit_code = kExitUsage);
    }
    auto nbf = ParseWhen(f->not_before);
    if (!nbf.ok()) return void(exit_code = Fail(nbf.status(), "mint"));
    f->mint.not_before = *nbf;
    auto token = issuer->Mint(f->mint);
    if (!token.ok()) return void(exit_code = Fail(token.status(), "mint"));
    std::cout << *token << "\n";
    exit_code = kExitOk;
  });
}

void AddVerify(CLI::App* token, int& exit_code) {
  struct Flags {
    broker::JwksSourceOptions source;
    std::string issuer;
    std::string audience = "sealvol";
    std::string token_file;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* c = token->add_subcommand(
      "verify",
      "Verify a token as the key broker would (signature, iss, aud, time) "
      "and print its claims; exit 11 with the refusal reason otherwise");
  c->add_option("--jwks-file", f->source.file, "JWKS file");
  c->add_option("--jwks-url", f->source.url, "JWKS URL");
  c->add_option("--oidc-issuer-url", f->source.oidc_issuer_url,
                "Issuer URL for OIDC discovery");
  c->add_option("--ca-file", f->source.ca_file, "CA bundle for https");
  c->add_option("--issuer", f->issuer, "Expected iss")->required();
  c->add_option("--audience", f->audience, "Expected aud")->capture_default_str();
  c->add_option("--token-file", f->token_file, "File with the JWT; '-' = stdin")
      ->required();
  c->callback([f, &exit_code] {
    std::string text;
    if (f->token_file == "-") {
      std::getline(std::cin, text);
    } else {
      auto content = ReadSmallFile(f->token_file, kMaxFileSize);
      if (!content.ok()) return void(exit_code = Fail(content.status(), "verify"));
      text = *content;
    }
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) {
      text.pop_back();
    }
    auto keys = broker::JwksCache::Create(f->source);
    if (!keys.ok()) return void(exit_code = Fail(keys.status(), "verify"));
    broker::TokenVerifier verifier(
        {.issuer = f->issuer, .audience = f->audience}, **keys);
    auto verified = verifier.Verify(text);
    if (!verified.ok()) {
      std::cerr << "refused: " << verified.status().message() << "\n";
      return void(exit_code = kExitPermission);
    }
    nlohmann::ordered_json out = {
        {"issuer", verified->issuer},
        {"subject", verified->subject},
        {"namespace", verified->namespace_name},
        {"service_account", verified->service_account},
        {"pod", verified->pod_name},
        {"pod_uid", verified->pod_uid},
        {"node", verified->node_name},
        {"jti", verified->jti},
        {"expires", absl::FormatTime(absl::RFC3339_sec, verified->expires_at,
                                     absl::UTCTimeZone())}};
    std::cout << out.dump(2) << "\n";
    exit_code = kExitOk;
  });
}

}  // namespace

void RegisterTokenCommands(CLI::App& app, int& exit_code) {
  CLI::App* token = app.add_subcommand(
      "token", absl::StrCat("Test token issuer and token verifier. ", kTestsOnly));
  token->require_subcommand(1);
  AddKeygen(token, exit_code);
  AddJwks(token, exit_code);
  AddMint(token, exit_code);
  AddVerify(token, exit_code);
}

}  // namespace sealvol::cmd
