#include "io/slot_codec.h"

#include <cstring>
#include <utility>

#include "base/status_macros.h"

namespace sealvol::io {
namespace {

// Sessions whose keys a reader keeps (32 bytes each, locked). Blocks are
// mostly read in runs written by one session, so misses are rare; a miss
// costs one HKDF.
constexpr size_t kCachedSessions = 64;

}  // namespace

absl::StatusOr<std::unique_ptr<SlotCodec>> SlotCodec::Create(
    const crypto::SecretBytes& session_root, const VolumeId& volume_id,
    SealObserver observer, uint64_t session_counters) {
  if (session_counters == 0 || session_counters > crypto::kMaxSessionCounter) {
    return absl::InvalidArgumentError("session counters out of range");
  }
  ASSIGN_OR_RETURN(auto keys,
                   crypto::SessionKeyCache::Create(session_root, kCachedSessions));
  // The codec starts with a throw-away key; StartSession sets the real one.
  ASSIGN_OR_RETURN(auto initial, crypto::SecretBytes::Random(32));
  ASSIGN_OR_RETURN(auto codec, crypto::SectorCodec::Create(initial));
  auto slot_codec = std::unique_ptr<SlotCodec>(new SlotCodec(
      std::move(codec), std::move(keys), volume_id, std::move(observer),
      session_counters));
  RETURN_IF_ERROR(slot_codec->StartSession());
  return slot_codec;
}

absl::Status SlotCodec::StartSession() {
  ASSIGN_OR_RETURN(crypto::SessionId id, crypto::NewSessionId());
  ASSIGN_OR_RETURN(std::span<const uint8_t> key, keys_.Key(id));
  RETURN_IF_ERROR(codec_->SetSealKey(key));
  session_ = id;
  next_counter_ = 1;  // Counter 0 is never used.
  reserved_end_ = 1;
  ++sessions_started_;
  return absl::OkStatus();
}

absl::Status SlotCodec::Reserve(uint64_t count) {
  if (count > max_counter_) {
    return absl::InvalidArgumentError("more blocks than a nonce session holds");
  }
  if (next_counter_ + count - 1 > max_counter_) {
    RETURN_IF_ERROR(StartSession());
  }
  reserved_end_ = next_counter_ + count;
  return absl::OkStatus();
}

bool SlotCodec::Seal(uint64_t block, uint8_t seq, const uint8_t* in,
                     uint8_t* out, TagSlot& slot) {
  if (next_counter_ >= reserved_end_) return false;
  slot.session = session_;
  slot.counter = next_counter_++;
  slot.seq = seq;
  uint8_t aad[kAadSize];
  BuildAad(volume_id_.data(), block, slot, aad);
  if (!codec_
           ->Seal(crypto::CounterNonce(0, slot.counter), aad, {in, 4096},
                  {out, 4096}, slot.tag)
           .ok()) {
    return false;
  }
  if (observer_) observer_(block, slot);
  return true;
}

bool SlotCodec::Open(uint64_t block, const TagSlot& slot, const uint8_t* in,
                     uint8_t* out) {
  if (!open_key_set_ || slot.session != open_key_) {
    auto key = keys_.Key(slot.session);
    if (!key.ok() || !codec_->SetOpenKey(*key).ok()) {
      open_key_set_ = false;
      std::memset(out, 0, 4096);
      return false;
    }
    open_key_ = slot.session;
    open_key_set_ = true;
  }
  uint8_t aad[kAadSize];
  BuildAad(volume_id_.data(), block, slot, aad);
  return codec_
      ->Open(crypto::CounterNonce(0, slot.counter), aad, {in, 4096}, slot.tag,
             {out, 4096})
      .ok();
}

}  // namespace sealvol::io
