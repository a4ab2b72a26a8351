#include "libs/redis/redis_client.h"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <deque>
#include <map>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "libs/common/backoff.h"
#include "libs/redis/connection.h"

namespace switchboard::redis {
namespace {

constexpr int kSlots = 16384;
// Redirects followed for one request before giving up (a slot migrating
// back and forth, or a misconfigured cluster).
constexpr int kMaxRedirects = 16;

std::string Sha1Hex(const std::string& s) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(s.data(), s.size(), md, &len, EVP_sha1(), nullptr);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 15]);
  }
  return out;
}

uint16_t Crc16(absl::string_view s) {
  uint16_t crc = 0;
  for (unsigned char c : s) {
    crc ^= static_cast<uint16_t>(c) << 8;
    for (int i = 0; i < 8; ++i) crc = (crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1;
  }
  return crc;
}

// What to do about one error reply.
enum class Handling { kNone, kMoved, kAsk, kNoScript, kRetry };

Handling Classify(const Reply& r) {
  if (!r.is_error()) return Handling::kNone;
  absl::string_view code = r.error_code();
  if (code == "MOVED") return Handling::kMoved;
  if (code == "ASK") return Handling::kAsk;
  if (code == "NOSCRIPT") return Handling::kNoScript;
  if (code == "TRYAGAIN" || code == "CLUSTERDOWN" || code == "LOADING" || code == "MASTERDOWN" ||
      code == "READONLY") {
    return Handling::kRetry;
  }
  return Handling::kNone;
}

// "MOVED 3999 127.0.0.1:6381" -> endpoint.
bool RedirectTarget(const Reply& r, Endpoint* ep) {
  std::vector<absl::string_view> parts = absl::StrSplit(r.str, ' ');
  if (parts.size() < 3) return false;
  size_t colon = parts[2].rfind(':');
  if (colon == absl::string_view::npos) return false;
  ep->host = std::string(parts[2].substr(0, colon));
  return absl::SimpleAtoi(parts[2].substr(colon + 1), &ep->port);
}

class StreamImpl : public Stream {
 public:
  StreamImpl(Pool* pool, std::unique_ptr<Connection> conn, RedisMetrics* metrics)
      : pool_(pool), conn_(std::move(conn)), metrics_(metrics) {}
  ~StreamImpl() override {
    // Unread replies would answer someone else's commands.
    if (!sent_.empty() || discard_) {
      pool_->Discard(std::move(conn_));
    } else {
      pool_->Release(std::move(conn_));
    }
  }

  absl::Status Send(const Command& command, absl::Time deadline) override {
    if (!done_.ok()) return done_;
    sent_.push_back(absl::Now());
    return Check(conn_->Send({&command}, deadline));
  }

  absl::StatusOr<Reply> Receive(absl::Time deadline) override {
    if (!done_.ok()) return done_;
    if (sent_.empty()) return absl::FailedPreconditionError("redis: nothing sent to receive");
    absl::StatusOr<Reply> r = conn_->Receive(deadline);
    if (!r.ok()) return Check(r.status());
    metrics_->round_trips.Increment();
    metrics_->round_trip_seconds.Observe(absl::ToDoubleSeconds(absl::Now() - sent_.front()));
    sent_.pop_front();
    if (Classify(*r) != Handling::kNone) {
      // The replies behind it are as unusable: the connection goes with them.
      discard_ = true;
      metrics_->Error(r->error_code() == "NOSCRIPT" ? "noscript" : "redirect");
      return Check(absl::AbortedError(absl::StrCat("redis: ", r->str, " (send again)")));
    }
    return r;
  }

 private:
  absl::Status Check(absl::Status st) {
    if (st.ok()) return st;
    if (!absl::IsAborted(st)) metrics_->Error(absl::IsDeadlineExceeded(st) ? "timeout" : "io");
    done_ = st;
    return st;
  }

  Pool* const pool_;
  std::unique_ptr<Connection> conn_;
  RedisMetrics* const metrics_;
  std::deque<absl::Time> sent_;
  absl::Status done_;
  bool discard_ = false;
};

// Shared by both clients: the pipeline with redirects, script loading and
// retries. Subclasses say where a slot lives and how to react to trouble.
class ClientBase : public RedisClient {
 public:
  ClientBase(RedisConfig config, RedisMetrics* metrics)
      : config_(std::move(config)), metrics_(metrics) {}

  void Register(const Script& script) override {
    absl::MutexLock lock(&scripts_mu_);
    scripts_[script.sha1()] = script.body();
  }

  absl::StatusOr<std::unique_ptr<Stream>> OpenStream(absl::string_view slot_key,
                                                     absl::Time deadline) override {
    absl::StatusOr<Pool*> pool = Route(KeySlot(slot_key), deadline);
    if (!pool.ok()) return pool.status();
    absl::StatusOr<std::unique_ptr<Connection>> conn = (*pool)->Acquire(deadline);
    if (!conn.ok()) {
      OnTransportError(*pool);
      return conn.status();
    }
    return std::make_unique<StreamImpl>(*pool, *std::move(conn), metrics_);
  }

  absl::StatusOr<std::vector<Reply>> Pipeline(absl::string_view slot_key,
                                              const std::vector<Command>& commands,
                                              absl::Time deadline) override {
    std::vector<Reply> out;
    out.reserve(commands.size());
    int slot = KeySlot(slot_key);
    Backoff backoff(BackoffPolicy{absl::Milliseconds(20), 2.0, absl::Milliseconds(500), 0.3});
    int redirects = 0;
    bool retried_stale = false;
    std::optional<Endpoint> ask;
    absl::Status last;
    while (out.size() < commands.size()) {
      if (redirects > kMaxRedirects) {
        return absl::UnavailableError(
            absl::StrCat("redis: more than ", kMaxRedirects, " redirects for slot ", slot));
      }
      absl::StatusOr<Pool*> pool = ask ? PoolFor(*ask) : Route(slot, deadline);
      if (!pool.ok()) {
        last = pool.status();
        if (!WaitToRetry(&backoff, deadline, &last)) return last;
        continue;
      }
      std::vector<const Command*> send;
      size_t first = out.size();
      for (size_t i = first; i < commands.size(); ++i) {
        if (ask) send.push_back(&kAsking);
        send.push_back(&commands[i]);
      }
      bool was_ask = ask.has_value();
      ask.reset();
      absl::StatusOr<std::unique_ptr<Connection>> conn = (*pool)->Acquire(deadline);
      if (!conn.ok()) {
        if (absl::IsUnauthenticated(conn.status()) || absl::IsFailedPrecondition(conn.status())) {
          return conn.status();
        }
        metrics_->Error(absl::IsDeadlineExceeded(conn.status()) ? "timeout" : "io");
        last = conn.status();
        OnTransportError(*pool);
        if (!WaitToRetry(&backoff, deadline, &last)) return last;
        continue;
      }
      bool reused = (*conn)->uses() > 0;
      absl::Time t0 = absl::Now();
      absl::StatusOr<std::vector<Reply>> replies = (*conn)->Exchange(send, deadline);
      metrics_->round_trips.Increment();
      metrics_->round_trip_seconds.Observe(absl::ToDoubleSeconds(absl::Now() - t0));
      (*pool)->Release(*std::move(conn));
      if (!replies.ok()) {
        metrics_->Error(absl::IsDeadlineExceeded(replies.status()) ? "timeout" : "io");
        last = replies.status();
        OnTransportError(*pool);
        // A pooled connection may have died while idle (server restarted):
        // one immediate try on a fresh connection before the slower path.
        if (reused && !retried_stale) {
          retried_stale = true;
          continue;
        }
        if (!WaitToRetry(&backoff, deadline, &last)) return last;
        continue;
      }
      if (was_ask) {  // drop the ASKING replies
        std::vector<Reply> kept;
        for (size_t i = 1; i < replies->size(); i += 2) kept.push_back(std::move((*replies)[i]));
        replies->swap(kept);
      }
      size_t i = 0;
      Handling h = Handling::kNone;
      for (; i < replies->size(); ++i) {
        h = Classify((*replies)[i]);
        if (h != Handling::kNone) break;
        out.push_back(std::move((*replies)[i]));
      }
      if (h == Handling::kNone) break;
      const Reply& bad = (*replies)[i];
      Endpoint target;
      switch (h) {
        case Handling::kMoved:
          metrics_->Error("redirect");
          ++redirects;
          if (!RedirectTarget(bad, &target)) return ReplyStatus(bad, "redis");
          OnMoved(slot, target);
          break;
        case Handling::kAsk:
          metrics_->Error("redirect");
          ++redirects;
          if (!RedirectTarget(bad, &target)) return ReplyStatus(bad, "redis");
          ask = target;
          break;
        case Handling::kNoScript: {
          metrics_->Error("noscript");
          ++redirects;
          absl::Status st = LoadScript(*pool, commands[first + i], deadline);
          if (!st.ok()) return st;
          break;
        }
        case Handling::kRetry:
          metrics_->Error("retry");
          last = absl::UnavailableError(absl::StrCat("redis: ", bad.str));
          if (!RetriesReplies()) return last;
          OnTransportError(*pool);
          if (!WaitToRetry(&backoff, deadline, &last)) return last;
          break;
        case Handling::kNone:
          break;
      }
    }
    return out;
  }

 protected:
  // The pool of the server owning `slot`.
  virtual absl::StatusOr<Pool*> Route(int slot, absl::Time deadline) = 0;
  virtual absl::StatusOr<Pool*> PoolFor(const Endpoint& ep) = 0;
  virtual void OnMoved(int slot, const Endpoint& target) = 0;
  virtual void OnTransportError(Pool* pool) = 0;
  // Cluster waits out failovers; a single server fails fast.
  virtual bool RetriesTransport() const = 0;
  virtual bool RetriesReplies() const = 0;

  // Sleeps before the next attempt if that is allowed and there is time;
  // false when the caller must give up with *last.
  bool WaitToRetry(Backoff* backoff, absl::Time deadline, absl::Status* last) {
    if (!RetriesTransport()) return false;
    absl::Duration wait = backoff->Next();
    if (absl::Now() + wait >= deadline) {
      if (absl::IsDeadlineExceeded(*last)) return false;
      *last = absl::UnavailableError(absl::StrCat(last->message(), " (gave up at the deadline)"));
      return false;
    }
    absl::SleepFor(wait);
    return true;
  }

  absl::Status LoadScript(Pool* pool, const Command& cmd, absl::Time deadline) {
    std::string body;
    {
      absl::MutexLock lock(&scripts_mu_);
      auto it = cmd.size() > 1 ? scripts_.find(cmd[1]) : scripts_.end();
      if (it == scripts_.end()) {
        return absl::FailedPreconditionError("redis: NOSCRIPT for a script never registered");
      }
      body = it->second;
    }
    absl::StatusOr<std::unique_ptr<Connection>> conn = pool->Acquire(deadline);
    if (!conn.ok()) return conn.status();
    Command load = {"SCRIPT", "LOAD", body};
    absl::StatusOr<std::vector<Reply>> r = (*conn)->Exchange({&load}, deadline);
    pool->Release(*std::move(conn));
    if (!r.ok()) return r.status();
    return ReplyStatus(r->front(), "SCRIPT LOAD");
  }

  const RedisConfig config_;
  RedisMetrics* const metrics_;

 private:
  static const Command kAsking;
  absl::Mutex scripts_mu_;
  absl::flat_hash_map<std::string, std::string> scripts_ ABSL_GUARDED_BY(scripts_mu_);
};

const Command ClientBase::kAsking = {"ASKING"};

class StandaloneClient : public ClientBase {
 public:
  StandaloneClient(RedisConfig config, RedisMetrics* metrics)
      : ClientBase(std::move(config), metrics), pool_(config_.seeds.front(), &config_, metrics) {}

  void DropConnections() override { pool_.DropIdle(); }

 protected:
  absl::StatusOr<Pool*> Route(int, absl::Time) override { return &pool_; }
  absl::StatusOr<Pool*> PoolFor(const Endpoint&) override { return &pool_; }
  void OnMoved(int, const Endpoint&) override {}
  void OnTransportError(Pool*) override {}
  bool RetriesTransport() const override { return false; }
  bool RetriesReplies() const override { return false; }

 private:
  Pool pool_;
};

class ClusterClient : public ClientBase {
 public:
  ClusterClient(RedisConfig config, RedisMetrics* metrics)
      : ClientBase(std::move(config), metrics) {
    slots_.fill(-1);
  }

  void DropConnections() override {
    absl::MutexLock lock(&mu_);
    for (auto& [addr, pool] : pools_) pool->DropIdle();
  }

 protected:
  absl::StatusOr<Pool*> Route(int slot, absl::Time deadline) override {
    {
      absl::MutexLock lock(&mu_);
      if (!stale_ && slots_[slot] >= 0) return pools_[nodes_[slots_[slot]].ToString()].get();
    }
    absl::Status st = Refresh(deadline);
    absl::MutexLock lock(&mu_);
    if (slots_[slot] >= 0) return pools_[nodes_[slots_[slot]].ToString()].get();
    if (!st.ok()) return st;
    return absl::UnavailableError(absl::StrCat("redis cluster: no master serves slot ", slot));
  }

  absl::StatusOr<Pool*> PoolFor(const Endpoint& ep) override {
    absl::MutexLock lock(&mu_);
    return PoolLocked(ep);
  }

  void OnMoved(int slot, const Endpoint& target) override {
    absl::MutexLock lock(&mu_);
    PoolLocked(target);
    slots_[slot] = NodeIndexLocked(target);
    // A MOVED usually means a failover or resharding: learn the rest too.
    stale_ = true;
  }

  void OnTransportError(Pool*) override {
    absl::MutexLock lock(&mu_);
    stale_ = true;
  }
  bool RetriesTransport() const override { return true; }
  bool RetriesReplies() const override { return true; }

 private:
  Pool* PoolLocked(const Endpoint& ep) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::unique_ptr<Pool>& p = pools_[ep.ToString()];
    if (!p) p = std::make_unique<Pool>(ep, &config_, metrics_);
    return p.get();
  }
  int NodeIndexLocked(const Endpoint& ep) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (size_t i = 0; i < nodes_.size(); ++i) {
      if (nodes_[i] == ep) return static_cast<int>(i);
    }
    nodes_.push_back(ep);
    return static_cast<int>(nodes_.size() - 1);
  }

  // Reads CLUSTER SLOTS from the first node that answers (known masters,
  // then the seeds). At most one refresh runs; others wait for it.
  absl::Status Refresh(absl::Time deadline) {
    absl::MutexLock refresh(&refresh_mu_);
    std::vector<Endpoint> ask;
    {
      absl::MutexLock lock(&mu_);
      if (!stale_ && absl::Now() - refreshed_at_ < absl::Milliseconds(50)) {
        return absl::OkStatus();  // somebody refreshed while we waited
      }
      ask = nodes_;
      for (const Endpoint& s : config_.seeds) ask.push_back(s);
    }
    metrics_->topology_refreshes.Increment();
    absl::Status last = absl::UnavailableError("redis cluster: no seed node");
    for (const Endpoint& ep : ask) {
      Pool* pool;
      {
        absl::MutexLock lock(&mu_);
        pool = PoolLocked(ep);
      }
      absl::Time node_deadline = std::min(deadline, absl::Now() + config_.connect_timeout);
      absl::StatusOr<std::unique_ptr<Connection>> conn = pool->Acquire(node_deadline);
      if (!conn.ok()) {
        if (absl::IsUnauthenticated(conn.status())) return conn.status();
        last = conn.status();
        continue;
      }
      Command cmd = {"CLUSTER", "SLOTS"};
      absl::StatusOr<std::vector<Reply>> r = (*conn)->Exchange({&cmd}, node_deadline);
      pool->Release(*std::move(conn));
      if (!r.ok()) {
        last = r.status();
        continue;
      }
      const Reply& slots = r->front();
      if (slots.type != Reply::Type::kArray || slots.elements.empty()) {
        last = absl::UnavailableError(
            absl::StrCat("redis cluster: ", ep.ToString(), " has no slot map: ", slots.str));
        continue;
      }
      absl::MutexLock lock(&mu_);
      std::array<int, kSlots> table;
      table.fill(-1);
      for (const Reply& range : slots.elements) {
        if (range.elements.size() < 3 || range.elements[2].elements.size() < 2) continue;
        Endpoint master;
        master.host = range.elements[2].elements[0].str;
        if (master.host.empty() || master.host == "?") master.host = ep.host;
        master.port = static_cast<int>(range.elements[2].elements[1].integer);
        int idx = NodeIndexLocked(master);
        PoolLocked(master);
        for (int64_t s = range.elements[0].integer;
             s <= range.elements[1].integer && s >= 0 && s < kSlots; ++s) {
          table[s] = idx;
        }
      }
      slots_ = table;
      stale_ = false;
      refreshed_at_ = absl::Now();
      return absl::OkStatus();
    }
    return last;
  }

  absl::Mutex refresh_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  absl::Mutex mu_;
  std::array<int, kSlots> slots_ ABSL_GUARDED_BY(mu_);
  std::vector<Endpoint> nodes_ ABSL_GUARDED_BY(mu_);
  // Pools live as long as the client: callers use them without the lock.
  std::map<std::string, std::unique_ptr<Pool>> pools_ ABSL_GUARDED_BY(mu_);
  bool stale_ ABSL_GUARDED_BY(mu_) = true;
  absl::Time refreshed_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace

Script::Script(std::string body) : body_(std::move(body)), sha1_(Sha1Hex(body_)) {}

Command Script::Call(const std::vector<std::string>& keys,
                     const std::vector<std::string>& args) const {
  return Call(keys, std::vector<std::string>(args));
}

Command Script::Call(const std::vector<std::string>& keys, std::vector<std::string>&& args) const {
  Command c;
  c.reserve(3 + keys.size() + args.size());
  c.push_back("EVALSHA");
  c.push_back(sha1_);
  c.push_back(absl::StrCat(keys.size()));
  c.insert(c.end(), keys.begin(), keys.end());
  for (std::string& a : args) c.push_back(std::move(a));
  return c;
}

absl::StatusOr<Reply> RedisClient::RunReplicated(absl::string_view slot_key, Command command,
                                                 int min_replicas, absl::Time deadline) {
  if (min_replicas <= 0) return Run(slot_key, std::move(command), deadline);
  // A quarter of the time left: WAIT answers (with the count it saw) before
  // the deadline even when the pair is sent twice (NOSCRIPT, a redirect).
  int64_t wait_ms = std::max<int64_t>(1, absl::ToInt64Milliseconds(deadline - absl::Now()) / 4);
  std::vector<Command> cmds = {std::move(command),
                               {"WAIT", absl::StrCat(min_replicas), absl::StrCat(wait_ms)}};
  absl::StatusOr<std::vector<Reply>> r = Pipeline(slot_key, cmds, deadline);
  if (!r.ok()) return r.status();
  const Reply& wait = (*r)[1];
  if (!(*r)[0].is_error() && (wait.is_error() || wait.integer < min_replicas)) {
    return absl::UnavailableError(absl::StrCat("redis: the write reached ", wait.integer, " of ",
                                               min_replicas, " replicas in time"));
  }
  return std::move((*r)[0]);
}

absl::Status RedisClient::Ping(absl::string_view slot_key, absl::Time deadline) {
  absl::StatusOr<Reply> r = Run(slot_key, {"PING"}, deadline);
  if (!r.ok()) return r.status();
  if (r->error_code() == "NOAUTH" || r->error_code() == "WRONGPASS") {
    return absl::UnauthenticatedError(absl::StrCat("redis: authentication needed: ", r->str));
  }
  return ReplyStatus(*r, "ping");
}

absl::StatusOr<Reply> RedisClient::Run(absl::string_view slot_key, Command command,
                                       absl::Time deadline) {
  std::vector<Command> cmds;
  cmds.push_back(std::move(command));
  absl::StatusOr<std::vector<Reply>> r = Pipeline(slot_key, cmds, deadline);
  if (!r.ok()) return r.status();
  return std::move(r->front());
}

std::unique_ptr<RedisClient> NewRedisClient(const RedisConfig& config, RedisMetrics* metrics) {
  if (config.cluster) return std::make_unique<ClusterClient>(config, metrics);
  return std::make_unique<StandaloneClient>(config, metrics);
}

int KeySlot(absl::string_view key) {
  size_t open = key.find('{');
  if (open != absl::string_view::npos) {
    size_t close = key.find('}', open + 1);
    if (close != absl::string_view::npos && close > open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  return Crc16(key) % kSlots;
}

RedisMetrics::RedisMetrics(prometheus::Registry& registry, const std::string& service)
    : round_trips(prometheus::BuildCounter()
                      .Name("switchboard_" + service + "_redis_round_trips_total")
                      .Help("Pipelines sent to Redis and answered.")
                      .Register(registry)
                      .Add({})),
      round_trip_seconds(
          prometheus::BuildHistogram()
              .Name("switchboard_" + service + "_redis_round_trip_seconds")
              .Help("Time from sending a pipeline to Redis to its last reply.")
              .Register(registry)
              .Add({}, prometheus::Histogram::BucketBoundaries{0.0001, 0.00025, 0.0005, 0.001,
                                                               0.0025, 0.005, 0.01, 0.025, 0.05,
                                                               0.1, 0.25, 0.5, 1, 2.5})),
      errors(prometheus::BuildCounter()
                 .Name("switchboard_" + service + "_redis_errors_total")
                 .Help("Redis trouble by kind: io (connection lost or refused), timeout, "
                       "redirect (MOVED/ASK), retry (TRYAGAIN/CLUSTERDOWN/LOADING), noscript.")
                 .Register(registry)),
      connects(prometheus::BuildCounter()
                   .Name("switchboard_" + service + "_redis_connects_total")
                   .Help("Connections opened to Redis servers.")
                   .Register(registry)
                   .Add({})),
      reconnects(prometheus::BuildCounter()
                     .Name("switchboard_" + service + "_redis_reconnects_total")
                     .Help("Connections opened to a Redis server after one to it was lost.")
                     .Register(registry)
                     .Add({})),
      topology_refreshes(prometheus::BuildCounter()
                             .Name("switchboard_" + service + "_redis_topology_refreshes_total")
                             .Help("Reads of a Redis Cluster's slot map.")
                             .Register(registry)
                             .Add({})),
      connections(prometheus::BuildGauge()
                      .Name("switchboard_" + service + "_redis_connections")
                      .Help("Open connections to Redis servers.")
                      .Register(registry)
                      .Add({})) {
  for (const char* kind : {"io", "timeout", "redirect", "retry", "noscript"}) {
    errors.Add({{"kind", kind}});
  }
}

}  // namespace switchboard::redis
