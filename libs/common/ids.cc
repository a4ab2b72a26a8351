#include "libs/common/ids.h"

#include <openssl/evp.h>

#include <array>
#include <cstdint>
#include <cstring>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace switchboard {
namespace {

constexpr char kCrockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

struct UlidState {
  absl::Mutex mu;
  uint64_t last_ms ABSL_GUARDED_BY(mu) = 0;
  // 80 random bits as hi (16 bits) and lo (64 bits).
  uint64_t rand_hi ABSL_GUARDED_BY(mu) = 0;
  uint64_t rand_lo ABSL_GUARDED_BY(mu) = 0;
  absl::BitGen gen ABSL_GUARDED_BY(mu);
};

UlidState& State() {
  static UlidState* state = new UlidState();
  return *state;
}

}  // namespace

std::string NewUlid(absl::Time now) {
  uint64_t ms = static_cast<uint64_t>(absl::ToUnixMillis(now));
  uint64_t hi, lo;
  {
    UlidState& s = State();
    absl::MutexLock lock(&s.mu);
    if (ms <= s.last_ms) {
      // Same (or earlier, if the clock stepped back) millisecond: increment
      // the random part so ids stay strictly increasing.
      ms = s.last_ms;
      if (++s.rand_lo == 0) s.rand_hi = (s.rand_hi + 1) & 0xFFFF;
    } else {
      s.last_ms = ms;
      s.rand_hi = absl::Uniform<uint64_t>(s.gen) & 0xFFFF;
      s.rand_lo = absl::Uniform<uint64_t>(s.gen);
    }
    hi = s.rand_hi;
    lo = s.rand_lo;
  }
  std::array<char, 26> out;
  // 48-bit time -> 10 chars (50 bits, top 2 zero).
  for (int i = 9; i >= 0; --i) {
    out[i] = kCrockford[ms & 31];
    ms >>= 5;
  }
  // 80-bit random -> 16 chars.
  for (int i = 25; i >= 10; --i) {
    out[i] = kCrockford[lo & 31];
    lo = (lo >> 5) | ((hi & 31) << 59);
    hi >>= 5;
  }
  return std::string(out.data(), out.size());
}

std::string NewId(absl::string_view prefix) { return absl::StrCat(prefix, "_", NewUlid()); }

std::string DeriveId(absl::string_view prefix, std::initializer_list<absl::string_view> parts) {
  std::string message;
  for (absl::string_view p : parts) {
    // Lengths keep ("ab","c") and ("a","bc") apart.
    absl::StrAppend(&message, p.size(), ":", p, "\x1f");
  }
  // Fetched once: EVP_sha256() makes every EVP_Digest look the algorithm up
  // in OpenSSL 3's provider tables again (a job derives four ids).
  static const EVP_MD* const sha256 = [] {
    const EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    return md != nullptr ? md : EVP_sha256();
  }();
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  EVP_Digest(message.data(), message.size(), digest, &digest_len, sha256, nullptr);
  // 26 characters of 5 bits: the first 130 bits of the digest.
  std::string out(prefix);
  out += '_';
  for (int i = 0; i < 26; ++i) {
    int bit = i * 5;
    int v = ((digest[bit / 8] << 8) | digest[bit / 8 + 1]) >> (11 - bit % 8);
    out += kCrockford[v & 31];
  }
  return out;
}

std::string DeriveOrderedId(absl::string_view prefix, absl::string_view source) {
  std::string hashed = DeriveId(prefix, {source});
  // The ULID after the last '_' (or the whole id): 26 Crockford characters,
  // the first at most '7' (48 bits of milliseconds in 10 characters).
  size_t underscore = source.rfind('_');
  absl::string_view ulid =
      underscore == absl::string_view::npos ? source : source.substr(underscore + 1);
  if (ulid.size() != 26 || ulid[0] < '0' || ulid[0] > '7') return hashed;
  for (char c : ulid) {
    if (std::strchr(kCrockford, c) == nullptr || c == '\0') return hashed;
  }
  // prefix_ + time (10) + hash (16): DeriveId's length, so ids of both
  // kinds fit the same columns and keys.
  std::string out(prefix);
  out += '_';
  out.append(ulid.data(), 10);
  out.append(hashed, prefix.size() + 1, 16);
  return out;
}

}  // namespace switchboard
