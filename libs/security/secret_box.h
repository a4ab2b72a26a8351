#ifndef SWITCHBOARD_LIBS_SECURITY_SECRET_BOX_H_
#define SWITCHBOARD_LIBS_SECURITY_SECRET_BOX_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchboard {

// Seals small secrets at rest with AES-256-GCM (OpenSSL) under a key ring:
// the first key seals, every key opens. A sealed value is
//   sbenc:v1:<key id>:<base64 of nonce(12) | ciphertext | tag(16)>
// where the key id is the first 8 hex digits of the key's SHA-256, and
// `context` (e.g. the webhook id and field) is authenticated with it, so a
// sealed value copied to another record does not open.
class SecretBox {
 public:
  // The key file (--secrets_key_file): one key per line, base64 of 32 random
  // bytes (`openssl rand -base64 32`); the first seals. Blank lines and
  // '#' comments are skipped. Errors name secrets_key_file and the line.
  static absl::StatusOr<SecretBox> FromKeyFile(const std::string& path);
  static absl::StatusOr<SecretBox> FromKeys(const std::vector<std::string>& raw_keys);

  // INTERNAL when OpenSSL fails (no random nonce, say): nothing is sealed
  // with a nonce that is not fresh.
  absl::StatusOr<std::string> Seal(absl::string_view plaintext, absl::string_view context) const;
  // Opens a sealed value; a value that is not sealed is returned as it is
  // (written before sealing was turned on). FAILED_PRECONDITION when the key
  // is not in the ring, DATA_LOSS when the value was altered.
  absl::StatusOr<std::string> Open(absl::string_view value, absl::string_view context) const;
  // Whether `value` is sealed with the first key (else the next write seals
  // it again).
  bool SealedWithCurrentKey(absl::string_view value) const;

  static bool IsSealed(absl::string_view value);

 private:
  struct Key {
    std::string id;
    std::string bytes;  // 32
  };
  std::vector<Key> keys_;
};

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_SECURITY_SECRET_BOX_H_
