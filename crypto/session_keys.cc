#include "crypto/session_keys.h"

#include <openssl/rand.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "base/status_macros.h"
#include "crypto/key_schedule.h"

namespace sealvol::crypto {

absl::StatusOr<SessionId> NewSessionId() {
  SessionId id{};
  do {
    if (RAND_bytes(id.data(), static_cast<int>(id.size())) != 1) {
      return absl::InternalError("RAND_bytes failed for a nonce session id");
    }
  } while (std::all_of(id.begin(), id.end(), [](uint8_t b) { return b == 0; }));
  return id;
}

absl::StatusOr<SecretBytes> DeriveSessionKey(const SecretBytes& session_root,
                                             const SessionId& session) {
  std::string info = "sealvol/v2/data";
  info.append(reinterpret_cast<const char*>(session.data()), session.size());
  return HkdfSha256(session_root, {}, info, 32);
}

absl::StatusOr<SessionKeyCache> SessionKeyCache::Create(
    const SecretBytes& session_root, size_t entries) {
  if (entries == 0) return absl::InvalidArgumentError("empty session key cache");
  ASSIGN_OR_RETURN(SecretBytes keys, SecretBytes::Allocate(entries * 32));
  return SessionKeyCache(&session_root, std::move(keys), entries);
}

SessionKeyCache::SessionKeyCache(const SecretBytes* root, SecretBytes keys,
                                 size_t entries)
    : root_(root), keys_(std::move(keys)), ids_(entries), last_use_(entries, 0) {}

absl::StatusOr<std::span<const uint8_t>> SessionKeyCache::Key(
    const SessionId& session) {
  size_t victim = 0;
  for (size_t i = 0; i < ids_.size(); ++i) {
    if (last_use_[i] != 0 && ids_[i] == session) {
      last_use_[i] = ++tick_;
      return std::span<const uint8_t>(keys_.data() + i * 32, 32);
    }
    if (last_use_[i] < last_use_[victim]) victim = i;
  }
  ASSIGN_OR_RETURN(SecretBytes key, DeriveSessionKey(*root_, session));
  ++derivations_;
  std::memcpy(keys_.data() + victim * 32, key.data(), 32);
  ids_[victim] = session;
  last_use_[victim] = ++tick_;
  return std::span<const uint8_t>(keys_.data() + victim * 32, 32);
}

}  // namespace sealvol::crypto
