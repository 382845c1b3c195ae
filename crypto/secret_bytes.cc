#include "crypto/secret_bytes.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <utility>

#include "base/mutex.h"
#include "base/status_macros.h"

namespace sealvol::crypto {
namespace {

Mutex observer_mu;
SecretReleaseObserver& Observer() ABSL_EXCLUSIVE_LOCKS_REQUIRED(observer_mu) {
  static auto* fn = new SecretReleaseObserver();  // Never destroyed.
  return *fn;
}
std::atomic<int64_t> live_allocations{0};

size_t PageRound(size_t n) {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  return ((n + page - 1) / page) * page;
}

}  // namespace

absl::StatusOr<SecretBytes> SecretBytes::Allocate(size_t size) {
  if (size == 0) return SecretBytes();
  const size_t mapped = PageRound(size);
  void* p = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return ErrnoStatus(errno, "mmap", "secret memory");
  if (::mlock(p, mapped) != 0) {
    const int err = errno;
    ::munmap(p, mapped);
    return ErrnoStatus(err, "mlock", "secret memory (raise RLIMIT_MEMLOCK)");
  }
  // Keep key pages out of core dumps and out of forked children.
  ::madvise(p, mapped, MADV_DONTDUMP);
  ::madvise(p, mapped, MADV_DONTFORK);
  live_allocations.fetch_add(1, std::memory_order_relaxed);
  return SecretBytes(static_cast<uint8_t*>(p), size, mapped);
}

absl::StatusOr<SecretBytes> SecretBytes::Random(size_t size) {
  ASSIGN_OR_RETURN(SecretBytes s, Allocate(size));
  if (size > 0 && RAND_bytes(s.data(), static_cast<int>(size)) != 1) {
    return absl::InternalError("RAND_bytes failed for secret key material");
  }
  return s;
}

absl::StatusOr<SecretBytes> SecretBytes::CopyFrom(
    std::span<const uint8_t> bytes) {
  ASSIGN_OR_RETURN(SecretBytes s, Allocate(bytes.size()));
  if (!bytes.empty()) std::memcpy(s.data(), bytes.data(), bytes.size());
  return s;
}

SecretBytes::SecretBytes(SecretBytes&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      mapped_(std::exchange(other.mapped_, 0)) {}

SecretBytes& SecretBytes::operator=(SecretBytes&& other) noexcept {
  if (this != &other) {
    Wipe();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    mapped_ = std::exchange(other.mapped_, 0);
  }
  return *this;
}

SecretBytes::~SecretBytes() { Wipe(); }

absl::StatusOr<SecretBytes> SecretBytes::Clone() const {
  return CopyFrom(span());
}

bool SecretBytes::Equals(const SecretBytes& other) const {
  return size_ == other.size_ &&
         (size_ == 0 || CRYPTO_memcmp(data_, other.data_, size_) == 0);
}

void SecretBytes::Wipe() {
  if (data_ == nullptr) return;
  OPENSSL_cleanse(data_, mapped_);
  {
    MutexLock lock(&observer_mu);
    if (Observer()) Observer()({data_, mapped_});
  }
  ::munlock(data_, mapped_);
  ::munmap(data_, mapped_);
  live_allocations.fetch_sub(1, std::memory_order_relaxed);
  data_ = nullptr;
  size_ = 0;
  mapped_ = 0;
}

void SetSecretReleaseObserverForTesting(SecretReleaseObserver obs) {
  MutexLock lock(&observer_mu);
  Observer() = std::move(obs);
}

int64_t LiveSecretAllocations() {
  return live_allocations.load(std::memory_order_relaxed);
}

absl::Status HardenProcess() {
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    return ErrnoStatus(errno, "prctl", "PR_SET_DUMPABLE");
  }
  struct rlimit no_core = {0, 0};
  if (::setrlimit(RLIMIT_CORE, &no_core) != 0) {
    return ErrnoStatus(errno, "setrlimit", "RLIMIT_CORE");
  }
  return absl::OkStatus();
}

}  // namespace sealvol::crypto
