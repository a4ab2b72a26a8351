#include "libs/security/secret_box.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <fstream>
#include <memory>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "libs/security/file_util.h"

namespace switchboard {
namespace {

constexpr char kPrefix[] = "sbenc:v1:";
constexpr int kNonce = 12;
constexpr int kTag = 16;

std::string KeyId(const std::string& key) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(key.data()), key.size(), digest);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), 4));
}

struct CtxDeleter {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};

}  // namespace

absl::StatusOr<SecretBox> SecretBox::FromKeys(const std::vector<std::string>& raw_keys) {
  SecretBox box;
  for (const std::string& k : raw_keys) {
    if (k.size() != 32) return absl::InvalidArgumentError("a key is not 32 bytes");
    box.keys_.push_back({KeyId(k), k});
  }
  if (box.keys_.empty()) return absl::InvalidArgumentError("no key");
  return box;
}

absl::StatusOr<SecretBox> SecretBox::FromKeyFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFlagFile(path, "secrets_key_file");
  if (!text.ok()) return text.status();
  std::vector<std::string> keys;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || absl::StartsWith(line, "#")) continue;
    std::string key;
    if (!absl::Base64Unescape(line, &key) || key.size() != 32) {
      return absl::InvalidArgumentError(
          absl::StrCat("secrets_key_file: line ", line_no,
                       ": not base64 of 32 bytes (make one with: openssl rand -base64 32)"));
    }
    keys.push_back(std::move(key));
  }
  if (keys.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("secrets_key_file: '", path, "' holds no key"));
  }
  return FromKeys(keys);
}

bool SecretBox::IsSealed(absl::string_view value) { return absl::StartsWith(value, kPrefix); }

bool SecretBox::SealedWithCurrentKey(absl::string_view value) const {
  return absl::StartsWith(value, absl::StrCat(kPrefix, keys_.front().id, ":"));
}

absl::StatusOr<std::string> SecretBox::Seal(absl::string_view plaintext,
                                            absl::string_view context) const {
  const Key& key = keys_.front();
  std::string out(kNonce + plaintext.size() + kTag, '\0');
  auto* nonce = reinterpret_cast<unsigned char*>(out.data());
  auto* body = nonce + kNonce;
  std::unique_ptr<EVP_CIPHER_CTX, CtxDeleter> ctx(EVP_CIPHER_CTX_new());
  int len = 0, final_len = 0;
  bool ok =
      RAND_bytes(nonce, kNonce) == 1 && ctx != nullptr &&
      EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr,
                         reinterpret_cast<const unsigned char*>(key.bytes.data()), nonce) == 1 &&
      EVP_EncryptUpdate(ctx.get(), nullptr, &len,
                        reinterpret_cast<const unsigned char*>(context.data()),
                        static_cast<int>(context.size())) == 1 &&
      EVP_EncryptUpdate(ctx.get(), body, &len,
                        reinterpret_cast<const unsigned char*>(plaintext.data()),
                        static_cast<int>(plaintext.size())) == 1 &&
      EVP_EncryptFinal_ex(ctx.get(), body + len, &final_len) == 1 &&
      static_cast<size_t>(len + final_len) == plaintext.size() &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTag, body + plaintext.size()) == 1;
  if (!ok) return absl::InternalError("sealing a secret failed (OpenSSL)");
  return absl::StrCat(kPrefix, key.id, ":", absl::Base64Escape(out));
}

absl::StatusOr<std::string> SecretBox::Open(absl::string_view value,
                                            absl::string_view context) const {
  if (!IsSealed(value)) return std::string(value);
  absl::string_view rest = value.substr(sizeof(kPrefix) - 1);
  size_t colon = rest.find(':');
  if (colon == absl::string_view::npos) return absl::DataLossError("sealed secret: malformed");
  absl::string_view id = rest.substr(0, colon);
  const Key* key = nullptr;
  for (const Key& k : keys_) {
    if (k.id == id) key = &k;
  }
  if (key == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("a secret is sealed with key ", id,
                                                      ", which --secrets_key_file does not hold"));
  }
  std::string raw;
  if (!absl::Base64Unescape(rest.substr(colon + 1), &raw) ||
      raw.size() < static_cast<size_t>(kNonce + kTag)) {
    return absl::DataLossError("sealed secret: malformed");
  }
  auto* nonce = reinterpret_cast<unsigned char*>(raw.data());
  size_t n = raw.size() - kNonce - kTag;
  std::string plain(n, '\0');
  std::unique_ptr<EVP_CIPHER_CTX, CtxDeleter> ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr,
                     reinterpret_cast<const unsigned char*>(key->bytes.data()), nonce);
  EVP_DecryptUpdate(ctx.get(), nullptr, &len,
                    reinterpret_cast<const unsigned char*>(context.data()),
                    static_cast<int>(context.size()));
  EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(plain.data()), &len, nonce + kNonce,
                    static_cast<int>(n));
  EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTag, nonce + kNonce + n);
  int final_len = 0;
  if (EVP_DecryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(plain.data()) + len,
                          &final_len) != 1) {
    return absl::DataLossError("sealed secret: altered, or sealed for another record");
  }
  return plain;
}

}  // namespace switchboard
