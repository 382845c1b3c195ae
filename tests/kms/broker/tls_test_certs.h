// Generates a throw-away CA and leaf certificates (EC P-256) for TLS tests.
#pragma once

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <fstream>
#include <memory>
#include <string>

namespace sealvol::broker::testing {

struct TestCert {
  std::string cert_pem;
  std::string key_pem;
};

namespace internal {

inline std::string PemOf(X509* cert) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, cert);
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<size_t>(len));
  BIO_free(bio);
  return out;
}

inline std::string PemOf(EVP_PKEY* key) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<size_t>(len));
  BIO_free(bio);
  return out;
}

inline void AddExt(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

}  // namespace internal

// A CA that signs leaf certificates; keeps its key in memory.
class TestCa {
 public:
  TestCa() {
    key_ = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
    cert_ = X509_new();
    Fill(cert_, key_, "sealvol test CA", 1);
    X509_set_issuer_name(cert_, X509_get_subject_name(cert_));
    internal::AddExt(cert_, cert_, NID_basic_constraints, "critical,CA:TRUE");
    internal::AddExt(cert_, cert_, NID_key_usage, "critical,keyCertSign");
    X509_sign(cert_, key_, EVP_sha256());
  }
  ~TestCa() {
    X509_free(cert_);
    EVP_PKEY_free(key_);
  }
  std::string cert_pem() const { return internal::PemOf(cert_); }

  // A leaf for `cn` with subjectAltName `san` (e.g. "DNS:localhost").
  TestCert Issue(const char* cn, const char* san, bool server, long serial) {
    EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
    X509* cert = X509_new();
    Fill(cert, key, cn, serial);
    X509_set_issuer_name(cert, X509_get_subject_name(cert_));
    internal::AddExt(cert, cert_, NID_subject_alt_name, san);
    internal::AddExt(cert, cert_, NID_ext_key_usage,
                     server ? "serverAuth" : "clientAuth");
    X509_sign(cert, key_, EVP_sha256());
    TestCert out{internal::PemOf(cert), internal::PemOf(key)};
    X509_free(cert);
    EVP_PKEY_free(key);
    return out;
  }

 private:
  static void Fill(X509* cert, EVP_PKEY* key, const char* cn, long serial) {
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), serial);
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_set_pubkey(cert, key);
    X509_NAME* name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>(cn), -1,
                               -1, 0);
  }

  EVP_PKEY* key_ = nullptr;
  X509* cert_ = nullptr;
};

inline void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream(path, std::ios::trunc) << content;
}

}  // namespace sealvol::broker::testing
