// The libFuzzer entry points of sealvol, one per parsing surface. Each feeds
// its input through the project's real parsing code and CHECKs only what the
// code promises (no crash, no sanitizer report, documented error codes).
// The same functions run under libFuzzer (fuzz_main.cc, clang) and in the
// normal build's regression test (regression_test.cc), which replays every
// seed and every saved crasher. Not thread-safe: one input at a time.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sealvol::fuzz {

// Superblock copies and the on-disk metadata of a formatted image (bitmap,
// tag slots) opened with the right key: io/superblock.h, ReadHeader and
// SealedVolume::OpenOn's recovery.
int FuzzSuperblock(const uint8_t* data, size_t size);
// One request on a FUSE connection served by the real FuseServer over the
// real engine (in-memory backing store).
int FuzzFuseRequest(const uint8_t* data, size_t size);
// TokenVerifier::Verify on a raw token, or on a token signed over fuzzed
// header and claims JSON (so claim parsing is reached past the signature).
int FuzzJwt(const uint8_t* data, size_t size);
// KeySet::Parse and PublicKeyFromJwk on a JWKS / JWK document.
int FuzzJwks(const uint8_t* data, size_t size);
// VaultKeyProvider calls answered by a local HTTP server with fuzzed bodies.
int FuzzVaultResponse(const uint8_t* data, size_t size);
// CSI controller requests (protobuf bytes) through the ControllerService
// over the embedded key provider, and node-side pod attestation parsing.
int FuzzCsiRequest(const uint8_t* data, size_t size);

struct FuzzTarget {
  const char* name;  // Also the corpus directory name.
  int (*run)(const uint8_t* data, size_t size);
};

inline constexpr FuzzTarget kFuzzTargets[] = {
    {"superblock", FuzzSuperblock}, {"fuse_request", FuzzFuseRequest},
    {"jwt", FuzzJwt},               {"jwks", FuzzJwks},
    {"vault_response", FuzzVaultResponse}, {"csi_request", FuzzCsiRequest},
};

}  // namespace sealvol::fuzz
