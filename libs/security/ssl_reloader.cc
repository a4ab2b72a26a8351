#include "libs/security/ssl_reloader.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <tuple>

#include "absl/strings/str_cat.h"
#include "libs/security/file_util.h"

namespace switchboard {
namespace {

// Every certificate in a PEM text, in order.
stack_st_X509* ParseCerts(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  STACK_OF(X509)* certs = sk_X509_new_null();
  while (X509* x = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) sk_X509_push(certs, x);
  ERR_clear_error();
  BIO_free(bio);
  if (sk_X509_num(certs) == 0) {
    sk_X509_free(certs);
    return nullptr;
  }
  return certs;
}

}  // namespace

SslReloader::SslReloader(const ServerTlsConfig& config) : config_(config) {}

SslReloader::~SslReloader() {
  absl::MutexLock lock(&mu_);
  X509_free(leaf_);
  sk_X509_pop_free(chain_, X509_free);
  EVP_PKEY_free(key_);
  X509_STORE_free(client_ca_);
}

absl::Status SslReloader::Load() { return MaybeReload(/*force=*/true); }

absl::Status SslReloader::MaybeReload(bool force) {
  absl::MutexLock lock(&mu_);
  absl::Time now = absl::Now();
  if (!force && now < next_read_) return absl::OkStatus();
  next_read_ = now + config_.reload_interval;
  std::string cert_pem, key_pem, ca_pem;
  for (auto [file, flag, out] : {std::tuple{&config_.cert_file, "tls_cert", &cert_pem},
                                 std::tuple{&config_.key_file, "tls_key", &key_pem},
                                 std::tuple{&config_.client_ca_file, "tls_client_ca", &ca_pem}}) {
    if (file->empty()) continue;  // no client CA: plain TLS
    absl::StatusOr<std::string> text = ReadFlagFile(*file, flag);
    if (!text.ok()) return text.status();
    *out = *std::move(text);
  }
  if (cert_pem == cert_pem_ && key_pem == key_pem_ && ca_pem == ca_pem_) return absl::OkStatus();
  if (!config_.client_ca_file.empty() && ca_pem.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tls_client_ca: '", config_.client_ca_file, "' is empty"));
  }

  STACK_OF(X509)* certs = ParseCerts(cert_pem);
  if (certs == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("tls_cert: '", config_.cert_file, "' holds no PEM certificate"));
  }
  BIO* bio = BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  X509* leaf = sk_X509_shift(certs);
  if (key == nullptr || X509_check_private_key(leaf, key) != 1) {
    ERR_clear_error();
    EVP_PKEY_free(key);
    X509_free(leaf);
    sk_X509_pop_free(certs, X509_free);
    return absl::InvalidArgumentError(
        absl::StrCat("tls_key: '", config_.key_file, "' is not the key of --tls_cert"));
  }
  X509_STORE* store = nullptr;
  if (!ca_pem.empty()) {
    STACK_OF(X509)* cas = ParseCerts(ca_pem);
    if (cas == nullptr) {
      EVP_PKEY_free(key);
      X509_free(leaf);
      sk_X509_pop_free(certs, X509_free);
      return absl::InvalidArgumentError(
          absl::StrCat("tls_client_ca: '", config_.client_ca_file, "' holds no PEM certificate"));
    }
    store = X509_STORE_new();
    for (int i = 0; i < sk_X509_num(cas); ++i) X509_STORE_add_cert(store, sk_X509_value(cas, i));
    sk_X509_pop_free(cas, X509_free);
  }
  X509_free(leaf_);
  sk_X509_pop_free(chain_, X509_free);
  EVP_PKEY_free(key_);
  X509_STORE_free(client_ca_);
  leaf_ = leaf;
  chain_ = certs;
  key_ = key;
  client_ca_ = store;
  cert_pem_ = std::move(cert_pem);
  key_pem_ = std::move(key_pem);
  ca_pem_ = std::move(ca_pem);
  return absl::OkStatus();
}

void SslReloader::Configure(SSL_CTX* ctx) {
  SSL_CTX_set_cert_cb(ctx, &SslReloader::OnCertificate, this);
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  // No session resumption: every connection is verified against the current
  // client CA (a resumed session would skip that after a CA swap), and
  // OpenSSL refuses to resume a verified session without a session id
  // context anyway, failing clients that cache sessions.
  static constexpr unsigned char kContext[] = "switchboard-admin";
  SSL_CTX_set_session_id_context(ctx, kContext, sizeof(kContext) - 1);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  SSL_CTX_set_num_tickets(ctx, 0);
  if (!config_.client_ca_file.empty()) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
}

int SslReloader::OnCertificate(SSL* ssl, void* arg) {
  auto* self = static_cast<SslReloader*>(arg);
  // A failed re-read keeps serving the pair that worked; the next
  // handshake after the interval tries again.
  (void)self->MaybeReload(/*force=*/false);
  absl::MutexLock lock(&self->mu_);
  if (self->leaf_ == nullptr) return 0;
  if (SSL_use_cert_and_key(ssl, self->leaf_, self->key_, self->chain_, 1) != 1) return 0;
  if (self->client_ca_ != nullptr && SSL_set1_verify_cert_store(ssl, self->client_ca_) != 1) {
    return 0;
  }
  return 1;
}

}  // namespace switchboard
