// DataPath brings a sealed volume to the kernel as a block device and takes
// it away again: engine, FUSE export and loop device. The node service and
// `sealvol open` own the file system and the mounts above the device
// (csi/filesystem.h); the data path owns everything below. It is a seam
// between the CSI logic and the OS: FuseDataPath is the real one, tests of
// the node logic may run tests/fakes/fake_data_path.h. Implementations are
// thread-safe; calls for one volume are serialized by the caller.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"
#include "io/frontend/fuse_server.h"
#include "io/volume_state.h"

namespace sealvol::csi {

struct AttachOptions {
  std::string volume_id;   // "sv-..."; the engine's volume id.
  std::string image_path;  // Backing file; formatted when absent and never
                           // formatted before (registry_format_id empty).
  std::string work_dir;    // Private directory for the FUSE mount.
  uint64_t size_bytes = 0;  // Size for a new image, or to grow an old one to.
  bool read_only = false;
  // kAuto: FUSE over io_uring when the kernel offers it, else /dev/fuse.
  io::FuseTransport transport = io::FuseTransport::kAuto;
  // The format id the registry holds for the volume's image (32 lowercase
  // hex digits), "" when it was never formatted.
  std::string registry_format_id;
  // Records a format id with the registry (KeyBroker.ClaimFormat): OK when
  // the registry now holds it, FailedPrecondition "already_formatted: ..."
  // when it holds another. Called with a new image's id after it is
  // formatted and before it is put in place; with an old image's id to adopt
  // it; and, before a refusal, with the id found (or a fresh one for a
  // missing image) so that the broker audits the refused attempt.
  // A new image's first state is recorded with its claim (`first_state`);
  // unset when adopting or refusing an image.
  std::function<absl::Status(const std::string& format_id,
                             const std::optional<io::VolumeState>& first_state)>
      claim_format;
  // From the key release: the state the registry commits the image to
  // (unset: not checked — none committed yet, or `rollback_accepted`).
  std::optional<io::VolumeState> expected_state;
  // An operator accepted a rolled-back image: the image is opened as found,
  // and its first commit consumes the acceptance.
  bool rollback_accepted = false;
  // The registry's epoch: the session's new epoch is past it, so a restored
  // image (whose own epoch is older) moves the registry forward and every
  // older copy stays refused.
  uint64_t min_epoch = 0;
  // Commits a state with the registry (KeyBroker.CommitState): a writable
  // session's start (open = true) before the engine accepts a write, and
  // the close at Detach. `accept_rollback` only on the first commit of an
  // accepted restore. Its failure at the start fails the Attach.
  std::function<absl::Status(const io::VolumeState& state,
                             bool accept_rollback)>
      commit_state;
  // Tells the broker that the image was refused as rolled back (audited);
  // `detail` is the engine's refusal. Best effort.
  std::function<absl::Status(const std::string& detail)> report_rollback;
};

// Suffix of the temporary file a first format writes next to the image.
inline constexpr char kFormattingSuffix[] = ".formatting";

// The held writes of one attached volume (DataPath::HoldWrites): new writes
// wait until this is destroyed; reads go on.
class WriteHold {
 public:
  virtual ~WriteHold() = default;
};

class DataPath {
 public:
  virtual ~DataPath() = default;

  // Opens (or formats, when the image does not exist and the registry has
  // no format id) the volume with `dek` and returns the block device
  // ("/dev/loopN") serving it. The key is copied into the engine's locked
  // memory; the caller wipes its own. A first format is crash-safe: the
  // image is formatted into IMAGE.formatting, claimed, then renamed into
  // place; a retry completes or redoes an interrupted one.
  // FailedPrecondition naming the volume and the image (and nothing
  // attached or left behind) when the registry says the volume was
  // formatted but the image is missing, empty, not a sealvol image or holds
  // another format id. PermissionDenied when the key does not open the
  // image. FailedPrecondition with error kind kRolledBack (naming the
  // volume, the image and both states; reported with report_rollback, and
  // nothing attached) when the image is not at the state the registry
  // expects.
  virtual absl::StatusOr<std::string> Attach(const AttachOptions& options,
                                             const crypto::SecretBytes& dek) = 0;

  // Waits until every write in flight on the attached volume is done and
  // durable in its image, and holds new writes (reads go on) until the
  // returned hold is destroyed: meanwhile the image file is a stable,
  // crash-consistent image of the volume (a snapshot's cut). The caller
  // holds the volume's lock (no Detach meanwhile); a read-only volume's
  // hold holds nothing. NotFound when not attached; DeadlineExceeded
  // when the writes in flight do not end in time.
  virtual absl::StatusOr<std::unique_ptr<WriteHold>> HoldWrites(
      const std::string& volume_id) = 0;

  // The device of an attached volume; NotFound when it is not attached.
  virtual absl::StatusOr<std::string> Device(const std::string& volume_id) = 0;

  // Grows the engine, the exported file and the loop device's capacity.
  virtual absl::Status Grow(const std::string& volume_id,
                            uint64_t new_size_bytes) = 0;

  // OK while the data path serves; the failure otherwise (backing store
  // failed, FUSE connection gone). NotFound when not attached.
  virtual absl::Status Health(const std::string& volume_id) = 0;

  // Ends the FUSE export, detaches the loop device and closes the engine
  // (zeroizing its keys), then commits the closed state (commit_state). A
  // failed commit is logged and does not fail the Detach: the registry
  // keeps the session open, which the next open accepts (docs/csi.md). The
  // device must no longer be mounted. OK when not attached.
  virtual absl::Status Detach(const std::string& volume_id) = 0;

  // What a data path that died with an earlier process (kill -9 of the
  // node) may have left in its work directory: the FUSE mount, and loop
  // devices serving the file in it. True when its FUSE mount is still there.
  virtual absl::StatusOr<bool> StaleAt(const std::string& work_dir) = 0;

  // Aborts such a data path's FUSE connection, so that nothing waits on the
  // dead server; done first, before the mounts above its device go. OK when
  // nothing is mounted at `work_dir`.
  virtual absl::Status AbortStale(const std::string& work_dir) = 0;

  // Then, once the mounts above the device are gone: detaches its loop
  // devices, unmounts the FUSE mount and removes `work_dir`. Safe on a
  // partly cleaned state; OK when nothing is left.
  virtual absl::Status ClearStale(const std::string& work_dir) = 0;
};

}  // namespace sealvol::csi
