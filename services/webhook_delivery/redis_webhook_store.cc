#include "services/webhook_delivery/redis_webhook_store.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "libs/common/ids.h"
#include "libs/redis/lua_batch.h"
#include "libs/redis/reply.h"
#include "services/webhook_delivery/redis_webhook_scripts.h"

namespace switchboard::webhooks {
namespace {

using redis::Reply;

std::string Micros(absl::Time t) { return absl::StrCat(absl::ToUnixMicros(t)); }

int64_t ToI64(absl::string_view s) {
  int64_t v = 0;
  return absl::SimpleAtoi(s, &v) ? v : 0;
}

// `min_replicas` > 0: also WAIT for that many replicas (what is acknowledged
// after it survives a failover).
absl::StatusOr<Reply> RunScript(redis::RedisClient& client, const std::string& tag,
                                redis::Command command, absl::Duration timeout,
                                absl::string_view what, int min_replicas) {
  absl::StatusOr<Reply> r =
      client.RunReplicated(tag, std::move(command), min_replicas, absl::Now() + timeout);
  if (!r.ok()) return r.status();
  if (absl::Status st = redis::ReplyStatus(*r, what); !st.ok()) return st;
  return r;
}

// Deliveries from flat (record, body, next_us[, claim token]) groups.
absl::StatusOr<std::vector<DeliveryRecord>> ParseDeliveries(const std::vector<Reply>& flat,
                                                            bool with_token,
                                                            absl::string_view what) {
  const size_t stride = with_token ? 4 : 3;
  std::vector<DeliveryRecord> out;
  for (size_t i = 0; i + stride <= flat.size(); i += stride) {
    DeliveryRecord r;
    if (!r.delivery.ParseFromString(flat[i].str)) {
      return absl::DataLossError(absl::StrCat(what, ": unreadable delivery record"));
    }
    r.body = flat[i + 1].str;
    r.next_attempt = absl::FromUnixMicros(ToI64(flat[i + 2].str));
    if (with_token) r.claim = static_cast<uint64_t>(ToI64(flat[i + 3].str));
    out.push_back(std::move(r));
  }
  return out;
}

// An outbox script: the batched writes, the shared prelude (key prefix,
// due-set upkeep), then its body.
std::string Outbox(const char* body) {
  return absl::StrCat(redis::kLuaBatch, redis_scripts::kOutboxPrelude, body);
}

}  // namespace

RedisWebhookStore::RedisWebhookStore(std::shared_ptr<redis::RedisClient> client,
                                     RedisWebhookStoreOptions options)
    : client_(std::move(client)),
      options_(std::move(options)),
      tag_(absl::StrCat("{", options_.prefix, "}")),
      put_(redis_scripts::kPutHook),
      delete_(redis_scripts::kDeleteHook),
      list_(redis_scripts::kListHooks) {
  for (const redis::Script* s : {&put_, &delete_, &list_}) client_->Register(*s);
}

absl::StatusOr<Reply> RedisWebhookStore::Run(redis::Command command, absl::string_view what,
                                             bool replicated) {
  return RunScript(*client_, tag_, std::move(command), options_.timeout, what,
                   replicated ? options_.min_replicas : 0);
}

absl::Status RedisWebhookStore::Check() {
  return client_->Ping(tag_, absl::Now() + options_.timeout);
}

absl::StatusOr<uint64_t> RedisWebhookStore::Put(const WebhookRecord& r) {
  const std::string& id = r.webhook.id();
  int64_t expires =
      r.previous_expires == absl::InfinitePast() ? 0 : absl::ToUnixMicros(r.previous_expires);
  absl::StatusOr<Reply> reply =
      Run(put_.Call({tag_}, {tag_, id, absl::StrCat(r.version), r.webhook.SerializeAsString(),
                             r.previous_secret, absl::StrCat(expires), NewId("put")}),
          "put webhook", /*replicated=*/true);
  if (!reply.ok()) return reply.status();
  if (reply->integer < 0) {
    return absl::AbortedError(absl::StrCat("webhook '", id, "' changed meanwhile"));
  }
  return static_cast<uint64_t>(reply->integer);
}

absl::StatusOr<std::optional<WebhookRecord>> RedisWebhookStore::Get(const std::string& id) {
  absl::StatusOr<Reply> reply =
      Run({"HMGET", absl::StrCat(tag_, ":wh:hook:", id), "r", "ps", "pe", "v"}, "get webhook");
  if (!reply.ok()) return reply.status();
  if (reply->elements.size() != 4 || reply->elements[0].is_nil()) {
    return std::optional<WebhookRecord>();
  }
  WebhookRecord r;
  if (!r.webhook.ParseFromString(reply->elements[0].str)) {
    return absl::DataLossError("get webhook: unreadable record");
  }
  r.previous_secret = reply->elements[1].str;
  int64_t expires = ToI64(reply->elements[2].str);
  r.previous_expires = expires == 0 ? absl::InfinitePast() : absl::FromUnixMicros(expires);
  r.version = static_cast<uint64_t>(ToI64(reply->elements[3].str));
  return std::optional<WebhookRecord>(std::move(r));
}

absl::StatusOr<bool> RedisWebhookStore::Delete(const std::string& id) {
  absl::StatusOr<Reply> r =
      Run(delete_.Call({tag_}, {tag_, id}), "delete webhook", /*replicated=*/true);
  if (!r.ok()) return r.status();
  return r->integer > 0;
}

absl::StatusOr<std::vector<WebhookRecord>> RedisWebhookStore::List() {
  absl::StatusOr<Reply> reply = Run(list_.Call({tag_}, {tag_}), "list webhooks");
  if (!reply.ok()) return reply.status();
  std::vector<WebhookRecord> out;
  const std::vector<Reply>& e = reply->elements;
  for (size_t i = 0; i + 3 < e.size(); i += 4) {
    WebhookRecord r;
    if (!r.webhook.ParseFromString(e[i].str)) {
      return absl::DataLossError("list webhooks: unreadable record");
    }
    r.previous_secret = e[i + 1].str;
    int64_t expires = ToI64(e[i + 2].str);
    r.previous_expires = expires == 0 ? absl::InfinitePast() : absl::FromUnixMicros(expires);
    r.version = static_cast<uint64_t>(ToI64(e[i + 3].str));
    out.push_back(std::move(r));
  }
  std::sort(out.begin(), out.end(), [](const WebhookRecord& a, const WebhookRecord& b) {
    return a.webhook.id() < b.webhook.id();
  });
  return out;
}

absl::StatusOr<uint64_t> RedisWebhookStore::Generation() {
  absl::StatusOr<Reply> r = Run({"GET", absl::StrCat(tag_, ":wh:gen")}, "registry generation");
  if (!r.ok()) return r.status();
  return static_cast<uint64_t>(ToI64(r->str));
}

RedisDeliveryStore::RedisDeliveryStore(std::shared_ptr<redis::RedisClient> client,
                                       RedisWebhookStoreOptions options)
    : client_(std::move(client)),
      options_(std::move(options)),
      tag_(absl::StrCat("{", options_.prefix, "}")),
      create_(Outbox(redis_scripts::kCreate)),
      write_(Outbox(redis_scripts::kWrite)),
      claim_(Outbox(redis_scripts::kClaim)),
      renew_(Outbox(redis_scripts::kRenew)),
      release_(Outbox(redis_scripts::kRelease)),
      next_due_(Outbox(redis_scripts::kNextDue)),
      list_(Outbox(redis_scripts::kList)) {
  for (const redis::Script* s :
       {&create_, &write_, &claim_, &renew_, &release_, &next_due_, &list_}) {
    client_->Register(*s);
  }
}

absl::StatusOr<Reply> RedisDeliveryStore::Run(redis::Command command, absl::string_view what,
                                              bool replicated) {
  return RunScript(*client_, tag_, std::move(command), options_.timeout, what,
                   replicated ? options_.min_replicas : 0);
}

absl::StatusOr<int> RedisDeliveryStore::Create(const std::vector<DeliveryRecord>& records) {
  if (records.empty()) return 0;
  return CreateChecked(records, "");
}

absl::StatusOr<int> RedisDeliveryStore::CreateIfRegistryAt(
    const std::vector<DeliveryRecord>& records, uint64_t registry_generation) {
  return CreateChecked(records, absl::StrCat(registry_generation));
}

absl::StatusOr<int> RedisDeliveryStore::CreateChecked(const std::vector<DeliveryRecord>& records,
                                                      const std::string& generation) {
  std::vector<std::string> args = {tag_, Micros(absl::Now()), generation};
  args.reserve(3 + records.size() * 7);
  for (const DeliveryRecord& r : records) {
    const v1::WebhookDelivery& d = r.delivery;
    args.insert(args.end(),
                {d.id(), d.webhook_id(), d.event_id(), absl::StrCat(static_cast<int>(d.status())),
                 Micros(r.next_attempt), d.SerializeAsString(), r.body});
  }
  // The broker event is acked once this returns: with min_replicas, only
  // after a replica has the deliveries too (a check alone writes nothing).
  absl::StatusOr<Reply> reply = Run(create_.Call({tag_}, std::move(args)), "create deliveries",
                                    /*replicated=*/!records.empty());
  if (!reply.ok()) return reply.status();
  if (reply->integer < 0) {
    return absl::AbortedError("create deliveries: the webhook registry changed");
  }
  return static_cast<int>(reply->integer);
}

absl::Status RedisDeliveryStore::Write(const std::vector<DeliveryRecord>& records,
                                       const std::string& owner) {
  if (records.empty()) return absl::OkStatus();
  absl::Time now = absl::Now();
  std::vector<std::string> args = {tag_, owner, Micros(now), Micros(now - options_.retention)};
  for (const DeliveryRecord& r : records) {
    const v1::WebhookDelivery& d = r.delivery;
    args.insert(args.end(), {d.id(), absl::StrCat(static_cast<int>(d.status())),
                             Micros(r.next_attempt), d.SerializeAsString(), absl::StrCat(r.claim)});
  }
  // A redelivery (owner '') was acknowledged to a caller; attempt records
  // lost in a failover are only sent again.
  return Run(write_.Call({tag_}, std::move(args)), "record deliveries", owner.empty()).status();
}

absl::Status RedisDeliveryStore::Update(const DeliveryRecord& record) {
  return Write({record}, "");
}

absl::Status RedisDeliveryStore::UpdateMany(const std::vector<DeliveryRecord>& records,
                                            const std::string& owner) {
  if (owner.empty()) return absl::InvalidArgumentError("owner: required");
  return Write(records, owner);
}

absl::StatusOr<Claimed> RedisDeliveryStore::Claim(const ClaimRequest& req) {
  Claimed out;
  if (req.limit == 0) return out;
  std::vector<std::string> args = {
      tag_,
      req.owner,
      Micros(req.now),
      Micros(req.now + req.lease),
      absl::StrCat(req.limit),
      absl::StrCat(req.max_per_webhook),
      req.request_id.empty() ? NewId("claim") : req.request_id,
      absl::StrCat(std::max<int64_t>(1, absl::ToInt64Milliseconds(req.lease))),
      absl::StrCat(req.skip_webhooks.size())};
  args.insert(args.end(), req.skip_webhooks.begin(), req.skip_webhooks.end());
  args.push_back(absl::StrCat(req.rate_limits.size()));
  for (const auto& [webhook_id, rate] : req.rate_limits) {
    args.insert(args.end(), {webhook_id, absl::StrFormat("%.17g", rate.per_second),
                             absl::StrFormat("%.17g", rate.burst)});
  }
  absl::StatusOr<Reply> reply = Run(claim_.Call({tag_}, std::move(args)), "claim deliveries");
  if (!reply.ok()) return reply.status();
  if (reply->elements.size() != 3) return absl::InternalError("claim deliveries: odd reply");
  absl::StatusOr<std::vector<DeliveryRecord>> records =
      ParseDeliveries(reply->elements[0].elements, /*with_token=*/true, "claim deliveries");
  if (!records.ok()) return records.status();
  out.records = *std::move(records);
  const std::vector<Reply>& throttled = reply->elements[1].elements;
  for (size_t i = 0; i + 1 < throttled.size(); i += 2) {
    out.throttled[throttled[i].str] = absl::FromUnixMicros(ToI64(throttled[i + 1].str));
  }
  for (const Reply& e : reply->elements[2].elements) out.full.insert(e.str);
  return out;
}

absl::Status RedisDeliveryStore::Renew(const std::vector<std::string>& ids,
                                       const std::string& owner, absl::Time until) {
  if (ids.empty()) return absl::OkStatus();
  std::vector<std::string> args = {tag_, owner, Micros(until)};
  args.insert(args.end(), ids.begin(), ids.end());
  return Run(renew_.Call({tag_}, std::move(args)), "renew leases").status();
}

absl::Status RedisDeliveryStore::Release(const std::vector<ClaimRef>& claims,
                                         const std::string& owner) {
  if (claims.empty()) return absl::OkStatus();
  std::vector<std::string> args = {tag_, owner};
  for (const auto& [id, token] : claims) args.insert(args.end(), {id, absl::StrCat(token)});
  return Run(release_.Call({tag_}, std::move(args)), "release leases").status();
}

absl::StatusOr<absl::Time> RedisDeliveryStore::NextDue(
    const std::vector<std::string>& skip_webhooks) {
  std::vector<std::string> args = {tag_};
  args.insert(args.end(), skip_webhooks.begin(), skip_webhooks.end());
  absl::StatusOr<Reply> r = Run(next_due_.Call({tag_}, std::move(args)), "next due");
  if (!r.ok()) return r.status();
  if (r->is_nil()) return absl::InfiniteFuture();
  int64_t us = 0;
  if (!absl::SimpleAtoi(r->str, &us)) {
    // Redis may print a score in exponent form.
    double d = 0;
    if (!absl::SimpleAtod(r->str, &d)) return absl::InternalError("next due: odd score");
    us = static_cast<int64_t>(d);
  }
  return absl::FromUnixMicros(us);
}

absl::StatusOr<std::vector<DeliveryRecord>> RedisDeliveryStore::List(const std::string& webhook_id,
                                                                     v1::DeliveryStatus status,
                                                                     const std::string& event_id,
                                                                     size_t limit) {
  absl::StatusOr<Reply> r =
      Run(list_.Call({tag_}, {tag_, webhook_id, absl::StrCat(static_cast<int>(status)), event_id,
                              absl::StrCat(limit)}),
          "list deliveries");
  if (!r.ok()) return r.status();
  return ParseDeliveries(r->elements, /*with_token=*/false, "list deliveries");
}

absl::StatusOr<std::map<int, uint64_t>> RedisDeliveryStore::CountByStatus() {
  absl::StatusOr<Reply> r = Run({"HGETALL", absl::StrCat(tag_, ":wh:count")}, "count deliveries");
  if (!r.ok()) return r.status();
  std::map<int, uint64_t> out;
  for (size_t i = 0; i + 1 < r->elements.size(); i += 2) {
    int64_t n = ToI64(r->elements[i + 1].str);
    if (n > 0) out[static_cast<int>(ToI64(r->elements[i].str))] = static_cast<uint64_t>(n);
  }
  return out;
}

absl::StatusOr<std::pair<uint64_t, uint64_t>> RedisDeliveryStore::CountPending(absl::Time now) {
  std::string due = absl::StrCat(tag_, ":wh:due");
  absl::StatusOr<std::vector<Reply>> r = client_->Pipeline(
      tag_, {{"ZCOUNT", due, "-inf", Micros(now)}, {"ZCARD", due}}, absl::Now() + options_.timeout);
  if (!r.ok()) return r.status();
  for (const Reply& e : *r) {
    if (absl::Status st = redis::ReplyStatus(e, "count pending"); !st.ok()) return st;
  }
  uint64_t now_due = static_cast<uint64_t>((*r)[0].integer);
  uint64_t all = static_cast<uint64_t>((*r)[1].integer);
  return std::make_pair(now_due, all >= now_due ? all - now_due : 0);
}

}  // namespace switchboard::webhooks
