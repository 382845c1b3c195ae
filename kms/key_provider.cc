#include "kms/key_provider.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kms/identifiers.h"
#include "kms/local_key_provider.h"
#include "kms/vault_key_provider.h"

namespace sealvol::kms {

std::string DescribeState(const CommittedState& state) {
  return absl::StrCat("epoch ", state.epoch, ", root ",
                      state.root.empty() ? "(none)" : state.root, ", ",
                      state.open ? "open" : "closed");
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

}  // namespace sealvol::kms
