#include "services/webhook_delivery/signing.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <initializer_list>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace switchboard::webhooks {

absl::StatusOr<std::string> DecodeSecret(absl::string_view secret, absl::string_view field) {
  if (!absl::StartsWith(secret, kSecretPrefix)) {
    // A raw key (the design's "webhook-secret-key"): its bytes sign as they are.
    bool printable =
        std::all_of(secret.begin(), secret.end(), [](char c) { return c > 0x20 && c < 0x7f; });
    if (secret.size() < kMinRawSecret || secret.size() > kMaxRawSecret || !printable) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": must start with 'whsec_' followed by base64, or be a raw key of ",
          kMinRawSecret, " to ", kMaxRawSecret, " printable ASCII characters without spaces (got ",
          secret.size(), " characters", printable ? "" : ", not all printable", ")"));
    }
    return std::string(secret);
  }
  std::string key;
  if (!absl::Base64Unescape(secret.substr(kSecretPrefix.size()), &key)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": the part after 'whsec_' is not base64"));
  }
  if (key.size() < 24 || key.size() > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": the key is ", key.size(), " bytes; it must be 24 to 64 bytes"));
  }
  return key;
}

absl::StatusOr<std::string> GenerateSecret() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
    return absl::InternalError("RAND_bytes failed: no entropy for a webhook secret");
  }
  return absl::StrCat(kSecretPrefix, absl::Base64Escape(absl::string_view(
                                         reinterpret_cast<char*>(bytes), sizeof(bytes))));
}

namespace {

// OpenSSL 3's one-shot HMAC() looks the MAC and the digest up by name on
// every call; the MAC is fetched once here (it is immutable and thread-safe).
// A failed fetch is not kept: the next call tries again.
EVP_MAC* HmacMac() {
  static std::atomic<EVP_MAC*> cached{nullptr};
  EVP_MAC* mac = cached.load(std::memory_order_acquire);
  if (mac != nullptr) return mac;
  mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (mac == nullptr) return nullptr;
  EVP_MAC* first = nullptr;
  if (!cached.compare_exchange_strong(first, mac, std::memory_order_acq_rel)) {
    EVP_MAC_free(mac);  // another thread's fetch won
    return first;
  }
  return mac;
}

bool HmacSha256(absl::string_view key, std::initializer_list<absl::string_view> parts,
                unsigned char* out, size_t* out_len) {
  EVP_MAC* mac = HmacMac();
  if (mac == nullptr) return false;
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
  if (ctx == nullptr) return false;
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0),
                         OSSL_PARAM_construct_end()};
  bool ok = EVP_MAC_init(ctx, reinterpret_cast<const unsigned char*>(key.data()), key.size(),
                         params) == 1;
  for (absl::string_view p : parts) {
    ok = ok && EVP_MAC_update(ctx, reinterpret_cast<const unsigned char*>(p.data()), p.size()) == 1;
  }
  ok = ok && EVP_MAC_final(ctx, out, out_len, EVP_MAX_MD_SIZE) == 1;
  EVP_MAC_CTX_free(ctx);
  return ok;
}

}  // namespace

std::string Sign(absl::string_view key, absl::string_view msg_id, int64_t timestamp,
                 absl::string_view body) {
  // The signed content "<id>.<timestamp>.<body>" is fed in parts, not copied.
  std::string middle = absl::StrCat(".", timestamp, ".");
  unsigned char mac[EVP_MAX_MD_SIZE];
  size_t mac_len = 0;
  // Without OpenSSL's HMAC (never seen) the signature is "v1," alone, which
  // receivers (Verify below included) reject.
  if (!HmacSha256(key, {msg_id, middle, body}, mac, &mac_len)) mac_len = 0;
  return absl::StrCat(
      "v1,", absl::Base64Escape(absl::string_view(reinterpret_cast<const char*>(mac), mac_len)));
}

std::string SignatureHeader(const std::vector<std::string>& keys, absl::string_view msg_id,
                            int64_t timestamp, absl::string_view body) {
  std::string out;
  for (const std::string& key : keys) {
    if (!out.empty()) out += " ";
    out += Sign(key, msg_id, timestamp, body);
  }
  return out;
}

absl::Status Verify(absl::string_view secret, absl::string_view msg_id, absl::string_view timestamp,
                    absl::string_view signature_header, absl::string_view body, absl::Time now,
                    absl::Duration tolerance) {
  absl::StatusOr<std::string> key = DecodeSecret(secret);
  if (!key.ok()) return key.status();
  int64_t ts;
  if (!absl::SimpleAtoi(timestamp, &ts)) {
    return absl::UnauthenticatedError("webhook-timestamp: not a number");
  }
  absl::Duration skew = now - absl::FromUnixSeconds(ts);
  if (skew > tolerance || skew < -tolerance) {
    return absl::UnauthenticatedError("webhook-timestamp: too far from now");
  }
  std::string expected = Sign(*key, msg_id, ts, body);
  if (expected.size() <= strlen("v1,")) {
    return absl::UnauthenticatedError("webhook-signature: cannot compute HMAC-SHA256 here");
  }
  for (absl::string_view candidate : absl::StrSplit(signature_header, ' ', absl::SkipEmpty())) {
    if (candidate.size() == expected.size() &&
        CRYPTO_memcmp(candidate.data(), expected.data(), expected.size()) == 0) {
      return absl::OkStatus();
    }
  }
  return absl::UnauthenticatedError("webhook-signature: no matching v1 signature");
}

}  // namespace switchboard::webhooks
