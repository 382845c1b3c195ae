#include "csi/controller_records.h"

#include "absl/strings/str_cat.h"

namespace sealvol::csi {

std::string Param(const std::map<std::string, std::string>& params,
                  std::string_view key) {
  auto it = params.find(std::string(key));
  return it == params.end() ? std::string() : it->second;
}

std::string ImageNode(const kms::VolumeRecord& record) {
  if (!record.format_id.empty() && !record.formatted_node.empty()) {
    return record.formatted_node;
  }
  return record.node;
}

bool CopyInProgress(const kms::CopyJob& copy) {
  return copy.state == kms::CopyState::kPending ||
         copy.state == kms::CopyState::kCut;
}

std::string CopyPercent(const kms::CopyJob& copy) {
  const uint64_t percent =
      copy.bytes_total == 0 ? 0 : copy.bytes_done * 100 / copy.bytes_total;
  return absl::StrCat(percent, "%");
}

absl::Status CheckNotCopyingFrom(const std::vector<kms::VolumeRecord>& records,
                                 const std::string& source_id,
                                 const std::string& rpc) {
  for (const kms::VolumeRecord& record : records) {
    if (record.source_volume_id != source_id || !CopyInProgress(record.copy)) {
      continue;
    }
    return absl::FailedPreconditionError(absl::StrCat(
        rpc, " ", source_id, ": ", kms::RecordKindName(record.kind), " ",
        record.volume_id, " is being copied from it (",
        kms::DescribeCopy(record.copy), "); retry when that copy has ended"));
  }
  return absl::OkStatus();
}

void FillSnapshot(const kms::VolumeRecord& record, csipb::Snapshot* snapshot) {
  snapshot->set_snapshot_id(record.volume_id);
  snapshot->set_source_volume_id(record.source_volume_id);
  snapshot->set_size_bytes(static_cast<int64_t>(record.capacity_bytes));
  // The point in time is the cut; an empty snapshot (nothing to cut) was
  // taken when it was created.
  snapshot->mutable_creation_time()->set_seconds(
      record.copy.cut_unix != 0 ? record.copy.cut_unix : record.created_unix);
  snapshot->set_ready_to_use(record.copy.state == kms::CopyState::kNone ||
                             record.copy.state == kms::CopyState::kReady);
}

bool IsListableSnapshot(const kms::VolumeRecord& record) {
  if (record.kind != kms::RecordKind::kSnapshot) return false;
  switch (record.copy.state) {
    case kms::CopyState::kPending:
      return false;
    case kms::CopyState::kFailed:
      return record.copy.cut_unix != 0;
    default:
      return true;
  }
}

std::string FillPage(std::vector<kms::VolumeRecord> records,
                     const std::string& token, int32_t max_entries,
                     const std::function<void(const kms::VolumeRecord&)>& fill) {
  std::sort(records.begin(), records.end(), [](const auto& a, const auto& b) {
    return a.volume_id < b.volume_id;
  });
  const size_t max =
      max_entries > 0 ? static_cast<size_t>(max_entries) : records.size();
  size_t listed = 0;
  for (const auto& record : records) {
    if (!token.empty() && record.volume_id < token) continue;
    if (listed == max) return record.volume_id;
    fill(record);
    ++listed;
  }
  return "";
}

}  // namespace sealvol::csi
