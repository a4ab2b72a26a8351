#ifndef SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_TARGET_GUARD_H_
#define SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_TARGET_GUARD_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchboard::webhooks {

// Where an address points, for the SSRF guard.
enum class AddressClass {
  kPublic,
  kLoopback,     // 127.0.0.0/8, ::1
  kPrivate,      // 10/8, 172.16/12, 192.168/16
  kSharedCgnat,  // 100.64/10
  kLinkLocal,    // 169.254/16 (cloud metadata 169.254.169.254), fe80::/10
  kUniqueLocal,  // fc00::/7
  kUnspecified,  // 0.0.0.0/8, ::
  kMulticast,    // 224/4, ff00::/8
  kReserved,     // 240/4, 255.255.255.255, 192.0.0/24, 198.18/15, documentation ranges
};

const char* AddressClassName(AddressClass c);

// Classifies a numeric IPv4 or IPv6 address. IPv4-mapped (::ffff:a.b.c.d),
// IPv4-compatible and NAT64 (64:ff9b::/96) IPv6 forms are classified by the
// IPv4 address they carry. Not an address: error.
absl::StatusOr<AddressClass> ClassifyAddress(absl::string_view ip);

struct WebhookUrl {
  std::string url;     // as given
  std::string scheme;  // http or https
  std::string host;    // without brackets
  int port = 0;        // explicit or the scheme's default
};

// Only absolute http(s) URLs with a host. Errors name `field`.
absl::StatusOr<WebhookUrl> ParseWebhookUrl(absl::string_view url, absl::string_view field = "url");

// Resolves a host to numeric addresses (getaddrinfo by default; tests inject).
using Resolver = std::function<absl::StatusOr<std::vector<std::string>>(const std::string& host)>;
absl::StatusOr<std::vector<std::string>> SystemResolve(const std::string& host);

// A target that passed the guard, pinned to the vetted address so that a
// second DNS answer (rebinding) cannot redirect the request.
struct VettedTarget {
  WebhookUrl url;
  std::string address;       // the numeric address the request must use
  std::string curl_resolve;  // "host:port:address" for CURLOPT_RESOLVE
};

// Refuses any target that resolves to a non-public address (every address the
// name has is checked, so a mixed answer cannot slip a private one in),
// unless allow_private.
absl::StatusOr<VettedTarget> VetTarget(const WebhookUrl& url, bool allow_private,
                                       const Resolver& resolve = SystemResolve);

}  // namespace switchboard::webhooks

#endif  // SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_TARGET_GUARD_H_
