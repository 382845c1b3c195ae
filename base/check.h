// CHECK macros for broken invariants (not for environment failures, which are
// Statuses). A failed CHECK prints the condition and location, then aborts.
// Debian's abseil (20220623) predates absl/log, hence this small header.
#pragma once

#include <cstdio>
#include <cstdlib>

namespace sealvol::internal {
[[noreturn]] inline void CheckFailed(const char* cond, const char* file,
                                     int line) {
  std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", file, line, cond);
  std::abort();
}
}  // namespace sealvol::internal

#ifndef CHECK
#define CHECK(cond)                                                  \
  do {                                                               \
    if (!(cond)) ::sealvol::internal::CheckFailed(#cond, __FILE__, __LINE__); \
  } while (0)
#endif
#define CHECK_EQ(a, b) CHECK((a) == (b))
#define CHECK_NE(a, b) CHECK((a) != (b))
#define CHECK_LT(a, b) CHECK((a) < (b))
#define CHECK_LE(a, b) CHECK((a) <= (b))
#define CHECK_GT(a, b) CHECK((a) > (b))
#define CHECK_GE(a, b) CHECK((a) >= (b))
