#include "libs/security/tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "libs/security/file_util.h"

namespace switchboard {
namespace {

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Bio = std::unique_ptr<BIO, BioDeleter>;
using Cert = std::unique_ptr<X509, X509Deleter>;
using Key = std::unique_ptr<EVP_PKEY, KeyDeleter>;

Bio MemBio(const std::string& pem) {
  return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

absl::StatusOr<Cert> FirstCert(const std::string& path, const std::string& flag) {
  absl::StatusOr<std::string> pem = ReadFlagFile(path, flag);
  if (!pem.ok()) return pem.status();
  Bio bio = MemBio(*pem);
  Cert cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (cert == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": '", path, "' holds no PEM certificate"));
  }
  return cert;
}

absl::StatusOr<Key> ReadKey(const std::string& path, const std::string& flag) {
  absl::StatusOr<std::string> pem = ReadFlagFile(path, flag);
  if (!pem.ok()) return pem.status();
  Bio bio = MemBio(*pem);
  Key key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": '", path, "' holds no unencrypted PEM private key"));
  }
  return key;
}

absl::Status CheckPair(const std::string& cert_file, const std::string& key_file,
                       const std::string& prefix) {
  std::string cert_flag = prefix + "cert", key_flag = prefix + "key";
  if (cert_file.empty() != key_file.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(cert_file.empty() ? cert_flag : key_flag,
                                                   ": required with --",
                                                   cert_file.empty() ? key_flag : cert_flag));
  }
  if (cert_file.empty()) return absl::OkStatus();
  absl::StatusOr<Cert> cert = FirstCert(cert_file, cert_flag);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<Key> key = ReadKey(key_file, key_flag);
  if (!key.ok()) return key.status();
  int match = X509_check_private_key(cert->get(), key->get());
  ERR_clear_error();
  if (match != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        key_flag, ": '", key_file, "' is not the key of --", cert_flag, " '", cert_file, "'"));
  }
  return absl::OkStatus();
}

unsigned int RefreshSeconds(absl::Duration d) {
  return static_cast<unsigned int>(std::max<int64_t>(1, absl::ToInt64Seconds(d)));
}

}  // namespace

absl::Status CheckServerTls(const ServerTlsConfig& config, const std::string& prefix) {
  if (!config.client_ca_file.empty() && config.cert_file.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "client_ca: mTLS needs --", prefix, "cert and --", prefix, "key"));
  }
  if (absl::Status s = CheckPair(config.cert_file, config.key_file, prefix); !s.ok()) return s;
  if (!config.client_ca_file.empty()) {
    absl::StatusOr<Cert> ca = FirstCert(config.client_ca_file, prefix + "client_ca");
    if (!ca.ok()) return ca.status();
  }
  return absl::OkStatus();
}

absl::Status CheckClientTls(const ClientTlsConfig& config, const std::string& prefix) {
  if (!config.enabled) return absl::OkStatus();
  if (absl::Status s = CheckPair(config.cert_file, config.key_file, prefix); !s.ok()) return s;
  if (!config.ca_file.empty()) {
    absl::StatusOr<Cert> ca = FirstCert(config.ca_file, prefix + "ca");
    if (!ca.ok()) return ca.status();
  }
  return absl::OkStatus();
}

std::shared_ptr<grpc::ServerCredentials> GrpcServerCredentials(const ServerTlsConfig& config) {
  if (!config.enabled()) return grpc::InsecureServerCredentials();
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      config.key_file, config.cert_file, config.client_ca_file,
      RefreshSeconds(config.reload_interval));
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (config.client_ca_file.empty()) {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

ClientTlsConfig ClientTlsFrom(std::string ca_file, std::string cert_file, std::string key_file,
                              std::string server_name) {
  ClientTlsConfig c;
  c.enabled = !ca_file.empty() || !cert_file.empty() || !key_file.empty() || !server_name.empty();
  c.ca_file = std::move(ca_file);
  c.cert_file = std::move(cert_file);
  c.key_file = std::move(key_file);
  c.server_name = std::move(server_name);
  return c;
}

std::shared_ptr<grpc::ChannelCredentials> GrpcChannelCredentials(const ClientTlsConfig& config) {
  if (!config.enabled) return grpc::InsecureChannelCredentials();
  grpc::experimental::TlsChannelCredentialsOptions options;
  if (!config.ca_file.empty() || !config.cert_file.empty()) {
    options.set_certificate_provider(
        std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
            config.key_file, config.cert_file, config.ca_file,
            RefreshSeconds(config.reload_interval)));
  }
  // Without a CA file the system's roots check the server.
  if (!config.ca_file.empty()) options.watch_root_certs();
  if (!config.cert_file.empty()) options.watch_identity_key_cert_pairs();
  return grpc::experimental::TlsCredentials(options);
}

void AddTlsChannelArgs(const ClientTlsConfig& config, grpc::ChannelArguments* args) {
  if (config.enabled && !config.server_name.empty()) {
    args->SetSslTargetNameOverride(config.server_name);
  }
}

}  // namespace switchboard
