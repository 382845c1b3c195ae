#include "io/copy_progress.h"

#include "absl/strings/str_cat.h"
#include "base/durable_file.h"
#include "base/status_macros.h"
#include "base/volume_id.h"
#include "io/sealed_volume.h"
#include "io/volume_io.h"
#include "nlohmann/json.hpp"

namespace sealvol::io {
namespace {

constexpr size_t kMaxRecordBytes = 64 * 1024;

const char* PhaseName(CopyProgress::Phase phase) {
  switch (phase) {
    case CopyProgress::Phase::kFormatting:
      return "formatting";
    case CopyProgress::Phase::kCopying:
      return "copying";
    case CopyProgress::Phase::kDone:
      return "done";
  }
  return "?";
}

}  // namespace

CopyProgressFile::CopyProgressFile(const std::string& target,
                                   const std::string& suffix,
                                   const std::string& what)
    : target_(target), what_(what) {
  dir_ = ParentDirectory(target);
  const size_t slash = target.rfind('/');
  name_ = (slash == std::string::npos ? target : target.substr(slash + 1)) +
          suffix;
}

absl::Status CopyProgressFile::Save(const CopyProgress& p) const {
  // The keys of the import's record are kept as they were (a record left by
  // an interrupted import of an older binary still loads).
  nlohmann::json j = {{"phase", PhaseName(p.phase)},
                      {"volume_id", p.volume_id},
                      {"format_id", p.format_id},
                      {"created", p.created},
                      {"source", p.source},
                      {"source_device", p.identity.device},
                      {"source_inode", p.identity.inode},
                      {"source_size", p.identity.size},
                      {"source_mtime_ns", p.identity.mtime_ns},
                      {"source_sealed", p.identity.sealed},
                      {"next_offset", p.next_offset}};
  if (p.final_state.has_value()) {
    j["state_epoch"] = p.final_state->epoch;
    j["state_root"] = StateRootString(p.final_state->root);
    j["state_open"] = p.final_state->open;
  }
  return WriteFileAtomically(dir_, name_, j.dump() + "\n", 0600);
}

absl::StatusOr<CopyProgress> CopyProgressFile::Load() const {
  ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path(), kMaxRecordBytes));
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  auto bad = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat(
        what_, " progress record ", path(), " is damaged (", why,
        "); remove it and ", target_, " to start the ", what_, " over"));
  };
  if (!j.is_object()) return bad("not JSON");
  CopyProgress p;
  try {
    const std::string phase = j.at("phase").get<std::string>();
    if (phase == "formatting") {
      p.phase = CopyProgress::Phase::kFormatting;
    } else if (phase == "copying") {
      p.phase = CopyProgress::Phase::kCopying;
    } else if (phase == "done") {
      p.phase = CopyProgress::Phase::kDone;
    } else {
      return bad(absl::StrCat("unknown phase \"", phase, "\""));
    }
    p.volume_id = j.at("volume_id").get<std::string>();
    p.format_id = j.value("format_id", std::string());
    p.created = j.at("created").get<bool>();
    p.source = j.at("source").get<std::string>();
    p.identity.device = j.at("source_device").get<uint64_t>();
    p.identity.inode = j.at("source_inode").get<uint64_t>();
    p.identity.size = j.at("source_size").get<uint64_t>();
    p.identity.mtime_ns = j.at("source_mtime_ns").get<int64_t>();
    p.identity.sealed = j.value("source_sealed", std::string());
    p.next_offset = j.at("next_offset").get<uint64_t>();
    if (p.phase == CopyProgress::Phase::kDone) {
      VolumeState s;
      s.epoch = j.at("state_epoch").get<uint64_t>();
      auto root = ParseStateRoot(j.at("state_root").get<std::string>());
      if (!root.ok()) return bad("state_root is not 64 hex digits");
      s.root = *root;
      s.open = j.at("state_open").get<bool>();
      p.final_state = s;
    }
  } catch (const nlohmann::json::exception& e) {
    return bad(e.what());
  }
  if (!ParseVolumeId(p.volume_id).ok()) return bad("volume_id");
  if (!p.format_id.empty() && !ParseFormatId(p.format_id).ok()) {
    return bad("format_id");
  }
  if (p.next_offset % kBlockSize != 0 ||
      p.next_offset > p.identity.size + kBlockSize) {
    return bad("next_offset out of range");
  }
  return p;
}

absl::Status CopyProgressFile::Remove() const {
  absl::Status s = RemoveFileDurably(dir_, name_);
  if (absl::IsNotFound(s)) return absl::OkStatus();
  return s;
}

}  // namespace sealvol::io
