// SslUniquePtr<T> owns one OpenSSL object and frees it with that type's free
// function: the one ownership style for OpenSSL handles in the tree (as in
// Tink's SslUniquePtr). A type without a SslDeleter specialisation below does
// not compile, so no handle can be freed with the wrong function.
// Thread-compatible, like the objects it owns.
#pragma once

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/param_build.h>
#include <openssl/params.h>
#include <openssl/x509.h>

#include <memory>

namespace sealvol::crypto {

template <typename T>
struct SslDeleter;

template <typename T>
using SslUniquePtr = std::unique_ptr<T, SslDeleter<T>>;

// One line per type: the free function that releases it.
template <auto Free>
struct SslFreeWith {
  template <typename T>
  void operator()(T* p) const {
    Free(p);
  }
};
template <> struct SslDeleter<BIGNUM> : SslFreeWith<BN_free> {};
template <> struct SslDeleter<BIO> : SslFreeWith<BIO_free> {};
template <> struct SslDeleter<ECDSA_SIG> : SslFreeWith<ECDSA_SIG_free> {};
template <> struct SslDeleter<EVP_CIPHER> : SslFreeWith<EVP_CIPHER_free> {};
template <>
struct SslDeleter<EVP_CIPHER_CTX> : SslFreeWith<EVP_CIPHER_CTX_free> {};
template <> struct SslDeleter<EVP_KDF> : SslFreeWith<EVP_KDF_free> {};
template <> struct SslDeleter<EVP_KDF_CTX> : SslFreeWith<EVP_KDF_CTX_free> {};
template <> struct SslDeleter<EVP_MD_CTX> : SslFreeWith<EVP_MD_CTX_free> {};
template <> struct SslDeleter<EVP_PKEY> : SslFreeWith<EVP_PKEY_free> {};
template <> struct SslDeleter<EVP_PKEY_CTX> : SslFreeWith<EVP_PKEY_CTX_free> {};
template <> struct SslDeleter<OSSL_PARAM> : SslFreeWith<OSSL_PARAM_free> {};
template <>
struct SslDeleter<OSSL_PARAM_BLD> : SslFreeWith<OSSL_PARAM_BLD_free> {};
template <> struct SslDeleter<X509> : SslFreeWith<X509_free> {};
template <>
struct SslDeleter<X509_EXTENSION> : SslFreeWith<X509_EXTENSION_free> {};

}  // namespace sealvol::crypto
