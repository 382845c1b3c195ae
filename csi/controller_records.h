// How the Controller service reads registry records (kms::VolumeRecord) as
// CSI volumes and snapshots: their parameters, the node that holds their
// image, and where a copy job stands. Stateless, thread-safe.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "csi/capabilities.h"
#include "kms/key_provider.h"

namespace sealvol::csi {

// The record parameter `key` ("" when absent).
std::string Param(const std::map<std::string, std::string>& params,
                  std::string_view key);

// The node whose disk holds the record's image: the node that formatted it
// (images never move), else the node the record was placed on; "" when
// neither is known.
std::string ImageNode(const kms::VolumeRecord& record);

// True while a node still has to copy into the record (pending or cut).
bool CopyInProgress(const kms::CopyJob& copy);

// "40%" of a copy job (0% while its size is not known).
std::string CopyPercent(const kms::CopyJob& copy);

// FailedPrecondition naming `rpc`, the record and the copy when any record
// of `records` is being copied from `source_id`: a source must stay until
// its copies have read it.
absl::Status CheckNotCopyingFrom(const std::vector<kms::VolumeRecord>& records,
                                 const std::string& source_id,
                                 const std::string& rpc);

// A snapshot record as CSI shows it: its size (the source's capacity when
// it was taken), its source, the time of its cut and whether it is ready.
void FillSnapshot(const kms::VolumeRecord& record, csipb::Snapshot* snapshot);

// True for a snapshot ListSnapshots may show: cut already (CSI lists no
// snapshot that is still being cut), including one whose copy failed after
// its cut (shown not ready, for the CO to delete).
bool IsListableSnapshot(const kms::VolumeRecord& record);

// One page of ListVolumes or ListSnapshots: sorts `records` by id, skips
// those before `token` (the id of the next record to return), calls `fill`
// for up to `max_entries` of them (0 = all) and returns the id of the first
// record left over ("" when none): the next page's token. Ids are listed in
// order, so a token stays meaningful when records come and go.
std::string FillPage(std::vector<kms::VolumeRecord> records,
                     const std::string& token, int32_t max_entries,
                     const std::function<void(const kms::VolumeRecord&)>& fill);

}  // namespace sealvol::csi
