#include "libs/redis/connection.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace switchboard::redis {
namespace {

timeval DurationToTimeval(absl::Duration d) {
  if (d < absl::Milliseconds(1)) d = absl::Milliseconds(1);
  return absl::ToTimeval(d);
}

Reply Convert(const redisReply* r) {
  Reply out;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.type = Reply::Type::kString;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = Reply::Type::kStatus;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = Reply::Type::kError;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = Reply::Type::kInteger;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = Reply::Type::kArray;
      out.elements.reserve(r->elements);
      for (size_t i = 0; i < r->elements; ++i) out.elements.push_back(Convert(r->element[i]));
      break;
    default:
      out.type = Reply::Type::kNil;
  }
  return out;
}

absl::Status TransportError(redisContext* ctx, const Endpoint& ep, absl::Time deadline,
                            absl::string_view what) {
  std::string msg = absl::StrCat("redis ", ep.ToString(), ": ", what, ": ",
                                 ctx != nullptr ? ctx->errstr : "out of memory");
  if (absl::Now() >= deadline) return absl::DeadlineExceededError(msg);
  return absl::UnavailableError(msg);
}

}  // namespace

absl::Status ReplyStatus(const Reply& reply, absl::string_view what) {
  if (!reply.is_error()) return absl::OkStatus();
  std::string msg = absl::StrCat(what, ": redis: ", reply.str);
  absl::string_view code = reply.error_code();
  // Trouble that passes (a failover, a loading or busy server): the caller
  // may retry. A full server: back off.
  if (code == "OOM") return absl::ResourceExhaustedError(msg);
  if (code == "BUSY" || code == "NOREPLICAS" || code == "MASTERDOWN" || code == "LOADING" ||
      code == "READONLY" || code == "CLUSTERDOWN" || code == "TRYAGAIN" || code == "NOAUTH") {
    return absl::UnavailableError(msg);
  }
  return absl::InternalError(msg);
}

absl::StatusOr<std::unique_ptr<Connection>> Connection::Open(const Endpoint& endpoint,
                                                             const RedisConfig& config,
                                                             absl::Time deadline) {
  absl::Duration left = std::min(deadline - absl::Now(), config.connect_timeout);
  if (left <= absl::ZeroDuration()) {
    return absl::DeadlineExceededError(
        absl::StrCat("redis ", endpoint.ToString(), ": no time left to connect"));
  }
  redisContext* ctx =
      redisConnectWithTimeout(endpoint.host.c_str(), endpoint.port, DurationToTimeval(left));
  if (ctx == nullptr || ctx->err != 0) {
    absl::Status st = TransportError(ctx, endpoint, deadline, "connect");
    if (ctx != nullptr) redisFree(ctx);
    return st;
  }
  redisEnableKeepAlive(ctx);
  std::unique_ptr<Connection> conn(new Connection(ctx));
  std::vector<Command> setup;
  if (!config.password.empty()) {
    if (config.user.empty()) {
      setup.push_back({"AUTH", config.password});
    } else {
      setup.push_back({"AUTH", config.user, config.password});
    }
  }
  if (config.db != 0) setup.push_back({"SELECT", absl::StrCat(config.db)});
  if (setup.empty()) return conn;
  std::vector<const Command*> ptrs;
  for (const Command& c : setup) ptrs.push_back(&c);
  absl::StatusOr<std::vector<Reply>> replies = conn->Exchange(ptrs, deadline);
  if (!replies.ok()) return replies.status();
  for (const Reply& r : *replies) {
    if (!r.is_error()) continue;
    // Redis's message never contains the password.
    if (r.error_code() == "WRONGPASS" || r.error_code() == "NOAUTH" ||
        absl::StrContains(r.str, "AUTH")) {
      return absl::UnauthenticatedError(
          absl::StrCat("redis ", endpoint.ToString(), ": authentication failed: ", r.str));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("redis ", endpoint.ToString(), ": connection set-up failed: ", r.str));
  }
  conn->uses_ = 0;
  return conn;
}

Connection::~Connection() { redisFree(ctx_); }

absl::StatusOr<std::vector<Reply>> Connection::Exchange(const std::vector<const Command*>& commands,
                                                        absl::Time deadline) {
  if (absl::Status st = Append(commands, deadline); !st.ok()) return st;
  std::vector<Reply> out;
  out.reserve(commands.size());
  for (size_t i = 0; i < commands.size(); ++i) {
    absl::StatusOr<Reply> r = ReadOne(deadline);
    if (!r.ok()) return r.status();
    out.push_back(*std::move(r));
  }
  return out;
}

absl::Status Connection::Send(const std::vector<const Command*>& commands, absl::Time deadline) {
  return Append(commands, deadline);
}

absl::StatusOr<Reply> Connection::Receive(absl::Time deadline) {
  absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) {
    broken_ = true;  // the reply would arrive unread and answer a later command
    return absl::DeadlineExceededError("redis: deadline passed before the reply was read");
  }
  redisSetTimeout(ctx_, DurationToTimeval(left));
  return ReadOne(deadline);
}

// Formats RESP into a buffer kept between calls and writes it straight to
// the socket: hiredis would copy every argument twice and grow (and page in)
// a fresh buffer for each large commit. MSG_NOSIGNAL: a server that reset
// the connection (a pooled connection to a restarted server) fails the
// exchange instead of raising SIGPIPE; hiredis itself then only reads.
absl::Status Connection::Append(const std::vector<const Command*>& commands, absl::Time deadline) {
  ++uses_;
  absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) {
    return absl::DeadlineExceededError("redis: deadline passed before the request was sent");
  }
  redisSetTimeout(ctx_, DurationToTimeval(left));
  size_t size = 0;
  for (const Command* cmd : commands) {
    size += 16;
    for (const std::string& a : *cmd) size += a.size() + 24;
  }
  wbuf_.clear();
  wbuf_.reserve(size);
  char num[32];
  auto header = [&](char kind, size_t n) {
    wbuf_.push_back(kind);
    wbuf_.append(num, absl::numbers_internal::FastIntToBuffer(static_cast<uint64_t>(n), num) - num);
    wbuf_.append("\r\n", 2);
  };
  for (const Command* cmd : commands) {
    header('*', cmd->size());
    for (const std::string& a : *cmd) {
      header('$', a.size());
      wbuf_.append(a);
      wbuf_.append("\r\n", 2);
    }
  }
  size_t off = 0;
  while (off < wbuf_.size()) {
    // SO_SNDTIMEO bounds one send(): a slowly draining server must not
    // stretch a large write past the deadline a piece at a time.
    if (off > 0) {
      absl::Duration rest = deadline - absl::Now();
      if (rest <= absl::ZeroDuration()) {
        broken_ = true;
        return absl::DeadlineExceededError("redis: deadline passed while sending the request");
      }
      redisSetTimeout(ctx_, DurationToTimeval(rest));
    }
    ssize_t n = ::send(ctx_->fd, wbuf_.data() + off, wbuf_.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    broken_ = true;
    std::string msg =
        absl::StrCat("redis ", ctx_->tcp.host ? ctx_->tcp.host : "", ":", ctx_->tcp.port,
                     ": request: ", n < 0 ? std::strerror(errno) : "connection closed");
    if ((n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) || absl::Now() >= deadline) {
      return absl::DeadlineExceededError(msg);
    }
    return absl::UnavailableError(msg);
  }
  // One commit can be megabytes: do not keep that much per idle connection.
  if (wbuf_.capacity() > (8 << 20)) std::string().swap(wbuf_);
  return absl::OkStatus();
}

absl::StatusOr<Reply> Connection::ReadOne(absl::Time deadline) {
  void* raw = nullptr;
  if (redisGetReply(ctx_, &raw) != REDIS_OK || raw == nullptr) {
    broken_ = true;
    return TransportError(ctx_, Endpoint{ctx_->tcp.host ? ctx_->tcp.host : "", ctx_->tcp.port},
                          deadline, "request");
  }
  auto* r = static_cast<redisReply*>(raw);
  Reply out = Convert(r);
  freeReplyObject(r);
  return out;
}

Pool::~Pool() {
  absl::MutexLock lock(&mu_);
  idle_.clear();
}

absl::StatusOr<std::unique_ptr<Connection>> Pool::Acquire(absl::Time deadline) {
  bool reconnect;
  {
    absl::MutexLock lock(&mu_);
    auto can_take = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !idle_.empty() || open_ < config_->max_connections_per_node;
    };
    while (!can_take()) {
      if (mu_.AwaitWithDeadline(absl::Condition(&can_take), deadline)) break;
      if (!can_take()) {
        metrics_->Error("timeout");
        return absl::DeadlineExceededError(
            absl::StrCat("redis ", endpoint_.ToString(), ": every connection is busy"));
      }
    }
    if (!idle_.empty()) {
      std::unique_ptr<Connection> c = std::move(idle_.back());
      idle_.pop_back();
      return c;
    }
    ++open_;
    reconnect = lost_;
  }
  absl::StatusOr<std::unique_ptr<Connection>> c = Connection::Open(endpoint_, *config_, deadline);
  absl::MutexLock lock(&mu_);
  if (!c.ok()) {
    --open_;
    lost_ = true;
    return c.status();
  }
  metrics_->connects.Increment();
  metrics_->connections.Increment();
  if (reconnect) metrics_->reconnects.Increment();
  lost_ = false;
  return c;
}

void Pool::Release(std::unique_ptr<Connection> connection) {
  std::vector<std::unique_ptr<Connection>> close;
  absl::MutexLock lock(&mu_);
  if (!connection->broken()) {
    idle_.push_back(std::move(connection));
    return;
  }
  lost_ = true;
  close.swap(idle_);
  open_ -= static_cast<int>(close.size()) + 1;
  metrics_->connections.Decrement(static_cast<double>(close.size()) + 1);
  connection.reset();
}

void Pool::Discard(std::unique_ptr<Connection> connection) {
  if (connection->broken()) {
    Release(std::move(connection));
    return;
  }
  connection.reset();
  absl::MutexLock lock(&mu_);
  --open_;
  metrics_->connections.Decrement();
}

void Pool::DropIdle() {
  absl::MutexLock lock(&mu_);
  open_ -= static_cast<int>(idle_.size());
  metrics_->connections.Decrement(static_cast<double>(idle_.size()));
  idle_.clear();
}

}  // namespace switchboard::redis
