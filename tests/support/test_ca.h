// TestCa is a throw-away certificate authority for TLS tests: an EC P-256
// CA, valid from an hour ago to an hour from now, that issues server and
// client certificates in memory. Test-only; thread-compatible.
#pragma once

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <string>
#include <string_view>

#include "base/check.h"
#include "crypto/ssl_unique_ptr.h"
#include "tests/support/temp_dir.h"

namespace sealvol::testing {

// PEM text of a certificate and of its private key.
struct TestCert {
  std::string cert_pem;
  std::string key_pem;
};

class TestCa {
 public:
  explicit TestCa(std::string_view name = "sealvol test CA")
      : key_(NewKey()), cert_(X509_new()) {
    CHECK(cert_ != nullptr);
    Fill(cert_.get(), key_.get(), name, 1);
    X509_set_issuer_name(cert_.get(), X509_get_subject_name(cert_.get()));
    AddExtension(cert_.get(), NID_basic_constraints, "critical,CA:TRUE");
    AddExtension(cert_.get(), NID_key_usage, "critical,keyCertSign");
    CHECK(X509_sign(cert_.get(), key_.get(), EVP_sha256()) > 0);
  }

  std::string cert_pem() const { return Pem(cert_.get()); }

  // A certificate for `cn` with subjectAltName `san` (e.g.
  // "DNS:localhost,IP:127.0.0.1"), for TLS servers or for TLS clients.
  TestCert Issue(std::string_view cn, const char* san, bool server,
                 long serial) const {
    crypto::SslUniquePtr<EVP_PKEY> key = NewKey();
    crypto::SslUniquePtr<X509> cert(X509_new());
    CHECK(cert != nullptr);
    Fill(cert.get(), key.get(), cn, serial);
    X509_set_issuer_name(cert.get(), X509_get_subject_name(cert_.get()));
    AddExtension(cert.get(), NID_subject_alt_name, san);
    AddExtension(cert.get(), NID_ext_key_usage,
                 server ? "serverAuth" : "clientAuth");
    CHECK(X509_sign(cert.get(), key_.get(), EVP_sha256()) > 0);
    return TestCert{Pem(cert.get()), Pem(key.get())};
  }

 private:
  static crypto::SslUniquePtr<EVP_PKEY> NewKey() {
    crypto::SslUniquePtr<EVP_PKEY> key(
        EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    CHECK(key != nullptr);
    return key;
  }

  static void Fill(X509* cert, EVP_PKEY* key, std::string_view cn,
                   long serial) {
    const std::string name(cn);
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), serial);
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_set_pubkey(cert, key);
    X509_NAME_add_entry_by_txt(
        X509_get_subject_name(cert), "CN", MBSTRING_ASC,
        reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1, 0);
  }

  // An extension of `cert` as this CA issues it.
  void AddExtension(X509* cert, int nid, const char* value) const {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, cert_.get(), cert, nullptr, nullptr, 0);
    crypto::SslUniquePtr<X509_EXTENSION> ext(
        X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
    CHECK(ext != nullptr);
    CHECK(X509_add_ext(cert, ext.get(), -1) == 1);
  }

  template <typename T, typename Write>
  static std::string PemOf(T* object, Write write) {
    crypto::SslUniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
    CHECK(bio != nullptr && write(bio.get(), object) == 1);
    char* data = nullptr;
    const long len = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<size_t>(len));
  }
  static std::string Pem(X509* cert) {
    return PemOf(cert, [](BIO* b, X509* c) { return PEM_write_bio_X509(b, c); });
  }
  static std::string Pem(EVP_PKEY* key) {
    return PemOf(key, [](BIO* b, EVP_PKEY* k) {
      return PEM_write_bio_PrivateKey(b, k, nullptr, nullptr, 0, nullptr,
                                      nullptr);
    });
  }

  crypto::SslUniquePtr<EVP_PKEY> key_;
  crypto::SslUniquePtr<X509> cert_;
};

// Files for a TLS server on 127.0.0.1, written into `dir`: ca.pem (a fresh
// TestCa), srv.pem and srv.key (the server's certificate for IP 127.0.0.1
// and its key, from that CA) and other.pem (another CA, which signed
// nothing the server holds).
inline void WriteLocalServerTls(const std::string& dir) {
  const TestCa ca("sealvol-test-ca");
  const TestCert server = ca.Issue("127.0.0.1", "IP:127.0.0.1",
                                   /*server=*/true, /*serial=*/2);
  WriteFile(dir + "/ca.pem", ca.cert_pem());
  WriteFile(dir + "/srv.pem", server.cert_pem);
  WriteFile(dir + "/srv.key", server.key_pem);
  WriteFile(dir + "/other.pem", TestCa("other-ca").cert_pem());
}

}  // namespace sealvol::testing
