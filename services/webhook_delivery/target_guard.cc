#include "services/webhook_delivery/target_guard.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace switchboard::webhooks {
namespace {

AddressClass ClassifyV4(uint32_t a) {  // host byte order
  auto in = [a](uint32_t net, int bits) {
    uint32_t mask = bits == 0 ? 0 : ~uint32_t{0} << (32 - bits);
    return (a & mask) == net;
  };
  if (a == 0xA9FEA9FE || a == 0xA9FEAA02 || a == 0x646464C8) return AddressClass::kMetadata;
  if (in(0x7F000000, 8)) return AddressClass::kLoopback;
  if (in(0x0A000000, 8) || in(0xAC100000, 12) || in(0xC0A80000, 16)) return AddressClass::kPrivate;
  if (in(0x64400000, 10)) return AddressClass::kSharedCgnat;
  if (in(0xA9FE0000, 16)) return AddressClass::kLinkLocal;
  if (in(0x00000000, 8)) return AddressClass::kUnspecified;
  if (in(0xE0000000, 4)) return AddressClass::kMulticast;
  if (in(0xF0000000, 4) || in(0xC0000000, 24) || in(0xC0000200, 24) || in(0xC6120000, 15) ||
      in(0xC6336400, 24) || in(0xCB007100, 24)) {
    return AddressClass::kReserved;
  }
  return AddressClass::kPublic;
}

}  // namespace

const char* AddressClassName(AddressClass c) {
  switch (c) {
    case AddressClass::kPublic:
      return "public";
    case AddressClass::kLoopback:
      return "loopback";
    case AddressClass::kPrivate:
      return "private (RFC 1918)";
    case AddressClass::kSharedCgnat:
      return "shared address space (CGNAT)";
    case AddressClass::kLinkLocal:
      return "link-local";
    case AddressClass::kUniqueLocal:
      return "IPv6 unique local";
    case AddressClass::kUnspecified:
      return "unspecified";
    case AddressClass::kMulticast:
      return "multicast";
    case AddressClass::kReserved:
      return "reserved";
    case AddressClass::kMetadata:
      return "cloud metadata";
    case AddressClass::kLocalNat64:
      return "local-use NAT64 (may lead to cloud metadata)";
  }
  return "unknown";
}

namespace {

uint32_t V4At12(const uint8_t* b) {
  return (uint32_t{b[12]} << 24) | (uint32_t{b[13]} << 16) | (uint32_t{b[14]} << 8) | b[15];
}

// The 16 bytes of a numeric address. IPv4 and the IPv6 forms that carry one
// (mapped ::ffff:a.b.c.d, compatible ::a.b.c.d, NAT64 64:ff9b::/96) become
// ::ffff:a.b.c.d, so that each destination has one spelling.
bool ParseAddress(absl::string_view ip, uint8_t out[16]) {
  std::string s(ip);
  in_addr v4;
  std::memset(out, 0, 16);
  if (inet_pton(AF_INET, s.c_str(), &v4) == 1) {
    out[10] = out[11] = 0xff;
    std::memcpy(out + 12, &v4.s_addr, 4);
    return true;
  }
  // A zone ("fe80::1%eth0") names an interface, not a different address.
  if (size_t pct = s.find('%'); pct != std::string::npos) s.resize(pct);
  in6_addr v6;
  if (inet_pton(AF_INET6, s.c_str(), &v6) != 1) return false;
  std::memcpy(out, v6.s6_addr, 16);
  bool zero10 = true;
  for (int i = 0; i < 10; ++i) zero10 &= out[i] == 0;
  bool compatible = zero10 && out[10] == 0 && out[11] == 0 && V4At12(out) > 1;
  bool nat64 = out[0] == 0x00 && out[1] == 0x64 && out[2] == 0xff && out[3] == 0x9b;
  for (int i = 4; nat64 && i < 12; ++i) nat64 &= out[i] == 0;
  // SIIT's IPv4-translated ::ffff:0:a.b.c.d (RFC 2765).
  bool translated = true;
  for (int i = 0; i < 8; ++i) translated &= out[i] == 0;
  translated = translated && out[8] == 0xff && out[9] == 0xff && out[10] == 0 && out[11] == 0;
  if (compatible || nat64 || translated) {
    std::memset(out, 0, 12);
    out[10] = out[11] = 0xff;
  } else if (out[0] == 0x20 && out[1] == 0x02) {
    // 6to4 (2002::/16) carries its IPv4 address in bytes 2..5.
    uint8_t v4[4] = {out[2], out[3], out[4], out[5]};
    std::memset(out, 0, 16);
    out[10] = out[11] = 0xff;
    std::memcpy(out + 12, v4, 4);
  }
  return true;
}

bool IsV4(const uint8_t* b) {
  for (int i = 0; i < 10; ++i) {
    if (b[i] != 0) return false;
  }
  return b[10] == 0xff && b[11] == 0xff;
}

AddressClass ClassifyBytes(const uint8_t* b) {
  if (IsV4(b)) return ClassifyV4(V4At12(b));
  static constexpr uint8_t kEc2Metadata[16] = {0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0,    0,
                                               0,    0,    0,    0,    0, 0, 0x02, 0x54};
  if (std::memcmp(b, kEc2Metadata, 16) == 0) return AddressClass::kMetadata;
  bool zero15 = true;
  for (int i = 0; i < 15; ++i) zero15 &= b[i] == 0;
  if (zero15 && b[15] == 0) return AddressClass::kUnspecified;
  if (zero15 && b[15] == 1) return AddressClass::kLoopback;
  if ((b[0] & 0xfe) == 0xfc) return AddressClass::kUniqueLocal;
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return AddressClass::kLinkLocal;
  if (b[0] == 0xff) return AddressClass::kMulticast;
  if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8) return AddressClass::kReserved;
  if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && b[4] == 0x00 &&
      b[5] == 0x01) {
    return AddressClass::kLocalNat64;
  }
  return AddressClass::kPublic;
}

bool InCidr(const uint8_t* b, const Cidr& c) {
  int full = c.bits / 8;
  if (std::memcmp(b, c.bytes, full) != 0) return false;
  int rest = c.bits % 8;
  if (rest == 0) return true;
  uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (b[full] & mask) == (c.bytes[full] & mask);
}

bool IsLocalhostName(std::string host) {
  host = absl::AsciiStrToLower(host);
  if (!host.empty() && host.back() == '.') host.pop_back();
  return host == "localhost" || absl::EndsWith(host, ".localhost");
}

}  // namespace

absl::StatusOr<AddressClass> ClassifyAddress(absl::string_view ip) {
  uint8_t b[16];
  if (!ParseAddress(ip, b)) {
    return absl::InvalidArgumentError(absl::StrCat("'", ip, "' is not an IP address"));
  }
  return ClassifyBytes(b);
}

absl::StatusOr<Cidr> ParseCidr(absl::string_view text) {
  Cidr c;
  c.text = std::string(text);
  absl::string_view addr = text;
  int bits = -1;
  if (size_t slash = text.find('/'); slash != absl::string_view::npos) {
    addr = text.substr(0, slash);
    if (!absl::SimpleAtoi(text.substr(slash + 1), &bits) || bits < 0 || bits > 128) {
      return absl::InvalidArgumentError(absl::StrCat("'", text, "' has a bad prefix length"));
    }
  }
  std::string a(addr);
  in_addr v4;
  bool is_v4 = inet_pton(AF_INET, a.c_str(), &v4) == 1;
  if (!is_v4 && a.find(':') == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not an address range"));
  }
  if (!ParseAddress(addr, c.bytes)) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not an address range"));
  }
  if (is_v4) {
    if (bits > 32) {
      return absl::InvalidArgumentError(absl::StrCat("'", text, "' has a bad prefix length"));
    }
    c.bits = bits < 0 ? 128 : 96 + bits;
  } else {
    c.bits = bits < 0 ? 128 : bits;
  }
  return c;
}

absl::StatusOr<TargetPolicy> MakeTargetPolicy(bool allow_private, absl::string_view allow_targets) {
  TargetPolicy p;
  p.allow_private = allow_private;
  for (absl::string_view part : absl::StrSplit(allow_targets, ',', absl::SkipWhitespace())) {
    absl::StatusOr<Cidr> c = ParseCidr(absl::StripAsciiWhitespace(part));
    if (!c.ok())
      return absl::InvalidArgumentError(absl::StrCat("allow_targets: ", c.status().message()));
    p.allow.push_back(*std::move(c));
  }
  return p;
}

absl::StatusOr<WebhookUrl> ParseWebhookUrl(absl::string_view url, absl::string_view field) {
  if (url.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": required"));
  if (url.size() > 2048) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": longer than 2048 characters"));
  }
  CURLU* h = curl_url();
  std::string s(url);
  CURLUcode rc = curl_url_set(h, CURLUPART_URL, s.c_str(), 0);
  if (rc != CURLUE_OK) {
    curl_url_cleanup(h);
    return absl::InvalidArgumentError(absl::StrCat(field, ": '", url.substr(0, 100),
                                                   "' is not a URL (", curl_url_strerror(rc), ")"));
  }
  auto get = [&](CURLUPart part, std::string* out, unsigned flags = 0) {
    char* v = nullptr;
    if (curl_url_get(h, part, &v, flags) != CURLUE_OK || v == nullptr) return false;
    *out = v;
    curl_free(v);
    return true;
  };
  WebhookUrl out;
  out.url = s;
  std::string port;
  bool ok = get(CURLUPART_SCHEME, &out.scheme) && get(CURLUPART_HOST, &out.host) &&
            get(CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
  std::string ignored;
  bool user_info = get(CURLUPART_USER, &ignored) || get(CURLUPART_PASSWORD, &ignored);
  curl_url_cleanup(h);
  if (user_info) {
    return absl::InvalidArgumentError(
        absl::StrCat(field,
                     ": credentials in the URL (user-info before '@') are refused: they "
                     "would show in logs and listings"));
  }
  out.scheme = absl::AsciiStrToLower(out.scheme);
  if (!ok || out.host.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": '", url.substr(0, 100), "' has no host"));
  }
  if (out.scheme != "http" && out.scheme != "https") {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": scheme '", out.scheme, "' is not allowed (http or https only)"));
  }
  if (out.host.size() > 2 && out.host.front() == '[' && out.host.back() == ']') {
    out.host = out.host.substr(1, out.host.size() - 2);
  }
  if (!absl::SimpleAtoi(port, &out.port) || out.port <= 0 || out.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": bad port '", port, "'"));
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> SystemResolve(const std::string& host) {
  addrinfo hints;
  std::memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0) {
    return absl::UnavailableError(absl::StrCat("cannot resolve '", host, "': ", gai_strerror(rc)));
  }
  std::vector<std::string> out;
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    char buf[INET6_ADDRSTRLEN] = {0};
    if (ai->ai_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(ai->ai_addr)->sin_addr, buf, sizeof(buf));
    } else if (ai->ai_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(ai->ai_addr)->sin6_addr, buf,
                sizeof(buf));
    } else {
      continue;
    }
    std::string a(buf);
    if (std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
  }
  freeaddrinfo(res);
  if (out.empty()) return absl::UnavailableError(absl::StrCat("'", host, "' has no address"));
  return out;
}

absl::StatusOr<VettedTarget> VetTarget(const WebhookUrl& url, const TargetPolicy& policy,
                                       const Resolver& resolve) {
  std::vector<std::string> addresses;
  if (ClassifyAddress(url.host).ok()) {
    addresses.push_back(url.host);  // a literal: nothing to resolve
  } else if (IsLocalhostName(url.host)) {
    addresses.push_back("127.0.0.1");
  } else {
    absl::StatusOr<std::vector<std::string>> r = resolve(url.host);
    if (!r.ok()) return r.status();
    addresses = *std::move(r);
  }
  for (const std::string& a : addresses) {
    uint8_t b[16];
    if (!ParseAddress(a, b)) {
      return absl::UnavailableError(absl::StrCat("'", url.host, "' resolved to '", a, "'"));
    }
    AddressClass c = ClassifyBytes(b);
    auto refuse = [&](absl::string_view how) {
      return absl::InvalidArgumentError(absl::StrCat(
          "url: '", url.host, "' resolves to ", a, ", a ", AddressClassName(c), " address; ", how));
    };
    if (c == AddressClass::kMetadata || c == AddressClass::kLocalNat64) {
      return refuse("refused always");
    }
    if (c == AddressClass::kPublic) continue;
    bool listed = std::any_of(policy.allow.begin(), policy.allow.end(),
                              [&](const Cidr& r) { return InCidr(b, r); });
    bool local = c == AddressClass::kLoopback || c == AddressClass::kPrivate ||
                 c == AddressClass::kSharedCgnat || c == AddressClass::kLinkLocal ||
                 c == AddressClass::kUniqueLocal;
    if (listed || (local && policy.allow_private)) continue;
    return refuse(
        "refused (start webhook-delivery with --allow_targets=CIDR to allow a range, or "
        "--allow_private_targets for local development)");
  }
  VettedTarget t;
  t.url = url;
  t.address = addresses.front();
  bool v6 = t.address.find(':') != std::string::npos;
  t.curl_resolve = absl::StrCat(url.host, ":", url.port, ":",
                                v6 ? absl::StrCat("[", t.address, "]") : t.address);
  return t;
}

}  // namespace switchboard::webhooks
