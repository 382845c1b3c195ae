#include "cmd/image_session.h"

#include <unistd.h>

#include <cstdio>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "base/error_kind.h"
#include "base/status_macros.h"
#include "csi/committed_state.h"

namespace sealvol::cmd {

absl::StatusOr<uint64_t> ParseSize(const std::string& text) {
  size_t pos = 0;
  uint64_t n = 0;
  while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
    const uint64_t d = static_cast<uint64_t>(text[pos] - '0');
    if (n > (UINT64_MAX - d) / 10) {
      return absl::InvalidArgumentError(absl::StrCat("size \"", text, "\" is too large"));
    }
    n = n * 10 + d;
    ++pos;
  }
  std::string unit = text.substr(pos);
  uint64_t mult = 1;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "K" || unit == "KiB") mult = uint64_t{1} << 10;
  else if (unit == "M" || unit == "MiB") mult = uint64_t{1} << 20;
  else if (unit == "G" || unit == "GiB") mult = uint64_t{1} << 30;
  else if (unit == "T" || unit == "TiB") mult = uint64_t{1} << 40;
  else pos = 0;
  if (pos == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "size \"", text, "\" is not a number with an optional K/M/G/T suffix"));
  }
  if (n > UINT64_MAX / mult) {
    return absl::InvalidArgumentError(absl::StrCat("size \"", text, "\" is too large"));
  }
  return n * mult;
}

// This machine's name, recorded as the node of a format claim.
std::string HostName() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') {
    return "sealvol-cli";
  }
  return name;
}

absl::StatusOr<OpenedImage> OpenImage(const std::string& image,
                                      const KmsFlags& keys, bool read_only) {
  ASSIGN_OR_RETURN(io::VolumeHeaderInfo info, io::ReadHeader(image));
  OpenedImage opened;
  opened.volume_id = io::VolumeIdString(info.volume_id);
  opened.read_only = read_only;
  const std::string& volume_id = opened.volume_id;
  ASSIGN_OR_RETURN(opened.provider, keys.OpenProvider());
  kms::KeyProvider& provider = *opened.provider;
  auto dek = provider.UnwrapVolumeKey(volume_id);
  if (absl::IsNotFound(dek.status())) {
    return SetErrorKind(
        absl::NotFoundError(absl::StrCat("key for volume ", volume_id,
                                         " has been destroyed (crypto-shredded)")),
        ErrorKind::kKeyDestroyed);
  }
  if (!dek.ok()) return dek.status();
  ASSIGN_OR_RETURN(kms::VolumeRecord record, provider.GetVolume(volume_id));
  if (!read_only) {
    const std::string found = io::FormatIdString(info.format_id);
    ASSIGN_OR_RETURN(record, provider.ClaimFormat(
                                 volume_id, {.format_id = found,
                                             .node = HostName(),
                                             .unix_time = std::time(nullptr)}));
    if (record.format_id != found) {
      return absl::FailedPreconditionError(absl::StrCat(
          "volume ", volume_id, ": ", image, " holds format id ", found,
          ", but the registry recorded format id ", record.format_id,
          " (formatted by ", record.formatted_node,
          "): this is not the volume's image and is not written under its "
          "key; restore the image from a backup or delete the volume; see "
          "docs/operations.md"));
    }
  }
  io::OpenOptions o;
  o.path = image;
  o.read_only = read_only;
  o.worker_threads = 1;
  ASSIGN_OR_RETURN(o.expected_state, csi::ExpectedState(record));
  if (record.state.has_value()) o.min_epoch = record.state->epoch;
  if (!read_only) {
    const bool accept = record.rollback_pending;
    o.commit_open = [&provider, volume_id, accept](const io::VolumeState& state) {
      return provider
          .CommitState(volume_id, {.state = csi::ToCommittedState(state),
                                   .node = HostName(),
                                   .unix_time = std::time(nullptr),
                                   .accept_rollback = accept})
          .status();
    };
  }
  ASSIGN_OR_RETURN(opened.volume, io::SealedVolume::Open(o, *dek));
  return opened;
}

absl::Status CloseAndCommit(const char* command, OpenedImage& opened) {
  RETURN_IF_ERROR(opened.volume->Close());
  if (opened.read_only) return absl::OkStatus();
  const io::VolumeState state = opened.volume->state();
  auto committed = opened.provider->CommitState(
      opened.volume_id, {.state = csi::ToCommittedState(state),
                         .node = HostName(),
                         .unix_time = std::time(nullptr)});
  if (!committed.ok()) {
    std::fprintf(stderr,
                 "sealvol %s: warning: closed, but the state (epoch %llu) was "
                 "not committed to the registry: %s\n",
                 command, static_cast<unsigned long long>(state.epoch),
                 std::string(committed.status().message()).c_str());
  }
  return absl::OkStatus();
}

absl::StatusOr<NewImage> FormatNewImage(const std::string& image,
                                        uint64_t size_bytes,
                                        const KmsFlags& keys,
                                        const std::string& tenant,
                                        const std::string& name,
                                        std::string volume_id) {
  if (volume_id.empty()) {
    volume_id = NewVolumeId();
  }
  io::FormatOptions f;
  f.path = image;
  f.size_bytes = size_bytes;
  ASSIGN_OR_RETURN(f.volume_id, io::ParseVolumeId(volume_id));
  ASSIGN_OR_RETURN(std::unique_ptr<kms::KeyProvider> provider,
                   keys.OpenProvider());
  kms::CreateVolumeKeyRequest req;
  req.volume_id = volume_id;
  req.name = name;
  req.tenant = tenant;
  req.capacity_bytes = size_bytes;
  ASSIGN_OR_RETURN(kms::VolumeRecord record, provider->CreateVolumeKey(req));
  NewImage made;
  made.volume_id = volume_id;
  made.key_name = record.key_name;
  made.kms = provider->Describe();
  auto formatted = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(crypto::SecretBytes dek,
                     provider->UnwrapVolumeKey(volume_id));
    ASSIGN_OR_RETURN(std::unique_ptr<io::SealedVolume> v,
                     io::SealedVolume::Format(f, dek));
    made.format_id = io::FormatIdString(v->format_id());
    RETURN_IF_ERROR(v->Close());
    made.first_state = v->state();
    // The registry records the format and the new image's first state, as
    // a node's first format does.
    ASSIGN_OR_RETURN(
        kms::VolumeRecord claimed,
        provider->ClaimFormat(volume_id,
                              {.format_id = made.format_id,
                               .node = HostName(),
                               .unix_time = std::time(nullptr),
                               .state = csi::ToCommittedState(made.first_state)}));
    if (claimed.format_id != made.format_id) {
      return absl::FailedPreconditionError(
          absl::StrCat("volume ", volume_id, " was formatted already (format id ",
                       claimed.format_id, ")"));
    }
    return absl::OkStatus();
  }();
  if (!formatted.ok()) {
    // The volume never came to be: its key must not outlive it.
    (void)provider->DestroyVolumeKey(volume_id);
    return formatted;
  }
  return made;
}

}  // namespace sealvol::cmd
