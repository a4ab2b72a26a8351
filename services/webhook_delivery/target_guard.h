#ifndef SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_TARGET_GUARD_H_
#define SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_TARGET_GUARD_H_

#include <cstdint>
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
  // Cloud instance metadata (credentials!): 169.254.169.254 (AWS, GCP, Azure,
  // OCI), 169.254.170.2 (AWS ECS task credentials), fd00:ec2::254 (AWS IPv6),
  // 100.100.100.200 (Alibaba). Refused whatever is allowed.
  kMetadata,
  // 64:ff9b:1::/48, local-use NAT64 (RFC 8215): where the IPv4 address sits
  // depends on the operator's prefix, so it may lead anywhere, metadata
  // included. Refused whatever is allowed, like kMetadata.
  kLocalNat64,
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

// Only absolute http(s) URLs with a host and no user-info (credentials in a
// URL leak into logs and listings). Numeric hosts come back normalised
// (127.1, 0x7f000001 and 2130706433 are all 127.0.0.1). Errors name `field`.
absl::StatusOr<WebhookUrl> ParseWebhookUrl(absl::string_view url, absl::string_view field = "url");

// Resolves a host to numeric addresses (getaddrinfo by default; tests inject).
using Resolver = std::function<absl::StatusOr<std::vector<std::string>>(const std::string& host)>;
absl::StatusOr<std::vector<std::string>> SystemResolve(const std::string& host);

// An address range, IPv4 or IPv6 ("10.0.0.0/8", "fd12::/16", "192.0.2.7").
struct Cidr {
  uint8_t bytes[16] = {};  // IPv4 as ::ffff:a.b.c.d
  int bits = 0;            // of the 128
  std::string text;        // as given
};
absl::StatusOr<Cidr> ParseCidr(absl::string_view text);

// What the guard lets through besides public addresses.
struct TargetPolicy {
  // Loopback, private (RFC 1918, CGNAT, IPv6 unique local) and link-local
  // addresses: local development and tests.
  bool allow_private = false;
  // Any address inside one of these, e.g. 10.0.0.0/8 for in-cluster
  // receivers. IPv4 ranges also match IPv4-mapped and NAT64 forms.
  std::vector<Cidr> allow;
};
// --allow_private_targets and --allow_targets=CIDR[,CIDR...]; errors name
// allow_targets.
absl::StatusOr<TargetPolicy> MakeTargetPolicy(bool allow_private, absl::string_view allow_targets);

// A target that passed the guard, pinned to the vetted address so that a
// second DNS answer (rebinding) cannot redirect the request.
struct VettedTarget {
  WebhookUrl url;
  std::string address;       // the numeric address the request must use
  std::string curl_resolve;  // "host:port:address" for CURLOPT_RESOLVE
};

// Refuses any target that resolves to a non-public address the policy does
// not allow, and cloud metadata addresses always. Every address the name has
// is checked, so a mixed answer cannot slip a private one in. "localhost" and
// names under it are loopback without asking DNS (RFC 6761), as curl treats
// them.
absl::StatusOr<VettedTarget> VetTarget(const WebhookUrl& url, const TargetPolicy& policy,
                                       const Resolver& resolve = SystemResolve);

}  // namespace switchboard::webhooks

#endif  // SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_TARGET_GUARD_H_
