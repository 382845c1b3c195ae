#include "io/layout.h"

#include "absl/strings/str_cat.h"

namespace sealvol::io {

bool Layout::Valid() const {
  return data_blocks_per_group > 0 &&
         uint64_t{tag_blocks_per_group} * kBlocksPerTagBlock ==
             data_blocks_per_group &&
         bitmap_start >= 2 && bitmap_blocks > 0 && bitmap_blocks <= (1u << 20) &&
         groups_start >= bitmap_start + bitmap_blocks &&
         (digest_blocks == 0 ||
          (digest_start >= bitmap_start + bitmap_blocks &&
           digest_blocks * kDigestsPerBlock >= max_groups() &&
           groups_start >= digest_start + 2 * digest_blocks));
}

std::string Layout::ToJson() const {
  return absl::StrCat(
      "{\"data_blocks_per_group\":", data_blocks_per_group,
      ",\"tag_blocks_per_group\":", tag_blocks_per_group,
      ",\"bitmap_start\":", bitmap_start, ",\"bitmap_blocks\":", bitmap_blocks,
      ",\"digest_start\":", digest_start,
      ",\"digest_blocks\":", digest_blocks,
      ",\"groups_start\":", groups_start, "}");
}

}  // namespace sealvol::io
