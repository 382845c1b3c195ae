// The engine is one concrete class, SealedVolume (io/sealed_volume.h). This
// old name is kept only for cmd/import_command.cc, which is being changed
// elsewhere this session; remove it once that file names SealedVolume.
#pragma once

#include "io/sealed_volume.h"

namespace sealvol::io {

using Engine = SealedVolume;

}  // namespace sealvol::io
