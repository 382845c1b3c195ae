// Per-session data keys (property P3). Every engine session (each worker of
// each open, and again whenever a session's counter space runs out) draws a
// fresh 80-bit session id from the CSPRNG; the blocks it seals are keyed by
//   K_s = HKDF-SHA256(ikm = session root, salt = "", info = "sealvol/v2/data" || s)
// and nonced by an in-session counter (1 .. kMaxSessionCounter). Uniqueness of
// (key, nonce) therefore rests on fresh randomness at every open, never on
// anything stored in the image, which can be copied or rolled back. The bound
// is in docs/security.md. SessionKeyCache is thread-compatible: one per
// worker; NewSessionId is thread-safe.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"

namespace sealvol::crypto {

inline constexpr size_t kSessionIdSize = 10;  // 80 bits.
using SessionId = std::array<uint8_t, kSessionIdSize>;

// Counters are 40 bits: a session seals at most 2^40 - 1 blocks (4 PiB),
// which also keeps each session key's GCM data volume inside its bounds.
inline constexpr uint64_t kMaxSessionCounter = (uint64_t{1} << 40) - 1;

// A fresh random session id; never all zero (an all-zero tag slot means
// "empty"). Internal error only if the CSPRNG fails.
absl::StatusOr<SessionId> NewSessionId();

// The 32-byte data key of session `session` under `session_root`.
absl::StatusOr<SecretBytes> DeriveSessionKey(const SecretBytes& session_root,
                                             const SessionId& session);

// Remembers the keys of the sessions seen most recently, in locked memory,
// so reading blocks of a few sessions derives each key once. A miss costs
// one HKDF (about 2 us); eviction is least recently used.
class SessionKeyCache {
 public:
  // `session_root` must outlive the cache. `entries` > 0.
  static absl::StatusOr<SessionKeyCache> Create(const SecretBytes& session_root,
                                                size_t entries);

  // The key of `session` (32 bytes; valid until the next call).
  absl::StatusOr<std::span<const uint8_t>> Key(const SessionId& session);

  uint64_t derivations() const { return derivations_; }

 private:
  SessionKeyCache(const SecretBytes* root, SecretBytes keys, size_t entries);

  const SecretBytes* root_;
  SecretBytes keys_;  // entries * 32 bytes.
  std::vector<SessionId> ids_;
  std::vector<uint64_t> last_use_;  // 0 = unused slot.
  uint64_t tick_ = 0;
  uint64_t derivations_ = 0;
};

}  // namespace sealvol::crypto
