// Key hygiene across a volume's life: keys handled through the real embedded
// key provider, the real KeyBroker (unix socket, audit log), the real engine
// and the real CLI leave no DEK and no token bytes in anything written: the
// backing images, the registry, the audit log, the logs. Every secret
// allocation is zeroized when released, and closing a volume releases its
// key material.
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "crypto/secret_bytes.h"
#include "gtest/gtest.h"
#include "io/sealed_volume.h"
#include "kms/broker/key_broker_client.h"
#include "kms/broker/key_broker_service.h"
#include "kms/key_provider.h"
#include "spdlog/sinks/basic_file_sink.h"
#include "spdlog/spdlog.h"
#include "tests/kms/broker/broker_test_env.h"
#include "tests/support/temp_dir.h"

namespace sealvol::hardening {
namespace {

namespace fs = std::filesystem;
using broker::testing::IssuerEnv;
using broker::testing::kNode;
using broker::testing::kTenant;

constexpr char kVolume[] = "sv-a0a1a2a3a4a5a6a7a8a9aaabacadaeaf";

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
}

// A secret and the encodings it could leak in (raw, hex, base64).
struct Needle {
  std::string what;
  std::vector<std::string> forms;
};

Needle SecretNeedle(const std::string& what, const crypto::SecretBytes& key) {
  const std::string raw(reinterpret_cast<const char*>(key.data()), key.size());
  std::string b64, b64url;
  absl::Base64Escape(raw, &b64);
  absl::WebSafeBase64Escape(raw, &b64url);
  const std::string hex = absl::BytesToHexString(raw);
  std::string upper = hex;
  for (char& c : upper) c = static_cast<char>(std::toupper(c));
  return {what, {raw, hex, upper, b64, b64url}};
}

Needle TokenNeedle(const std::string& what, const std::string& token) {
  // The whole token, and its signature alone (a token cut in a log line).
  std::vector<std::string> parts = absl::StrSplit(token, '.');
  Needle n{what, {token}};
  if (parts.size() == 3 && parts[2].size() >= 16) n.forms.push_back(parts[2]);
  return n;
}

// Every regular file under `dir`, scanned for every form of every needle.
void ExpectNoNeedles(const fs::path& dir, const std::vector<Needle>& needles,
                     int* files_scanned) {
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    ++*files_scanned;
    const std::string content = ReadAll(entry.path());
    for (const Needle& n : needles) {
      for (const std::string& form : n.forms) {
        EXPECT_EQ(content.find(form), std::string::npos)
            << n.what << " found in " << entry.path();
      }
    }
  }
}

int RunCli(const std::string& args, const fs::path& log) {
  const std::string command = absl::StrCat(SEALVOL_BIN_PATH, " ", args, " >>'",
                                           log.string(), "' 2>&1");
  const int rc = std::system(command.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

class KeyHygieneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Everything this process logs, at every level, goes to a file we scan.
    auto logger = spdlog::basic_logger_mt(absl::StrCat("hygiene-", getpid()),
                                          (dir_ / "process.log").string());
    logger->set_level(spdlog::level::trace);
    previous_ = spdlog::default_logger();
    spdlog::set_default_logger(logger);
    spdlog::set_level(spdlog::level::trace);
  }
  void TearDown() override {
    spdlog::set_default_logger(previous_);
  }

  sealvol::testing::TempDir tmp_{"sealvol-hygiene"};
  const fs::path dir_{tmp_.path()};
  std::shared_ptr<spdlog::logger> previous_;
};

TEST_F(KeyHygieneTest, NoDekOrTokenBytesInImagesRegistryAuditOrLogs) {
  std::vector<Needle> needles;

  // 1. Broker path: the KMS creates the key, the broker releases it to an
  //    attested pod, the engine formats, writes, reopens and reads.
  auto provider = kms::OpenKeyProvider("local:" + (dir_ / "kms").string());
  ASSERT_TRUE(provider.ok()) << provider.status();
  ASSERT_TRUE((*provider)
                  ->CreateVolumeKey({.volume_id = kVolume,
                                     .name = "pvc-hygiene",
                                     .tenant = kTenant,
                                     .capacity_bytes = 4 << 20,
                                     .node = kNode,
                                     .parameters = {{"allowedServiceAccounts",
                                                     "trainer"}}})
                  .ok());
  IssuerEnv env(broker::JwsAlgorithm::kEs256);
  auto audit = broker::AuditLog::Open({.path = (dir_ / "audit.log").string()});
  ASSERT_TRUE(audit.ok());
  broker::KeyBrokerService service(**provider, env.verifier, **audit, {});
  auto server = broker::StartBrokerServer(
      {.listen = "unix://" + (dir_ / "broker.sock").string()}, service);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string node_token = env.Mint(env.NodeMint());
  // The node's token file is the one place a token is meant to be on disk
  // (kubelet projects it there); it lives outside the scanned directory.
  const fs::path token_dir = dir_.string() + "-token";
  fs::create_directories(token_dir);
  sealvol::testing::WriteFile((token_dir / "node-token").string(), node_token);
  auto client = broker::KeyBrokerClient::Create(
      {.target = "unix://" + (dir_ / "broker.sock").string(),
       .node_token_file = (token_dir / "node-token").string()});
  ASSERT_TRUE(client.ok());
  auto mint = env.PodMint("trainer-0");
  const std::string pod_token = env.Mint(mint);
  auto dek = (*client)->ReleaseKey(
      {.volume_id = kVolume, .node_id = kNode, .pod_token = pod_token,
       .pod = {.name = "trainer-0", .namespace_name = kTenant,
               .uid = mint.pod_uid, .service_account = "trainer"}});
  ASSERT_TRUE(dek.ok()) << dek.status();
  // A refused request (service account not allowed) is logged and audited
  // too; its token must not be.
  auto other = env.PodMint("shell-0");
  other.service_account = "default";
  const std::string refused_token = env.Mint(other);
  EXPECT_FALSE((*client)
                   ->ReleaseKey({.volume_id = kVolume, .node_id = kNode,
                                 .pod_token = refused_token,
                                 .pod = {.name = "shell-0",
                                         .namespace_name = kTenant,
                                         .uid = other.pod_uid,
                                         .service_account = "default"}})
                   .ok());
  needles.push_back(SecretNeedle("broker-released DEK", *dek));
  needles.push_back(TokenNeedle("pod token", pod_token));
  needles.push_back(TokenNeedle("refused pod token", refused_token));
  needles.push_back(TokenNeedle("node token", node_token));

  auto id = io::ParseVolumeId(kVolume);
  ASSERT_TRUE(id.ok());
  const std::string image = (dir_ / "broker.img").string();
  {
    auto volume = io::SealedVolume::Format(
        {.path = image, .size_bytes = 4 << 20, .volume_id = *id}, *dek);
    ASSERT_TRUE(volume.ok()) << volume.status();
    ASSERT_TRUE((*volume)->Close().ok());
  }
  {
    auto volume = io::SealedVolume::Open({.path = image}, *dek);
    ASSERT_TRUE(volume.ok()) << volume.status();
    auto* engine = volume->get();
    ASSERT_NE(engine, nullptr);
    std::vector<uint8_t> data(16 * 4096);
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 31);
    ASSERT_EQ(engine->Io(io::IoOp::kWrite, 0, data), 0);
    ASSERT_EQ(engine->Io(io::IoOp::kFlush, 0, {}), 0);
    std::vector<uint8_t> back(data.size());
    ASSERT_EQ(engine->Io(io::IoOp::kRead, 0, back), 0);
    EXPECT_EQ(back, data);
    ASSERT_TRUE((*volume)->Close().ok());
  }
  server->server->Shutdown();

  // 2. CLI path: format, write, read and check through the real binary with
  //    the embedded provider; the DEK is taken from the provider afterwards.
  const fs::path cli_log = dir_ / "cli.log";
  const std::string state = (dir_ / "cli-state").string();
  const std::string cli_image = (dir_ / "cli.img").string();
  ASSERT_EQ(RunCli(absl::StrCat("format --size 4M --tenant team-a --state-dir ",
                                state, " ", cli_image),
                   cli_log), 0) << ReadAll(cli_log);
  ASSERT_EQ(RunCli(absl::StrCat("write --offset 8192 --state-dir ", state, " ",
                                cli_image, " </etc/services"),
                   cli_log), 0) << ReadAll(cli_log);
  ASSERT_EQ(RunCli(absl::StrCat("read --offset 8192 --length 4096 --state-dir ",
                                state, " ", cli_image),
                   cli_log), 0) << ReadAll(cli_log);
  ASSERT_EQ(RunCli(absl::StrCat("check --state-dir ", state, " ", cli_image),
                   cli_log), 0) << ReadAll(cli_log);
  auto header = io::ReadHeader(cli_image);
  ASSERT_TRUE(header.ok()) << header.status();
  auto cli_provider = kms::OpenKeyProvider("local:" + state);
  ASSERT_TRUE(cli_provider.ok());
  auto cli_dek =
      (*cli_provider)->UnwrapVolumeKey(io::VolumeIdString(header->volume_id));
  ASSERT_TRUE(cli_dek.ok()) << cli_dek.status();
  needles.push_back(SecretNeedle("CLI volume DEK", *cli_dek));

  spdlog::default_logger()->flush();
  int files = 0;
  ExpectNoNeedles(dir_, needles, &files);
  // Images, registry records, KEK files, audit log, process and CLI logs.
  EXPECT_GE(files, 7);
  // The scan can find what it looks for: the DEK is in this file.
  {
    std::ofstream planted(token_dir / "planted", std::ios::binary);
    planted.write(reinterpret_cast<const char*>(dek->data()), 32);
  }
  EXPECT_NE(ReadAll(token_dir / "planted").find(needles[0].forms[0]),
            std::string::npos);
  fs::remove_all(token_dir);
}

// Every secret region is zeroized before it is unmapped, and Close releases
// the engine's key material (the caller's DEK is the only live secret left).
TEST_F(KeyHygieneTest, CloseZeroizesTheVolumeKeys) {
  std::mutex mu;
  int released = 0;
  int dirty = 0;
  crypto::SetSecretReleaseObserverForTesting([&](std::span<const uint8_t> region) {
    std::lock_guard lock(mu);
    ++released;
    for (uint8_t b : region) {
      if (b != 0) {
        ++dirty;
        break;
      }
    }
  });
  const int64_t before = crypto::LiveSecretAllocations();
  {
    auto dek = crypto::SecretBytes::Random(32);
    ASSERT_TRUE(dek.ok());
    io::VolumeId id{};
    id[0] = 0x42;
    const std::string image = (dir_ / "zeroize.img").string();
    auto volume = io::SealedVolume::Format(
        {.path = image, .size_bytes = 1 << 20, .volume_id = id}, *dek);
    ASSERT_TRUE(volume.ok()) << volume.status();
    ASSERT_TRUE((*volume)->Close().ok());
    volume->reset();
    auto reopened = io::SealedVolume::Open({.path = image}, *dek);
    ASSERT_TRUE(reopened.ok()) << reopened.status();
    EXPECT_GT(crypto::LiveSecretAllocations(), before + 1)
        << "an open volume holds key material in secret memory";
    int released_before_close;
    {
      std::lock_guard lock(mu);
      released_before_close = released;
    }
    ASSERT_TRUE((*reopened)->Close().ok());
    {
      std::lock_guard lock(mu);
      EXPECT_GT(released, released_before_close)
          << "Close released no key material";
    }
    EXPECT_EQ(crypto::LiveSecretAllocations(), before + 1)
        << "after Close only the caller's DEK is live";
  }
  EXPECT_EQ(crypto::LiveSecretAllocations(), before);
  crypto::SetSecretReleaseObserverForTesting(nullptr);
  EXPECT_GT(released, 0);
  EXPECT_EQ(dirty, 0) << "a secret region was released without zeroizing";
}

// The start-up hardening every sealvol process runs: not dumpable, no core.
// (tests/hardening/process_hygiene_test.sh checks the running binaries.)
TEST_F(KeyHygieneTest, HardenProcessDisablesDumpsAndCores) {
  ASSERT_TRUE(crypto::HardenProcess().ok());
  EXPECT_EQ(::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
  rlimit core{};
  ASSERT_EQ(::getrlimit(RLIMIT_CORE, &core), 0);
  EXPECT_EQ(core.rlim_cur, 0u);
  EXPECT_EQ(core.rlim_max, 0u);
}

}  // namespace
}  // namespace sealvol::hardening
