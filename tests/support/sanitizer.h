// kUnderSanitizer: whether this test binary runs under AddressSanitizer or
// ThreadSanitizer (GCC and clang spell it differently). Their run-times
// change what a test can measure: freed memory waits in a quarantine (RSS
// climbs by design), they start threads of their own, and they turn mlock
// into a no-op that succeeds.
#pragma once

namespace sealvol::testing {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kUnderSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kUnderSanitizer = true;
#else
inline constexpr bool kUnderSanitizer = false;
#endif
#else
inline constexpr bool kUnderSanitizer = false;
#endif

}  // namespace sealvol::testing
