#include "crypto/session_keys.h"

#include <set>
#include <vector>

#include "crypto/key_schedule.h"
#include "gtest/gtest.h"

namespace sealvol::crypto {
namespace {

SecretBytes Root(uint8_t fill) {
  auto root = SecretBytes::Allocate(32);
  EXPECT_TRUE(root.ok());
  std::fill(root->data(), root->data() + root->size(), fill);
  return std::move(root).value();
}

std::vector<uint8_t> Bytes(std::span<const uint8_t> s) { return {s.begin(), s.end()}; }

TEST(SessionKeysTest, SessionIdsAreFreshAndNeverZero) {
  std::set<SessionId> seen;
  for (int i = 0; i < 10000; ++i) {
    auto id = NewSessionId();
    ASSERT_TRUE(id.ok());
    EXPECT_NE(*id, SessionId{});
    EXPECT_TRUE(seen.insert(*id).second) << "a session id repeated";
  }
}

TEST(SessionKeysTest, EachSessionAndRootGivesItsOwnKey) {
  SecretBytes r1 = Root(1), r2 = Root(2);
  SessionId a{1}, b{2};
  auto ka = DeriveSessionKey(r1, a);
  auto kb = DeriveSessionKey(r1, b);
  auto ka2 = DeriveSessionKey(r2, a);
  auto ka_again = DeriveSessionKey(r1, a);
  ASSERT_TRUE(ka.ok() && kb.ok() && ka2.ok() && ka_again.ok());
  EXPECT_EQ(ka->size(), 32u);
  EXPECT_NE(Bytes(ka->span()), Bytes(kb->span()));
  EXPECT_NE(Bytes(ka->span()), Bytes(ka2->span()));
  EXPECT_EQ(Bytes(ka->span()), Bytes(ka_again->span()));
  EXPECT_NE(Bytes(ka->span()), Bytes(r1.span()));
}

TEST(SessionKeysTest, CacheReturnsDerivedKeysAndDerivesEachOnce) {
  SecretBytes root = Root(3);
  auto cache = SessionKeyCache::Create(root, 4);
  ASSERT_TRUE(cache.ok());
  std::vector<SessionId> ids;
  for (uint8_t i = 1; i <= 4; ++i) ids.push_back(SessionId{i});
  for (int round = 0; round < 3; ++round) {
    for (const SessionId& id : ids) {
      auto key = cache->Key(id);
      ASSERT_TRUE(key.ok());
      auto want = DeriveSessionKey(root, id);
      ASSERT_TRUE(want.ok());
      EXPECT_EQ(Bytes(*key), Bytes(want->span()));
    }
  }
  EXPECT_EQ(cache->derivations(), 4u);
  // A fifth session evicts the least recently used one.
  ASSERT_TRUE(cache->Key(SessionId{9}).ok());
  ASSERT_TRUE(cache->Key(ids[0]).ok());
  EXPECT_EQ(cache->derivations(), 6u);
  EXPECT_FALSE(SessionKeyCache::Create(root, 0).ok());
}

}  // namespace
}  // namespace sealvol::crypto
