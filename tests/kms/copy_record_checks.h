// The registry's snapshot and copy rules (record kinds, sources, copy jobs
// and KeyProvider::UpdateCopy), checked the same way against every provider.
#pragma once

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kms/key_provider.h"
#include "tests/support/volume_ids.h"

namespace sealvol::kms {

inline CreateVolumeKeyRequest CopyRequest(const std::string& id,
                                          const std::string& tenant,
                                          const std::string& source,
                                          RecordKind kind,
                                          CopyState initial) {
  CreateVolumeKeyRequest r;
  r.volume_id = id;
  r.name = "copy-" + id;
  r.tenant = tenant;
  r.capacity_bytes = 1 << 30;
  r.node = "node-1";
  r.parameters = {{"fsType", "ext4"}};
  r.kind = kind;
  r.source_volume_id = source;
  r.initial_copy_state = initial;
  return r;
}

// `source` exists in `tenant` and is not a copy; `snapshot` and `clone` are
// free ids. A snapshot of the source and a clone of that snapshot each get
// their own DEK: wrapped and unwrapped, they differ from the source's and
// from each other's.
inline void ExpectCopiesGetFreshKeys(KeyProvider& p, const std::string& tenant,
                                     const std::string& source,
                                     const std::string& snapshot,
                                     const std::string& clone) {
  using ::testing::HasSubstr;
  auto src = p.GetVolume(source);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ(src->kind, RecordKind::kVolume);
  EXPECT_EQ(src->copy.state, CopyState::kNone);
  EXPECT_TRUE(src->source_volume_id.empty());

  auto snap = p.CreateVolumeKey(CopyRequest(snapshot, tenant, source,
                                            RecordKind::kSnapshot,
                                            CopyState::kPending));
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_EQ(snap->kind, RecordKind::kSnapshot);
  EXPECT_EQ(snap->source_volume_id, source);
  EXPECT_EQ(snap->copy.state, CopyState::kPending);
  EXPECT_GT(snap->copy.updated_unix, 0);
  auto copy = p.CreateVolumeKey(CopyRequest(clone, tenant, snapshot,
                                            RecordKind::kVolume,
                                            CopyState::kReady));
  ASSERT_TRUE(copy.ok()) << copy.status();

  // What was stored is what a reader gets back.
  auto snap_read = p.GetVolume(snapshot);
  ASSERT_TRUE(snap_read.ok()) << snap_read.status();
  EXPECT_EQ(snap_read->kind, RecordKind::kSnapshot);
  EXPECT_EQ(snap_read->source_volume_id, source);
  EXPECT_EQ(snap_read->copy, snap->copy);
  auto copy_read = p.GetVolume(clone);
  ASSERT_TRUE(copy_read.ok()) << copy_read.status();
  EXPECT_EQ(copy_read->kind, RecordKind::kVolume);
  EXPECT_EQ(copy_read->source_volume_id, snapshot);
  EXPECT_EQ(copy_read->copy.state, CopyState::kReady);

  // Fresh keys: nothing of the source's key reaches a copy.
  EXPECT_NE(snap->wrapped_dek, src->wrapped_dek);
  EXPECT_NE(copy->wrapped_dek, src->wrapped_dek);
  EXPECT_NE(copy->wrapped_dek, snap->wrapped_dek);
  auto src_dek = p.UnwrapVolumeKey(source);
  auto snap_dek = p.UnwrapVolumeKey(snapshot);
  auto copy_dek = p.UnwrapVolumeKey(clone);
  ASSERT_TRUE(src_dek.ok() && snap_dek.ok() && copy_dek.ok());
  EXPECT_FALSE(snap_dek->Equals(*src_dek));
  EXPECT_FALSE(copy_dek->Equals(*src_dek));
  EXPECT_FALSE(copy_dek->Equals(*snap_dek));

  // The listing holds every kind; callers filter.
  auto listed = p.ListVolumes(tenant);
  ASSERT_TRUE(listed.ok()) << listed.status();
  int snapshots = 0, copies = 0;
  for (const VolumeRecord& r : *listed) {
    if (r.volume_id == snapshot && r.kind == RecordKind::kSnapshot) ++snapshots;
    if (r.volume_id == clone && r.source_volume_id == snapshot) ++copies;
  }
  EXPECT_EQ(snapshots, 1);
  EXPECT_EQ(copies, 1);

  // Malformed copy requests name the field and create nothing.
  const std::string bad = ::sealvol::testing::TestVolumeId("bad-copy");
  auto no_source = p.CreateVolumeKey(
      CopyRequest(bad, tenant, "", RecordKind::kSnapshot, CopyState::kNone));
  EXPECT_EQ(no_source.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(no_source.status().message(), HasSubstr("source_volume_id"));
  auto bad_source = p.CreateVolumeKey(CopyRequest(
      bad, tenant, "../etc", RecordKind::kVolume, CopyState::kPending));
  EXPECT_EQ(bad_source.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_source.status().message(), HasSubstr("source_volume_id"));
  auto cut = p.CreateVolumeKey(
      CopyRequest(bad, tenant, source, RecordKind::kVolume, CopyState::kCut));
  EXPECT_EQ(cut.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(cut.status().message(), HasSubstr("initial_copy_state cut"));
  auto pending_alone = p.CreateVolumeKey(
      CopyRequest(bad, tenant, "", RecordKind::kVolume, CopyState::kPending));
  EXPECT_EQ(pending_alone.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(p.GetVolume(bad).status().code(), absl::StatusCode::kNotFound);
}

// `source` exists in `tenant` and is not a copy; `copy` and `other` are free
// ids. Copy states only move forward, and bytes_done never goes back.
inline void ExpectCopyStatesOnlyMoveForward(KeyProvider& p,
                                            const std::string& tenant,
                                            const std::string& source,
                                            const std::string& copy,
                                            const std::string& other) {
  using ::testing::HasSubstr;
  constexpr uint64_t kMiB = 1 << 20;
  ASSERT_TRUE(p.CreateVolumeKey(CopyRequest(copy, tenant, source,
                                            RecordKind::kSnapshot,
                                            CopyState::kPending))
                  .ok());
  auto progress = p.UpdateCopy(
      copy, {CopyState::kPending, 1 * kMiB, 4 * kMiB, "", 100});
  ASSERT_TRUE(progress.ok()) << progress.status();
  EXPECT_EQ(progress->copy.bytes_done, 1 * kMiB);
  EXPECT_EQ(progress->copy.bytes_total, 4 * kMiB);
  EXPECT_EQ(progress->copy.updated_unix, 100);
  EXPECT_EQ(progress->copy.cut_unix, 0);
  // A lower figure (a node resuming from its last saved progress) keeps the
  // stored one; a zero bytes_total keeps the known total.
  auto lower = p.UpdateCopy(copy, {CopyState::kPending, kMiB / 2, 0, "", 110});
  ASSERT_TRUE(lower.ok()) << lower.status();
  EXPECT_EQ(lower->copy.bytes_done, 1 * kMiB);
  EXPECT_EQ(lower->copy.bytes_total, 4 * kMiB);

  auto cut = p.UpdateCopy(copy, {CopyState::kCut, 2 * kMiB, 4 * kMiB, "", 200});
  ASSERT_TRUE(cut.ok()) << cut.status();
  EXPECT_EQ(cut->copy.state, CopyState::kCut);
  EXPECT_EQ(cut->copy.cut_unix, 200);

  // Backwards is refused, naming both states, and changes nothing.
  auto back = p.UpdateCopy(copy, {CopyState::kPending, 3 * kMiB, 0, "", 210});
  EXPECT_EQ(back.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(back.status().message(),
              HasSubstr("copy state pending reported, but the registry's copy "
                        "state is cut"));
  auto beyond = p.UpdateCopy(copy, {CopyState::kCut, 5 * kMiB, 0, "", 220});
  EXPECT_EQ(beyond.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(beyond.status().message(), HasSubstr("bytes_total"));
  auto no_error = p.UpdateCopy(copy, {CopyState::kFailed, 0, 0, "", 230});
  EXPECT_EQ(no_error.status().code(), absl::StatusCode::kInvalidArgument);
  auto none = p.UpdateCopy(copy, {CopyState::kNone, 0, 0, "", 230});
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  auto stored = p.GetVolume(copy);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->copy, cut->copy);

  auto ready = p.UpdateCopy(copy, {CopyState::kReady, 4 * kMiB, 4 * kMiB, "", 300});
  ASSERT_TRUE(ready.ok()) << ready.status();
  EXPECT_EQ(ready->copy.state, CopyState::kReady);
  EXPECT_EQ(ready->copy.cut_unix, 200);  // Set once.
  EXPECT_EQ(ready->copy.updated_unix, 300);
  // A repeated final report (a lost answer) changes nothing; any other
  // report after the end is refused.
  auto again = p.UpdateCopy(copy, {CopyState::kReady, 4 * kMiB, 4 * kMiB, "", 400});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->copy.updated_unix, 300);
  for (CopyState later : {CopyState::kFailed, CopyState::kCut,
                          CopyState::kPending}) {
    auto refused = p.UpdateCopy(copy, {later, 4 * kMiB, 0, "late", 500});
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition)
        << CopyStateName(later);
  }
  EXPECT_EQ(p.GetVolume(copy)->copy, ready->copy);

  // A record that is not a copy has no job to report on.
  auto not_copy = p.UpdateCopy(source, {CopyState::kPending, 0, 0, "", 1});
  EXPECT_EQ(not_copy.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(not_copy.status().message(), HasSubstr("not a copy in progress"));
  EXPECT_EQ(p.UpdateCopy(::sealvol::testing::TestVolumeId("no-such-copy"),
                         {CopyState::kPending, 0, 0, "", 1})
                .status()
                .code(),
            absl::StatusCode::kNotFound);

  // pending -> failed, with a long error cut to kMaxCopyErrorBytes; failed
  // is final.
  ASSERT_TRUE(p.CreateVolumeKey(CopyRequest(other, tenant, source,
                                            RecordKind::kVolume,
                                            CopyState::kPending))
                  .ok());
  const std::string long_error(3000, 'e');
  auto failed = p.UpdateCopy(other, {CopyState::kFailed, 0, 0, long_error, 600});
  ASSERT_TRUE(failed.ok()) << failed.status();
  EXPECT_EQ(failed->copy.state, CopyState::kFailed);
  EXPECT_EQ(failed->copy.error, std::string(kMaxCopyErrorBytes, 'e'));
  EXPECT_EQ(failed->copy.cut_unix, 0);
  EXPECT_EQ(p.UpdateCopy(other, {CopyState::kReady, 0, 0, "", 700})
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(p.GetVolume(other)->copy.state, CopyState::kFailed);

  // UpdateVolume changes neither the kind, the source nor the copy job.
  VolumeRecord update = *p.GetVolume(other);
  update.kind = RecordKind::kVolume;
  update.source_volume_id.clear();
  update.copy = CopyJob{};
  update.capacity_bytes = 2ull << 30;
  ASSERT_TRUE(p.UpdateVolume(update).ok());
  auto after = p.GetVolume(other);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->capacity_bytes, 2ull << 30);
  EXPECT_EQ(after->source_volume_id, source);
  EXPECT_EQ(after->copy, failed->copy);
}

// `source` exists in `tenant`; `snapshot` and `second` are free ids. A KEK
// rotation rewraps a snapshot's DEK (same key, new version); shredding a
// snapshot leaves its source readable, and shredding the source leaves its
// snapshot readable.
inline void ExpectRotationRewrapsSnapshotsAndShredsAreIndependent(
    KeyProvider& p, const std::string& tenant, const std::string& source,
    const std::string& snapshot, const std::string& second) {
  auto made = p.CreateVolumeKey(CopyRequest(snapshot, tenant, source,
                                            RecordKind::kSnapshot,
                                            CopyState::kReady));
  ASSERT_TRUE(made.ok()) << made.status();
  auto before = p.UnwrapVolumeKey(snapshot);
  ASSERT_TRUE(before.ok()) << before.status();
  auto rotated = p.RotateTenantKey(tenant);
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  auto after = p.GetVolume(snapshot);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_GT(after->key_version, made->key_version);
  EXPECT_NE(after->wrapped_dek, made->wrapped_dek);
  EXPECT_EQ(after->kind, RecordKind::kSnapshot);
  EXPECT_EQ(after->source_volume_id, source);
  EXPECT_EQ(after->copy, made->copy);
  auto dek = p.UnwrapVolumeKey(snapshot);
  ASSERT_TRUE(dek.ok()) << dek.status();
  EXPECT_TRUE(dek->Equals(*before));

  // Shred the snapshot: the source still unwraps to its own key.
  auto source_dek = p.UnwrapVolumeKey(source);
  ASSERT_TRUE(source_dek.ok()) << source_dek.status();
  ASSERT_TRUE(p.DestroyVolumeKey(snapshot).ok());
  EXPECT_EQ(p.GetVolume(snapshot).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(p.DestroyVolumeKey(snapshot).code(), absl::StatusCode::kNotFound);
  auto source_after = p.UnwrapVolumeKey(source);
  ASSERT_TRUE(source_after.ok()) << source_after.status();
  EXPECT_TRUE(source_after->Equals(*source_dek));

  // Shred the source: its snapshot still unwraps.
  ASSERT_TRUE(p.CreateVolumeKey(CopyRequest(second, tenant, source,
                                            RecordKind::kSnapshot,
                                            CopyState::kReady))
                  .ok());
  auto second_dek = p.UnwrapVolumeKey(second);
  ASSERT_TRUE(second_dek.ok()) << second_dek.status();
  ASSERT_TRUE(p.DestroyVolumeKey(source).ok());
  EXPECT_EQ(p.UnwrapVolumeKey(source).status().code(),
            absl::StatusCode::kNotFound);
  auto kept = p.UnwrapVolumeKey(second);
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_TRUE(kept->Equals(*second_dek));
  ASSERT_TRUE(p.DestroyVolumeKey(second).ok());
}

}  // namespace sealvol::kms
