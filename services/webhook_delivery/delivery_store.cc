#include "services/webhook_delivery/delivery_store.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace switchboard::webhooks {
namespace {

using sqlite::Stmt;

constexpr char kSchema[] = R"sql(
PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
CREATE TABLE IF NOT EXISTS deliveries(
  id TEXT PRIMARY KEY,
  webhook_id TEXT NOT NULL,
  event_id TEXT NOT NULL,
  status INTEGER NOT NULL,
  next_attempt_us INTEGER NOT NULL,
  created_us INTEGER NOT NULL,
  body BLOB NOT NULL,
  record BLOB NOT NULL,
  UNIQUE(webhook_id, event_id));
-- Covering for the scheduler's filters (endpoints left out, leased ids):
-- reading past a long backlog touches the index only, not the rows.
DROP INDEX IF EXISTS deliveries_due;
CREATE INDEX IF NOT EXISTS deliveries_due_by_endpoint
  ON deliveries(status, next_attempt_us, webhook_id, id);
CREATE INDEX IF NOT EXISTS deliveries_by_event ON deliveries(event_id);
)sql";

constexpr char kColumns[] = "record, body, next_attempt_us";

DeliveryRecord FromRow(Stmt& st) {
  DeliveryRecord r;
  absl::string_view blob = st.Blob(0);
  r.delivery.ParseFromArray(blob.data(), static_cast<int>(blob.size()));
  r.body = std::string(st.Blob(1));
  r.next_attempt = absl::FromUnixMicros(st.Int(2));
  return r;
}

absl::StatusOr<std::vector<DeliveryRecord>> Collect(sqlite3* db, Stmt& st) {
  std::vector<DeliveryRecord> out;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) out.push_back(FromRow(st));
  if (rc != SQLITE_DONE) return sqlite::Error(db, "read deliveries");
  return out;
}

}  // namespace

absl::StatusOr<int> DeliveryStore::CreateIfRegistryAt(const std::vector<DeliveryRecord>&,
                                                      uint64_t) {
  return absl::UnimplementedError("this outbox's webhook registry is not shared");
}

absl::StatusOr<std::unique_ptr<SqliteDeliveryStore>> SqliteDeliveryStore::Open(
    const std::string& data_dir, Options options) {
  absl::StatusOr<sqlite3*> db = sqlite::OpenDatabase(data_dir, "deliveries.db", kSchema);
  if (!db.ok()) return db.status();
  std::unique_ptr<SqliteDeliveryStore> store(new SqliteDeliveryStore(*db, options));
  absl::MutexLock lock(&store->mu_);
  // The intake's and the scheduler's commits never checkpoint: that fsync
  // under mu_ stalled both (the webhook latency's tail).
  auto checkpointer = sqlite::WalCheckpointer::Start(*db);
  if (!checkpointer.ok()) return checkpointer.status();
  store->checkpointer_ = *std::move(checkpointer);
  // (A backlog too large is counted again at the first claim, by its clock.)
  if (absl::Status s = store->RebuildIndexLocked(absl::InfinitePast()); !s.ok()) return s;
  return store;
}

absl::Status SqliteDeliveryStore::RebuildIndexLocked(absl::Time now) {
  due_.Clear();
  indexed_ = false;
  size_t most = std::max<size_t>(1, options_.max_indexed / 2);
  // Counted first (the table's index only): a backlog too large is not read.
  Stmt count(db_, &stmts_,
             "SELECT COUNT(*) FROM (SELECT 1 FROM deliveries WHERE status=? LIMIT ?)");
  count.Bind(1, static_cast<int64_t>(v1::DELIVERY_STATUS_PENDING));
  count.Bind(2, static_cast<int64_t>(most + 1));
  if (count.Step() != SQLITE_ROW) return sqlite::Error(db_, "count pending deliveries");
  if (static_cast<size_t>(count.Int(0)) > most) {
    // Claims read the table until the backlog shrinks.
    rebuild_after_ = now + absl::Seconds(5);
    return absl::OkStatus();
  }
  Stmt st(db_, &stmts_, "SELECT id, webhook_id, next_attempt_us FROM deliveries WHERE status=?");
  st.Bind(1, static_cast<int64_t>(v1::DELIVERY_STATUS_PENDING));
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) due_.Put(st.Text(0), st.Text(1), st.Int(2));
  if (rc != SQLITE_DONE) {
    due_.Clear();
    return sqlite::Error(db_, "index pending deliveries");
  }
  indexed_ = true;
  return absl::OkStatus();
}

void SqliteDeliveryStore::IndexLocked(const DeliveryRecord& r) {
  if (!indexed_) return;
  const std::string& id = r.delivery.id();
  if (r.delivery.status() != v1::DELIVERY_STATUS_PENDING) {
    due_.Remove(id);
    return;
  }
  due_.Put(id, r.delivery.webhook_id(), absl::ToUnixMicros(r.next_attempt));
  if (due_.size() > options_.max_indexed) {
    // The next claim reads the table (and counts again, then every 5 s).
    due_.Clear();
    indexed_ = false;
    rebuild_after_ = absl::InfinitePast();
  }
}

absl::Status SqliteDeliveryStore::CommitLocked() {
  absl::Status s = sqlite::Exec(db_, "COMMIT");
  // A COMMIT that failed may leave the transaction open: end it, or the
  // next write would join it and never commit, while due_ and counts_
  // took it for done.
  if (!s.ok() && !sqlite3_get_autocommit(db_)) sqlite::Exec(db_, "ROLLBACK").IgnoreError();
  return s;
}

SqliteDeliveryStore::~SqliteDeliveryStore() {
  absl::MutexLock lock(&mu_);
  checkpointer_.reset();  // before the connection it hooks into closes
  stmts_.Clear();
  sqlite3_close_v2(db_);
}

absl::StatusOr<int> SqliteDeliveryStore::Create(const std::vector<DeliveryRecord>& records) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = sqlite::Exec(db_, "BEGIN"); !s.ok()) return s;
  int created = 0;
  std::vector<const DeliveryRecord*> added;
  for (const DeliveryRecord& r : records) {
    Stmt st(db_, &stmts_,
            "INSERT OR IGNORE INTO deliveries(id,webhook_id,event_id,status,next_attempt_us,"
            "created_us,body,record) VALUES(?,?,?,?,?,?,?,?)");
    st.Bind(1, r.delivery.id());
    st.Bind(2, r.delivery.webhook_id());
    st.Bind(3, r.delivery.event_id());
    st.Bind(4, static_cast<int64_t>(r.delivery.status()));
    st.Bind(5, absl::ToUnixMicros(r.next_attempt));
    st.Bind(6, absl::ToUnixMicros(absl::Now()));
    st.BindBlob(7, r.body);
    st.BindBlob(8, r.delivery.SerializeAsString());
    if (st.Step() != SQLITE_DONE) {
      absl::Status s = sqlite::Error(db_, "create delivery");
      sqlite::Exec(db_, "ROLLBACK").IgnoreError();
      return s;
    }
    if (sqlite3_changes(db_) > 0) {
      ++created;
      added.push_back(&r);
    }
  }
  if (absl::Status s = CommitLocked(); !s.ok()) return s;
  Transitions moved;
  for (const DeliveryRecord* r : added) {
    IndexLocked(*r);
    moved.emplace_back(-1, r->delivery.status());
  }
  CountLocked(moved);
  return created;
}

absl::Status SqliteDeliveryStore::Update(const DeliveryRecord& r) {
  absl::MutexLock lock(&mu_);
  Transitions moved;
  if (absl::Status s = UpdateLocked(r, &moved); !s.ok()) return s;
  CountLocked(moved);
  leases_.erase(r.delivery.id());
  IndexLocked(r);
  return absl::OkStatus();
}

absl::Status SqliteDeliveryStore::UpdateMany(const std::vector<DeliveryRecord>& records,
                                             const std::string& owner) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = sqlite::Exec(db_, "BEGIN"); !s.ok()) return s;
  std::vector<const DeliveryRecord*> done;
  Transitions moved;
  for (const DeliveryRecord& r : records) {
    auto lease = leases_.find(r.delivery.id());
    if (lease == leases_.end() || lease->second.owner != owner || lease->second.token != r.claim) {
      continue;
    }
    if (absl::Status s = UpdateLocked(r, &moved); !s.ok()) {
      sqlite::Exec(db_, "ROLLBACK").IgnoreError();
      return s;
    }
    done.push_back(&r);
  }
  if (absl::Status s = CommitLocked(); !s.ok()) return s;
  CountLocked(moved);
  for (const DeliveryRecord* r : done) {
    leases_.erase(r->delivery.id());
    IndexLocked(*r);
  }
  return absl::OkStatus();
}

bool RateBuckets::Take(const std::string& webhook_id, const RateLimitSpec& rate, absl::Time now,
                       absl::Time* next) {
  Bucket& b = buckets_[webhook_id];
  if (b.last == absl::InfinitePast()) {
    b.tokens = rate.burst;
  } else if (now > b.last) {
    b.tokens =
        std::min(rate.burst, b.tokens + absl::ToDoubleSeconds(now - b.last) * rate.per_second);
  }
  b.last = std::max(b.last, now);
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return true;
  }
  *next = b.last + absl::Seconds((1 - b.tokens) / rate.per_second);
  return false;
}

absl::Status SqliteDeliveryStore::UpdateLocked(const DeliveryRecord& r, Transitions* moved) {
  const std::string& id = r.delivery.id();
  std::optional<int> was;
  if (counts_.has_value()) {
    if (indexed_ && due_.Contains(id)) {
      was = v1::DELIVERY_STATUS_PENDING;
    } else {
      Stmt old(db_, &stmts_, "SELECT status FROM deliveries WHERE id=?");
      old.Bind(1, id);
      if (old.Step() == SQLITE_ROW) was = static_cast<int>(old.Int(0));
    }
  }
  Stmt st(db_, &stmts_, "UPDATE deliveries SET status=?, next_attempt_us=?, record=? WHERE id=?");
  st.Bind(1, static_cast<int64_t>(r.delivery.status()));
  st.Bind(2, absl::ToUnixMicros(r.next_attempt));
  st.BindBlob(3, r.delivery.SerializeAsString());
  st.Bind(4, id);
  if (st.Step() != SQLITE_DONE) return sqlite::Error(db_, "update delivery");
  if (was.has_value() && sqlite3_changes(db_) > 0) moved->emplace_back(*was, r.delivery.status());
  return absl::OkStatus();
}

void SqliteDeliveryStore::CountLocked(const Transitions& moved) {
  if (!counts_.has_value()) return;
  for (const auto& [from, to] : moved) {
    if (from == to) continue;
    if (from >= 0) {
      auto it = counts_->find(from);
      if (it != counts_->end() && it->second > 0 && --it->second == 0) counts_->erase(it);
    }
    (*counts_)[to]++;
  }
}

namespace {

// " AND webhook_id NOT IN (?,?,…)" for n webhooks, or nothing.
std::string SkipClause(size_t n) {
  if (n == 0) return "";
  std::string in = " AND webhook_id NOT IN (?";
  for (size_t i = 1; i < n; ++i) in += ",?";
  return in + ")";
}

}  // namespace

// Ties in next_attempt_us by (webhook_id, id), as DueIndex visits them: the
// order of the table's index, so nothing is sorted.
absl::StatusOr<std::vector<DeliveryRecord>> SqliteDeliveryStore::DueLocked(
    absl::Time now, size_t limit, const std::set<std::string>& skip) {
  Stmt st(
      db_, &stmts_,
      absl::StrCat("SELECT ", kColumns, " FROM deliveries WHERE status=? AND next_attempt_us<=?",
                   SkipClause(skip.size()), " ORDER BY next_attempt_us, webhook_id, id LIMIT ?"));
  int i = 1;
  st.Bind(i++, static_cast<int64_t>(v1::DELIVERY_STATUS_PENDING));
  st.Bind(i++, absl::ToUnixMicros(now));
  for (const std::string& w : skip) st.Bind(i++, w);
  st.Bind(i++, static_cast<int64_t>(limit));
  return Collect(db_, st);
}

absl::StatusOr<Claimed> SqliteDeliveryStore::Claim(const ClaimRequest& req) {
  absl::MutexLock lock(&mu_);
  Claimed out;
  auto last = last_claims_.find(req.owner);
  if (!req.request_id.empty() && last != last_claims_.end() &&
      last->second.first == req.request_id) {
    for (const std::string& id : last->second.second) {
      auto lease = leases_.find(id);
      if (lease == leases_.end() || lease->second.owner != req.owner) continue;
      Stmt st(db_, &stmts_, absl::StrCat("SELECT ", kColumns, " FROM deliveries WHERE id=?"));
      st.Bind(1, id);
      absl::StatusOr<std::vector<DeliveryRecord>> row = Collect(db_, st);
      if (!row.ok()) return row.status();
      for (DeliveryRecord& r : *row) {
        r.claim = lease->second.token;
        out.records.push_back(std::move(r));
      }
    }
    return out;
  }
  std::set<std::string> skip(req.skip_webhooks.begin(), req.skip_webhooks.end());
  std::map<std::string, int> held;  // live leases per endpoint
  size_t live = 0;
  for (const auto& [id, lease] : leases_) {
    if (lease.until > req.now) {
      held[lease.webhook_id]++;
      live++;
    }
  }
  if (!indexed_ && req.now >= rebuild_after_) {
    if (absl::Status s = RebuildIndexLocked(req.now); !s.ok()) return s;
  }
  absl::Status s = indexed_
                       ? ClaimFromIndexLocked(req, std::move(skip), std::move(held), &out)
                       : ClaimFromTableLocked(req, std::move(skip), std::move(held), live, &out);
  if (!s.ok()) return s;
  std::vector<std::string> ids;
  for (const DeliveryRecord& r : out.records) ids.push_back(r.delivery.id());
  last_claims_[req.owner] = {req.request_id, std::move(ids)};
  return out;
}

void SqliteDeliveryStore::LeaseLocked(const ClaimRequest& req, DeliveryRecord& r) {
  leases_[r.delivery.id()] =
      Lease{req.owner, r.delivery.webhook_id(), req.now + req.lease, ++next_token_};
  r.claim = next_token_;
}

absl::Status SqliteDeliveryStore::ClaimFromIndexLocked(const ClaimRequest& req,
                                                       std::set<std::string> skip,
                                                       std::map<std::string, int> held,
                                                       Claimed* out) {
  std::vector<std::string> chosen;
  due_.Visit(
      absl::ToUnixMicros(req.now), skip,
      [&](const std::string& id, const std::string& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        if (chosen.size() >= req.limit) return DueIndex::Next::kStop;
        auto lease = leases_.find(id);
        if (lease != leases_.end() && lease->second.until > req.now) {
          return DueIndex::Next::kContinue;
        }
        if (held[w] >= req.max_per_webhook) {
          out->full.insert(w);
          return DueIndex::Next::kSkipWebhook;
        }
        auto rate = req.rate_limits.find(w);
        absl::Time next;
        if (rate != req.rate_limits.end() && !buckets_.Take(w, rate->second, req.now, &next)) {
          out->throttled[w] = next;
          return DueIndex::Next::kSkipWebhook;
        }
        held[w]++;
        chosen.push_back(id);
        return DueIndex::Next::kContinue;
      });
  // Only the rows taken are read: those under lease cost no read at all.
  for (const std::string& id : chosen) {
    Stmt st(db_, &stmts_, absl::StrCat("SELECT ", kColumns, " FROM deliveries WHERE id=?"));
    st.Bind(1, id);
    absl::StatusOr<std::vector<DeliveryRecord>> row = Collect(db_, st);
    if (!row.ok()) return row.status();
    for (DeliveryRecord& r : *row) {
      if (r.delivery.status() != v1::DELIVERY_STATUS_PENDING) {
        // The index held a row no longer pending: never send it again.
        due_.Remove(id);
        continue;
      }
      LeaseLocked(req, r);
      out->records.push_back(std::move(r));
    }
  }
  return absl::OkStatus();
}

absl::Status SqliteDeliveryStore::ClaimFromTableLocked(const ClaimRequest& req,
                                                       std::set<std::string> skip,
                                                       std::map<std::string, int> held, size_t live,
                                                       Claimed* out) {
  // A round reads past the deliveries under lease; an endpoint found full or
  // throttled joins `skip`, and the next round reads past its backlog.
  for (int round = 0; round < 4 && out->records.size() < req.limit; ++round) {
    size_t want = req.limit - out->records.size() + live;
    absl::StatusOr<std::vector<DeliveryRecord>> due = DueLocked(req.now, want, skip);
    if (!due.ok()) return due.status();
    bool skipped_more = false;
    for (DeliveryRecord& r : *due) {
      if (out->records.size() >= req.limit) break;
      const std::string& id = r.delivery.id();
      const std::string& w = r.delivery.webhook_id();
      auto lease = leases_.find(id);
      if (lease != leases_.end() && lease->second.until > req.now) continue;
      if (skip.count(w)) continue;
      if (held[w] >= req.max_per_webhook) {
        out->full.insert(w);
        skip.insert(w);
        skipped_more = true;
        continue;
      }
      auto rate = req.rate_limits.find(w);
      absl::Time next;
      if (rate != req.rate_limits.end() && !buckets_.Take(w, rate->second, req.now, &next)) {
        out->throttled[w] = next;
        skip.insert(w);
        skipped_more = true;
        continue;
      }
      LeaseLocked(req, r);
      held[w]++;
      live++;
      out->records.push_back(std::move(r));
    }
    if (!skipped_more || due->size() < want) break;
  }
  return absl::OkStatus();
}

absl::Status SqliteDeliveryStore::Renew(const std::vector<std::string>& ids,
                                        const std::string& owner, absl::Time until) {
  absl::MutexLock lock(&mu_);
  for (const std::string& id : ids) {
    auto it = leases_.find(id);
    if (it != leases_.end() && it->second.owner == owner) {
      it->second.until = std::max(it->second.until, until);
    }
  }
  return absl::OkStatus();
}

absl::Status SqliteDeliveryStore::Release(const std::vector<ClaimRef>& claims,
                                          const std::string& owner) {
  absl::MutexLock lock(&mu_);
  for (const auto& [id, token] : claims) {
    auto it = leases_.find(id);
    if (it != leases_.end() && it->second.owner == owner && it->second.token == token) {
      leases_.erase(it);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::Time> SqliteDeliveryStore::NextDue(
    const std::vector<std::string>& skip_webhooks) {
  absl::MutexLock lock(&mu_);
  if (indexed_) {
    std::set<std::string> skip(skip_webhooks.begin(), skip_webhooks.end());
    std::optional<int64_t> next =
        due_.NextDue(skip, [this](const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          auto lease = leases_.find(id);
          return lease == leases_.end()
                     ? std::optional<int64_t>()
                     : std::optional<int64_t>(absl::ToUnixMicros(lease->second.until));
        });
    return next.has_value() ? absl::FromUnixMicros(*next) : absl::InfiniteFuture();
  }
  // The earliest rows, read past those under lease (which are due when
  // their lease runs out).
  Stmt st(db_, &stmts_,
          absl::StrCat("SELECT id, next_attempt_us FROM deliveries WHERE status=?",
                       SkipClause(skip_webhooks.size()), " ORDER BY next_attempt_us LIMIT ?"));
  int i = 1;
  st.Bind(i++, static_cast<int64_t>(v1::DELIVERY_STATUS_PENDING));
  for (const std::string& w : skip_webhooks) st.Bind(i++, w);
  st.Bind(i++, static_cast<int64_t>(leases_.size() + 1));
  absl::Time next = absl::InfiniteFuture();
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) {
    absl::Time at = absl::FromUnixMicros(st.Int(1));
    auto lease = leases_.find(st.Text(0));
    if (lease == leases_.end()) {
      next = std::min(next, at);
      break;
    }
    next = std::min(next, std::max(at, lease->second.until));
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return sqlite::Error(db_, "next due");
  return next;
}

absl::StatusOr<std::vector<DeliveryRecord>> SqliteDeliveryStore::List(const std::string& webhook_id,
                                                                      v1::DeliveryStatus status,
                                                                      const std::string& event_id,
                                                                      size_t limit) {
  std::string sql = absl::StrCat("SELECT ", kColumns, " FROM deliveries WHERE 1");
  if (!webhook_id.empty()) sql += " AND webhook_id=?";
  if (status != v1::DELIVERY_STATUS_UNSPECIFIED) sql += " AND status=?";
  if (!event_id.empty()) sql += " AND event_id=?";
  sql += " ORDER BY created_us DESC, id DESC LIMIT ?";
  absl::MutexLock lock(&mu_);
  Stmt st(db_, &stmts_, sql);
  int i = 1;
  if (!webhook_id.empty()) st.Bind(i++, webhook_id);
  if (status != v1::DELIVERY_STATUS_UNSPECIFIED) st.Bind(i++, static_cast<int64_t>(status));
  if (!event_id.empty()) st.Bind(i++, event_id);
  st.Bind(i++, static_cast<int64_t>(limit));
  return Collect(db_, st);
}

absl::StatusOr<std::map<int, uint64_t>> SqliteDeliveryStore::CountByStatus() {
  absl::MutexLock lock(&mu_);
  if (counts_.has_value()) return *counts_;
  Stmt st(db_, &stmts_, "SELECT status, COUNT(*) FROM deliveries GROUP BY status");
  std::map<int, uint64_t> out;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) {
    out[static_cast<int>(st.Int(0))] = static_cast<uint64_t>(st.Int(1));
  }
  if (rc != SQLITE_DONE) return sqlite::Error(db_, "count deliveries");
  counts_ = out;
  return out;
}

absl::StatusOr<std::pair<uint64_t, uint64_t>> SqliteDeliveryStore::CountPending(absl::Time now) {
  absl::MutexLock lock(&mu_);
  Stmt st(db_, &stmts_,
          "SELECT IFNULL(SUM(next_attempt_us<=?),0), IFNULL(SUM(next_attempt_us>?),0) "
          "FROM deliveries WHERE status=?");
  st.Bind(1, absl::ToUnixMicros(now));
  st.Bind(2, absl::ToUnixMicros(now));
  st.Bind(3, static_cast<int64_t>(v1::DELIVERY_STATUS_PENDING));
  if (st.Step() != SQLITE_ROW) return sqlite::Error(db_, "count pending");
  uint64_t due = static_cast<uint64_t>(st.Int(0)), later = static_cast<uint64_t>(st.Int(1));
  // Deliveries under lease were due when claimed; they count as scheduled
  // (for when the lease runs out), as the shared store counts them.
  uint64_t leased = 0;
  for (const auto& [id, lease] : leases_) leased += lease.until > now;
  leased = std::min(leased, due);
  return std::make_pair(due - leased, later + leased);
}

}  // namespace switchboard::webhooks
