#include "crypto/key_schedule.h"

#include <vector>

#include "gtest/gtest.h"
#include "tests/crypto/test_hex.h"

namespace sealvol::crypto {
namespace {

SecretBytes Dek(uint8_t fill) {
  auto dek = SecretBytes::Allocate(kDekSize);
  EXPECT_TRUE(dek.ok());
  std::fill(dek->data(), dek->data() + dek->size(), fill);
  return std::move(dek).value();
}

std::vector<uint8_t> Bytes(const SecretBytes& s) {
  return {s.data(), s.data() + s.size()};
}

// RFC 5869, test case 1.
TEST(KeyScheduleTest, HkdfMatchesRfc5869Vector) {
  std::vector<uint8_t> ikm(22, 0x0b);
  auto secret = SecretBytes::CopyFrom(ikm);
  ASSERT_TRUE(secret.ok());
  std::vector<uint8_t> salt = FromHex("000102030405060708090a0b0c");
  std::vector<uint8_t> info = FromHex("f0f1f2f3f4f5f6f7f8f9");
  auto okm = HkdfSha256(
      *secret, salt,
      std::string_view(reinterpret_cast<const char*>(info.data()), info.size()),
      42);
  ASSERT_TRUE(okm.ok()) << okm.status();
  EXPECT_EQ(Bytes(*okm),
            FromHex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ec"
                    "c4c5bf34007208d5b887185865"));
}

const std::vector<uint8_t> kFormat(16, 0x42);

TEST(KeyScheduleTest, SubkeysDifferFromEachOtherAndFromTheDek) {
  std::vector<uint8_t> id(16, 7);
  SecretBytes dek = Dek(1);
  auto keys = DeriveVolumeKeys(dek, id, kFormat);
  ASSERT_TRUE(keys.ok());
  EXPECT_NE(Bytes(keys->session_root), Bytes(dek));
  EXPECT_NE(Bytes(keys->session_root), Bytes(keys->metadata_mac_key));
  EXPECT_NE(Bytes(keys->session_root), Bytes(keys->header_mac_key));
  EXPECT_NE(Bytes(keys->metadata_mac_key), Bytes(keys->header_mac_key));
}

TEST(KeyScheduleTest, KeyCheckValueDetectsWrongDek) {
  std::vector<uint8_t> id(16, 7);
  auto a = DeriveVolumeKeys(Dek(1), id, kFormat);
  auto a2 = DeriveVolumeKeys(Dek(1), id, kFormat);
  auto b = DeriveVolumeKeys(Dek(2), id, kFormat);
  ASSERT_TRUE(a.ok() && a2.ok() && b.ok());
  EXPECT_EQ(a->key_check, a2->key_check);
  EXPECT_NE(a->key_check, b->key_check);
}

TEST(KeyScheduleTest, VolumeIdSaltSeparatesVolumes) {
  std::vector<uint8_t> id1(16, 1), id2(16, 2);
  SecretBytes dek = Dek(9);
  auto a = DeriveVolumeKeys(dek, id1, kFormat);
  auto b = DeriveVolumeKeys(dek, id2, kFormat);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(Bytes(a->session_root), Bytes(b->session_root));
}

// A volume re-formatted under the same DEK and volume id (image lost and
// re-created) draws a new format id: every subkey changes.
TEST(KeyScheduleTest, FormatIdSaltSeparatesFormatsOfOneVolume) {
  std::vector<uint8_t> id(16, 1), f1(16, 1), f2(16, 2);
  SecretBytes dek = Dek(9);
  auto a = DeriveVolumeKeys(dek, id, f1);
  auto b = DeriveVolumeKeys(dek, id, f2);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(Bytes(a->session_root), Bytes(b->session_root));
  EXPECT_NE(Bytes(a->header_mac_key), Bytes(b->header_mac_key));
  EXPECT_NE(Bytes(a->metadata_mac_key), Bytes(b->metadata_mac_key));
  EXPECT_NE(a->key_check, b->key_check);
}

TEST(KeyScheduleTest, RejectsShortDek) {
  auto dek = SecretBytes::Allocate(16);
  ASSERT_TRUE(dek.ok());
  std::vector<uint8_t> id(16, 0);
  EXPECT_EQ(DeriveVolumeKeys(*dek, id, kFormat).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// RFC 4231, test case 2.
TEST(KeyScheduleTest, HmacMatchesRfc4231Vector) {
  std::string key = "Jefe";
  auto secret = SecretBytes::CopyFrom(
      {reinterpret_cast<const uint8_t*>(key.data()), key.size()});
  ASSERT_TRUE(secret.ok());
  std::string data = "what do ya want for nothing?";
  auto mac = HmacSha256(
      *secret, {reinterpret_cast<const uint8_t*>(data.data()), data.size()});
  ASSERT_TRUE(mac.ok());
  std::vector<uint8_t> want = FromHex(
      "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_TRUE(ConstantTimeEquals(*mac, want));
}

}  // namespace
}  // namespace sealvol::crypto
