// RedisEventStore's consumer groups shared by broker replicas (the scripts
// are in redis_group_scripts.h).
#include <algorithm>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "libs/common/event_rules.h"
#include "services/event_broker/redis_store.h"

namespace switchboard::broker {
namespace {

using redis::Reply;

// A claim hands out at most about this much payload (Redis runs nothing
// else while the script runs).
constexpr size_t kClaimMaxBytes = 4 << 20;

int64_t Millis(absl::Time t) { return absl::ToUnixMillis(t); }

// Lua hands numbers back as integers, strings as strings: accept both.
uint64_t AsU64(const Reply& r) {
  if (r.type == Reply::Type::kInteger) return static_cast<uint64_t>(r.integer);
  uint64_t v = 0;
  (void)absl::SimpleAtoi(r.str, &v);
  return v;
}

// A script's count, or INVALID_ARGUMENT for the position it refused.
absl::StatusOr<uint32_t> Counted(const Reply& r, const std::string& group, size_t n) {
  if (r.integer >= 0) return static_cast<uint32_t>(r.integer);
  size_t i = std::min(static_cast<size_t>(-r.integer) - 1, n);
  return absl::InvalidArgumentError(
      absl::StrCat("ack_ids[", i, "]: unknown ack id (never delivered to group '", group, "')"));
}

void AppendRefs(const std::vector<DeliveryRef>& refs, std::vector<std::string>* args) {
  for (const DeliveryRef& r : refs) {
    args->push_back(absl::StrCat(r.seq));
    args->push_back(absl::StrCat(r.attempt));
  }
}

}  // namespace

absl::StatusOr<Reply> RedisEventStore::GroupWrite(const redis::Script& script,
                                                  const std::string& group,
                                                  std::vector<std::string> args,
                                                  absl::string_view what) {
  std::vector<std::string> argv = {tag_, EncodeGroupName(group)};
  argv.insert(argv.end(), std::make_move_iterator(args.begin()),
              std::make_move_iterator(args.end()));
  absl::StatusOr<Reply> r = client_->Run(tag_, script.Call({Key("log")}, argv), Deadline());
  if (!r.ok()) return r.status();
  if (absl::Status st = redis::ReplyStatus(*r, what); !st.ok()) return st;
  return r;
}

// Claims read new events with a plain XRANGE and pass only their sequences
// to the script when this store knows the group's cursor and filter from
// its last claim: Lua then handles no payload (turning each entry into Lua
// strings and back cost more than the rest of a claim). A claim that finds
// them changed (another replica claimed) goes the scanning way.
absl::StatusOr<ClaimResult> RedisEventStore::Claim(const ClaimRequest& req, absl::Time now) {
  // Twice at most the reading way: once from what this store saw last, once
  // from where another replica left the group; then scanning in the script.
  for (int round = 0; round < 3; ++round) {
    std::optional<ClaimView> view;
    if (!req.set_types && round < 2) {
      absl::MutexLock lock(&claim_mu_);
      auto it = claim_views_.find(req.group.name);
      if (it != claim_views_.end()) {
        view = std::move(it->second);
        claim_views_.erase(it);
      }
    }
    absl::StatusOr<std::optional<ClaimResult>> r = ClaimOnce(req, now, view);
    if (!r.ok()) return r.status();
    if (r->has_value()) return **std::move(r);
  }
  return absl::UnavailableError("claim: the group kept changing under this replica's claims");
}

absl::StatusOr<std::optional<ClaimResult>> RedisEventStore::ClaimOnce(
    const ClaimRequest& req, absl::Time now, std::optional<ClaimView> view) {
  std::vector<std::string> args = {
      tag_,
      EncodeGroupName(req.group.name),
      req.owner,
      absl::StrCat(Millis(now)),
      absl::StrCat(std::max<int64_t>(1, absl::ToInt64Milliseconds(req.lease))),
      absl::StrCat(std::max<size_t>(req.max, 1)),
      absl::StrCat(std::max<size_t>(req.max_scan, 1)),
      absl::StrJoin(req.group.types, ","),
      absl::StrCat(req.group.cursor),
      absl::StrCat(req.group.max_deliveries),
      req.set_types ? "1" : "0",
      RandomToken(),
      absl::StrCat(kClaimMaxBytes)};
  const size_t max = std::max<size_t>(req.max, 1);
  std::vector<EventPtr> given;
  std::vector<redis::Command> cmds;
  size_t scan = 0;
  uint64_t scanned_to = 0;
  bool unexamined = false;  // read but left for the next claim
  std::optional<TypeFilter> filter;
  if (view.has_value()) {
    absl::StatusOr<TypeFilter> f = TypeFilter::Parse(
        view->types.empty() ? std::vector<std::string>{}
                            : std::vector<std::string>(absl::StrSplit(view->types, ',')));
    if (f.ok()) filter = *std::move(f);
  }
  if (filter.has_value()) {
    // Every event matches: read what can be leased; else look further.
    scan = std::min<size_t>(std::max<size_t>(req.max_scan, 1), filter->MatchesAll() ? max : 1024);
    // A plain read has no byte budget: ask for about a claim's payload at
    // the sizes seen last.
    scan = std::clamp<size_t>(kClaimMaxBytes / std::max<size_t>(view->payload_size, 1), 1, scan);
    if (!view->read_ahead) {
      absl::StatusOr<std::vector<EventPtr>> read = ReadAfter(view->cursor, scan);
      if (!read.ok()) return read.status();
      view->ahead = *std::move(read);
    }
    scanned_to = view->cursor;
    size_t bytes = 0;
    for (EventPtr& ev : view->ahead) {
      if (given.size() >= max || bytes >= kClaimMaxBytes) {
        unexamined = true;
        break;
      }
      scanned_to = ev->seq;
      if (!filter->Matches(ev->type)) continue;
      bytes += ev->payload.size();
      given.push_back(std::move(ev));
    }
    args.insert(args.end(), {absl::StrCat(view->cursor), view->types, absl::StrCat(scanned_to)});
    for (const EventPtr& ev : given) args.push_back(absl::StrCat(ev->seq));
    cmds.push_back(claim_.Call({Key("log")}, std::move(args)));
    // The next claim's candidates, read just after this one moved the
    // cursor (same connection: in that order).
    cmds.push_back({"XRANGE", Key("log"), absl::StrCat("(", scanned_to, "-0"), "+", "COUNT",
                    absl::StrCat(scan)});
  } else {
    cmds.push_back(claim_.Call({Key("log")}, std::move(args)));
  }
  absl::StatusOr<std::vector<Reply>> replies = client_->Pipeline(tag_, cmds, Deadline());
  if (!replies.ok()) return replies.status();
  Reply& r = replies->front();
  if (absl::Status st = redis::ReplyStatus(r, "claim"); !st.ok()) return st;
  if (filter.has_value() && r.elements.size() == 3 && r.elements[0].integer == -1) {
    // The group moved on (another replica claimed) or is gone.
    absl::MutexLock lock(&claim_mu_);
    if (r.elements[1].str.empty()) {
      claim_views_.erase(req.group.name);
    } else {
      claim_views_[req.group.name] = ClaimView{AsU64(r.elements[1]), r.elements[2].str, {}, false};
    }
    return std::optional<ClaimResult>();
  }
  if (r.elements.size() < 6) return absl::InternalError("claim: unexpected reply");
  ClaimResult out;
  out.dead_lettered = static_cast<uint32_t>(AsU64(r.elements[0]));
  out.redelivered = static_cast<uint32_t>(AsU64(r.elements[1]));
  out.more = AsU64(r.elements[2]) != 0;
  if (!r.elements[3].str.empty()) out.types = absl::StrSplit(r.elements[3].str, ',');
  size_t leased_given = AsU64(r.elements[5]);
  ClaimView next{AsU64(r.elements[4]),
                 r.elements[3].str,
                 {},
                 false,
                 view.has_value() ? view->payload_size : ClaimView().payload_size};
  if (filter.has_value() && next.cursor == scanned_to) {
    // The cursor is where the read-ahead starts (the script did not stop
    // short of scanned_to): what it read is what comes next.
    absl::StatusOr<std::vector<EventPtr>> ahead =
        EventsFromEntries(std::move((*replies)[1]), "claim read-ahead");
    if (ahead.ok()) {
      // Kept per group until the next claim: at most a claim's payload (the
      // next claim looks no further than what it keeps).
      size_t bytes = 0, keep = 0;
      while (keep < ahead->size() && bytes < kClaimMaxBytes) {
        bytes += (*ahead)[keep++]->payload.size();
      }
      if (keep > 0) next.payload_size = std::max<size_t>(bytes / keep, 1);
      ahead->resize(keep);
      next.ahead = *std::move(ahead);
      next.read_ahead = true;
      if (!next.ahead.empty()) out.more = true;
    }
  }
  if (unexamined) out.more = true;
  {
    absl::MutexLock lock(&claim_mu_);
    claim_views_[req.group.name] = std::move(next);
  }
  for (size_t i = 6; i + 3 < r.elements.size(); i += 4) {
    auto ev = std::make_shared<StoredEvent>();
    ev->seq = AsU64(r.elements[i]);
    if (ev->seq == 0) return absl::InternalError("claim: a delivery without a sequence");
    int64_t ingest = 0;
    ev->type = std::move(r.elements[i + 2].str);
    if (!UnpackEntry(std::move(r.elements[i + 3].str), &ingest, &ev->payload)) {
      return absl::InternalError("claim: a malformed log entry");
    }
    ev->ingest_time = absl::FromUnixMicros(ingest);
    out.deliveries.push_back(
        ClaimedDelivery{std::move(ev), static_cast<uint32_t>(AsU64(r.elements[i + 1]))});
  }
  for (size_t i = 0; i < leased_given && i < given.size(); ++i) {
    out.deliveries.push_back(ClaimedDelivery{std::move(given[i]), 1});
  }
  return std::optional<ClaimResult>(std::move(out));
}

absl::StatusOr<uint32_t> RedisEventStore::AckDeliveries(const std::string& group,
                                                        const std::vector<uint64_t>& seqs) {
  std::vector<std::string> args;
  for (uint64_t s : seqs) args.push_back(absl::StrCat(s));
  absl::StatusOr<Reply> r = GroupWrite(ack_, group, std::move(args), "ack");
  if (!r.ok()) return r.status();
  return Counted(*r, group, seqs.size());
}

absl::StatusOr<uint32_t> RedisEventStore::Requeue(const std::string& group,
                                                  const std::vector<DeliveryRef>& refs,
                                                  absl::Time at, const std::string& reason) {
  std::vector<std::string> args = {absl::StrCat(Millis(at)), "any", reason};
  AppendRefs(refs, &args);
  absl::StatusOr<Reply> r = GroupWrite(requeue_, group, std::move(args), "nack");
  if (!r.ok()) return r.status();
  return Counted(*r, group, refs.size());
}

absl::StatusOr<uint32_t> RedisEventStore::GiveBack(const std::string& group,
                                                   const std::string& owner,
                                                   const std::vector<DeliveryRef>& refs,
                                                   absl::Time at, const std::string& reason) {
  std::vector<std::string> args = {absl::StrCat(Millis(at)), absl::StrCat("owner=", owner), reason};
  AppendRefs(refs, &args);
  absl::StatusOr<Reply> r = GroupWrite(requeue_, group, std::move(args), "give back");
  if (!r.ok()) return r.status();
  return Counted(*r, group, refs.size());
}

absl::StatusOr<uint32_t> RedisEventStore::Revive(const std::string& group,
                                                 const std::vector<uint64_t>& seqs, absl::Time at) {
  std::vector<std::string> args = {absl::StrCat(Millis(at))};
  for (uint64_t s : seqs) args.push_back(absl::StrCat(s));
  absl::StatusOr<Reply> r = GroupWrite(revive_, group, std::move(args), "replay dead letters");
  if (!r.ok()) return r.status();
  return static_cast<uint32_t>(r->integer);
}

absl::StatusOr<uint32_t> RedisEventStore::ExtendLeases(const std::string& group,
                                                       const std::vector<DeliveryRef>& refs,
                                                       absl::Time until) {
  std::vector<std::string> args = {absl::StrCat(Millis(until))};
  AppendRefs(refs, &args);
  absl::StatusOr<Reply> r = GroupWrite(extend_, group, std::move(args), "modify ack deadline");
  if (!r.ok()) return r.status();
  return Counted(*r, group, refs.size());
}

absl::StatusOr<std::vector<uint64_t>> RedisEventStore::StillHeld(const std::string& group,
                                                                 const std::string& owner,
                                                                 const std::vector<uint64_t>& seqs,
                                                                 absl::Time now) {
  std::vector<std::string> args = {owner, absl::StrCat(Millis(now))};
  for (uint64_t s : seqs) args.push_back(absl::StrCat(s));
  absl::StatusOr<Reply> r = GroupWrite(still_held_, group, std::move(args), "still held");
  if (!r.ok()) return r.status();
  std::vector<uint64_t> out;
  for (const Reply& e : r->elements) {
    uint64_t s = AsU64(e);
    if (s != 0) out.push_back(s);
  }
  return out;
}

absl::StatusOr<SharedGroupStats> RedisEventStore::GroupStats(const std::string& group) {
  std::string gk = Key(absl::StrCat("g:", EncodeGroupName(group)));
  absl::StatusOr<std::vector<Reply>> r = client_->Pipeline(
      tag_,
      {{"HLEN", gk + ":pending"}, {"HMGET", gk, "cursor", "redelivered"}, {"ZCARD", gk + ":dead"}},
      Deadline());
  if (!r.ok()) return r.status();
  for (const Reply& x : *r) {
    if (absl::Status st = redis::ReplyStatus(x, "group stats"); !st.ok()) return st;
  }
  SharedGroupStats out;
  out.pending = static_cast<uint64_t>((*r)[0].integer);
  if ((*r)[1].elements.size() == 2) {
    (void)absl::SimpleAtoi((*r)[1].elements[0].str, &out.cursor);
    (void)absl::SimpleAtoi((*r)[1].elements[1].str, &out.redelivered);
  }
  out.dead_lettered = static_cast<uint64_t>((*r)[2].integer);
  return out;
}

}  // namespace switchboard::broker
