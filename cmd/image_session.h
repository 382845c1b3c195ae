// A sealed image opened or created by a command of this process under its
// volume's registry record: the key, the format claim and the state
// commitments the node's data path also keeps (format, write, check, read,
// import). Not thread-safe: one command at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "base/volume_id.h"
#include "cmd/kms_flags.h"
#include "io/sealed_volume.h"
#include "io/volume_state.h"
#include "kms/key_provider.h"

namespace sealvol::cmd {

// Parses a size: bytes, or with a binary suffix K/M/G/T (KiB/MiB/GiB/TiB).
// InvalidArgument naming the text otherwise.
absl::StatusOr<uint64_t> ParseSize(const std::string& text);

// This machine's name, recorded as the node of a format claim.
std::string HostName();

// An image opened under its registry record, with the provider that
// commits its state.
struct OpenedImage {
  std::unique_ptr<kms::KeyProvider> provider;
  std::string volume_id;
  bool read_only = true;
  std::unique_ptr<io::SealedVolume> volume;
};

// Opens the image with the DEK of its volume (NotFound, kind kKeyDestroyed:
// crypto-shredded) against the state its registry record expects
// (FailedPrecondition, kind kRolledBack). A writable open commits the
// session's start before the first write (consuming a pending rollback
// acceptance). For a write, the image must also be the format the registry
// recorded (an image of another format is a lost or replaced one: never
// written under the same key); an image the registry has no format for is
// adopted.
absl::StatusOr<OpenedImage> OpenImage(const std::string& image,
                                      const KmsFlags& keys, bool read_only);

// Closes the volume and, for a writable open, commits the state it closed
// with. A failed commit is reported on stderr as a warning of `command` but
// does not fail: the registry then still says the session is open, which
// the next open accepts (docs/security.md, "Rollback").
absl::Status CloseAndCommit(const char* command, OpenedImage& opened);

// What FormatNewImage made.
struct NewImage {
  std::string volume_id;
  std::string format_id;
  std::string key_name;
  std::string kms;  // The provider's description.
  io::VolumeState first_state;
};

// Creates the volume's DEK (wrapped under the tenant's KEK), formats `image`
// (a new sparse file or a block device) with it and records the format claim
// and first state in the registry. `volume_id` empty: a new random id. On
// failure the new key is destroyed again: a volume that never came to be
// leaves no key behind.
absl::StatusOr<NewImage> FormatNewImage(const std::string& image,
                                        uint64_t size_bytes,
                                        const KmsFlags& keys,
                                        const std::string& tenant,
                                        const std::string& name,
                                        std::string volume_id = "");


}  // namespace sealvol::cmd
