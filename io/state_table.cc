#include "io/state_table.h"

#include <openssl/evp.h>

#include <cstring>

#include "base/check.h"
#include "crypto/ssl_unique_ptr.h"
#include "io/little_endian.h"

namespace sealvol::io {
namespace {

constexpr char kGroupDomain[16] = {'s', 'e', 'a', 'l', 'v', 'o', 'l', '/',
                                   'v', '2', '/', 'g', 'r', 'o', 'u', 'p'};
constexpr char kRootDomain[16] = {'s', 'e', 'a', 'l', 'v', 'o', 'l', '/',
                                  'v', '2', '/', 's', 't', 'a', 't', 'e'};

bool AllZero(std::span<const uint8_t> bytes) {
  // Word at a time: the tag area of a group is 64 KiB.
  size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, bytes.data() + i, 8);
    if (w != 0) return false;
  }
  for (; i < bytes.size(); ++i) {
    if (bytes[i] != 0) return false;
  }
  return true;
}

// SHA-256 over several pieces (EVP: the SHA256_* calls are deprecated).
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) {
    CHECK(ctx_ != nullptr &&
          EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) == 1);
  }
  void Update(const void* p, size_t n) {
    CHECK(EVP_DigestUpdate(ctx_.get(), p, n) == 1);
  }
  void Final(uint8_t out[32]) {
    unsigned int len = 0;
    CHECK(EVP_DigestFinal_ex(ctx_.get(), out, &len) == 1 && len == 32);
  }

 private:
  crypto::SslUniquePtr<EVP_MD_CTX> ctx_;
};

}  // namespace

GroupDigest DigestGroupTags(const VolumeId& volume_id, uint64_t group,
                            std::span<const uint8_t> tags) {
  GroupDigest d{};
  if (AllZero(tags)) return d;
  uint8_t position[8];
  StoreLe64(position, group);
  Sha256 h;
  h.Update(kGroupDomain, sizeof(kGroupDomain));
  h.Update(volume_id.data(), volume_id.size());
  h.Update(position, sizeof(position));
  h.Update(tags.data(), tags.size());
  h.Final(d.data());
  return d;
}

DigestTable::DigestTable(uint64_t max_groups)
    : chunks_((max_groups + kChunk - 1) / kChunk) {}

void DigestTable::Ensure(uint64_t groups) {
  CHECK(groups <= chunks_.size() * kChunk);
  for (uint64_t c = 0; c * kChunk < groups; ++c) {
    if (!chunks_[c]) chunks_[c] = std::make_unique<Chunk>();
  }
  if (groups > groups_) groups_ = groups;
}

void DigestTable::Serialize(uint64_t groups, std::span<uint8_t> out) const {
  CHECK(out.size() >= BlocksFor(groups) * 4096 && groups <= groups_);
  std::memset(out.data(), 0, BlocksFor(groups) * 4096);
  for (uint64_t g = 0; g < groups; ++g) {
    std::memcpy(out.data() + g * kDigestBytes, get(g).data(), kDigestBytes);
  }
}

StateRoot ComputeStateRoot(const VolumeId& volume_id, const FormatId& format_id,
                           uint64_t groups, std::span<const uint8_t> table) {
  CHECK(table.size() >= groups * kDigestBytes);
  uint8_t count[8];
  StoreLe64(count, groups);
  StateRoot root;
  Sha256 h;
  h.Update(kRootDomain, sizeof(kRootDomain));
  h.Update(volume_id.data(), volume_id.size());
  h.Update(format_id.data(), format_id.size());
  h.Update(count, sizeof(count));
  h.Update(table.data(), groups * kDigestBytes);
  h.Final(root.data());
  return root;
}

}  // namespace sealvol::io
