#include "services/event_broker/testing/memory_store.h"

#include <algorithm>
#include <deque>
#include <map>
#include <set>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"

namespace switchboard::broker {
namespace {

// A log entry: the event and what history filters on besides its type.
struct Entry {
  EventPtr event;
  std::string correlation_id;
  std::string subject;
  int64_t time_us = 0;
};

struct DedupeEntry {
  uint64_t seq = 0;
  absl::Time expires;
};

// One group: P:g:<name> and its keys in redis_group_scripts.h. `created` is
// the group hash existing; commit ops may write pending deliveries and dead
// letters of a group that was never created, as in Redis.
struct Group {
  bool created = false;
  std::string types;  // joined with ','
  uint64_t cursor = 0;
  uint32_t max_deliveries = 0;
  uint64_t redelivered = 0;
  std::map<uint64_t, uint32_t> pending;  // seq -> deliveries so far
  // When a delivery may be handed out again (ms): its holder's lease or a
  // nack's delay; due_order is the same, sorted by time then sequence.
  std::map<uint64_t, int64_t> due_ms;
  std::set<std::pair<int64_t, uint64_t>> due_order;
  std::map<uint64_t, std::string> owner;      // seq -> the replica holding it
  std::map<uint64_t, DeadLetterRecord> dead;  // with their own copy of the event
  // Why a delivery came back before its ack, until it is handed out again
  // (the requeue's reason; absent: its lease ran out).
  std::map<uint64_t, std::string> why;

  void SetDue(uint64_t seq, int64_t ms) {
    auto [it, inserted] = due_ms.try_emplace(seq, ms);
    if (!inserted) {
      due_order.erase({it->second, seq});
      it->second = ms;
    }
    due_order.emplace(ms, seq);
  }
  void ClearDue(uint64_t seq) {
    auto it = due_ms.find(seq);
    if (it == due_ms.end()) return;
    due_order.erase({it->second, seq});
    due_ms.erase(it);
  }
};

// Which types a history query or a group takes.
struct TypeFilter {
  bool all = false;
  absl::flat_hash_set<std::string> exact;
  std::vector<std::string> prefixes;

  bool Matches(absl::string_view type) const {
    if (all || exact.contains(type)) return true;
    for (const std::string& p : prefixes) {
      if (absl::StartsWith(type, p)) return true;
    }
    return false;
  }
};

// A group's types as the claim script reads them: none or "*" is every
// type, "order.*" the prefix "order.", anything else one type.
TypeFilter GroupFilter(absl::string_view joined) {
  TypeFilter f;
  f.all = joined.empty();
  for (absl::string_view t : absl::StrSplit(joined, ',', absl::SkipEmpty())) {
    if (t == "*") {
      f.all = true;
    } else if (absl::EndsWith(t, ".*")) {
      f.prefixes.emplace_back(t.substr(0, t.size() - 1));
    } else {
      f.exact.emplace(t);
    }
  }
  return f;
}

// A claim hands out at most about this much payload, as on Redis.
constexpr size_t kClaimMaxBytes = 4 << 20;

// Times are kept as precisely as Redis keeps them.
absl::Time Micros(absl::Time t) { return absl::FromUnixMicros(absl::ToUnixMicros(t)); }

uint64_t SeqOf(uint64_t seq) { return seq; }
uint64_t SeqOf(const DeliveryRef& ref) { return ref.seq; }

// Refuses sequences the group never handed out (after its cursor and not
// pending), like SWITCHBOARD_LUA_CHECK_KNOWN, with Counted's message.
template <typename T>
absl::Status CheckKnown(const Group& g, const std::string& group, const std::vector<T>& ids) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (SeqOf(ids[i]) <= g.cursor || g.pending.count(SeqOf(ids[i])) != 0) continue;
    return absl::InvalidArgumentError(
        absl::StrCat("ack_ids[", i, "]: unknown ack id (never delivered to group '", group, "')"));
  }
  return absl::OkStatus();
}

// The delivery is pending at that attempt (not redelivered since).
bool AtAttempt(const Group& g, const DeliveryRef& ref) {
  auto it = g.pending.find(ref.seq);
  return it != g.pending.end() && it->second == ref.attempt;
}

}  // namespace

struct MemoryStoreState {
  absl::Mutex mu;
  absl::CondVar appended;                     // signalled by every commit that appends
  uint64_t last_seq ABSL_GUARDED_BY(mu) = 0;  // never decreases
  // Consecutive sequences: appends at the back, retention trims the front.
  std::deque<Entry> log ABSL_GUARDED_BY(mu);
  uint64_t payload_bytes ABSL_GUARDED_BY(mu) = 0;
  absl::flat_hash_map<std::string, DedupeEntry> dedupe ABSL_GUARDED_BY(mu);
  // (expiry, key) in the order added, to forget expired keys.
  std::deque<std::pair<absl::Time, std::string>> dedupe_order ABSL_GUARDED_BY(mu);
  std::map<std::string, Group> groups ABSL_GUARDED_BY(mu);
  std::map<std::string, std::pair<absl::Time, ReplicaLoad>> loads ABSL_GUARDED_BY(mu);
};

namespace {

// The index in the log of the first event after `seq`.
size_t IndexAfter(const MemoryStoreState& s, uint64_t seq) ABSL_SHARED_LOCKS_REQUIRED(s.mu) {
  if (s.log.empty() || seq < s.log.front().event->seq) return 0;
  return static_cast<size_t>(std::min<uint64_t>(seq - s.log.front().event->seq + 1, s.log.size()));
}

// A group as reads see it: one never written to is empty, as in Redis.
const Group& FindGroup(const MemoryStoreState& s, const std::string& name)
    ABSL_SHARED_LOCKS_REQUIRED(s.mu) {
  static const Group* const kNone = new Group;
  auto it = s.groups.find(name);
  return it == s.groups.end() ? *kNone : it->second;
}

const Entry* Find(const MemoryStoreState& s, uint64_t seq) ABSL_SHARED_LOCKS_REQUIRED(s.mu) {
  size_t i = IndexAfter(s, seq - 1);
  return seq != 0 && i < s.log.size() && s.log[i].event->seq == seq ? &s.log[i] : nullptr;
}

// Up to `limit` (at least one) events from log[from].
std::vector<EventPtr> Slice(const MemoryStoreState& s, size_t from, size_t limit)
    ABSL_SHARED_LOCKS_REQUIRED(s.mu) {
  std::vector<EventPtr> out;
  for (size_t i = from; i < s.log.size() && out.size() < std::max<size_t>(limit, 1); ++i) {
    out.push_back(s.log[i].event);
  }
  return out;
}

// The index of the first event in log[0, end) ingested at or after `t` (end
// if none): ingest time grows with the sequence.
size_t FirstIngestedAt(const MemoryStoreState& s, size_t end, absl::Time t)
    ABSL_SHARED_LOCKS_REQUIRED(s.mu) {
  int64_t target = absl::ToUnixMicros(t);
  auto it = std::partition_point(s.log.begin(), s.log.begin() + end, [&](const Entry& e) {
    return absl::ToUnixMicros(e.event->ingest_time) < target;
  });
  return static_cast<size_t>(it - s.log.begin());
}

void ApplyOp(MemoryStoreState& s, const GroupOp& op, absl::Time now)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
  Group& g = s.groups[op.group.name];
  switch (op.kind) {
    case GroupOp::Kind::kUpsertGroup:
      if (!g.created) g.cursor = op.group.cursor;
      g.created = true;
      g.types = absl::StrJoin(op.group.types, ",");
      g.max_deliveries = op.group.max_deliveries;
      break;
    case GroupOp::Kind::kSetCursor:
      if (g.created && op.group.cursor > g.cursor) g.cursor = op.group.cursor;
      break;
    case GroupOp::Kind::kSetPending:
      g.pending[op.seq] = op.attempts;
      break;
    case GroupOp::Kind::kRemovePending:
      g.pending.erase(op.seq);
      break;
    case GroupOp::Kind::kDeadLetter: {
      g.pending.erase(op.seq);
      // A copy: retention may delete the event from the log.
      auto copy = std::make_shared<StoredEvent>();
      copy->seq = op.seq;
      copy->ingest_time = Micros(op.event ? op.event->ingest_time : now);
      if (op.event) {
        copy->type = op.event->type;
        copy->payload = op.event->payload;
      }
      g.dead[op.seq] =
          DeadLetterRecord{op.group.name, std::move(copy), op.attempts, Micros(now), op.error};
      break;
    }
    case GroupOp::Kind::kRemoveDeadLetter:
      g.dead.erase(op.seq);
      break;
  }
}

}  // namespace

std::shared_ptr<MemoryStoreState> MemoryEventStore::NewState() {
  return std::make_shared<MemoryStoreState>();
}

MemoryEventStore::MemoryEventStore(std::shared_ptr<MemoryStoreState> state,
                                   absl::Duration dedupe_window)
    : state_(std::move(state)), dedupe_window_(dedupe_window) {}

absl::StatusOr<CommitResult> MemoryEventStore::Commit(const WriteBatch& batch, absl::Time now) {
  MemoryStoreState& s = *state_;
  absl::MutexLock lock(&s.mu);
  // Forget expired dedupe keys (a key added again later keeps its entry).
  while (!s.dedupe_order.empty() && s.dedupe_order.front().first <= now) {
    auto it = s.dedupe.find(s.dedupe_order.front().second);
    if (it != s.dedupe.end() && it->second.expires == s.dedupe_order.front().first) {
      s.dedupe.erase(it);
    }
    s.dedupe_order.pop_front();
  }
  CommitResult result;
  result.duplicate_of.assign(batch.events.size(), 0);
  const bool dedupe = dedupe_window_ >= absl::Milliseconds(1);  // Redis: PX in ms
  const absl::Time ingest = Micros(now);
  for (size_t i = 0; i < batch.events.size(); ++i) {
    const NewEvent& ev = *batch.events[i];
    std::string key;
    if (dedupe && ev.client_id) {
      key = DedupeKey(ev.source, ev.id);
      // Also finds the key of an earlier event of this batch.
      auto it = s.dedupe.find(key);
      if (it != s.dedupe.end() && it->second.expires > now) {
        result.duplicate_of[i] = it->second.seq;
        continue;
      }
    }
    // Never below a sequence the committing broker has seen.
    if (result.first == 0) s.last_seq = std::max(s.last_seq, batch.seq_floor);
    uint64_t seq = ++s.last_seq;
    if (result.first == 0) result.first = seq;
    auto stored = std::make_shared<StoredEvent>();
    stored->seq = seq;
    stored->ingest_time = ingest;
    stored->type = ev.type;
    stored->payload = ev.payload;
    s.payload_bytes += ev.payload.size();
    s.log.push_back(Entry{std::move(stored), ev.correlation_id, ev.subject, ev.time_us});
    if (!key.empty()) {
      s.dedupe[key] = DedupeEntry{seq, now + dedupe_window_};
      s.dedupe_order.emplace_back(now + dedupe_window_, std::move(key));
    }
  }
  for (const GroupOp& op : batch.ops) ApplyOp(s, op, now);
  if (result.first != 0) s.appended.SignalAll();
  return result;
}

absl::StatusOr<std::vector<EventPtr>> MemoryEventStore::ReadAfter(uint64_t after_seq,
                                                                  size_t limit) {
  absl::MutexLock lock(&state_->mu);
  return Slice(*state_, IndexAfter(*state_, after_seq), limit);
}

absl::StatusOr<EventPtr> MemoryEventStore::ReadOne(uint64_t seq) {
  absl::MutexLock lock(&state_->mu);
  const Entry* e = Find(*state_, seq);
  if (e == nullptr) return absl::NotFoundError(absl::StrCat("event ", seq, " is not stored"));
  return e->event;
}

absl::StatusOr<std::vector<EventPtr>> MemoryEventStore::Query(const HistoryQuery& q) {
  TypeFilter types;
  types.all = q.exact_types.empty() && q.type_prefixes.empty();
  types.exact.insert(q.exact_types.begin(), q.exact_types.end());
  types.prefixes = q.type_prefixes;
  const int64_t since_us = absl::ToUnixMicros(q.since);  // InfinitePast: INT64_MIN
  const size_t limit = std::max<size_t>(q.limit, 1);
  MemoryStoreState& s = *state_;
  absl::MutexLock lock(&s.mu);
  std::vector<EventPtr> out;
  size_t end = q.before_sequence == 0 ? s.log.size() : IndexAfter(s, q.before_sequence - 1);
  for (size_t i = end; i-- > 0 && out.size() < limit;) {
    const Entry& e = s.log[i];
    if (!types.Matches(e.event->type)) continue;
    if (!q.correlation_id.empty() && e.correlation_id != q.correlation_id) continue;
    if (!q.subject.empty() && e.subject != q.subject) continue;
    if (e.time_us < since_us) continue;
    out.push_back(e.event);
  }
  return out;
}

absl::StatusOr<uint64_t> MemoryEventStore::FirstSequenceAtOrAfter(absl::Time t) {
  MemoryStoreState& s = *state_;
  absl::MutexLock lock(&s.mu);
  size_t i = FirstIngestedAt(s, s.log.size(), t);
  return i < s.log.size() ? s.log[i].event->seq : s.last_seq + 1;
}

absl::StatusOr<std::vector<EventPtr>> MemoryEventStore::ReadIngestedSince(absl::Time since) {
  MemoryStoreState& s = *state_;
  absl::MutexLock lock(&s.mu);
  return Slice(s, FirstIngestedAt(s, s.log.size(), since), s.log.size());
}

absl::StatusOr<StoreBounds> MemoryEventStore::Bounds() {
  absl::MutexLock lock(&state_->mu);
  StoreBounds b;
  b.first_seq = state_->log.empty() ? 0 : state_->log.front().event->seq;
  b.last_seq = state_->last_seq;
  b.count = state_->log.size();
  return b;
}

absl::StatusOr<std::vector<GroupRecord>> MemoryEventStore::LoadGroups() {
  absl::MutexLock lock(&state_->mu);
  std::vector<GroupRecord> out;
  for (const auto& [name, g] : state_->groups) {
    if (!g.created) continue;
    GroupRecord r{name, {}, g.cursor, g.max_deliveries};
    if (!g.types.empty()) r.types = absl::StrSplit(g.types, ',');
    out.push_back(std::move(r));
  }
  return out;
}

absl::StatusOr<std::vector<PendingRecord>> MemoryEventStore::LoadPending(const std::string& group) {
  absl::MutexLock lock(&state_->mu);
  std::vector<PendingRecord> out;
  for (const auto& [seq, n] : FindGroup(*state_, group).pending) out.push_back({seq, n});
  return out;
}

absl::StatusOr<std::vector<DeadLetterRecord>> MemoryEventStore::ListDeadLetters(
    const std::string& group, uint64_t after_seq, size_t limit) {
  absl::MutexLock lock(&state_->mu);
  std::vector<DeadLetterRecord> out;
  const auto& dead = FindGroup(*state_, group).dead;
  for (auto it = dead.upper_bound(after_seq);
       it != dead.end() && out.size() < std::max<size_t>(limit, 1); ++it) {
    out.push_back(it->second);
  }
  return out;
}

absl::StatusOr<uint64_t> MemoryEventStore::CountDeadLetters(const std::string& group) {
  absl::MutexLock lock(&state_->mu);
  return FindGroup(*state_, group).dead.size();
}

absl::StatusOr<uint64_t> MemoryEventStore::ApplyRetention(absl::Time now, absl::Duration max_age,
                                                          uint64_t max_count, uint64_t max_delete) {
  MemoryStoreState& s = *state_;
  absl::MutexLock lock(&s.mu);
  // As the retention script: the oldest beyond max_count, or ingested before
  // now - max_age, at most max_delete of them.
  uint64_t len = s.log.size();
  uint64_t n = 0;
  if (len > max_count) n = std::min(len - max_count, max_delete);
  n = std::max<uint64_t>(n, FirstIngestedAt(s, std::min(len, max_delete), now - max_age));
  for (uint64_t i = 0; i < n; ++i) {
    s.payload_bytes -= s.log.front().event->payload.size();
    s.log.pop_front();
  }
  return n;
}

uint64_t MemoryEventStore::StorageBytes() {
  absl::MutexLock lock(&state_->mu);
  return state_->payload_bytes;
}

absl::StatusOr<std::vector<EventPtr>> MemoryEventStore::WaitForAppends(uint64_t after_seq,
                                                                       size_t limit,
                                                                       absl::Duration timeout) {
  MemoryStoreState& s = *state_;
  absl::Time deadline = absl::Now() + std::max(timeout, absl::Milliseconds(1));
  absl::MutexLock lock(&s.mu);
  while (s.log.empty() || s.log.back().event->seq <= after_seq) {
    if (s.appended.WaitWithDeadline(&s.mu, deadline)) break;  // timed out
  }
  return Slice(s, IndexAfter(s, after_seq), limit);
}

absl::Status MemoryEventStore::PublishLoad(const ReplicaLoad& load, absl::Duration ttl) {
  absl::MutexLock lock(&state_->mu);
  state_->loads[load.replica] = {absl::Now() + ttl, load};
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ReplicaLoad>> MemoryEventStore::ListLoads() {
  absl::Time now = absl::Now();
  absl::MutexLock lock(&state_->mu);
  std::vector<ReplicaLoad> out;
  for (auto it = state_->loads.begin(); it != state_->loads.end();) {
    if (it->second.first < now) {
      it = state_->loads.erase(it);  // a replica that stopped refreshing
    } else {
      out.push_back(it->second.second);
      ++it;
    }
  }
  return out;
}

absl::StatusOr<ClaimResult> MemoryEventStore::Claim(const ClaimRequest& req, absl::Time now) {
  const int64_t now_ms = absl::ToUnixMillis(now);
  const int64_t until_ms = now_ms + std::max<int64_t>(1, absl::ToInt64Milliseconds(req.lease));
  const size_t max = std::max<size_t>(req.max, 1);
  const size_t max_scan = std::max<size_t>(req.max_scan, 1);
  MemoryStoreState& s = *state_;
  absl::MutexLock lock(&s.mu);
  Group& g = s.groups[req.group.name];
  // A new group takes the request's filter; an existing one keeps the
  // stored filter unless the request changes it.
  if (!g.created) g.cursor = req.group.cursor;
  if (!g.created || req.set_types) g.types = absl::StrJoin(req.group.types, ",");
  g.created = true;
  g.max_deliveries = req.group.max_deliveries;
  const TypeFilter filter = GroupFilter(g.types);
  ClaimResult out;
  if (!g.types.empty()) out.types = absl::StrSplit(g.types, ',');
  size_t bytes = 0;
  auto full = [&] { return out.deliveries.size() >= max || bytes >= kClaimMaxBytes; };
  auto hand = [&](const EventPtr& ev, uint32_t attempt) {
    g.pending[ev->seq] = attempt;
    g.why.erase(ev->seq);
    g.SetDue(ev->seq, until_ms);
    g.owner[ev->seq] = req.owner;
    out.deliveries.push_back(ClaimedDelivery{ev, attempt});
    bytes += ev->payload.size();
  };
  // Those due again: the first `max` of them, dead-lettered ones included.
  std::vector<uint64_t> due;
  for (auto it = g.due_order.begin();
       it != g.due_order.end() && it->first <= now_ms && due.size() < max; ++it) {
    due.push_back(it->second);
  }
  for (uint64_t seq : due) {
    if (full()) break;
    auto p = g.pending.find(seq);
    uint32_t attempts = p == g.pending.end() ? 0 : p->second;
    const Entry* e = Find(s, seq);
    if (e == nullptr || attempts >= g.max_deliveries) {
      g.pending.erase(seq);
      g.ClearDue(seq);
      g.owner.erase(seq);
      auto why = g.why.find(seq);
      std::string error = why == g.why.end() ? kReasonExpired : std::move(why->second);
      if (why != g.why.end()) g.why.erase(why);
      // One retention deleted is dropped.
      if (e != nullptr) {
        g.dead[seq] = DeadLetterRecord{req.group.name, e->event, attempts,
                                       absl::FromUnixMillis(now_ms), std::move(error)};
        ++out.dead_lettered;
      }
      continue;
    }
    if (attempts >= 1) {
      ++out.redelivered;
      ++g.redelivered;
    }
    hand(e->event, attempts + 1);
  }
  // Then new matching events after the cursor. Like the script, it reads
  // pages of 256 entries, so it may look at up to 255 past max_scan.
  size_t scanned = 0;
  size_t i = IndexAfter(s, g.cursor);
  while (!full() && scanned < max_scan && i < s.log.size()) {
    for (size_t end = std::min(i + 256, s.log.size()); i < end;) {
      const EventPtr& ev = s.log[i++].event;
      g.cursor = ev->seq;
      ++scanned;
      if (!filter.Matches(ev->type)) continue;
      hand(ev, 1);
      if (full()) break;
    }
  }
  out.more = full() || scanned >= max_scan;
  return out;
}

absl::StatusOr<uint32_t> MemoryEventStore::AckDeliveries(const std::string& group,
                                                         const std::vector<uint64_t>& seqs) {
  absl::MutexLock lock(&state_->mu);
  Group& g = state_->groups[group];
  if (absl::Status st = CheckKnown(g, group, seqs); !st.ok()) return st;
  uint32_t n = 0;
  for (uint64_t seq : seqs) {
    if (g.pending.erase(seq) == 0) continue;
    g.ClearDue(seq);
    g.why.erase(seq);
    g.owner.erase(seq);
    ++n;
  }
  return n;
}

absl::StatusOr<uint32_t> MemoryEventStore::Requeue(const std::string& group,
                                                   const std::vector<DeliveryRef>& refs,
                                                   absl::Time at, const std::string& reason) {
  return Release(group, nullptr, refs, at, reason);
}

absl::StatusOr<uint32_t> MemoryEventStore::GiveBack(const std::string& group,
                                                    const std::string& owner,
                                                    const std::vector<DeliveryRef>& refs,
                                                    absl::Time at, const std::string& reason) {
  return Release(group, &owner, refs, at, reason);
}

// The requeue script: held deliveries still at their attempt (and held by
// `owner`, when given) become due at `at`, for any replica.
absl::StatusOr<uint32_t> MemoryEventStore::Release(const std::string& group,
                                                   const std::string* owner,
                                                   const std::vector<DeliveryRef>& refs,
                                                   absl::Time at, const std::string& reason) {
  absl::MutexLock lock(&state_->mu);
  Group& g = state_->groups[group];
  if (absl::Status st = CheckKnown(g, group, refs); !st.ok()) return st;
  uint32_t n = 0;
  for (const DeliveryRef& ref : refs) {
    auto holder = g.owner.find(ref.seq);
    if (holder == g.owner.end() || (owner != nullptr && holder->second != *owner) ||
        !AtAttempt(g, ref)) {
      continue;
    }
    g.owner.erase(holder);
    g.SetDue(ref.seq, absl::ToUnixMillis(at));
    g.why[ref.seq] = reason;
    ++n;
  }
  return n;
}

absl::StatusOr<uint32_t> MemoryEventStore::Revive(const std::string& group,
                                                  const std::vector<uint64_t>& seqs,
                                                  absl::Time at) {
  absl::MutexLock lock(&state_->mu);
  Group& g = state_->groups[group];
  uint32_t n = 0;
  for (uint64_t seq : seqs) {
    // Pending again from attempt 1 (0 so far); counted unless already pending.
    if (g.dead.erase(seq) == 0 || g.pending.count(seq) != 0) continue;
    g.pending[seq] = 0;
    g.SetDue(seq, absl::ToUnixMillis(at));
    ++n;
  }
  return n;
}

absl::StatusOr<uint32_t> MemoryEventStore::ExtendLeases(const std::string& group,
                                                        const std::vector<DeliveryRef>& refs,
                                                        absl::Time until) {
  absl::MutexLock lock(&state_->mu);
  Group& g = state_->groups[group];
  if (absl::Status st = CheckKnown(g, group, refs); !st.ok()) return st;
  uint32_t n = 0;
  for (const DeliveryRef& ref : refs) {
    if (g.owner.count(ref.seq) == 0 || !AtAttempt(g, ref)) continue;
    if (g.due_ms.count(ref.seq) != 0) g.SetDue(ref.seq, absl::ToUnixMillis(until));  // ZADD XX
    ++n;
  }
  return n;
}

absl::StatusOr<std::vector<uint64_t>> MemoryEventStore::StillHeld(const std::string& group,
                                                                  const std::string& owner,
                                                                  const std::vector<uint64_t>& seqs,
                                                                  absl::Time now) {
  const int64_t now_ms = absl::ToUnixMillis(now);
  absl::MutexLock lock(&state_->mu);
  std::vector<uint64_t> out;
  const Group& g = FindGroup(*state_, group);
  for (uint64_t seq : seqs) {
    auto o = g.owner.find(seq);
    auto d = g.due_ms.find(seq);
    if (o != g.owner.end() && o->second == owner && d != g.due_ms.end() && d->second > now_ms) {
      out.push_back(seq);
    }
  }
  return out;
}

absl::StatusOr<SharedGroupStats> MemoryEventStore::GroupStats(const std::string& group) {
  absl::MutexLock lock(&state_->mu);
  const Group& g = FindGroup(*state_, group);
  return SharedGroupStats{g.pending.size(), g.cursor, g.redelivered, g.dead.size()};
}

}  // namespace switchboard::broker
