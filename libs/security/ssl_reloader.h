#ifndef SWITCHBOARD_LIBS_SECURITY_SSL_RELOADER_H_
#define SWITCHBOARD_LIBS_SECURITY_SSL_RELOADER_H_

#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/security/tls.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
typedef struct x509_st X509;
typedef struct evp_pkey_st EVP_PKEY;
typedef struct x509_store_st X509_STORE;
struct stack_st_X509;

namespace switchboard {

// Serves the certificate of `config` on an OpenSSL server context (the admin
// HTTP port's) and reads the files again when a handshake comes at least
// `reload_interval` after the last read: a certificate swapped on disk is
// served to the next connection; established ones keep theirs. While the
// files on disk do not parse, or the key is not the certificate's (half of a
// non-atomic swap), the previous pair keeps serving. With a client CA,
// clients must present a certificate it signed (mTLS).
class SslReloader {
 public:
  explicit SslReloader(const ServerTlsConfig& config);
  ~SslReloader();
  SslReloader(const SslReloader&) = delete;
  SslReloader& operator=(const SslReloader&) = delete;

  // Reads the files; INVALID_ARGUMENT naming the flag if they are unusable.
  absl::Status Load();
  // Installs the certificate callback and client verification on `ctx`.
  // `ctx` must not outlive this.
  void Configure(SSL_CTX* ctx);

 private:
  static int OnCertificate(SSL* ssl, void* self);
  // Reads the files if the interval has passed; keeps the old pair on error.
  absl::Status MaybeReload(bool force) ABSL_LOCKS_EXCLUDED(mu_);

  const ServerTlsConfig config_;
  absl::Mutex mu_;
  absl::Time next_read_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::string cert_pem_ ABSL_GUARDED_BY(mu_);
  std::string key_pem_ ABSL_GUARDED_BY(mu_);
  std::string ca_pem_ ABSL_GUARDED_BY(mu_);
  X509* leaf_ ABSL_GUARDED_BY(mu_) = nullptr;
  stack_st_X509* chain_ ABSL_GUARDED_BY(mu_) = nullptr;
  EVP_PKEY* key_ ABSL_GUARDED_BY(mu_) = nullptr;
  X509_STORE* client_ca_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_SECURITY_SSL_RELOADER_H_
