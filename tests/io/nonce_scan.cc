// nonce_scan: test tool for nonce-reuse attacks (issue 12). Reads cleanly
// closed sealvol images (format version 2; no key needed, as an attacker
// holding copies of the disk), takes each block's newer tag slot (the one
// that describes the data stored there), and its (session id, counter) —
// the pair that names a (key, nonce) — and reports pairs stored for two
// different blocks, or for one block with two different ciphertexts: each
// such pair would give the XOR of two plaintexts.
//
//   nonce_scan IMAGE...
// prints
//   slots: N
//   shared nonces: N          (pairs stored in more than one place)
//   reused nonces: N          (stored with different block or ciphertext)
// Exit 0 when every image parsed, 2 otherwise.
#include <fcntl.h>
#include <openssl/sha.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "io/layout.h"
#include "io/superblock.h"
#include "io/tag_table.h"

namespace sealvol::io {
namespace {

struct Place {
  size_t image;
  uint64_t block;
  std::array<uint8_t, 32> cipher_digest;
};

bool ReadBlock(int fd, uint64_t block, uint8_t* out) {
  const ssize_t n = pread(fd, out, 4096, static_cast<off_t>(block * 4096));
  if (n < 0) return false;
  if (n < 4096) std::fill(out + n, out + 4096, 0);
  return true;
}

int Main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: nonce_scan IMAGE...\n");
    return 2;
  }
  std::map<std::pair<crypto::SessionId, uint64_t>, std::vector<Place>> seen;
  uint64_t slots = 0;
  std::vector<uint8_t> tag_block(4096), data(4096), sb_bytes(8192);
  for (int i = 1; i < argc; ++i) {
    const int fd = open(argv[i], O_RDONLY | O_CLOEXEC);
    if (fd < 0 || pread(fd, sb_bytes.data(), 8192, 0) != 8192) {
      std::fprintf(stderr, "nonce_scan: cannot read %s\n", argv[i]);
      return 2;
    }
    auto sb = NewestSuperblock(DecodeSuperblock({sb_bytes.data(), 4096}),
                               DecodeSuperblock({sb_bytes.data() + 4096, 4096}));
    if (!sb.ok()) {
      std::fprintf(stderr, "nonce_scan: %s: %s\n", argv[i],
                   std::string(sb.status().message()).c_str());
      close(fd);
      return 2;
    }
    const Layout& l = sb->layout;
    const uint64_t blocks = sb->size_bytes / 4096;
    for (uint64_t b = 0; b < blocks; ++b) {
      const uint32_t idx = b % l.data_blocks_per_group;
      if (idx % kBlocksPerTagBlock == 0 &&
          !ReadBlock(fd, l.tag_start(l.group_of(b)) + GroupTags::tag_block_of(idx),
                     tag_block.data())) {
        std::fprintf(stderr, "nonce_scan: read error in %s\n", argv[i]);
        close(fd);
        return 2;
      }
      GroupTags tags(tag_block.data());
      const uint32_t in_block = idx % kBlocksPerTagBlock;
      const int s = tags.newer_slot(in_block);
      if (s >= 0) {
        if (!ReadBlock(fd, l.data_position(b), data.data())) return 2;
        const TagSlot slot = tags.slot(in_block, s);
        Place p{static_cast<size_t>(i - 1), b, {}};
        SHA256(data.data(), data.size(), p.cipher_digest.data());
        seen[{slot.session, slot.counter}].push_back(p);
        ++slots;
      }
    }
    close(fd);
  }
  uint64_t shared = 0, reused = 0;
  for (const auto& [nonce, places] : seen) {
    if (places.size() > 1) ++shared;
    bool reuse = false;
    for (size_t a = 0; a < places.size() && !reuse; ++a) {
      for (size_t c = a + 1; c < places.size(); ++c) {
        if (places[a].block != places[c].block ||
            places[a].cipher_digest != places[c].cipher_digest) {
          reuse = true;
          break;
        }
      }
    }
    if (reuse) ++reused;
  }
  std::printf("slots: %llu\nshared nonces: %llu\nreused nonces: %llu\n",
              static_cast<unsigned long long>(slots),
              static_cast<unsigned long long>(shared),
              static_cast<unsigned long long>(reused));
  return 0;
}

}  // namespace
}  // namespace sealvol::io

int main(int argc, char** argv) { return sealvol::io::Main(argc, argv); }
