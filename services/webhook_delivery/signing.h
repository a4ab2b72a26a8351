#ifndef SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_SIGNING_H_
#define SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_SIGNING_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace switchboard::webhooks {

// Standard Webhooks signing (https://www.standardwebhooks.com), so receivers
// can verify with the standardwebhooks or svix libraries:
//   webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>
// where key is the base64-decoded part of the secret after "whsec_".

constexpr absl::string_view kSecretPrefix = "whsec_";

// The HMAC key of a "whsec_<base64>" secret. Errors name `field` and say
// what is wrong (prefix, base64, length: 24 to 64 bytes).
absl::StatusOr<std::string> DecodeSecret(absl::string_view secret,
                                         absl::string_view field = "secret");

// "whsec_" + base64 of 32 bytes from OpenSSL's RAND_bytes.
absl::StatusOr<std::string> GenerateSecret();

// "v1,<base64 signature>" for one key.
std::string Sign(absl::string_view key, absl::string_view msg_id, int64_t timestamp,
                 absl::string_view body);

// The header value for several live keys (during a rotation): one "v1,..."
// entry per key, space-separated.
std::string SignatureHeader(const std::vector<std::string>& keys, absl::string_view msg_id,
                            int64_t timestamp, absl::string_view body);

// What a receiver does: the timestamp is within `tolerance` of `now` and one
// of the header's v1 signatures matches (compared in constant time).
absl::Status Verify(absl::string_view secret, absl::string_view msg_id, absl::string_view timestamp,
                    absl::string_view signature_header, absl::string_view body, absl::Time now,
                    absl::Duration tolerance = absl::Minutes(5));

}  // namespace switchboard::webhooks

#endif  // SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_SIGNING_H_
