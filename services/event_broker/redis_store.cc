#include "services/event_broker/redis_store.h"

#include <algorithm>

#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "libs/redis/lua_batch.h"
#include "services/event_broker/redis_group_scripts.h"
#include "services/event_broker/redis_scripts.h"

namespace switchboard::broker {
namespace {

using redis::Command;
using redis::Reply;

int64_t ToMicros(absl::Time t) { return absl::ToUnixMicros(t); }

uint64_t ParseU64(absl::string_view s) {
  uint64_t v = 0;
  // A stream id "123-0" counts by its first part.
  (void)absl::SimpleAtoi(s.substr(0, s.find('-')), &v);
  return v;
}

EventPtr MakeEvent(uint64_t seq, int64_t ingest_us, std::string type, std::string payload) {
  auto ev = std::make_shared<StoredEvent>();
  ev->seq = seq;
  ev->ingest_time = absl::FromUnixMicros(ingest_us);
  ev->type = std::move(type);
  ev->payload = std::move(payload);
  return ev;
}

// One XRANGE entry: [id, [field, value, ...]].
EventPtr FromEntry(Reply& entry) {
  if (entry.elements.size() < 2) return nullptr;
  uint64_t seq = ParseU64(entry.elements[0].str);
  int64_t ingest = 0;
  std::string type, payload;
  std::vector<Reply>& f = entry.elements[1].elements;
  for (size_t k = 0; k + 1 < f.size(); k += 2) {
    const std::string& name = f[k].str;
    if (name == "ty") {
      type = std::move(f[k + 1].str);
    } else if (name == "e") {
      if (!UnpackEntry(std::move(f[k + 1].str), &ingest, &payload)) return nullptr;
    }
  }
  return MakeEvent(seq, ingest, std::move(type), std::move(payload));
}

// A dead letter's field r: the claim script writes '' for an expired lease
// (the reason lives here, not in Lua); letters from before r existed have none.
std::string LastError(Reply& r) {
  if (r.is_nil()) return "";
  if (r.str.empty()) return kReasonExpired;
  return std::move(r.str);
}

}  // namespace

absl::StatusOr<std::vector<EventPtr>> EventsFromEntries(absl::StatusOr<Reply> r,
                                                        absl::string_view what) {
  if (!r.ok()) return r.status();
  if (absl::Status st = redis::ReplyStatus(*r, what); !st.ok()) return st;
  std::vector<EventPtr> out;
  out.reserve(r->elements.size());
  for (Reply& e : r->elements) {
    if (EventPtr ev = FromEntry(e)) out.push_back(std::move(ev));
  }
  return out;
}

std::string PackEntry(int64_t ingest_us, const NewEvent& ev) {
  return absl::StrCat(ingest_us, ",", ev.time_us, ",", ev.correlation_id.size(), ",",
                      ev.subject.size(), ";", ev.correlation_id, ev.subject, ev.payload);
}

bool UnpackEntry(std::string packed, int64_t* ingest_us, std::string* payload) {
  size_t head = packed.find(';');
  if (head == std::string::npos) return false;
  std::vector<absl::string_view> parts =
      absl::StrSplit(absl::string_view(packed).substr(0, head), ',');
  uint64_t corr = 0, subject = 0;
  if (parts.size() != 4 || !absl::SimpleAtoi(parts[0], ingest_us) ||
      !absl::SimpleAtoi(parts[2], &corr) || !absl::SimpleAtoi(parts[3], &subject) ||
      corr > packed.size() || subject > packed.size() ||
      head + 1 + corr + subject > packed.size()) {
    return false;
  }
  packed.erase(0, head + 1 + corr + subject);
  *payload = std::move(packed);
  return true;
}

std::string RandomToken() {
  static thread_local absl::BitGen gen;
  return absl::StrCat(absl::Hex(absl::Uniform<uint64_t>(gen), absl::kZeroPad16),
                      absl::Hex(absl::Uniform<uint64_t>(gen), absl::kZeroPad16));
}

std::string EncodeGroupName(absl::string_view name) {
  std::string out;
  for (char c : name) {
    if (c == '%') {
      out += "%25";
    } else if (c == ':') {
      out += "%3A";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string DecodeGroupName(absl::string_view encoded) {
  std::string out;
  for (size_t i = 0; i < encoded.size(); ++i) {
    if (encoded[i] == '%' && i + 2 < encoded.size()) {
      absl::string_view code = encoded.substr(i, 3);
      if (code == "%25" || code == "%3A") {
        out.push_back(code == "%25" ? '%' : ':');
        i += 2;
        continue;
      }
    }
    out.push_back(encoded[i]);
  }
  return out;
}

RedisEventStore::RedisEventStore(std::unique_ptr<redis::RedisClient> client,
                                 RedisStoreOptions options)
    : client_(std::move(client)),
      options_(std::move(options)),
      tag_(absl::StrCat("{", options_.prefix, "}")),
      commit_(absl::StrCat(redis::kLuaBatch, redis_scripts::kCommit)),
      first_at_(redis_scripts::kFirstAt),
      retention_(redis_scripts::kRetention),
      query_(redis_scripts::kQuery),
      claim_(redis_scripts::kClaim),
      ack_(redis_scripts::kAck),
      requeue_(redis_scripts::kRequeue),
      extend_(redis_scripts::kExtend),
      revive_(redis_scripts::kRevive),
      still_held_(redis_scripts::kStillHeld) {
  for (const redis::Script* s : {&commit_, &first_at_, &retention_, &query_, &claim_, &ack_,
                                 &requeue_, &extend_, &revive_, &still_held_}) {
    client_->Register(*s);
  }
}

std::string RedisEventStore::Key(absl::string_view suffix) const {
  return absl::StrCat(tag_, ":", suffix);
}

absl::Status RedisEventStore::Check() {
  if (absl::Status st = client_->Ping(tag_, Deadline()); !st.ok()) return st;
  return format_checked_.load() ? absl::OkStatus() : CheckFormat();
}

// The layout of log entries and indexes (redis_scripts.h) has a version in
// {P}:format. A log without it was written before the layout had one: this
// build cannot read its entries, and says so rather than serve them empty.
absl::Status RedisEventStore::CheckFormat() {
  absl::StatusOr<std::vector<Reply>> r =
      client_->Pipeline(tag_, {{"GET", Key("format")}, {"XLEN", Key("log")}}, Deadline());
  if (!r.ok()) return r.status();
  const Reply& format = (*r)[0];
  if (absl::Status st = redis::ReplyStatus(format, "format"); !st.ok()) return st;
  if (format.type == Reply::Type::kNil) {
    if ((*r)[1].integer > 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "redis keys ", tag_,
          ": the log was written by an earlier build of Switchboard, "
          "whose entries this one cannot read; use another --redis_prefix, or delete the ",
          tag_, " keys"));
    }
    absl::StatusOr<Reply> set =
        client_->Run(tag_, {"SET", Key("format"), kRedisFormat, "NX"}, Deadline());
    if (!set.ok()) return set.status();
    if (absl::Status st = redis::ReplyStatus(*set, "format"); !st.ok()) return st;
  } else if (format.str != kRedisFormat) {
    return absl::FailedPreconditionError(
        absl::StrCat("redis keys ", tag_, ": layout version '", format.str, "', this build reads ",
                     kRedisFormat, " (written by a newer build?)"));
  }
  format_checked_ = true;
  return absl::OkStatus();
}

Command RedisEventStore::WaitCommand() const {
  // WAIT on the same connection covers this client's writes up to here.
  int64_t wait_ms = std::max<int64_t>(1, absl::ToInt64Milliseconds(options_.timeout) / 2);
  return {"WAIT", absl::StrCat(options_.min_replicas), absl::StrCat(wait_ms)};
}

absl::StatusOr<Reply> RedisEventStore::Write(Command command, absl::string_view what) {
  std::vector<Command> cmds;
  cmds.push_back(std::move(command));
  if (options_.min_replicas > 0) cmds.push_back(WaitCommand());
  absl::StatusOr<std::vector<Reply>> r = client_->Pipeline(tag_, cmds, Deadline());
  if (!r.ok()) return r.status();
  return WriteOutcome(*std::move(r), what);
}

absl::StatusOr<Reply> RedisEventStore::WriteOutcome(std::vector<Reply> replies,
                                                    absl::string_view what) const {
  if (absl::Status st = redis::ReplyStatus(replies.front(), what); !st.ok()) return st;
  if (options_.min_replicas > 0) {
    const Reply& wait = replies[1];
    if (wait.is_error() || wait.integer < options_.min_replicas) {
      return absl::UnavailableError(absl::StrCat(what, ": applied on the Redis master but only ",
                                                 wait.integer, " of ", options_.min_replicas,
                                                 " replicas confirmed it (--sync=replicated)"));
    }
  }
  return std::move(replies.front());
}

namespace {

absl::StatusOr<CommitResult> ParseCommit(absl::StatusOr<Reply> r, size_t events) {
  if (!r.ok()) return r.status();
  if (r->elements.size() != events + 1) {
    return absl::InternalError("commit: unexpected reply from the commit script");
  }
  CommitResult result;
  result.first = static_cast<uint64_t>(r->elements[0].integer);
  result.duplicate_of.reserve(events);
  for (size_t k = 1; k < r->elements.size(); ++k) {
    result.duplicate_of.push_back(static_cast<uint64_t>(r->elements[k].integer));
  }
  return result;
}

}  // namespace

class RedisEventStore::Pipelined : public PendingCommit {
 public:
  Pipelined(RedisEventStore* store, Command command, size_t events)
      : store(store), command(std::move(command)), events(events) {}
  absl::StatusOr<CommitResult> Wait() override { return store->FinishCommit(*this); }

  RedisEventStore* const store;
  const Command command;
  const size_t events;
  bool sent = false;
  uint64_t stream_id = 0;
  uint64_t index = 0;  // among the stream's sends
};

absl::StatusOr<CommitResult> RedisEventStore::Commit(const WriteBatch& batch, absl::Time now) {
  return ParseCommit(Write(CommitCommand(batch, now), "commit"), batch.events.size());
}

std::unique_ptr<PendingCommit> RedisEventStore::StartCommit(const WriteBatch& batch,
                                                            absl::Time now) {
  auto p = std::make_unique<Pipelined>(this, CommitCommand(batch, now), batch.events.size());
  absl::MutexLock lock(&stream_mu_);
  if (stream_ == nullptr) {
    absl::StatusOr<std::unique_ptr<redis::Stream>> s = client_->OpenStream(tag_, Deadline());
    if (!s.ok()) return p;  // Wait() sends it the retrying way
    stream_ = *std::move(s);
    ++stream_id_;
    sent_ = received_ = 0;
  }
  absl::Status st = stream_->Send(p->command, Deadline());
  if (st.ok() && options_.min_replicas > 0) st = stream_->Send(WaitCommand(), Deadline());
  if (!st.ok()) {
    stream_.reset();
    return p;
  }
  p->sent = true;
  p->stream_id = stream_id_;
  p->index = sent_++;
  return p;
}

absl::StatusOr<CommitResult> RedisEventStore::FinishCommit(Pipelined& p) {
  if (p.sent) {
    absl::MutexLock lock(&stream_mu_);
    if (stream_ != nullptr && p.stream_id == stream_id_ && p.index == received_) {
      ++received_;
      std::vector<Reply> replies;
      absl::Status st;
      for (int i = 0; i < (options_.min_replicas > 0 ? 2 : 1) && st.ok(); ++i) {
        absl::StatusOr<Reply> r = stream_->Receive(Deadline());
        if (r.ok()) {
          replies.push_back(*std::move(r));
        } else {
          st = r.status();
        }
      }
      if (st.ok()) return ParseCommit(WriteOutcome(std::move(replies), "commit"), p.events);
    }
    // The stream is behind us or broken: later commits sent on it are
    // resent too (each with its own token), in the order they are waited for.
    // (A commit from a stream already replaced leaves the new one alone.)
    if (p.stream_id == stream_id_) stream_.reset();
  }
  return ParseCommit(Write(p.command, "commit"), p.events);
}

Command RedisEventStore::CommitCommand(const WriteBatch& batch, absl::Time now) const {
  std::vector<std::string> args;
  args.reserve(6 + batch.events.size() * 5 + batch.ops.size() * 4);
  args.push_back(tag_);
  args.push_back(RandomToken());
  // Retries of one commit happen within one call's timeout.
  args.push_back(
      absl::StrCat(std::max<int64_t>(1000, 3 * absl::ToInt64Milliseconds(options_.timeout))));
  args.push_back(absl::StrCat(ToMicros(now)));
  args.push_back(absl::StrCat(std::max<int64_t>(1, absl::ToInt64Milliseconds(options_.index_ttl))));
  args.push_back(absl::StrCat(absl::ToInt64Milliseconds(options_.dedupe_window)));
  args.push_back(absl::StrCat(batch.seq_floor));
  args.push_back(absl::StrCat(batch.events.size()));
  const int64_t now_us = ToMicros(now);
  for (const NewEvent* ev : batch.events) {
    args.push_back(ev->type);
    args.push_back(ev->correlation_id);
    args.push_back(ev->subject);
    args.push_back(ev->client_id ? DedupeKey(ev->source, ev->id) : "");
    args.push_back(PackEntry(now_us, *ev));
  }
  args.push_back(absl::StrCat(batch.ops.size()));
  for (const GroupOp& op : batch.ops) {
    const std::string g = EncodeGroupName(op.group.name);
    switch (op.kind) {
      case GroupOp::Kind::kUpsertGroup:
        args.insert(args.end(),
                    {"U", g, absl::StrJoin(op.group.types, ","), absl::StrCat(op.group.cursor),
                     absl::StrCat(op.group.max_deliveries)});
        break;
      case GroupOp::Kind::kSetCursor:
        args.insert(args.end(), {"C", g, absl::StrCat(op.group.cursor)});
        break;
      case GroupOp::Kind::kSetPending:
        args.insert(args.end(), {"P", g, absl::StrCat(op.seq), absl::StrCat(op.attempts)});
        break;
      case GroupOp::Kind::kRemovePending:
        args.insert(args.end(), {"R", g, absl::StrCat(op.seq)});
        break;
      case GroupOp::Kind::kDeadLetter:
        args.insert(args.end(),
                    {"D", g, absl::StrCat(op.seq), absl::StrCat(op.attempts),
                     absl::StrCat(op.event ? ToMicros(op.event->ingest_time) : ToMicros(now)),
                     op.event ? op.event->type : "", op.event ? op.event->payload : "", op.error});
        break;
      case GroupOp::Kind::kRemoveDeadLetter:
        args.insert(args.end(), {"X", g, absl::StrCat(op.seq)});
        break;
    }
  }
  return commit_.Call({Key("seq")}, std::move(args));
}

absl::StatusOr<std::vector<EventPtr>> RedisEventStore::ReadAfter(uint64_t after_seq, size_t limit) {
  return EventsFromEntries(client_->Run(tag_,
                                        {"XRANGE", Key("log"), absl::StrCat("(", after_seq, "-0"),
                                         "+", "COUNT", absl::StrCat(std::max<size_t>(limit, 1))},
                                        Deadline()),
                           "read events");
}

absl::StatusOr<std::vector<EventPtr>> RedisEventStore::WaitForAppends(uint64_t after_seq,
                                                                      size_t limit,
                                                                      absl::Duration timeout) {
  // XREAD BLOCK holds a pooled connection for up to `timeout`.
  absl::StatusOr<Reply> r =
      client_->Run(tag_,
                   {"XREAD", "COUNT", absl::StrCat(std::max<size_t>(limit, 1)), "BLOCK",
                    absl::StrCat(std::max<int64_t>(1, absl::ToInt64Milliseconds(timeout))),
                    "STREAMS", Key("log"), absl::StrCat(after_seq, "-0")},
                   absl::Now() + timeout + options_.timeout);
  if (!r.ok()) return r.status();
  if (absl::Status st = redis::ReplyStatus(*r, "wait for appends"); !st.ok()) return st;
  if (r->is_nil() || r->elements.empty()) return std::vector<EventPtr>();
  // [[key, [entries...]]]
  Reply& stream = r->elements[0];
  if (stream.elements.size() < 2) return std::vector<EventPtr>();
  return EventsFromEntries(std::move(stream.elements[1]), "wait for appends");
}

absl::StatusOr<EventPtr> RedisEventStore::ReadOne(uint64_t seq) {
  std::string id = absl::StrCat(seq, "-0");
  absl::StatusOr<std::vector<EventPtr>> evs = EventsFromEntries(
      client_->Run(tag_, {"XRANGE", Key("log"), id, id}, Deadline()), "read event");
  if (!evs.ok()) return evs.status();
  if (evs->empty()) return absl::NotFoundError(absl::StrCat("event ", seq, " is not stored"));
  return evs->front();
}

absl::StatusOr<std::vector<EventPtr>> RedisEventStore::Query(const HistoryQuery& q) {
  std::vector<std::string> args = {
      tag_,
      absl::StrCat(std::max<size_t>(q.limit, 1)),
      absl::StrCat(q.before_sequence),
      q.since == absl::InfinitePast() ? "" : absl::StrCat(ToMicros(q.since)),
      q.correlation_id,
      q.subject,
      absl::StrCat(q.exact_types.size())};
  args.insert(args.end(), q.exact_types.begin(), q.exact_types.end());
  args.push_back(absl::StrCat(q.type_prefixes.size()));
  args.insert(args.end(), q.type_prefixes.begin(), q.type_prefixes.end());
  absl::StatusOr<Reply> r = client_->Run(tag_, query_.Call({Key("log")}, args), Deadline());
  if (!r.ok()) return r.status();
  if (absl::Status st = redis::ReplyStatus(*r, "history query"); !st.ok()) return st;
  std::vector<EventPtr> out;
  for (size_t i = 0; i + 3 < r->elements.size(); i += 4) {
    int64_t ingest = 0;
    (void)absl::SimpleAtoi(r->elements[i + 1].str, &ingest);
    out.push_back(MakeEvent(ParseU64(r->elements[i].str), ingest, std::move(r->elements[i + 2].str),
                            std::move(r->elements[i + 3].str)));
  }
  return out;
}

absl::StatusOr<uint64_t> RedisEventStore::FirstSequenceAtOrAfter(absl::Time t) {
  absl::StatusOr<Reply> r = client_->Run(
      tag_, first_at_.Call({Key("log")}, {tag_, absl::StrCat(ToMicros(t))}), Deadline());
  if (!r.ok()) return r.status();
  if (absl::Status st = redis::ReplyStatus(*r, "first sequence at time"); !st.ok()) return st;
  return static_cast<uint64_t>(r->integer);
}

absl::StatusOr<std::vector<EventPtr>> RedisEventStore::ReadIngestedSince(absl::Time since) {
  absl::StatusOr<uint64_t> first = FirstSequenceAtOrAfter(since);
  if (!first.ok()) return first.status();
  std::vector<EventPtr> out;
  uint64_t after = *first - 1;
  while (true) {
    absl::StatusOr<std::vector<EventPtr>> chunk = ReadAfter(after, 10000);
    if (!chunk.ok()) return chunk.status();
    if (chunk->empty()) return out;
    after = chunk->back()->seq;
    for (EventPtr& ev : *chunk) out.push_back(std::move(ev));
  }
}

absl::StatusOr<StoreBounds> RedisEventStore::Bounds() {
  absl::StatusOr<std::vector<Reply>> r = client_->Pipeline(
      tag_,
      {{"XRANGE", Key("log"), "-", "+", "COUNT", "1"}, {"XLEN", Key("log")}, {"GET", Key("seq")}},
      Deadline());
  if (!r.ok()) return r.status();
  for (const Reply& x : *r) {
    if (absl::Status st = redis::ReplyStatus(x, "bounds"); !st.ok()) return st;
  }
  StoreBounds b;
  if (!(*r)[0].elements.empty()) b.first_seq = ParseU64((*r)[0].elements[0].elements[0].str);
  b.count = static_cast<uint64_t>((*r)[1].integer);
  b.last_seq = ParseU64((*r)[2].str);
  return b;
}

absl::StatusOr<std::vector<GroupRecord>> RedisEventStore::LoadGroups() {
  absl::StatusOr<Reply> names = client_->Run(tag_, {"SMEMBERS", Key("groups")}, Deadline());
  if (!names.ok()) return names.status();
  if (absl::Status st = redis::ReplyStatus(*names, "load groups"); !st.ok()) return st;
  std::vector<std::string> sorted;
  for (const Reply& n : names->elements) sorted.push_back(n.str);  // encoded
  std::sort(sorted.begin(), sorted.end());
  std::vector<Command> cmds;
  for (const std::string& n : sorted) {
    cmds.push_back({"HMGET", Key(absl::StrCat("g:", n)), "types", "cursor", "maxd"});
  }
  std::vector<GroupRecord> out;
  if (cmds.empty()) return out;
  absl::StatusOr<std::vector<Reply>> r = client_->Pipeline(tag_, cmds, Deadline());
  if (!r.ok()) return r.status();
  for (size_t i = 0; i < sorted.size(); ++i) {
    const Reply& h = (*r)[i];
    if (absl::Status st = redis::ReplyStatus(h, "load groups"); !st.ok()) return st;
    if (h.elements.size() < 3 || h.elements[1].is_nil()) continue;
    GroupRecord g;
    g.name = DecodeGroupName(sorted[i]);
    if (!h.elements[0].str.empty()) g.types = absl::StrSplit(h.elements[0].str, ',');
    g.cursor = ParseU64(h.elements[1].str);
    g.max_deliveries = static_cast<uint32_t>(ParseU64(h.elements[2].str));
    out.push_back(std::move(g));
  }
  return out;
}

absl::StatusOr<std::vector<PendingRecord>> RedisEventStore::LoadPending(const std::string& group) {
  absl::StatusOr<Reply> r = client_->Run(
      tag_, {"HGETALL", Key(absl::StrCat("g:", EncodeGroupName(group), ":pending"))}, Deadline());
  if (!r.ok()) return r.status();
  if (absl::Status st = redis::ReplyStatus(*r, "load pending"); !st.ok()) return st;
  std::vector<PendingRecord> out;
  for (size_t i = 0; i + 1 < r->elements.size(); i += 2) {
    out.push_back(PendingRecord{ParseU64(r->elements[i].str),
                                static_cast<uint32_t>(ParseU64(r->elements[i + 1].str))});
  }
  std::sort(out.begin(), out.end(),
            [](const PendingRecord& a, const PendingRecord& b) { return a.seq < b.seq; });
  return out;
}

absl::StatusOr<std::vector<DeadLetterRecord>> RedisEventStore::ListDeadLetters(
    const std::string& group, uint64_t after_seq, size_t limit) {
  std::string gk = Key(absl::StrCat("g:", EncodeGroupName(group)));
  absl::StatusOr<Reply> seqs =
      client_->Run(tag_,
                   {"ZRANGEBYSCORE", gk + ":dead", absl::StrCat("(", after_seq), "+inf", "LIMIT",
                    "0", absl::StrCat(std::max<size_t>(limit, 1))},
                   Deadline());
  if (!seqs.ok()) return seqs.status();
  if (absl::Status st = redis::ReplyStatus(*seqs, "list dead letters"); !st.ok()) return st;
  std::vector<DeadLetterRecord> out;
  if (seqs->elements.empty()) return out;
  std::vector<Command> cmds;
  for (const Reply& s : seqs->elements) {
    cmds.push_back({"HMGET", absl::StrCat(gk, ":dl:", s.str), "a", "d", "i", "t", "p", "r"});
  }
  absl::StatusOr<std::vector<Reply>> r = client_->Pipeline(tag_, cmds, Deadline());
  if (!r.ok()) return r.status();
  for (size_t i = 0; i < r->size(); ++i) {
    Reply& h = (*r)[i];
    if (absl::Status st = redis::ReplyStatus(h, "list dead letters"); !st.ok()) return st;
    if (h.elements.size() < 6 || h.elements[0].is_nil()) continue;
    int64_t dead_us = 0, ingest_us = 0;
    (void)absl::SimpleAtoi(h.elements[1].str, &dead_us);
    (void)absl::SimpleAtoi(h.elements[2].str, &ingest_us);
    out.push_back(
        DeadLetterRecord{group,
                         MakeEvent(ParseU64(seqs->elements[i].str), ingest_us,
                                   std::move(h.elements[3].str), std::move(h.elements[4].str)),
                         static_cast<uint32_t>(ParseU64(h.elements[0].str)),
                         absl::FromUnixMicros(dead_us), LastError(h.elements[5])});
  }
  return out;
}

absl::StatusOr<uint64_t> RedisEventStore::CountDeadLetters(const std::string& group) {
  absl::StatusOr<Reply> r = client_->Run(
      tag_, {"ZCARD", Key(absl::StrCat("g:", EncodeGroupName(group), ":dead"))}, Deadline());
  if (!r.ok()) return r.status();
  if (absl::Status st = redis::ReplyStatus(*r, "count dead letters"); !st.ok()) return st;
  return static_cast<uint64_t>(r->integer);
}

absl::StatusOr<uint64_t> RedisEventStore::ApplyRetention(absl::Time now, absl::Duration max_age,
                                                         uint64_t max_count, uint64_t max_delete) {
  absl::StatusOr<Reply> r =
      Write(retention_.Call({Key("log")}, {tag_, absl::StrCat(ToMicros(now - max_age)),
                                           absl::StrCat(max_count), absl::StrCat(max_delete)}),
            "retention");
  if (!r.ok()) return r.status();
  return static_cast<uint64_t>(r->integer);
}

// P:replicas is a hash: replica -> "expires_ms\nsubscribers\nrate\n" then
// "t <count> <pattern>\n" and "g <count> <group>\n" lines.
absl::Status RedisEventStore::PublishLoad(const ReplicaLoad& load, absl::Duration ttl) {
  std::string v = absl::StrCat(absl::ToUnixMillis(absl::Now() + ttl), "\n", load.subscribers, "\n",
                               load.events_per_second, "\n");
  for (const auto& [pattern, n] : load.subscriptions_by_type) {
    absl::StrAppend(&v, "t ", n, " ", pattern, "\n");
  }
  for (const auto& [group, n] : load.group_members) absl::StrAppend(&v, "g ", n, " ", group, "\n");
  absl::StatusOr<Reply> r =
      client_->Run(tag_, {"HSET", Key("replicas"), load.replica, v}, Deadline());
  if (!r.ok()) return r.status();
  if (absl::Status st = redis::ReplyStatus(*r, "publish replica load"); !st.ok()) return st;
  // Now and then forget replicas that stopped (every restart is a new one).
  if (loads_published_.fetch_add(1) % 30 == 0) (void)ListLoads();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ReplicaLoad>> RedisEventStore::ListLoads() {
  absl::StatusOr<Reply> r = client_->Run(tag_, {"HGETALL", Key("replicas")}, Deadline());
  if (!r.ok()) return r.status();
  if (absl::Status st = redis::ReplyStatus(*r, "list replica loads"); !st.ok()) return st;
  std::vector<ReplicaLoad> out;
  Command expired = {"HDEL", Key("replicas")};
  int64_t now_ms = absl::ToUnixMillis(absl::Now());
  for (size_t i = 0; i + 1 < r->elements.size(); i += 2) {
    std::vector<absl::string_view> lines =
        absl::StrSplit(r->elements[i + 1].str, '\n', absl::SkipEmpty());
    int64_t expires = 0;
    if (lines.size() < 3 || !absl::SimpleAtoi(lines[0], &expires) || expires < now_ms) {
      expired.push_back(r->elements[i].str);
      continue;
    }
    ReplicaLoad load;
    load.replica = r->elements[i].str;
    (void)absl::SimpleAtoi(lines[1], &load.subscribers);
    (void)absl::SimpleAtod(lines[2], &load.events_per_second);
    for (size_t k = 3; k < lines.size(); ++k) {
      std::vector<absl::string_view> f = absl::StrSplit(lines[k], absl::MaxSplits(' ', 2));
      uint32_t n = 0;
      if (f.size() != 3 || !absl::SimpleAtoi(f[1], &n)) continue;
      (f[0] == "t" ? load.subscriptions_by_type : load.group_members)[std::string(f[2])] += n;
    }
    out.push_back(std::move(load));
  }
  // Replicas that stopped refreshing (killed) are forgotten.
  if (expired.size() > 2) (void)client_->Run(tag_, expired, Deadline());
  return out;
}

uint64_t RedisEventStore::StorageBytes() {
  absl::StatusOr<Reply> r = client_->Run(tag_, {"MEMORY", "USAGE", Key("log")}, Deadline());
  if (!r.ok() || r->type != Reply::Type::kInteger) return 0;
  return static_cast<uint64_t>(r->integer);
}

}  // namespace switchboard::broker
