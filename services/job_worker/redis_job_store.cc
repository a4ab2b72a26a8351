#include "services/job_worker/redis_job_store.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "libs/redis/lua_batch.h"
#include "libs/redis/reply.h"
#include "services/job_worker/redis_job_scripts.h"

namespace switchboard::jobs {
namespace {

using redis::Reply;

std::string Micros(absl::Time t) { return absl::StrCat(absl::ToUnixMicros(t)); }
std::string Millis(absl::Time t) { return absl::StrCat(absl::ToUnixMillis(t)); }

uint64_t ToU64(absl::string_view s) {
  uint64_t v = 0;
  return absl::SimpleAtoi(s, &v) ? v : 0;
}

}  // namespace

RedisJobStore::RedisJobStore(std::unique_ptr<redis::RedisClient> client,
                             RedisJobStoreOptions options)
    : client_(std::move(client)),
      options_(std::move(options)),
      tag_(absl::StrCat("{", options_.prefix, "}")),
      put_(absl::StrCat(redis::kLuaBatch, redis_scripts::kPut)),
      list_(redis_scripts::kList),
      acquire_(redis_scripts::kAcquireSlot),
      renew_(redis_scripts::kRenewSlots),
      loads_(redis_scripts::kOtherLoads) {
  for (const redis::Script* s : {&put_, &list_, &acquire_, &renew_, &loads_}) {
    client_->Register(*s);
  }
}

std::string RedisJobStore::Key(absl::string_view name) const {
  return absl::StrCat(tag_, ":jobs:", name);
}

absl::StatusOr<Reply> RedisJobStore::Run(redis::Command command, absl::string_view what,
                                         bool replicated) {
  absl::StatusOr<Reply> r = client_->RunReplicated(
      tag_, std::move(command), replicated ? options_.min_replicas : 0, Deadline());
  if (!r.ok()) return r.status();
  if (absl::Status st = redis::ReplyStatus(*r, what); !st.ok()) return st;
  return r;
}

absl::Status RedisJobStore::Check() { return client_->Ping(tag_, Deadline()); }

absl::StatusOr<std::optional<v1::Job>> RedisJobStore::Get(const std::string& id) {
  absl::StatusOr<std::vector<std::optional<v1::Job>>> jobs = GetMany({id});
  if (!jobs.ok()) return jobs.status();
  return std::move(jobs->front());
}

absl::StatusOr<std::vector<std::optional<v1::Job>>> RedisJobStore::GetMany(
    const std::vector<std::string>& ids) {
  // Pipelined HGETs: one round trip (every key has the store's slot tag).
  std::vector<redis::Command> commands;
  commands.reserve(ids.size());
  for (const std::string& id : ids) {
    commands.push_back({"HGET", Key(absl::StrCat("rec:", id)), "r"});
  }
  absl::StatusOr<std::vector<Reply>> replies = client_->Pipeline(tag_, commands, Deadline());
  if (!replies.ok()) return replies.status();
  std::vector<std::optional<v1::Job>> out;
  out.reserve(ids.size());
  for (const Reply& r : *replies) {
    if (absl::Status st = redis::ReplyStatus(r, "get jobs"); !st.ok()) return st;
    if (r.is_nil()) {
      out.emplace_back();
      continue;
    }
    out.emplace_back(v1::Job());
    if (!out.back()->ParseFromString(r.str)) {
      return absl::DataLossError("get job: unreadable record");
    }
  }
  return out;
}

absl::Status RedisJobStore::PutMany(const std::vector<v1::Job>& jobs) {
  if (jobs.empty()) return absl::OkStatus();
  absl::Time now = absl::Now();
  std::vector<std::string> args = {
      tag_, Micros(now), Micros(now - options_.retention),
      absl::StrCat(std::max<int64_t>(1, absl::ToInt64Milliseconds(options_.retention)))};
  args.reserve(args.size() + 6 * jobs.size());
  for (const v1::Job& job : jobs) {
    args.push_back(job.id());
    args.push_back(job.queue());
    args.push_back(absl::StrCat(static_cast<int>(job.status())));
    args.push_back(job.correlation_id());
    args.push_back(job.SerializeAsString());
    args.push_back(job.status() == v1::JOB_STATUS_RETRY_SCHEDULED ? "1" : "0");
  }
  return Run(put_.Call({Key("recent")}, std::move(args)), "put job", /*replicated=*/true).status();
}

absl::StatusOr<std::vector<v1::Job>> RedisJobStore::List(const JobQuery& q) {
  absl::StatusOr<Reply> r =
      Run(list_.Call({Key("recent")}, {tag_, q.queue, absl::StrCat(static_cast<int>(q.status)),
                                       q.correlation_id, absl::StrCat(q.limit)}),
          "list jobs");
  if (!r.ok()) return r.status();
  std::vector<v1::Job> out;
  for (const Reply& e : r->elements) {
    v1::Job job;
    if (job.ParseFromString(e.str)) out.push_back(std::move(job));
  }
  return out;
}

absl::StatusOr<uint64_t> RedisJobStore::NextCounter(const std::string& name) {
  absl::StatusOr<Reply> r = Run({"INCR", Key(absl::StrCat("counter:", name))}, "next counter");
  if (!r.ok()) return r.status();
  return static_cast<uint64_t>(r->integer);
}

absl::StatusOr<std::map<std::pair<std::string, int>, uint64_t>>
RedisJobStore::CountByQueueAndStatus() {
  absl::StatusOr<Reply> r = Run({"HGETALL", Key("count")}, "count jobs");
  if (!r.ok()) return r.status();
  std::map<std::pair<std::string, int>, uint64_t> out;
  for (size_t i = 0; i + 1 < r->elements.size(); i += 2) {
    std::pair<std::string, std::string> qs = absl::StrSplit(r->elements[i].str, '|');
    int status = 0;
    int64_t n = 0;
    if (!absl::SimpleAtoi(qs.second, &status) || !absl::SimpleAtoi(r->elements[i + 1].str, &n)) {
      continue;
    }
    if (n > 0) out[{qs.first, status}] = static_cast<uint64_t>(n);
  }
  return out;
}

absl::StatusOr<std::map<std::string, uint64_t>> RedisJobStore::RetriedByQueue() {
  absl::StatusOr<Reply> r = Run({"HGETALL", Key("retried")}, "count retries");
  if (!r.ok()) return r.status();
  std::map<std::string, uint64_t> out;
  for (size_t i = 0; i + 1 < r->elements.size(); i += 2) {
    out[r->elements[i].str] = ToU64(r->elements[i + 1].str);
  }
  return out;
}

absl::Status RedisJobStore::SetPaused(const std::string& queue, bool paused) {
  return Run({paused ? "SADD" : "SREM", Key("paused"), queue}, "pause queue", /*replicated=*/true)
      .status();
}

absl::StatusOr<std::set<std::string>> RedisJobStore::PausedQueues() {
  absl::StatusOr<Reply> r = Run({"SMEMBERS", Key("paused")}, "paused queues");
  if (!r.ok()) return r.status();
  std::set<std::string> out;
  for (const Reply& e : r->elements) out.insert(e.str);
  return out;
}

absl::StatusOr<bool> RedisJobStore::AcquireSlot(const std::string& queue, const std::string& holder,
                                                uint32_t limit, absl::Time now,
                                                absl::Duration lease) {
  absl::StatusOr<Reply> r = Run(
      acquire_.Call({Key(absl::StrCat("slots:", queue))},
                    {tag_, queue, holder, absl::StrCat(limit), Millis(now), Millis(now + lease)}),
      "acquire slot");
  if (!r.ok()) return r.status();
  return r->integer == 1;
}

absl::Status RedisJobStore::RenewSlots(const std::string& queue,
                                       const std::vector<std::string>& holders, absl::Time now,
                                       absl::Duration lease) {
  if (holders.empty()) return absl::OkStatus();
  std::vector<std::string> args = {tag_, queue, Millis(now), Millis(now + lease)};
  args.insert(args.end(), holders.begin(), holders.end());
  return Run(renew_.Call({Key(absl::StrCat("slots:", queue))}, std::move(args)), "renew slots")
      .status();
}

absl::Status RedisJobStore::ReleaseSlot(const std::string& queue, const std::string& holder) {
  return Run({"ZREM", Key(absl::StrCat("slots:", queue)), holder}, "release slot").status();
}

absl::StatusOr<uint64_t> RedisJobStore::SlotsHeld(const std::string& queue, absl::Time now) {
  absl::StatusOr<Reply> r =
      Run({"ZCOUNT", Key(absl::StrCat("slots:", queue)), absl::StrCat("(", Millis(now)), "+inf"},
          "count slots");
  if (!r.ok()) return r.status();
  return static_cast<uint64_t>(r->integer);
}

absl::Status RedisJobStore::ReportLoad(const std::string& worker_id,
                                       const std::map<std::string, QueueLoad>& load, absl::Time now,
                                       absl::Duration ttl) {
  std::vector<std::string> parts;
  for (const auto& [queue, l] : load) {
    parts.push_back(absl::StrCat(queue, ",", l.waiting, ",", l.active, ",", l.processed, ",",
                                 static_cast<int64_t>(l.processing_ms_total)));
  }
  absl::StatusOr<std::vector<Reply>> r =
      client_->Pipeline(tag_,
                        // One transaction: a report never outlives its expiry entry.
                        {{"MULTI"},
                         {"HSET", Key("load"), worker_id, absl::StrJoin(parts, ";")},
                         {"ZADD", Key("load:until"), Millis(now + ttl), worker_id},
                         {"EXEC"}},
                        Deadline());
  if (!r.ok()) return r.status();
  for (const Reply& e : *r) {
    if (absl::Status st = redis::ReplyStatus(e, "report load"); !st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, QueueLoad>> RedisJobStore::OtherLoads(
    const std::string& worker_id, absl::Time now) {
  absl::StatusOr<Reply> r =
      Run(loads_.Call({Key("load")}, {tag_, worker_id, Millis(now)}), "read loads");
  if (!r.ok()) return r.status();
  std::map<std::string, QueueLoad> out;
  for (const Reply& e : r->elements) {
    for (absl::string_view part : absl::StrSplit(e.str, ';', absl::SkipEmpty())) {
      std::vector<absl::string_view> f = absl::StrSplit(part, ',');
      if (f.size() != 5) continue;
      QueueLoad& sum = out[std::string(f[0])];
      sum.waiting += ToU64(f[1]);
      sum.active += ToU64(f[2]);
      sum.processed += ToU64(f[3]);
      sum.processing_ms_total += static_cast<double>(ToU64(f[4]));
    }
  }
  return out;
}

}  // namespace switchboard::jobs
