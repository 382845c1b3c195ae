#include "cmd/volume_commands.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/error_kind.h"
#include "base/status_macros.h"
#include "cmd/exit_codes.h"
#include "cmd/image_session.h"
#include "cmd/kms_flags.h"
#include "csi/committed_state.h"
#include "io/format_v1.h"
#include "io/sealed_volume.h"
#include "io/upgrade.h"
#include "kms/key_provider.h"
#include "nlohmann/json.hpp"

namespace sealvol::cmd {
namespace {

constexpr uint64_t kChunk = 1 << 20;

int Fail(const char* command, const absl::Status& s) {
  return cmd::Fail(command, s, CommandFamily::kVolume);
}

int RunFormat(const std::string& image, const std::string& size_text,
              const KmsFlags& keys, const std::string& tenant,
              const std::string& name) {
  auto size = ParseSize(size_text);
  if (!size.ok()) {
    std::fprintf(stderr, "sealvol format: %s\n", std::string(size.status().message()).c_str());
    return kExitBadSize;
  }
  if (*size == 0 || *size % io::kBlockSize != 0) {
    std::fprintf(stderr,
                 "sealvol format: size %llu is not a positive multiple of 4096 bytes\n",
                 static_cast<unsigned long long>(*size));
    return kExitBadSize;
  }
  auto made = FormatNewImage(image, *size, keys, tenant, name);
  if (!made.ok()) return Fail("format", made.status());
  nlohmann::json out = {{"volume_id", made->volume_id},
                        {"image", image},
                        {"size_bytes", *size},
                        {"tenant", tenant},
                        {"key_name", made->key_name},
                        {"format_id", made->format_id},
                        {"state_epoch", made->first_state.epoch},
                        {"kms", made->kms}};
  std::cout << out.dump() << "\n";
  return kExitOk;
}

int RunDump(const std::string& image) {
  auto info = io::ReadHeader(image);
  if (!info.ok()) return Fail("dump", info.status());
  nlohmann::json out = {
      {"format_version", info->format_version},
      {"volume_id", io::VolumeIdString(info->volume_id)},
      {"size_bytes", info->size_bytes},
      {"block_size", info->block_size},
      {"generation", info->generation},
      {"format_id", io::FormatIdString(info->format_id)},
      {"clean", info->clean},
      {"state_root", info->has_state_root
                         ? nlohmann::json(io::StateRootString(info->state_root))
                         : nlohmann::json(nullptr)},
      {"state_epoch", info->state_epoch},
      {"layout", nlohmann::json::parse(info->layout_json)}};
  std::cout << out.dump() << "\n";
  return kExitOk;
}

int RunCheck(const std::string& image, const KmsFlags& keys) {
  auto v = OpenImage(image, keys, /*read_only=*/true);
  if (!v.ok()) return Fail("check", v.status());
  io::SealedVolume& e = *v->volume;
  const uint64_t size = e.size_bytes();
  std::vector<uint8_t> buf(kChunk);
  std::vector<uint64_t> failed;
  for (uint64_t off = 0; off < size; off += kChunk) {
    const uint64_t len = std::min<uint64_t>(kChunk, size - off);
    if (e.Io(io::IoOp::kRead, off, {buf.data(), len}) == 0) continue;
    // Find the blocks that fail in this chunk.
    for (uint64_t b = off; b < off + len; b += io::kBlockSize) {
      if (e.Io(io::IoOp::kRead, b, {buf.data(), io::kBlockSize}) != 0) {
        failed.push_back(b / io::kBlockSize);
      }
    }
  }
  const std::vector<uint64_t> groups = e.mismatched_groups();
  const uint64_t per_group = e.layout().data_blocks_per_group;
  const absl::Status closed = e.Close();
  nlohmann::json out = {{"volume_id", io::VolumeIdString(e.volume_id())},
                        {"blocks", size / io::kBlockSize},
                        {"failed_blocks", failed},
                        {"mismatched_groups", groups}};
  std::cout << out.dump() << "\n";
  for (uint64_t g : groups) {
    // A group's blocks all fail once its tag area no longer matches its
    // authenticated digest (a wiped, altered or rolled-back tag entry).
    std::fprintf(stderr,
                 "sealvol check: group %llu (blocks %llu-%llu): its tag area "
                 "does not match its authenticated digest (tag entries wiped, "
                 "altered or rolled back)\n",
                 static_cast<unsigned long long>(g),
                 static_cast<unsigned long long>(g * per_group),
                 static_cast<unsigned long long>((g + 1) * per_group - 1));
  }
  if (!failed.empty()) {
    std::fprintf(stderr, "sealvol check: %zu block(s) failed authentication: %s\n",
                 failed.size(), absl::StrJoin(failed, " ").c_str());
    return kExitIntegrity;
  }
  if (!closed.ok()) return Fail("check", closed);
  return kExitOk;
}

// Converts a format-1 image in place (docs/format.md): authenticated and
// re-sealed under fresh nonce sessions and a new format id.
int RunUpgrade(const std::string& image, const KmsFlags& keys) {
  // Format 1, or format 2 from before the state root; anything else is
  // current already (or not an image).
  io::VolumeId volume_id{};
  bool pre_state_root = false;
  if (auto v1 = io::ReadV1Header(image); v1.ok()) {
    volume_id = v1->volume_id;
  } else {
    auto current = io::ReadHeader(image);
    if (!current.ok()) return Fail("upgrade", v1.status());
    if (current->has_state_root) {
      std::fprintf(stderr,
                   "sealvol upgrade: %s is already format version %u with a "
                   "state root\n",
                   image.c_str(), io::kFormatVersion);
      return kExitOk;
    }
    volume_id = current->volume_id;
    pre_state_root = true;
  }
  const std::string id = io::VolumeIdString(volume_id);
  auto provider = keys.OpenProvider();
  if (!provider.ok()) return Fail("upgrade", provider.status());
  auto dek = (*provider)->UnwrapVolumeKey(id);
  if (absl::IsNotFound(dek.status())) {
    return Fail("upgrade", absl::NotFoundError(absl::StrCat(
        "key for volume ", id, " has been destroyed (crypto-shredded)")));
  }
  if (!dek.ok()) return Fail("upgrade", dek.status());
  auto result = pre_state_root ? io::UpgradePreStateRootImage(image, *dek)
                               : io::UpgradeV1Image(image, *dek);
  if (!result.ok()) return Fail("upgrade", result.status());
  nlohmann::json out = {{"volume_id", id},
                        {"format_version", io::kFormatVersion},
                        {"format_id", io::FormatIdString(result->format_id)},
                        {"blocks_copied", result->blocks_copied},
                        {"state_epoch", result->state.epoch},
                        {"state_root", io::StateRootString(result->state.root)}};
  std::cout << out.dump() << "\n";
  return kExitOk;
}

// Reads the aligned span covering [offset, offset+length).
int ReadCovering(io::SealedVolume& e, uint64_t offset, uint64_t length,
                 std::vector<uint8_t>& out, uint64_t* start) {
  *start = offset / io::kBlockSize * io::kBlockSize;
  const uint64_t end =
      (offset + length + io::kBlockSize - 1) / io::kBlockSize * io::kBlockSize;
  out.assign(end - *start, 0);
  for (uint64_t off = 0; off < out.size(); off += kChunk) {
    const uint64_t len = std::min<uint64_t>(kChunk, out.size() - off);
    const int r = e.Io(io::IoOp::kRead, *start + off, {out.data() + off, len});
    if (r != 0) return r;
  }
  return 0;
}

absl::Status RangeCheck(io::SealedVolume& e, uint64_t offset, uint64_t length) {
  if (offset > e.size_bytes() || length > e.size_bytes() - offset) {
    return absl::OutOfRangeError(absl::StrCat(
        "range ", offset, "+", length, " is beyond the volume size ",
        e.size_bytes()));
  }
  return absl::OkStatus();
}

int RunRead(const std::string& image, uint64_t offset, uint64_t length,
            const KmsFlags& keys) {
  auto v = OpenImage(image, keys, /*read_only=*/true);
  if (!v.ok()) return Fail("read", v.status());
  io::SealedVolume& e = *v->volume;
  if (absl::Status s = RangeCheck(e, offset, length); !s.ok()) {
    std::fprintf(stderr, "sealvol read: %s\n", std::string(s.message()).c_str());
    return kExitUsage;
  }
  std::vector<uint8_t> buf;
  uint64_t start = 0;
  const int r = ReadCovering(e, offset, length, buf, &start);
  if (r != 0) {
    return Fail("read", absl::DataLossError(absl::StrCat(
                            image, ": read ", offset, "+", length, ": ",
                            std::strerror(-r))));
  }
  fwrite(buf.data() + (offset - start), 1, length, stdout);
  std::fflush(stdout);
  return kExitOk;
}

int RunWrite(const std::string& image, uint64_t offset, const KmsFlags& keys) {
  std::vector<uint8_t> input;
  uint8_t chunk[65536];
  for (;;) {
    const ssize_t n = ::read(STDIN_FILENO, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Fail("write", ErrnoStatus(errno, "read", "stdin"));
    if (n == 0) break;
    input.insert(input.end(), chunk, chunk + n);
  }
  auto v = OpenImage(image, keys, /*read_only=*/false);
  if (!v.ok()) return Fail("write", v.status());
  io::SealedVolume& e = *v->volume;
  if (absl::Status s = RangeCheck(e, offset, input.size()); !s.ok()) {
    std::fprintf(stderr, "sealvol write: %s\n", std::string(s.message()).c_str());
    CloseAndCommit("write", *v).IgnoreError();
    return kExitUsage;
  }
  if (input.empty()) {
    if (absl::Status s = CloseAndCommit("write", *v); !s.ok()) {
      return Fail("write", s);
    }
    return kExitOk;
  }
  // Read-modify-write of the partial blocks at either end.
  std::vector<uint8_t> buf;
  uint64_t start = 0;
  int r = ReadCovering(e, offset, input.size(), buf, &start);
  if (r == 0) {
    std::memcpy(buf.data() + (offset - start), input.data(), input.size());
    for (uint64_t off = 0; off < buf.size() && r == 0; off += kChunk) {
      const uint64_t len = std::min<uint64_t>(kChunk, buf.size() - off);
      r = e.Io(io::IoOp::kWrite, start + off, {buf.data() + off, len});
    }
  }
  if (r == 0) r = e.Io(io::IoOp::kFlush, 0, {});
  if (r != 0) {
    return Fail("write", absl::DataLossError(absl::StrCat(
                             image, ": write at ", offset, ": ",
                             std::strerror(-r))));
  }
  if (absl::Status s = CloseAndCommit("write", *v); !s.ok()) {
    return Fail("write", s);
  }
  return kExitOk;
}

// Who accepts a restore, for the registry record and the audit log:
// --by, else the invoking user at this host.
std::string Operator(const std::string& by) {
  if (!by.empty()) return by;
  const char* user = std::getenv("SUDO_USER");
  if (user == nullptr || *user == '\0') user = std::getenv("USER");
  return absl::StrCat(user != nullptr && *user != '\0' ? user : "unknown", "@",
                      HostName());
}

// Accepts a rolled-back image on purpose (docs/operations.md, "Restoring an
// older image"). With IMAGE: marks the record, opens the image as found,
// commits its state (consuming the mark) and closes it, committing again.
// With --volume only (the image lives on a node): marks the record; the
// next NodePublish opens the image unchecked and commits it, and the broker
// audits rollback_accepted.
int RunRestore(const std::string& image, const std::string& volume,
               bool accept_rollback, const std::string& by,
               const KmsFlags& keys) {
  if (!accept_rollback) {
    std::fprintf(stderr,
                 "sealvol restore: --accept-rollback is required: it accepts "
                 "the image as it is now, older than the registry's state\n");
    return kExitUsage;
  }
  if (image.empty() == volume.empty()) {
    std::fprintf(stderr,
                 "sealvol restore: give either IMAGE (re-commit a local image "
                 "now) or --volume ID (accept at the next open on its node)\n");
    return kExitUsage;
  }
  std::string volume_id = volume;
  if (!image.empty()) {
    auto info = io::ReadHeader(image);
    if (!info.ok()) return Fail("restore", info.status());
    volume_id = io::VolumeIdString(info->volume_id);
  }
  const std::string who = Operator(by);
  {
    auto provider = keys.OpenProvider();
    if (!provider.ok()) return Fail("restore", provider.status());
    auto marked =
        (*provider)->AcceptRollback(volume_id, who, std::time(nullptr));
    if (!marked.ok()) return Fail("restore", marked.status());
  }
  nlohmann::json out = {{"volume_id", volume_id}, {"accepted_by", who}};
  if (image.empty()) {
    out["pending"] = true;
    std::cout << out.dump() << "\n";
    return kExitOk;
  }
  auto v = OpenImage(image, keys, /*read_only=*/false);
  if (!v.ok()) return Fail("restore", v.status());
  if (absl::Status s = CloseAndCommit("restore", *v); !s.ok()) {
    return Fail("restore", s);
  }
  const io::VolumeState state = v->volume->state();
  out["image"] = image;
  out["state_epoch"] = state.epoch;
  out["state_root"] = io::StateRootString(state.root);
  std::cout << out.dump() << "\n";
  return kExitOk;
}

}  // namespace

void RegisterVolumeCommands(CLI::App& app, int& exit_code) {
  struct Args {
    std::string image, size, tenant = "default", name, volume, by;
    bool accept_rollback = false;
    uint64_t offset = 0, length = 0;
    KmsFlags keys;
  };
  auto args = std::make_shared<Args>();

  CLI::App* format = app.add_subcommand(
      "format", "Create a sealed volume image (sparse) and its wrapped key");
  format->add_option("IMAGE", args->image, "Image file or block device")->required();
  format->add_option("--size", args->size, "Usable size, e.g. 10G (multiple of 4 KiB)")
      ->required();
  format->add_option("--tenant", args->tenant, "Owning namespace")->capture_default_str();
  format->add_option("--name", args->name, "Volume name recorded with the key");
  args->keys.AddTo(format);
  format->callback([args, &exit_code] {
    exit_code = RunFormat(args->image, args->size, args->keys, args->tenant, args->name);
  });

  CLI::App* dump = app.add_subcommand("dump", "Print the image header as JSON (no key needed)");
  dump->add_option("IMAGE", args->image)->required();
  dump->callback([args, &exit_code] { exit_code = RunDump(args->image); });

  CLI::App* check = app.add_subcommand(
      "check", "Authenticate every written block; list those that fail");
  check->add_option("IMAGE", args->image)->required();
  args->keys.AddTo(check);
  check->callback([args, &exit_code] { exit_code = RunCheck(args->image, args->keys); });

  CLI::App* upgrade = app.add_subcommand(
      "upgrade", "Convert a format-1 image to the current format (same key)");
  upgrade->add_option("IMAGE", args->image)->required();
  args->keys.AddTo(upgrade);
  upgrade->callback([args, &exit_code] { exit_code = RunUpgrade(args->image, args->keys); });

  CLI::App* read = app.add_subcommand("read", "Read decrypted bytes to stdout");
  read->add_option("IMAGE", args->image)->required();
  read->add_option("--offset", args->offset, "Byte offset")->required();
  read->add_option("--length", args->length, "Bytes to read")->required();
  args->keys.AddTo(read);
  read->callback([args, &exit_code] {
    exit_code = RunRead(args->image, args->offset, args->length, args->keys);
  });

  CLI::App* restore = app.add_subcommand(
      "restore", "Accept an image older than the registry's state (audited)");
  restore->add_option("IMAGE", args->image,
                      "Local image: its state is re-committed now");
  restore->add_option("--volume", args->volume,
                      "Volume id whose image is on a node: accepted at its "
                      "next open");
  restore->add_flag("--accept-rollback", args->accept_rollback,
                    "Required: accept the image as it is");
  restore->add_option("--by", args->by,
                      "Who accepts (default: $SUDO_USER or $USER @ host)");
  args->keys.AddTo(restore);
  restore->callback([args, &exit_code] {
    exit_code = RunRestore(args->image, args->volume, args->accept_rollback,
                           args->by, args->keys);
  });

  CLI::App* write = app.add_subcommand("write", "Write stdin at an offset, then flush");
  write->add_option("IMAGE", args->image)->required();
  write->add_option("--offset", args->offset, "Byte offset")->required();
  args->keys.AddTo(write);
  write->callback([args, &exit_code] {
    exit_code = RunWrite(args->image, args->offset, args->keys);
  });
}

}  // namespace sealvol::cmd
