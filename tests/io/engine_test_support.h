// Shared helpers for the engine tests: keys, volumes over FaultStore or a
// temporary file, and block patterns. Test-only.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "crypto/secret_bytes.h"
#include "gtest/gtest.h"
#include "io/sealed_volume.h"
#include "tests/fakes/fault_store.h"
#include "tests/support/temp_dir.h"

namespace sealvol::io::testing {

inline crypto::SecretBytes TestDek(uint8_t seed) {
  auto dek = crypto::SecretBytes::Allocate(32);
  EXPECT_TRUE(dek.ok());
  for (size_t i = 0; i < 32; ++i) dek->data()[i] = static_cast<uint8_t>(seed + i * 7);
  return std::move(dek).value();
}

inline VolumeId TestId(uint8_t seed) {
  VolumeId id{};
  for (size_t i = 0; i < id.size(); ++i) id[i] = static_cast<uint8_t>(seed * 31 + i);
  return id;
}

// A 4 KiB-aligned buffer filled with a pattern derived from `tag`.
inline std::vector<uint8_t> Pattern(uint64_t tag, size_t bytes = 4096) {
  std::vector<uint8_t> v(bytes);
  uint64_t x = tag * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < bytes; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(&v[i], &x, std::min<size_t>(8, bytes - i));
  }
  return v;
}

inline FormatOptions FormatOf(uint64_t size, uint8_t id_seed = 1) {
  FormatOptions f;
  f.size_bytes = size;
  f.volume_id = TestId(id_seed);
  return f;
}

inline EngineOptions Manual(int workers = 1) {
  EngineOptions o;
  o.manual = true;
  o.worker_threads = workers;
  o.keep_store_after_close = true;
  return o;
}

// The one temporary-directory helper (tests/support/temp_dir.h).
using ::sealvol::testing::TempDir;

inline uint64_t AllocatedBytes(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(stat(path.c_str(), &st), 0);
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

}  // namespace sealvol::io::testing
