#include "crypto/sector_codec.h"

#include <vector>

#include "gtest/gtest.h"
#include "tests/crypto/test_hex.h"

namespace sealvol::crypto {
namespace {

SecretBytes Key(uint8_t fill) {
  auto key = SecretBytes::Allocate(kGcmKeySize);
  EXPECT_TRUE(key.ok());
  std::fill(key->data(), key->data() + key->size(), fill);
  return std::move(key).value();
}

class SectorCodecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto codec = SectorCodec::Create(Key(0x42));
    ASSERT_TRUE(codec.ok()) << codec.status();
    codec_ = std::move(codec).value();
    plain_.resize(4096);
    for (size_t i = 0; i < plain_.size(); ++i) plain_[i] = uint8_t(i * 7 + 1);
    cipher_.resize(4096);
    ASSERT_TRUE(codec_->Seal(nonce_, aad_, plain_, cipher_, tag_).ok());
  }

  std::unique_ptr<SectorCodec> codec_;
  GcmNonce nonce_ = CounterNonce(0, 12345);
  std::vector<uint8_t> aad_ = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<uint8_t> plain_, cipher_;
  GcmTag tag_{};
};

// AES-256-GCM test case 14 of the GCM specification (McGrew & Viega):
// K = 0^256, IV = 0^96, P = 0^128.
TEST(SectorCodecVectorTest, MatchesPublishedGcmVector) {
  auto codec = SectorCodec::Create(Key(0));
  ASSERT_TRUE(codec.ok());
  GcmNonce nonce{};
  std::vector<uint8_t> plain(16, 0), out(16);
  GcmTag tag;
  ASSERT_TRUE((*codec)->Seal(nonce, {}, plain, out, tag).ok());
  EXPECT_EQ(out, FromHex("cea7403d4d606b6e074ec5d3baf39d18"));
  std::vector<uint8_t> want_tag = FromHex("d0d1c8a799996bf0265b98b5d48ab919");
  EXPECT_TRUE(std::equal(tag.begin(), tag.end(), want_tag.begin()));
}

TEST_F(SectorCodecTest, RoundTripsA4KiBBlock) {
  EXPECT_NE(cipher_, plain_);
  std::vector<uint8_t> back(4096);
  ASSERT_TRUE(codec_->Open(nonce_, aad_, cipher_, tag_, back).ok());
  EXPECT_EQ(back, plain_);
}

TEST_F(SectorCodecTest, SealsInPlace) {
  std::vector<uint8_t> buf = plain_;
  GcmTag tag;
  ASSERT_TRUE(codec_->Seal(nonce_, aad_, buf, buf, tag).ok());
  EXPECT_EQ(buf, cipher_);
  ASSERT_TRUE(codec_->Open(nonce_, aad_, buf, tag, buf).ok());
  EXPECT_EQ(buf, plain_);
}

TEST_F(SectorCodecTest, OpenRejectsFlippedCiphertextBitAndZeroesOutput) {
  cipher_[1000] ^= 0x10;
  std::vector<uint8_t> back(4096, 0xAA);
  absl::Status s = codec_->Open(nonce_, aad_, cipher_, tag_, back);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(back, std::vector<uint8_t>(4096, 0));
}

TEST_F(SectorCodecTest, OpenRejectsFlippedTagBit) {
  tag_[15] ^= 1;
  std::vector<uint8_t> back(4096);
  EXPECT_EQ(codec_->Open(nonce_, aad_, cipher_, tag_, back).code(),
            absl::StatusCode::kDataLoss);
}

TEST_F(SectorCodecTest, OpenRejectsOtherNonce) {
  std::vector<uint8_t> back(4096);
  EXPECT_EQ(codec_->Open(CounterNonce(0, 12346), aad_, cipher_, tag_, back)
                .code(),
            absl::StatusCode::kDataLoss);
}

TEST_F(SectorCodecTest, OpenRejectsOtherAdditionalData) {
  std::vector<uint8_t> back(4096);
  std::vector<uint8_t> other = aad_;
  other[0] ^= 1;
  EXPECT_EQ(codec_->Open(nonce_, other, cipher_, tag_, back).code(),
            absl::StatusCode::kDataLoss);
}

TEST_F(SectorCodecTest, OpenRejectsOtherKey) {
  auto other = SectorCodec::Create(Key(0x43));
  ASSERT_TRUE(other.ok());
  std::vector<uint8_t> back(4096);
  EXPECT_EQ((*other)->Open(nonce_, aad_, cipher_, tag_, back).code(),
            absl::StatusCode::kDataLoss);
}

TEST_F(SectorCodecTest, ContextIsReusableAfterAFailedOpen) {
  std::vector<uint8_t> back(4096);
  GcmTag bad = tag_;
  bad[0] ^= 1;
  EXPECT_FALSE(codec_->Open(nonce_, aad_, cipher_, bad, back).ok());
  ASSERT_TRUE(codec_->Open(nonce_, aad_, cipher_, tag_, back).ok());
  EXPECT_EQ(back, plain_);
}

TEST(SectorCodecCreateTest, RejectsShortKey) {
  auto key = SecretBytes::Allocate(16);
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(SectorCodec::Create(*key).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CounterNonceTest, EncodesDomainAndCounterBigEndian) {
  GcmNonce n = CounterNonce(0x01020304, 0x0506070809101112ULL);
  GcmNonce want = {1, 2, 3, 4, 5, 6, 7, 8, 9, 0x10, 0x11, 0x12};
  EXPECT_EQ(n, want);
}

}  // namespace
}  // namespace sealvol::crypto
