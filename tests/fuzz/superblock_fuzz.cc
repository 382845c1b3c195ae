// Fuzzes what the engine reads from an image before trusting it: superblock
// copies (DecodeSuperblock, NewestSuperblock, the HMAC check, ReadHeader) and
// the metadata a keyed open walks during recovery (write-intent bitmap, tag
// slots), by patching a real image left dirty by an unclean shutdown.
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "base/check.h"
#include "crypto/secret_bytes.h"
#include "io/sealed_volume.h"
#include "tests/fakes/fault_store.h"
#include "io/superblock.h"
#include "tests/fuzz/fuzz_targets.h"

namespace sealvol::fuzz {
namespace {

using io::FaultStore;

constexpr uint64_t kVolumeBytes = 256 * 1024;  // 64 blocks, one group.

crypto::SecretBytes FixedDek(uint8_t seed) {
  auto dek = crypto::SecretBytes::Allocate(32);
  CHECK(dek.ok());
  for (size_t i = 0; i < 32; ++i) dek->data()[i] = static_cast<uint8_t>(seed + 3 * i);
  return std::move(dek).value();
}

io::EngineOptions ManualEngine() {
  io::EngineOptions o;
  o.manual = true;
  o.worker_threads = 1;
  o.keep_store_after_close = true;
  o.cache_groups = 2;
  o.batch_blocks = 64;
  return o;
}

struct Base {
  crypto::SecretBytes dek = FixedDek(7);
  std::unique_ptr<FaultStore> image;  // Dirty: written, flushed, not closed.
  // The engine that wrote `image`, kept open (never closed, so the image
  // stays dirty) and reachable for the life of the process.
  std::unique_ptr<io::SealedVolume> writer;
  uint64_t image_blocks = 0;
  int memfd = -1;
};

Base& TheBase() {
  static Base* base = [] {
    auto* b = new Base;
    io::FormatOptions format;
    format.size_bytes = kVolumeBytes;
    format.volume_id[0] = 0x5e;
    const io::Layout layout = io::Layout::Default();
    auto engine = io::SealedVolume::FormatOn(
        std::make_unique<FaultStore>(layout.image_bytes(kVolumeBytes / 4096)),
        format, b->dek, ManualEngine());
    CHECK(engine.ok());
    std::vector<uint8_t> block(4096);
    for (uint64_t i = 0; i < 8; ++i) {
      std::memset(block.data(), static_cast<int>(i + 1), block.size());
      CHECK_EQ((*engine)->Io(io::IoOp::kWrite, i * 4096, block), 0);
    }
    CHECK_EQ((*engine)->Io(io::IoOp::kFlush, 0, {}), 0);
    // One more write after the flush: in flight at the "crash".
    CHECK_EQ((*engine)->Io(io::IoOp::kWrite, 9 * 4096, block), 0);
    b->image = static_cast<FaultStore&>((*engine)->store()).Snapshot();
    b->image_blocks = b->image->size_bytes() / 4096;
    b->writer = std::move(*engine);
    b->memfd = ::memfd_create("sealvol-fuzz-header", MFD_CLOEXEC);
    CHECK_GE(b->memfd, 0);
    return b;
  }();
  return *base;
}

// Keyless parsing of one or two copies, and of the same bytes as a file.
void FuzzKeyless(Base& base, const uint8_t* data, size_t size) {
  std::vector<uint8_t> first(4096), second(4096);
  std::memcpy(first.data(), data, std::min<size_t>(size, 4096));
  if (size > 4096) {
    std::memcpy(second.data(), data + 4096, std::min<size_t>(size - 4096, 4096));
  }
  auto a = io::DecodeSuperblock(first);
  auto b = io::DecodeSuperblock(second);
  auto newest = io::NewestSuperblock(a, b);
  if (newest.ok()) CHECK(newest->layout.Valid());
  (void)io::SuperblockMacValid(first, base.dek);
  // The raw input as an image file (possibly truncated).
  CHECK_EQ(::ftruncate(base.memfd, 0), 0);
  if (size > 0) CHECK_EQ(::pwrite(base.memfd, data, size, 0), static_cast<ssize_t>(size));
  auto header = io::ReadHeader("/proc/self/fd/" + std::to_string(base.memfd));
  if (header.ok()) CHECK_EQ(header->block_size, 4096u);
}

// Patches: {u8 block selector, u16 offset, u8 length, bytes...} applied to a
// copy of the dirty image, which is then opened with the right key, read in
// full and closed. Reads must succeed or fail with EIO, never anything else.
void FuzzKeyedOpen(Base& base, const uint8_t* data, size_t size) {
  // Blocks worth hitting: both superblocks, the bitmap's first block, the
  // group's first tag block, and the data blocks that were written.
  const io::Layout layout = io::Layout::Default();
  const uint64_t targets[] = {0, 1, layout.bitmap_start, layout.tag_start(0),
                              layout.data_position(0), layout.data_position(9)};
  auto image = base.image->Snapshot();
  size_t at = 0;
  while (at + 4 <= size) {
    const uint64_t block = targets[data[at] % std::size(targets)];
    const size_t offset = (data[at + 1] | (data[at + 2] << 8)) % 4096;
    size_t length = data[at + 3];
    at += 4;
    length = std::min({length, size - at, 4096 - offset});
    FaultStore::Block b = image->PeekBlock(block);
    std::memcpy(b.data() + offset, data + at, length);
    image->PokeBlock(block, b);
    at += length;
  }
  auto engine = io::SealedVolume::OpenOn(std::move(image), base.dek, ManualEngine());
  if (!engine.ok()) return;
  std::vector<uint8_t> buffer(4096);
  const uint64_t blocks = (*engine)->size_bytes() / 4096;
  for (uint64_t i = 0; i < blocks && i < 64; ++i) {
    const int r = (*engine)->Io(io::IoOp::kRead, i * 4096, buffer);
    CHECK(r == 0 || r == -EIO);
  }
  (void)(*engine)->Close();
}

}  // namespace

int FuzzSuperblock(const uint8_t* data, size_t size) {
  Base& base = TheBase();
  FuzzKeyless(base, data, size);
  FuzzKeyedOpen(base, data, size);
  return 0;
}

}  // namespace sealvol::fuzz
