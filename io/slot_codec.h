// SlotCodec seals data blocks into tag slots and opens them again: one
// AES-256-GCM codec whose sealing side holds the key of this codec's own
// nonce session, and whose opening side switches to the key of whatever
// session wrote the slot being read (keys from a SessionKeyCache). Owns the
// session's counter: every block it seals gets the next counter, and a
// session whose counters run out is replaced by a fresh one. Nothing about
// a session is persisted: a new SlotCodec (every open) is a new session, so
// an image that was copied or rolled back never sees a (key, nonce) again.
// Thread-compatible: one per worker (or per recovery pass).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "crypto/sector_codec.h"
#include "crypto/session_keys.h"
#include "io/tag_table.h"
#include "io/volume_header.h"

namespace sealvol::io {

class SlotCodec {
 public:
  // Test hook, called for every block sealed.
  using SealObserver = std::function<void(uint64_t block, const TagSlot& slot)>;

  // `session_root` (VolumeKeys::session_root) must outlive the codec.
  // `session_counters` bounds the blocks one session seals (at most, and by
  // default, crypto::kMaxSessionCounter).
  static absl::StatusOr<std::unique_ptr<SlotCodec>> Create(
      const crypto::SecretBytes& session_root, const VolumeId& volume_id,
      SealObserver observer = nullptr,
      uint64_t session_counters = crypto::kMaxSessionCounter);

  // Reserves `count` consecutive counters of one session for the blocks
  // about to be sealed (starting a new session first when this one cannot
  // hold them). Fails only if the CSPRNG or the key derivation fails.
  absl::Status Reserve(uint64_t count);

  // Seals one block for `block` into `out` with the next reserved counter
  // and returns its slot, with `seq`. Returns false on an OpenSSL failure or
  // when no counter is reserved.
  bool Seal(uint64_t block, uint8_t seq, const uint8_t* in, uint8_t* out,
            TagSlot& slot);

  // Opens `in` as `block` described by `slot` into `out` (zeroed on
  // failure). False when it does not verify.
  bool Open(uint64_t block, const TagSlot& slot, const uint8_t* in,
            uint8_t* out);

  const crypto::SessionId& session() const { return session_; }
  uint64_t sessions_started() const { return sessions_started_.load(); }

 private:
  SlotCodec(std::unique_ptr<crypto::SectorCodec> codec,
            crypto::SessionKeyCache keys, const VolumeId& volume_id,
            SealObserver observer, uint64_t session_counters)
      : codec_(std::move(codec)), keys_(std::move(keys)),
        volume_id_(volume_id), observer_(std::move(observer)),
        max_counter_(session_counters) {}
  absl::Status StartSession();

  std::unique_ptr<crypto::SectorCodec> codec_;
  crypto::SessionKeyCache keys_;
  VolumeId volume_id_;
  SealObserver observer_;
  const uint64_t max_counter_;
  crypto::SessionId session_{};
  uint64_t next_counter_ = 0;  // In session_; 0 = no session yet.
  uint64_t reserved_end_ = 0;  // Counters below it may be sealed.
  std::atomic<uint64_t> sessions_started_{0};
  crypto::SessionId open_key_{};  // Session whose key the open side holds.
  bool open_key_set_ = false;
};

}  // namespace sealvol::io
