#include "services/webhook_delivery/target_guard.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace switchboard::webhooks {
namespace {

AddressClass ClassifyV4(uint32_t a) {  // host byte order
  auto in = [a](uint32_t net, int bits) {
    uint32_t mask = bits == 0 ? 0 : ~uint32_t{0} << (32 - bits);
    return (a & mask) == net;
  };
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
      return "link-local (incl. cloud metadata)";
    case AddressClass::kUniqueLocal:
      return "IPv6 unique local";
    case AddressClass::kUnspecified:
      return "unspecified";
    case AddressClass::kMulticast:
      return "multicast";
    case AddressClass::kReserved:
      return "reserved";
  }
  return "unknown";
}

absl::StatusOr<AddressClass> ClassifyAddress(absl::string_view ip) {
  std::string s(ip);
  in_addr v4;
  if (inet_pton(AF_INET, s.c_str(), &v4) == 1) return ClassifyV4(ntohl(v4.s_addr));
  in6_addr v6;
  if (inet_pton(AF_INET6, s.c_str(), &v6) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("'", ip, "' is not an IP address"));
  }
  const uint8_t* b = v6.s6_addr;
  auto embedded_v4 = [&]() {
    return (uint32_t{b[12]} << 24) | (uint32_t{b[13]} << 16) | (uint32_t{b[14]} << 8) | b[15];
  };
  bool zero10 = true;
  for (int i = 0; i < 10; ++i) zero10 &= b[i] == 0;
  // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated).
  if (zero10 && b[10] == 0xff && b[11] == 0xff) return ClassifyV4(embedded_v4());
  bool zero12 = zero10 && b[10] == 0 && b[11] == 0;
  if (zero12) {
    uint32_t v = embedded_v4();
    if (v == 0) return AddressClass::kUnspecified;
    if (v == 1) return AddressClass::kLoopback;
    return ClassifyV4(v);
  }
  // 64:ff9b::/96 (NAT64) carries an IPv4 address too.
  if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b) {
    bool zero = true;
    for (int i = 4; i < 12; ++i) zero &= b[i] == 0;
    if (zero) return ClassifyV4(embedded_v4());
  }
  if ((b[0] & 0xfe) == 0xfc) return AddressClass::kUniqueLocal;
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return AddressClass::kLinkLocal;
  if (b[0] == 0xff) return AddressClass::kMulticast;
  if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8) return AddressClass::kReserved;
  return AddressClass::kPublic;
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
  curl_url_cleanup(h);
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

absl::StatusOr<VettedTarget> VetTarget(const WebhookUrl& url, bool allow_private,
                                       const Resolver& resolve) {
  std::vector<std::string> addresses;
  if (ClassifyAddress(url.host).ok()) {
    addresses.push_back(url.host);  // a literal: nothing to resolve
  } else {
    absl::StatusOr<std::vector<std::string>> r = resolve(url.host);
    if (!r.ok()) return r.status();
    addresses = *std::move(r);
  }
  for (const std::string& a : addresses) {
    absl::StatusOr<AddressClass> c = ClassifyAddress(a);
    if (!c.ok()) return c.status();
    if (*c != AddressClass::kPublic && !allow_private) {
      return absl::InvalidArgumentError(absl::StrCat(
          "url: '", url.host, "' resolves to ", a, ", a ", AddressClassName(*c),
          " address; refused (start webhook-delivery with --allow_private_targets to allow it)"));
    }
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
