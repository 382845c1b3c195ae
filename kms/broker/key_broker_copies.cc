// The KeyBroker's copy jobs: snapshots, restores and clones run on the node
// that holds the source (docs/attestation.md, "Copy jobs").
#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/status_macros.h"
#include "kms/broker/key_broker_service.h"
#include "kms/broker/refusal.h"
#include "kms/identifiers.h"

namespace sealvol::broker {
namespace {

bool InProgress(kms::CopyState state) {
  return state == kms::CopyState::kPending || state == kms::CopyState::kCut;
}

// What the job of `target` makes; `source` is null when the source's
// record is gone (the key release then refuses the job).
CopyKind KindOf(const kms::VolumeRecord& target,
                const kms::VolumeRecord* source) {
  if (target.kind == kms::RecordKind::kSnapshot) return CopyKind::kSnapshot;
  if (source != nullptr && source->kind == kms::RecordKind::kSnapshot) {
    return CopyKind::kRestore;
  }
  return CopyKind::kClone;
}

// The request's own values (checked once the caller is known).
absl::Status CheckCopyReport(const CopyReport& report) {
  switch (report.state) {
    case kms::CopyState::kNone:
      return RefusalStatus(Reason::kInvalidRequest,
                           "state is required (pending, cut, ready or failed)");
    case kms::CopyState::kFailed:
      if (report.error.empty()) {
        return RefusalStatus(Reason::kInvalidRequest,
                             "a failed copy needs an error");
      }
      return absl::OkStatus();
    case kms::CopyState::kReady: {
      if (absl::Status s = kms::ValidateFormatId(report.format_id); !s.ok()) {
        return RefusalStatus(Reason::kInvalidFormatId, std::string(s.message()));
      }
      if (!report.closed_state.has_value() || report.closed_state->open) {
        return RefusalStatus(Reason::kInvalidState,
                             "a ready copy needs the closed state (open = "
                             "false) of its image");
      }
      if (absl::Status s = kms::ValidateStateRoot(report.closed_state->root);
          !s.ok()) {
        return RefusalStatus(Reason::kInvalidState, std::string(s.message()));
      }
      return absl::OkStatus();
    }
    default:
      return absl::OkStatus();
  }
}

}  // namespace

absl::StatusOr<std::vector<CopyJob>> KeyBrokerService::ListCopyJobs(
    const std::string& node_id, std::string_view node_token,
    const CopyJobsWait& wait) {
  if (absl::Status s =
          AuthenticateCall(node_id, {}, node_token, Budget::kRequests);
      !s.ok()) {
    AuditRecord record;
    record.node = node_id;
    return AuditRefusal(record, "copy jobs", s);
  }
  // The answer leaves this long before the call's deadline, so that it
  // still reaches the node.
  constexpr absl::Duration kDeadlineMargin = absl::Milliseconds(500);
  const absl::Time end =
      std::min(absl::Now() + std::clamp(wait.wait, absl::ZeroDuration(),
                                        kMaxCopyJobsWait),
               wait.deadline - kDeadlineMargin);
  for (;;) {
    // Counted before the read: a job created after it wakes the wait.
    const uint64_t seen = copy_job_changes_.Count(node_id);
    ASSIGN_OR_RETURN(std::vector<CopyJob> jobs, ReadCopyJobs(node_id));
    const absl::Time now = absl::Now();
    if (!jobs.empty() || now >= end ||
        (wait.cancelled && wait.cancelled())) {
      return jobs;
    }
    if (copy_job_changes_.WaitForChange(
            node_id, seen, std::min(end, now + options_.copy_jobs_recheck)) ==
        CopyJobChanges::Wake::kClosed) {
      return jobs;
    }
  }
}

void KeyBrokerService::CopyJobsChanged(const std::string& node_id) {
  copy_job_changes_.Changed(node_id);
}

void KeyBrokerService::EndWaits() { copy_job_changes_.Close(); }

absl::StatusOr<std::vector<CopyJob>> KeyBrokerService::ReadCopyJobs(
    const std::string& node_id) {
  auto records = keys_.ListVolumes("");
  if (!records.ok()) {
    if (options_.metrics != nullptr) options_.metrics->RecordKmsError();
    return RefusalStatus(Reason::kKmsError,
                         absl::StrCat("copy jobs: list the registry: ",
                                      records.status().message()));
  }
  std::map<std::string_view, const kms::VolumeRecord*> by_id;
  for (const kms::VolumeRecord& record : *records) {
    by_id[record.volume_id] = &record;
  }
  std::vector<CopyJob> jobs;
  for (const kms::VolumeRecord& target : *records) {
    if (target.node != node_id || !InProgress(target.copy.state)) continue;
    auto source = by_id.find(target.source_volume_id);
    jobs.push_back(
        {.target_id = target.volume_id,
         .source_id = target.source_volume_id,
         .kind = KindOf(target,
                        source == by_id.end() ? nullptr : source->second),
         .state = target.copy.state,
         .capacity_bytes = target.capacity_bytes,
         .bytes_done = target.copy.bytes_done,
         .bytes_total = target.copy.bytes_total});
  }
  return jobs;
}

absl::StatusOr<CopyKeys> KeyBrokerService::ReleaseCopyJobKeys(
    const std::string& node_id, const std::string& target_id,
    std::string_view node_token) {
  AuditRecord record;
  record.volume = target_id;
  record.node = node_id;
  record.attestation = kAttestationCopyJob;
  auto refuse = [&](absl::Status status) {
    return AuditRefusal(record, "copy key release", std::move(status));
  };
  auto target = BeginVolumeCall(
      {.volume_id = target_id, .node_id = node_id, .placement = Placement::kHere},
      node_token, record);
  if (!target.ok()) return refuse(target.status());
  // The attestation: the registry has a copy in progress for this target,
  // on this node, and this node holds its source.
  if (!InProgress(target->copy.state)) {
    return refuse(RefusalStatus(
        Reason::kCopyNotActive,
        absl::StrCat("volume ", target_id, " has no copy in progress (copy ",
                     kms::DescribeCopy(target->copy), ")")));
  }
  auto source = keys_.GetVolume(target->source_volume_id);
  if (!source.ok()) {
    return refuse(RegistryRefusal("registry lookup of the source",
                                  source.status(), target->source_volume_id));
  }
  const CopyKind kind = KindOf(*target, &*source);
  if (source->node != node_id) {
    return refuse(RefusalStatus(
        Reason::kSourceNotOnNode,
        absl::StrCat("the source ", source->volume_id, " of ",
                     std::string(CopyKindName(kind)), " ", target_id, " is placed on ",
                     source->node.empty() ? "no node" : "node " + source->node,
                     ", not on node ", node_id)));
  }
  if (source->tenant != target->tenant) {
    return refuse(RefusalStatus(
        Reason::kNamespaceMismatch,
        absl::StrCat("the source ", source->volume_id, " belongs to ",
                     source->tenant, ", the copy ", target_id, " to ",
                     target->tenant)));
  }
  if (source->copy.state != kms::CopyState::kNone &&
      source->copy.state != kms::CopyState::kReady) {
    return refuse(RefusalStatus(
        Reason::kCopyNotActive,
        absl::StrCat("the source ", source->volume_id,
                     " is itself a copy that is not complete (copy ",
                     kms::DescribeCopy(source->copy), ")")));
  }

  // Both keys of the records read above, which the checks and the audit
  // records name.
  auto unwrap = [&](const kms::VolumeRecord& volume)
      -> absl::StatusOr<crypto::SecretBytes> {
    const absl::Time start = absl::Now();
    auto dek = keys_.UnwrapRecordKey(volume);
    if (options_.metrics != nullptr) {
      options_.metrics->RecordKmsLatency(absl::Now() - start);
    }
    if (!dek.ok()) {
      if (options_.metrics != nullptr) options_.metrics->RecordKmsError();
      return RefusalStatus(Reason::kKmsError,
                           absl::StrCat("unwrap the key of ", volume.volume_id,
                                        ": ", dek.status().message()));
    }
    return dek;
  };
  auto source_dek = unwrap(*source);
  if (!source_dek.ok()) return refuse(source_dek.status());
  auto target_dek = unwrap(*target);
  if (!target_dek.ok()) {
    source_dek->Wipe();
    return refuse(target_dek.status());
  }

  const std::string job = absl::StrCat(std::string(CopyKindName(kind)), " ", target_id,
                                       " of ", source->volume_id, " (copy ",
                                       kms::DescribeCopy(target->copy), ")");
  AuditRecord source_grant = record;
  source_grant.volume = source->volume_id;
  source_grant.tenant = source->tenant;
  source_grant.decision = kDecisionGrant;
  source_grant.reason = "copy_key_released";
  source_grant.key_version = source->key_version;
  source_grant.message = absl::StrCat("source key released for the ", job);
  AuditRecord target_grant = record;
  target_grant.decision = kDecisionGrant;
  target_grant.reason = "copy_key_released";
  target_grant.key_version = target->key_version;
  target_grant.message = absl::StrCat("target key released for the ", job);
  for (const AuditRecord* grant : {&source_grant, &target_grant}) {
    if (absl::Status logged = Audit(*grant); !logged.ok()) {
      source_dek->Wipe();
      target_dek->Wipe();
      return logged;
    }
    if (options_.metrics != nullptr) options_.metrics->RecordGrant();
  }
  CopyKeys keys{.source_dek = *std::move(source_dek),
                .target_dek = *std::move(target_dek),
                .source_id = source->volume_id,
                .kind = kind,
                .state = target->copy.state,
                .source_format_id = source->format_id,
                .source_expected_state = source->state,
                .source_rollback_accepted = source->rollback_pending,
                .target_capacity_bytes = target->capacity_bytes};
  return keys;
}

absl::StatusOr<kms::CopyState> KeyBrokerService::ReportCopyJob(
    const std::string& node_id, const CopyReport& report,
    std::string_view node_token) {
  AuditRecord record;
  record.volume = report.target_id;
  record.node = node_id;
  auto refuse = [&](absl::Status status) {
    return AuditRefusal(
        record,
        absl::StrCat("copy report (", std::string(kms::CopyStateName(report.state)), ")"),
        std::move(status));
  };
  // Progress comes every few MiB of a copy: reports spend the budget of
  // state commits, not the key releases'.
  auto target = BeginVolumeCall(
      {.volume_id = report.target_id,
       .node_id = node_id,
       .budget = Budget::kStateCommits,
       .fields = {{report.error, "error", kms::kMaxCopyErrorBytes},
                  {report.format_id, "format_id", 64}},
       .input = CheckCopyReport(report),
       .placement = Placement::kHere},
      node_token, record);
  if (!target.ok()) return refuse(target.status());
  const bool ready = report.state == kms::CopyState::kReady;
  const bool repeated_ready = ready &&
                              target->copy.state == kms::CopyState::kReady &&
                              target->format_id == report.format_id;
  if (!InProgress(target->copy.state) && !repeated_ready) {
    return refuse(RefusalStatus(
        Reason::kCopyNotActive,
        absl::StrCat("volume ", report.target_id,
                     " has no copy in progress (copy ",
                     kms::DescribeCopy(target->copy), ")")));
  }
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  if (ready && target->format_id != report.format_id) {
    // The target image opens like any volume's: its format and its closing
    // state are the registry's, recorded in one write.
    auto claimed = keys_.ClaimFormat(report.target_id,
                                     {.format_id = report.format_id,
                                      .node = node_id,
                                      .unix_time = now,
                                      .state = report.closed_state});
    if (!claimed.ok()) {
      return refuse(RegistryRefusal("registry update", claimed.status(),
                                    report.target_id));
    }
    if (claimed->format_id != report.format_id) {
      return refuse(RefusalStatus(
          Reason::kAlreadyFormatted,
          absl::StrCat("copy ", report.target_id, " was formatted with format "
                       "id ", claimed->format_id, "; node ", node_id,
                       " reports format id ", report.format_id)));
    }
  }
  auto after = keys_.UpdateCopy(report.target_id,
                                {.state = report.state,
                                 .bytes_done = report.bytes_done,
                                 .bytes_total = report.bytes_total,
                                 .error = report.error,
                                 .unix_time = now});
  if (absl::IsFailedPrecondition(after.status())) {
    return refuse(
        RefusalStatus(Reason::kCopyNotActive,
                      std::string(after.status().message())));
  }
  if (absl::IsInvalidArgument(after.status())) {
    return refuse(
        RefusalStatus(Reason::kInvalidRequest,
                      std::string(after.status().message())));
  }
  if (!after.ok()) {
    return refuse(
        RegistryRefusal("registry update", after.status(), report.target_id));
  }
  // The cut (the copy's point in time) and the end are audited; progress
  // is not (it releases and commits nothing).
  if (report.state == kms::CopyState::kCut && target->copy.state != kms::CopyState::kCut) {
    record.decision = kDecisionGrant;
    record.reason = "copy_cut";
    record.message = absl::StrCat("copy cut: the point in time of ",
                                  report.target_id, " from ",
                                  target->source_volume_id, " is fixed");
    RETURN_IF_ERROR(Audit(record));
  } else if (ready) {
    record.decision = kDecisionGrant;
    record.reason = "copy_ready";
    record.message = absl::StrCat(
        "copy ready: ", report.target_id, " from ", target->source_volume_id,
        ", format id ", report.format_id, ", closed state ",
        kms::DescribeState(*report.closed_state), ", ",
        kms::DescribeCopy(after->copy), repeated_ready ? " (repeated)" : "");
    RETURN_IF_ERROR(Audit(record));
  } else if (report.state == kms::CopyState::kFailed &&
             target->copy.state != kms::CopyState::kFailed) {
    record.decision = kDecisionRefuse;
    record.reason = "copy_failed";
    record.message = absl::StrCat("copy failed: ", report.target_id, " from ",
                                  target->source_volume_id, ": ",
                                  report.error);
    if (options_.metrics != nullptr) {
      options_.metrics->RecordRefusal(record.reason);
    }
    RETURN_IF_ERROR(Audit(record));
  }
  return after->copy.state;
}

}  // namespace sealvol::broker
