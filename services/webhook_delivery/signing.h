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
// A secret without the prefix is a raw key (see DecodeSecret): this long at least.
constexpr size_t kMinRawSecret = 16;
constexpr size_t kMaxRawSecret = 256;

// The HMAC key of a secret:
// - "whsec_<base64>" (what we generate, SPEC §5): the decoded bytes, 24 to 64.
// - anything else, e.g. the original design's "webhook-secret-key": the
//   secret's own bytes are the key, as a shared HMAC secret of the design's
//   kind is used. 16 to 256 printable ASCII characters, no spaces (ASCII so
//   that every verifier derives the same bytes). SPEC §5 defines the key of a
//   whsec_ secret and the format of generated ones; it does not forbid others.
//   Receivers verify with the raw key: standardwebhooks' `new Webhook(secret,
//   {format: "raw"})` (JS) or `Webhook(secret.encode())` (Python, bytes), not
//   the default string form, which would base64-decode it.
// A secret that starts with "whsec_" is never taken as a raw key. Errors name
// `field` and say what is wrong (prefix, base64, length, characters).
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
