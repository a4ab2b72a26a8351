#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "libs/common/json_log.h"
#include "libs/common/proto_time.h"
#include "libs/common/wire_check.h"
#include "services/event_broker/broker.h"
#include "services/event_broker/local_group.h"
#include "services/event_broker/shared_group.h"

// Broker's request handling: subscribe, acks, history, stats, dead letters.
namespace switchboard::broker {

absl::StatusOr<uint64_t> Broker::StartCursor(const v1::SubscribeRequest& req) {
  uint64_t last = last_seq_.load();
  // A sequence this replica just acknowledged is not in the future, even if
  // the tail has not delivered it here yet.
  uint64_t known = std::max(last, committed_seq_.load());
  switch (req.start()) {
    case v1::SubscribeRequest::LATEST:
      return last;
    case v1::SubscribeRequest::EARLIEST:
      return 0;
    case v1::SubscribeRequest::SEQUENCE:
      if (req.start_sequence() == 0) {
        return absl::InvalidArgumentError("start_sequence: required with start=SEQUENCE (>= 1)");
      }
      if (req.start_sequence() > known + 1) {
        return absl::InvalidArgumentError(absl::StrCat("start_sequence: ", req.start_sequence(),
                                                       " is in the future (last sequence is ",
                                                       known, ")"));
      }
      return req.start_sequence() - 1;
    case v1::SubscribeRequest::TIME: {
      if (!req.has_start_time()) {
        return absl::InvalidArgumentError("start_time: required with start=TIME");
      }
      absl::StatusOr<uint64_t> first =
          store_->FirstSequenceAtOrAfter(FromProtoTime(req.start_time()));
      if (!first.ok()) return first.status();
      return *first - 1;
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat("start: unknown value ", req.start()));
  }
}

absl::StatusOr<std::shared_ptr<Subscription>> Broker::Subscribe(const v1::SubscribeRequest& req,
                                                                SubscriptionSink* sink) {
  if (shutting_down_) return absl::UnavailableError("broker is shutting down");
  if (store_->shared() && !store_reachable_.load()) {
    return absl::UnavailableError("event-broker: store unreachable; retry shortly");
  }
  std::vector<std::string> patterns(req.types().begin(), req.types().end());
  absl::StatusOr<TypeFilter> filter = TypeFilter::Parse(patterns, "types");
  if (!filter.ok()) return filter.status();
  absl::StatusOr<uint64_t> cursor = StartCursor(req);
  if (!cursor.ok()) return cursor.status();
  if (req.group().empty()) {
    auto sub = std::make_shared<BroadcastSubscription>(this, *std::move(filter), *cursor, sink);
    {
      // Shutdown sets shutting_down_ before it takes subs_mu_ to end every
      // stream: checked here under subs_mu_, a stream is either in its
      // snapshot or refused, never left running.
      absl::MutexLock lock(&subs_mu_);
      if (shutting_down_) return absl::UnavailableError("broker is shutting down");
      broadcasts_.push_back(sub);
    }
    SubscriberCountChanged(+1);
    return sub;
  }
  if (req.group().size() > 200 || req.group().find_first_of(",\x1f") != std::string::npos) {
    return absl::InvalidArgumentError("group: at most 200 characters, no ','");
  }
  if (req.has_ack_deadline() && (FromProtoDuration(req.ack_deadline()) < absl::Milliseconds(100) ||
                                 FromProtoDuration(req.ack_deadline()) > absl::Hours(12))) {
    return absl::InvalidArgumentError("ack_deadline: must be between 100ms and 12h");
  }
  if (req.max_in_flight() > 100000) {
    return absl::InvalidArgumentError("max_in_flight: at most 100000");
  }
  if (req.max_deliveries() > 1000) {
    return absl::InvalidArgumentError("max_deliveries: at most 1000");
  }
  absl::Duration deadline =
      req.has_ack_deadline() ? FromProtoDuration(req.ack_deadline()) : config_.default_ack_deadline;
  uint32_t max_in_flight =
      req.max_in_flight() ? req.max_in_flight() : config_.default_max_in_flight;
  std::shared_ptr<Group> group;
  std::vector<GroupOp> ops;
  {
    absl::MutexLock lock(&subs_mu_);
    auto it = groups_.find(req.group());
    if (it != groups_.end()) {
      group = it->second;
    } else {
      GroupRecord rec;
      rec.name = req.group();
      rec.types = filter->patterns();
      rec.cursor = *cursor;
      rec.max_deliveries =
          req.max_deliveries() ? req.max_deliveries() : config_.default_max_deliveries;
      if (store_->shared()) {
        // Created in the store by its first claim.
        group =
            std::make_shared<SharedGroup>(this, store_.get(), replica_id_, std::move(rec), *filter);
      } else {
        GroupOp op;
        op.kind = GroupOp::Kind::kUpsertGroup;
        op.group = rec;
        ops.push_back(std::move(op));
        group = std::make_shared<LocalGroup>(this, std::move(rec), *filter, 0);
      }
      groups_[req.group()] = group;
      LogInfo("consumer group created", {{"group", req.group()},
                                         {"cursor", *cursor},
                                         {"types", absl::StrJoin(filter->patterns(), ",")}});
    }
  }
  EnqueueOps(std::move(ops));
  auto member = std::make_shared<GroupMember>(this, group, sink, deadline, max_in_flight);
  if (absl::Status s = group->Join(member, *filter); !s.ok()) return s;
  SubscriberCountChanged(+1);
  return member;
}

absl::StatusOr<std::shared_ptr<Group>> Broker::FindGroup(const std::string& name) {
  if (name.empty()) return absl::InvalidArgumentError("group: required");
  {
    absl::MutexLock lock(&subs_mu_);
    auto it = groups_.find(name);
    if (it != groups_.end()) return it->second;
  }
  if (store_->shared()) {
    // A group other replicas serve: acks, nacks and dead letters for it go
    // to the store from here too.
    if (absl::Status st = AdoptSharedGroups(); !st.ok()) return st;
    absl::MutexLock lock(&subs_mu_);
    auto it = groups_.find(name);
    if (it != groups_.end()) return it->second;
  }
  return absl::InvalidArgumentError(absl::StrCat("group: no consumer group '", name, "'"));
}

absl::Status Broker::AdoptSharedGroups() {
  absl::StatusOr<std::vector<GroupRecord>> recs = store_->LoadGroups();
  if (!recs.ok()) return recs.status();
  for (GroupRecord& rec : *recs) {
    absl::StatusOr<TypeFilter> filter = TypeFilter::Parse(rec.types);
    if (!filter.ok()) continue;
    absl::MutexLock lock(&subs_mu_);
    if (groups_.count(rec.name) != 0) continue;
    std::string name = rec.name;
    groups_[name] = std::make_shared<SharedGroup>(this, store_.get(), replica_id_, std::move(rec),
                                                  *std::move(filter));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::AckResponse> Broker::Ack(const v1::AckRequest& req) {
  absl::StatusOr<std::shared_ptr<Group>> g = FindGroup(req.group());
  if (!g.ok()) return g.status();
  std::vector<DeliveryRef> refs;
  if (absl::Status s = (*g)->ValidateAckIds(req.ack_ids(), &refs); !s.ok()) return s;
  return (*g)->Ack(refs);
}

absl::StatusOr<v1::NackResponse> Broker::Nack(const v1::NackRequest& req) {
  absl::StatusOr<std::shared_ptr<Group>> g = FindGroup(req.group());
  if (!g.ok()) return g.status();
  absl::Duration delay = req.has_delay() ? FromProtoDuration(req.delay()) : absl::ZeroDuration();
  if (delay < absl::ZeroDuration() || delay > absl::Hours(24)) {
    return absl::InvalidArgumentError("delay: must be between 0 and 24h");
  }
  if (req.reason().size() > kMaxNackReasonBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("reason: longer than ", kMaxNackReasonBytes, " bytes"));
  }
  std::vector<DeliveryRef> refs;
  if (absl::Status s = (*g)->ValidateAckIds(req.ack_ids(), &refs); !s.ok()) return s;
  return (*g)->Nack(refs, delay, req.reason().empty() ? kReasonNacked : req.reason());
}

absl::StatusOr<v1::ModifyAckDeadlineResponse> Broker::ModifyAckDeadline(
    const v1::ModifyAckDeadlineRequest& req) {
  absl::StatusOr<std::shared_ptr<Group>> g = FindGroup(req.group());
  if (!g.ok()) return g.status();
  if (!req.has_ack_deadline()) return absl::InvalidArgumentError("ack_deadline: required");
  absl::Duration d = FromProtoDuration(req.ack_deadline());
  if (d < absl::ZeroDuration() || d > absl::Hours(12)) {
    return absl::InvalidArgumentError("ack_deadline: must be between 0 and 12h");
  }
  std::vector<DeliveryRef> refs;
  if (absl::Status s = (*g)->ValidateAckIds(req.ack_ids(), &refs); !s.ok()) return s;
  absl::StatusOr<uint32_t> n = (*g)->ModifyDeadline(refs, d);
  if (!n.ok()) return n.status();
  v1::ModifyAckDeadlineResponse resp;
  resp.set_modified(*n);
  return resp;
}

absl::StatusOr<v1::GetEventHistoryResponse> Broker::GetEventHistory(
    const v1::GetEventHistoryRequest& req) {
  if (req.limit() > 10000) return absl::InvalidArgumentError("limit: at most 10000");
  std::vector<std::string> patterns(req.types().begin(), req.types().end());
  absl::StatusOr<TypeFilter> filter = TypeFilter::Parse(patterns, "types");
  if (!filter.ok()) return filter.status();
  HistoryQuery q;
  q.limit = req.limit() ? req.limit() : config_.default_history_limit;
  if (!filter->MatchesAll()) {
    for (const std::string& p : patterns) {
      if (p.size() > 2 && p.compare(p.size() - 2, 2, ".*") == 0) {
        q.type_prefixes.push_back(p.substr(0, p.size() - 1));
      } else {
        q.exact_types.push_back(p);
      }
    }
  }
  q.correlation_id = req.correlation_id();
  q.subject = req.subject();
  if (req.has_since()) q.since = FromProtoTime(req.since());
  q.before_sequence = req.before_sequence();
  absl::StatusOr<std::vector<EventPtr>> evs = store_->Query(q);
  if (!evs.ok()) return evs.status();
  v1::GetEventHistoryResponse resp;
  for (const EventPtr& ev : *evs) *resp.add_events() = ev->Parse();
  return resp;
}

ReplicaLoad Broker::LocalLoad() {
  ReplicaLoad load;
  load.replica = replica_id_;
  {
    absl::MutexLock lock(&rate_mu_);
    int64_t now = absl::ToUnixSeconds(clock_->Now());
    uint64_t n = 0;
    for (auto& [sec, count] : rate_) {
      if (sec >= now - 10 && sec < now) n += count;
    }
    load.events_per_second = static_cast<double>(n) / 10.0;
  }
  std::vector<std::shared_ptr<BroadcastSubscription>> subs;
  std::vector<std::shared_ptr<Group>> groups;
  {
    absl::MutexLock lock(&subs_mu_);
    load.subscribers = static_cast<uint32_t>(subscriber_count_);
    for (auto& w : broadcasts_) {
      if (auto s = w.lock()) subs.push_back(std::move(s));
    }
    for (auto& [name, g] : groups_) groups.push_back(g);
  }
  for (auto& s : subs) {
    if (s->closed()) continue;
    if (s->filter().patterns().empty()) load.subscriptions_by_type["*"]++;
    for (const std::string& p : s->filter().patterns()) load.subscriptions_by_type[p]++;
  }
  for (auto& g : groups) {
    int members = 0;
    std::vector<std::string> patterns = g->PatternsForStats(&members);
    load.group_members[g->name()] = members;
    if (members > 0 && patterns.empty()) load.subscriptions_by_type["*"] += members;
    for (const std::string& p : patterns) load.subscriptions_by_type[p] += members;
  }
  return load;
}

absl::StatusOr<v1::GetStatsResponse> Broker::GetStats() {
  v1::GetStatsResponse resp;
  absl::StatusOr<StoreBounds> b = store_->Bounds();
  if (!b.ok()) return b.status();
  resp.set_total_events(b->count);
  resp.set_first_sequence(b->first_seq);
  resp.set_last_sequence(b->last_seq);
  resp.set_storage_bytes(store_->StorageBytes());
  // Subscribers and rates are per process: on a shared store, add what the
  // other replicas published of theirs.
  if (store_->shared()) {
    if (absl::Status st = AdoptSharedGroups(); !st.ok()) return st;
  }
  ReplicaLoad total = LocalLoad();
  if (store_->shared()) {
    absl::StatusOr<std::vector<ReplicaLoad>> others = store_->ListLoads();
    if (!others.ok()) return others.status();
    for (const ReplicaLoad& l : *others) {
      if (l.replica == replica_id_) continue;
      total.subscribers += l.subscribers;
      total.events_per_second += l.events_per_second;
      for (const auto& [p, n] : l.subscriptions_by_type) total.subscriptions_by_type[p] += n;
      for (const auto& [g, n] : l.group_members) total.group_members[g] += n;
    }
  }
  resp.set_events_per_second(total.events_per_second);
  resp.set_active_subscribers(total.subscribers);
  for (const auto& [p, n] : total.subscriptions_by_type) {
    (*resp.mutable_subscriptions_by_type())[p] = n;
  }
  std::vector<std::shared_ptr<Group>> groups;
  {
    absl::MutexLock lock(&subs_mu_);
    for (auto& [name, g] : groups_) groups.push_back(g);
  }
  std::set<std::string> local;
  for (auto& g : groups) {
    v1::GroupStats* gs = resp.add_groups();
    if (absl::Status st = g->FillStats(gs, b->last_seq); !st.ok()) return st;
    gs->set_members(total.group_members[g->name()]);
    local.insert(g->name());
  }
  // Groups only other replicas serve: their members.
  for (const auto& [name, n] : total.group_members) {
    if (local.count(name) != 0) continue;
    v1::GroupStats* gs = resp.add_groups();
    gs->set_name(name);
    gs->set_members(n);
  }
  HistoryQuery recent;
  recent.limit = 10;
  absl::StatusOr<std::vector<EventPtr>> evs = store_->Query(recent);
  if (!evs.ok()) return evs.status();
  for (const EventPtr& ev : *evs) *resp.add_recent_events() = ev->Parse();
  return resp;
}

absl::StatusOr<v1::ListDeadLettersResponse> Broker::ListDeadLetters(
    const v1::ListDeadLettersRequest& req) {
  absl::StatusOr<std::shared_ptr<Group>> g = FindGroup(req.group());
  if (!g.ok()) return g.status();
  if (req.limit() > 10000) return absl::InvalidArgumentError("limit: at most 10000");
  absl::StatusOr<std::vector<DeadLetterRecord>> letters =
      store_->ListDeadLetters(req.group(), req.after_sequence(), req.limit() ? req.limit() : 100);
  if (!letters.ok()) return letters.status();
  v1::ListDeadLettersResponse resp;
  for (const DeadLetterRecord& d : *letters) {
    v1::DeadLetter* out = resp.add_dead_letters();
    *out->mutable_event() = d.event->Parse();
    out->set_group(d.group);
    out->set_delivery_attempts(d.attempts);
    *out->mutable_dead_lettered_at() = ToProtoTime(d.dead_at);
    out->set_last_error(d.last_error);
  }
  return resp;
}

absl::StatusOr<v1::ReplayDeadLettersResponse> Broker::ReplayDeadLetters(
    const v1::ReplayDeadLettersRequest& req) {
  absl::StatusOr<std::shared_ptr<Group>> g = FindGroup(req.group());
  if (!g.ok()) return g.status();
  // Dead letters are written asynchronously with the group's other state.
  FlushWrites();
  if (static_cast<size_t>(req.sequences_size()) > config_.max_replay_per_call) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequences: at most ", config_.max_replay_per_call, " per call"));
  }
  // One call loads at most config_.max_replay_per_call dead letters; replaying "all"
  // of a larger queue takes several calls (each answers how many it did).
  std::vector<DeadLetterRecord> chosen;
  uint64_t after = 0;
  std::set<uint64_t> wanted(req.sequences().begin(), req.sequences().end());
  while (chosen.size() < config_.max_replay_per_call) {
    absl::StatusOr<std::vector<DeadLetterRecord>> page =
        store_->ListDeadLetters(req.group(), after, 1000);
    if (!page.ok()) return page.status();
    if (page->empty()) break;
    for (DeadLetterRecord& d : *page) {
      after = d.event->seq;
      if (chosen.size() >= config_.max_replay_per_call) break;
      if (wanted.empty() || wanted.count(after)) chosen.push_back(std::move(d));
    }
    if (!wanted.empty() && chosen.size() == wanted.size()) break;
  }
  if (!wanted.empty() && chosen.size() != wanted.size()) {
    std::set<uint64_t> found;
    for (const auto& d : chosen) found.insert(d.event->seq);
    for (int i = 0; i < req.sequences().size(); ++i) {
      if (!found.count(req.sequences(i))) {
        return absl::InvalidArgumentError(absl::StrCat("sequences[", i, "]: ", req.sequences(i),
                                                       " is not a dead letter of group '",
                                                       req.group(), "'"));
      }
    }
  }
  absl::StatusOr<uint32_t> n = (*g)->Replay(chosen);
  if (!n.ok()) return n.status();
  v1::ReplayDeadLettersResponse resp;
  resp.set_replayed(*n);
  return resp;
}

}  // namespace switchboard::broker
