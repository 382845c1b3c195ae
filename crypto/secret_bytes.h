// SecretBytes holds key material in locked (mlock), non-dumpable memory that
// is zeroized when freed. Thread-compatible: one owner at a time.
//
// The bytes never pass through std::string; copy with Clone(). Allocation
// fails (Status) rather than silently falling back to unlocked memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>

#include "absl/status/statusor.h"

namespace sealvol::crypto {

class SecretBytes {
 public:
  // Allocates `size` zeroed bytes in locked memory.
  static absl::StatusOr<SecretBytes> Allocate(size_t size);
  // Allocates and fills with bytes from the OpenSSL CSPRNG.
  static absl::StatusOr<SecretBytes> Random(size_t size);
  // Copies `bytes` into locked memory. The caller wipes its own copy.
  static absl::StatusOr<SecretBytes> CopyFrom(std::span<const uint8_t> bytes);

  SecretBytes() = default;
  SecretBytes(SecretBytes&& other) noexcept;
  SecretBytes& operator=(SecretBytes&& other) noexcept;
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;
  ~SecretBytes();

  absl::StatusOr<SecretBytes> Clone() const;

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  std::span<uint8_t> span() { return {data_, size_}; }
  std::span<const uint8_t> span() const { return {data_, size_}; }

  // Constant-time comparison.
  bool Equals(const SecretBytes& other) const;

  // Zeroizes and releases now (the destructor does the same).
  void Wipe();

 private:
  SecretBytes(uint8_t* data, size_t size, size_t mapped)
      : data_(data), size_(size), mapped_(mapped) {}

  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t mapped_ = 0;
};

// Test hook: when set, called with the released region just after it was
// zeroized and before it is unmapped, so a test can check every byte is 0.
// Not thread-safe to change while secrets are being freed.
using SecretReleaseObserver = std::function<void(std::span<const uint8_t>)>;
void SetSecretReleaseObserverForTesting(SecretReleaseObserver observer);

// Counts live SecretBytes allocations (for leak and endurance tests).
int64_t LiveSecretAllocations();

// Marks the process non-dumpable (no core files, no ptrace by non-root) and
// disables core dumps. Called once at start-up by every sealvol process.
absl::Status HardenProcess();

}  // namespace sealvol::crypto
