#ifndef SWITCHBOARD_TESTS_TESTING_CERTS_H_
#define SWITCHBOARD_TESTS_TESTING_CERTS_H_

#include <string>

#include "absl/status/statusor.h"

namespace switchboard::testing {

// Certificates made by the real `openssl` CLI (P-256 keys), in `dir`.
struct CertFiles {
  std::string cert;  // PEM
  std::string key;   // PEM, unencrypted
};

// A self-signed CA named `name` (files <dir>/<name>.pem, <name>.key).
absl::StatusOr<CertFiles> MakeCa(const std::string& dir, const std::string& name);

// A leaf certificate signed by `ca`, for server and client use, with common
// name `cn` and subjectAltName `san` (e.g. "DNS:localhost,IP:127.0.0.1",
// "URI:spiffe://switchboard/worker"). Files <dir>/<name>.pem and .key.
absl::StatusOr<CertFiles> MakeLeaf(const CertFiles& ca, const std::string& dir,
                                   const std::string& name, const std::string& cn,
                                   const std::string& san);

// The file's contents; empty when unreadable.
std::string ReadWholeFile(const std::string& path);

}  // namespace switchboard::testing

#endif  // SWITCHBOARD_TESTS_TESTING_CERTS_H_
