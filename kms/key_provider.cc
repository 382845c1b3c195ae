#include "kms/key_provider.h"

#include <algorithm>
#include <ctime>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kms/identifiers.h"
#include "kms/local_key_provider.h"
#include "kms/vault_key_provider.h"

namespace sealvol::kms {

std::string DescribeState(const CommittedState& state) {
  return absl::StrCat("epoch ", state.epoch, ", root ",
                      state.root.empty() ? "(none)" : state.root, ", ",
                      state.open ? "open" : "closed");
}

const char* RecordKindName(RecordKind kind) {
  switch (kind) {
    case RecordKind::kVolume:
      return "volume";
    case RecordKind::kSnapshot:
      return "snapshot";
  }
  return "unknown";
}

const char* CopyStateName(CopyState state) {
  switch (state) {
    case CopyState::kNone:
      return "none";
    case CopyState::kPending:
      return "pending";
    case CopyState::kCut:
      return "cut";
    case CopyState::kReady:
      return "ready";
    case CopyState::kFailed:
      return "failed";
  }
  return "unknown";
}

absl::StatusOr<RecordKind> ParseRecordKind(std::string_view name) {
  for (RecordKind kind : {RecordKind::kVolume, RecordKind::kSnapshot}) {
    if (RecordKindName(kind) == name) return kind;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "record kind \"", std::string(name.substr(0, 64)), "\" is not volume or snapshot"));
}

absl::StatusOr<CopyState> ParseCopyState(std::string_view name) {
  for (CopyState state : {CopyState::kNone, CopyState::kPending, CopyState::kCut,
                          CopyState::kReady, CopyState::kFailed}) {
    if (CopyStateName(state) == name) return state;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("copy state \"", std::string(name.substr(0, 64)),
                   "\" is not none, pending, cut, ready or failed"));
}

std::string DescribeCopy(const CopyJob& copy) {
  if (copy.state == CopyState::kFailed) {
    return absl::StrCat("failed: ", copy.error);
  }
  std::string out(CopyStateName(copy.state));
  if (copy.bytes_total > 0) {
    absl::StrAppend(&out, ", ", copy.bytes_done, " of ", copy.bytes_total,
                    " bytes (", copy.bytes_done * 100 / copy.bytes_total, "%)");
  } else if (copy.bytes_done > 0) {
    absl::StrAppend(&out, ", ", copy.bytes_done, " bytes");
  }
  return out;
}

namespace {

// The position of a state on the one way forward; kFailed ends it from any
// state before kReady.
int Rank(CopyState state) {
  switch (state) {
    case CopyState::kNone:
      return 0;
    case CopyState::kPending:
      return 1;
    case CopyState::kCut:
      return 2;
    case CopyState::kReady:
    case CopyState::kFailed:
      return 3;
  }
  return 0;
}

}  // namespace

absl::Status ApplyCopyUpdate(VolumeRecord& record, const CopyUpdate& update) {
  const std::string what = absl::StrCat("copy job of ", RecordKindName(record.kind),
                                        " ", record.volume_id);
  const CopyState held = record.copy.state;
  if (update.state == CopyState::kNone) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": copy state none cannot be reported"));
  }
  if (update.state == CopyState::kFailed && update.error.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": a failed copy needs an error"));
  }
  const bool ended = held == CopyState::kReady || held == CopyState::kFailed;
  if (ended && update.state == held) {
    return absl::OkStatus();  // A repeated final report: nothing changes.
  }
  if (held == CopyState::kNone || ended ||
      Rank(update.state) < Rank(held)) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, ": copy state ", CopyStateName(update.state), " reported, but the "
        "registry's copy state is ", CopyStateName(held),
        held == CopyState::kNone ? " (not a copy in progress)"
                                 : " (copy states only move forward)"));
  }
  const uint64_t total =
      update.bytes_total > 0 ? update.bytes_total : record.copy.bytes_total;
  if (total > 0 && update.bytes_done > total) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": bytes_done ", update.bytes_done,
                     " is beyond bytes_total ", total));
  }
  record.copy.state = update.state;
  record.copy.bytes_total = total;
  record.copy.bytes_done = std::max(record.copy.bytes_done, update.bytes_done);
  record.copy.updated_unix = update.unix_time;
  if (update.state == CopyState::kFailed) {
    record.copy.error = update.error.substr(0, kMaxCopyErrorBytes);
  }
  if ((update.state == CopyState::kCut || update.state == CopyState::kReady) &&
      record.copy.cut_unix == 0) {
    record.copy.cut_unix = update.unix_time;
  }
  return absl::OkStatus();
}

absl::Status ValidateCopyRequest(const CreateVolumeKeyRequest& request) {
  const std::string what = absl::StrCat("create key for ",
                                        RecordKindName(request.kind), " ",
                                        request.volume_id);
  if (!request.source_volume_id.empty()) {
    if (absl::Status s = ValidateVolumeId(request.source_volume_id); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": source_volume_id: ", s.message()));
    }
    if (request.source_volume_id == request.volume_id) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": source_volume_id names the record itself"));
    }
  }
  switch (request.initial_copy_state) {
    case CopyState::kNone:
      if (!request.source_volume_id.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            what, ": initial_copy_state none with a source_volume_id (a copy "
                  "starts pending, or ready when there is nothing to copy)"));
      }
      break;
    case CopyState::kPending:
    case CopyState::kReady:
      if (request.source_volume_id.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            what, ": initial_copy_state ",
            CopyStateName(request.initial_copy_state),
            " needs a source_volume_id"));
      }
      break;
    case CopyState::kCut:
    case CopyState::kFailed:
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": initial_copy_state ",
          CopyStateName(request.initial_copy_state),
          " (a copy starts pending or ready)"));
  }
  if (request.kind == RecordKind::kSnapshot && request.source_volume_id.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": a snapshot needs a source_volume_id"));
  }
  return absl::OkStatus();
}

absl::Status ApplyStateCommit(VolumeRecord& record, const StateCommit& commit) {
  if (absl::Status s = ValidateStateRoot(commit.state.root); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "commit state of volume ", record.volume_id, ": ", s.message()));
  }
  if (commit.accept_rollback) {
    if (!record.rollback_pending) {
      return absl::FailedPreconditionError(absl::StrCat(
          "commit state of volume ", record.volume_id,
          ": accept_rollback, but no rollback acceptance is pending "
          "(sealvol restore --accept-rollback)"));
    }
    if (record.state.has_value() && commit.state.epoch <= record.state->epoch) {
      return absl::FailedPreconditionError(absl::StrCat(
          "commit state of volume ", record.volume_id, ": state_epoch ",
          commit.state.epoch, " of an accepted restore is not past the "
          "registry's state (", DescribeState(*record.state),
          "); the restored image must be opened with min_epoch"));
    }
    record.rollback_pending = false;
  } else if (record.state.has_value()) {
    const CommittedState& held = *record.state;
    const bool behind = commit.state.epoch < held.epoch;
    const bool reopened =
        commit.state.epoch == held.epoch && !held.open && commit.state.open;
    if (behind || reopened) {
      return absl::FailedPreconditionError(absl::StrCat(
          "commit state of volume ", record.volume_id, ": state_epoch ",
          commit.state.epoch, (behind ? " is behind" : " was closed already in"),
          " the registry's state (", DescribeState(held),
          "); the epoch never goes back"));
    }
  }
  record.state = commit.state;
  record.state_node = commit.node;
  record.state_unix = commit.unix_time;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<KeyProvider>> OpenKeyProvider(
    std::string_view uri) {
  const std::string u(uri);
  if (absl::StartsWith(u, "local:")) {
    auto local = LocalKeyProvider::Open(u.substr(6));
    if (!local.ok()) return local.status();
    return std::unique_ptr<KeyProvider>(std::move(*local));
  }
  if (absl::StartsWith(u, "vault+")) {
    auto config = VaultConfig::FromUri(u);
    if (!config.ok()) return config.status();
    auto vault = VaultKeyProvider::Open(std::move(*config));
    if (!vault.ok()) return vault.status();
    return std::unique_ptr<KeyProvider>(std::move(*vault));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "KMS URI \"", u, "\": unknown scheme (expected local:DIR, "
      "vault+https://HOST:PORT?... or vault+http://HOST:PORT?...)"));
}

VolumeRecord NewVolumeRecord(const CreateVolumeKeyRequest& request,
                             std::string key_name, int64_t key_version) {
  VolumeRecord record;
  record.volume_id = request.volume_id;
  record.name = request.name;
  record.tenant = request.tenant;
  record.key_name = std::move(key_name);
  record.key_version = key_version;
  record.capacity_bytes = request.capacity_bytes;
  record.node = request.node;
  record.parameters = request.parameters;
  record.created_unix = static_cast<int64_t>(std::time(nullptr));
  record.kind = request.kind;
  record.source_volume_id = request.source_volume_id;
  record.copy.state = request.initial_copy_state;
  if (record.copy.state != CopyState::kNone) {
    record.copy.updated_unix = record.created_unix;
  }
  return record;
}

std::set<std::string> TenantKeyNames(const std::vector<VolumeRecord>& records,
                                     std::string_view tenant,
                                     const std::string& default_key) {
  std::set<std::string> names = {default_key};
  for (const VolumeRecord& r : records) {
    if (r.tenant == tenant) names.insert(r.key_name);
  }
  return names;
}

absl::StatusOr<std::string> CheckNewVolumeKey(
    const CreateVolumeKeyRequest& request, std::string_view default_template) {
  RETURN_IF_ERROR(ValidateVolumeId(request.volume_id));
  RETURN_IF_ERROR(ValidateCopyRequest(request));
  return ExpandKeyNameTemplate(request.key_name_template.empty()
                                   ? default_template
                                   : std::string_view(request.key_name_template),
                               request.tenant);
}

}  // namespace sealvol::kms
