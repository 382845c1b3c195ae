// SectorCodec seal/open beside raw OpenSSL EVP AES-256-GCM on the same
// buffers, in the same binary. Run: build/bench/codec_bench
#include <openssl/evp.h>

#include <cstdint>
#include <vector>

#include "benchmark/benchmark.h"
#include "crypto/sector_codec.h"
#include "io/tag_table.h"

namespace sealvol {
namespace {

crypto::SecretBytes BenchKey() {
  auto k = crypto::SecretBytes::Allocate(32);
  for (size_t i = 0; i < 32; ++i) k->data()[i] = static_cast<uint8_t>(i * 3 + 1);
  return std::move(k).value();
}

void BM_SectorCodecSeal(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  auto key = BenchKey();
  auto codec = crypto::SectorCodec::Create(key).value();
  std::vector<uint8_t> in(n, 0x5A), out(n);
  uint8_t vid[16] = {1};
  uint8_t aad[io::kAadSize];
  crypto::GcmTag tag;
  io::TagSlot slot;
  slot.session = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  uint64_t counter = 1;
  for (auto _ : state) {
    slot.counter = counter;
    io::BuildAad(vid, counter, slot, aad);
    if (!codec->Seal(crypto::CounterNonce(0, counter), aad, in, out, tag).ok()) {
      state.SkipWithError("seal failed");
      break;
    }
    ++counter;
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n));
}

void BM_SectorCodecOpen(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  auto key = BenchKey();
  auto codec = crypto::SectorCodec::Create(key).value();
  std::vector<uint8_t> plain(n, 0x5A), cipher(n), out(n);
  uint8_t vid[16] = {1};
  uint8_t aad[io::kAadSize];
  io::TagSlot slot;
  slot.session = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  slot.counter = 7;
  io::BuildAad(vid, 7, slot, aad);
  crypto::GcmTag tag;
  const auto nonce = crypto::CounterNonce(0, 7);
  (void)codec->Seal(nonce, aad, plain, cipher, tag);
  for (auto _ : state) {
    if (!codec->Open(nonce, aad, cipher, tag, out).ok()) {
      state.SkipWithError("open failed");
      break;
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n));
}

// The baseline: the same cipher calls written straight against EVP.
void BM_RawEvpGcmSeal(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  auto key = BenchKey();
  EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  EVP_EncryptInit_ex2(ctx, cipher, key.data(), nullptr, nullptr);
  std::vector<uint8_t> in(n, 0x5A), out(n);
  uint8_t aad[32] = {1};
  uint8_t tag[16];
  uint8_t iv[12] = {0};
  uint64_t counter = 1;
  for (auto _ : state) {
    for (int i = 0; i < 8; ++i) iv[4 + i] = static_cast<uint8_t>(counter >> (56 - 8 * i));
    int len = 0;
    EVP_EncryptInit_ex2(ctx, nullptr, nullptr, iv, nullptr);
    EVP_EncryptUpdate(ctx, nullptr, &len, aad, sizeof(aad));
    EVP_EncryptUpdate(ctx, out.data(), &len, in.data(), static_cast<int>(n));
    EVP_EncryptFinal_ex(ctx, out.data() + len, &len);
    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag);
    ++counter;
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n));
  EVP_CIPHER_CTX_free(ctx);
  EVP_CIPHER_free(cipher);
}

void BM_RawEvpGcmOpen(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  auto key = BenchKey();
  EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  EVP_CIPHER_CTX* enc = EVP_CIPHER_CTX_new();
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  EVP_EncryptInit_ex2(enc, cipher, key.data(), nullptr, nullptr);
  EVP_DecryptInit_ex2(ctx, cipher, key.data(), nullptr, nullptr);
  std::vector<uint8_t> plain(n, 0x5A), ct(n), out(n);
  uint8_t aad[32] = {1};
  uint8_t tag[16];
  uint8_t iv[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7};
  int len = 0;
  EVP_EncryptInit_ex2(enc, nullptr, nullptr, iv, nullptr);
  EVP_EncryptUpdate(enc, nullptr, &len, aad, sizeof(aad));
  EVP_EncryptUpdate(enc, ct.data(), &len, plain.data(), static_cast<int>(n));
  EVP_EncryptFinal_ex(enc, ct.data() + len, &len);
  EVP_CIPHER_CTX_ctrl(enc, EVP_CTRL_GCM_GET_TAG, 16, tag);
  for (auto _ : state) {
    EVP_DecryptInit_ex2(ctx, nullptr, nullptr, iv, nullptr);
    EVP_DecryptUpdate(ctx, nullptr, &len, aad, sizeof(aad));
    EVP_DecryptUpdate(ctx, out.data(), &len, ct.data(), static_cast<int>(n));
    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, tag);
    if (EVP_DecryptFinal_ex(ctx, out.data() + len, &len) != 1) {
      state.SkipWithError("raw open failed");
      break;
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n));
  EVP_CIPHER_CTX_free(enc);
  EVP_CIPHER_CTX_free(ctx);
  EVP_CIPHER_free(cipher);
}

// Interleaved registration: each codec figure runs right beside its
// baseline, so load changes on a shared machine hit both alike.
BENCHMARK(BM_RawEvpGcmSeal)->Arg(4096)->Arg(65536);
BENCHMARK(BM_SectorCodecSeal)->Arg(4096)->Arg(65536);
BENCHMARK(BM_RawEvpGcmOpen)->Arg(4096)->Arg(65536);
BENCHMARK(BM_SectorCodecOpen)->Arg(4096)->Arg(65536);

}  // namespace
}  // namespace sealvol

BENCHMARK_MAIN();
