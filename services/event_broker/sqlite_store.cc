#include "services/event_broker/sqlite_store.h"

#include <sys/stat.h>

#include <cerrno>
#include <filesystem>
#include <map>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "libs/common/sqlite_util.h"

namespace switchboard::broker {

// How long the writer waits for another connection's write lock.
constexpr int kWriterBusyMs = 5000;
namespace {

using ::switchboard::sqlite::Exec;
using ::switchboard::sqlite::Stmt;
using ::switchboard::sqlite::StmtCache;

absl::Status SqlError(sqlite3* db, absl::string_view what) {
  return ::switchboard::sqlite::Error(db, what);
}

int64_t ToMicros(absl::Time t) { return absl::ToUnixMicros(t); }

EventPtr MakeStored(uint64_t seq, int64_t ingest_us, std::string type, absl::string_view payload) {
  auto ev = std::make_shared<StoredEvent>();
  ev->seq = seq;
  ev->ingest_time = absl::FromUnixMicros(ingest_us);
  ev->type = std::move(type);
  ev->payload = std::string(payload);
  return ev;
}

// Collects "SELECT seq, ingest_us, type, payload ..." rows.
absl::StatusOr<std::vector<EventPtr>> CollectEvents(sqlite3* db, Stmt& st) {
  std::vector<EventPtr> out;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) {
    out.push_back(MakeStored(st.Int(0), st.Int(1), st.Text(2), st.Blob(3)));
  }
  if (rc != SQLITE_DONE) return SqlError(db, "read events");
  return out;
}

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events(
  seq INTEGER PRIMARY KEY,
  type TEXT NOT NULL,
  correlation_id TEXT,
  subject TEXT,
  time_us INTEGER NOT NULL,
  ingest_us INTEGER NOT NULL,
  payload BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS events_by_correlation ON events(correlation_id) WHERE correlation_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_by_subject ON events(subject) WHERE subject IS NOT NULL;
CREATE TABLE IF NOT EXISTS groups(
  name TEXT PRIMARY KEY,
  types TEXT NOT NULL,
  cursor INTEGER NOT NULL,
  max_deliveries INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pending(
  grp TEXT NOT NULL, seq INTEGER NOT NULL, attempts INTEGER NOT NULL,
  PRIMARY KEY(grp, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters(
  grp TEXT NOT NULL, seq INTEGER NOT NULL, attempts INTEGER NOT NULL, dead_us INTEGER NOT NULL,
  ingest_us INTEGER NOT NULL, type TEXT NOT NULL, payload BLOB NOT NULL,
  last_error TEXT NOT NULL DEFAULT '',
  PRIMARY KEY(grp, seq)) WITHOUT ROWID;
)sql";

}  // namespace

SqliteEventStore::SqliteEventStore(std::string path, sqlite3* writer, sqlite3* reader,
                                   DedupeOptions dedupe)
    : path_(std::move(path)),
      writer_(writer),
      write_cache_(std::make_unique<StmtCache>()),
      dedupe_(dedupe.window, dedupe.max_keys),
      reader_(reader),
      read_cache_(std::make_unique<StmtCache>()) {}

absl::StatusOr<SyncPolicy> ParseSyncPolicy(absl::string_view s) {
  if (s == "normal") return SyncPolicy::kNormal;
  if (s == "full") return SyncPolicy::kFull;
  return absl::InvalidArgumentError(
      absl::StrCat("sync: '", s, "' is not a sync policy (normal or full)"));
}

absl::StatusOr<std::unique_ptr<SqliteEventStore>> SqliteEventStore::Open(
    const std::string& data_dir, SyncPolicy sync, DedupeOptions dedupe,
    sqlite::WalCheckpointer::Options checkpoints) {
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("data_dir: cannot create '", data_dir, "': ", ec.message()));
  }
  std::string path = (std::filesystem::path(data_dir) / "events.db").string();
  absl::StatusOr<sqlite3*> opened =
      sqlite::OpenConnection(path, SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX);
  if (!opened.ok()) return opened.status();
  sqlite3* writer = *opened;
  std::unique_ptr<SqliteEventStore> store(new SqliteEventStore(path, writer, nullptr, dedupe));
  if (absl::Status s = store->Init(sync); !s.ok()) return s;
  {
    // Nothing else uses the writer yet (the checkpointer hooks into it).
    absl::MutexLock lock(&store->write_mu_);
    auto checkpointer = sqlite::WalCheckpointer::Start(writer, checkpoints);
    if (!checkpointer.ok()) return checkpointer.status();
    store->checkpointer_ = *std::move(checkpointer);
  }
  opened = sqlite::OpenConnection(path, SQLITE_OPEN_NOMUTEX, /*query_only=*/true);
  if (!opened.ok()) return opened.status();
  sqlite3* reader = *opened;
  {
    absl::MutexLock lock(&store->read_mu_);
    store->reader_ = reader;
    sqlite3_busy_timeout(reader, 5000);
    if (absl::Status s = Exec(reader, "PRAGMA cache_size=-16384; PRAGMA mmap_size=0;"); !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = store->LoadDedupeWindow(); !s.ok()) return s;
  return store;
}

absl::Status SqliteEventStore::Init(SyncPolicy sync) {
  sync_ = sync;
  absl::MutexLock lock(&write_mu_);
  sqlite3_busy_timeout(writer_, kWriterBusyMs);
  if (absl::Status s = Exec(writer_, "PRAGMA journal_mode=WAL;"); !s.ok()) return s;
  if (absl::Status s = Exec(writer_, sync == SyncPolicy::kFull ? "PRAGMA synchronous=FULL;"
                                                               : "PRAGMA synchronous=NORMAL;");
      !s.ok()) {
    return s;
  }
  // Checkpoints are the WalCheckpointer's, off the commit path (Open).
  if (absl::Status s = Exec(writer_, "PRAGMA cache_size=-16384; PRAGMA temp_store=MEMORY;");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = Exec(writer_, kSchema); !s.ok()) return s;
  if (absl::Status s =
          sqlite::EnsureColumn(writer_, "dead_letters", "last_error", "TEXT NOT NULL DEFAULT ''");
      !s.ok()) {
    return s;
  }
  Stmt st(writer_, write_cache_.get(), "SELECT value FROM meta WHERE key='last_seq'");
  if (st.Step() == SQLITE_ROW) last_seq_ = st.Int(0);
  Stmt max(writer_, write_cache_.get(), "SELECT IFNULL(MAX(seq),0) FROM events");
  if (max.Step() == SQLITE_ROW) last_seq_ = std::max<uint64_t>(last_seq_, max.Int(0));
  published_last_seq_ = last_seq_;
  return absl::OkStatus();
}

absl::Status SqliteEventStore::LoadDedupeWindow() {
  absl::StatusOr<StoreBounds> b = Bounds();
  if (!b.ok()) return b.status();
  if (b->count == 0) return absl::OkStatus();
  absl::StatusOr<EventPtr> newest = ReadOne(b->first_seq + b->count - 1);
  if (!newest.ok()) return newest.status();
  absl::Duration window;
  {
    absl::MutexLock lock(&write_mu_);
    window = dedupe_.window();
  }
  absl::StatusOr<std::vector<EventPtr>> recent = ReadIngestedSince((*newest)->ingest_time - window);
  if (!recent.ok()) return recent.status();
  absl::MutexLock lock(&write_mu_);
  for (const EventPtr& ev : *recent) {
    events::v1::Event parsed = ev->Parse();
    if (parsed.id().empty()) continue;
    dedupe_.Add(DedupeKey(parsed.source(), parsed.id()), ev->seq, ev->ingest_time);
  }
  return absl::OkStatus();
}

SqliteEventStore::~SqliteEventStore() {
  checkpointer_.reset();  // before the writer it hooks into closes
  {
    absl::MutexLock lock(&read_mu_);
    read_cache_->Clear();
    sqlite3_close_v2(reader_);
  }
  absl::MutexLock lock(&write_mu_);
  write_cache_->Clear();
  sqlite3_close_v2(writer_);
}

absl::Status SqliteEventStore::ApplyOp(const GroupOp& op, absl::Time now) {
  const std::string& g = op.group.name;
  switch (op.kind) {
    case GroupOp::Kind::kUpsertGroup: {
      Stmt st(writer_, write_cache_.get(),
              "INSERT INTO groups(name,types,cursor,max_deliveries) VALUES(?,?,?,?) "
              "ON CONFLICT(name) DO UPDATE SET types=excluded.types, "
              "max_deliveries=excluded.max_deliveries");
      st.Bind(1, g);
      st.Bind(2, absl::StrJoin(op.group.types, ","));
      st.Bind(3, static_cast<int64_t>(op.group.cursor));
      st.Bind(4, static_cast<int64_t>(op.group.max_deliveries));
      if (st.Step() != SQLITE_DONE) return SqlError(writer_, "upsert group");
      return absl::OkStatus();
    }
    case GroupOp::Kind::kSetCursor: {
      Stmt st(writer_, write_cache_.get(), "UPDATE groups SET cursor=? WHERE name=? AND cursor<?");
      st.Bind(1, static_cast<int64_t>(op.group.cursor));
      st.Bind(2, g);
      st.Bind(3, static_cast<int64_t>(op.group.cursor));
      if (st.Step() != SQLITE_DONE) return SqlError(writer_, "set cursor");
      return absl::OkStatus();
    }
    case GroupOp::Kind::kSetPending: {
      Stmt st(writer_, write_cache_.get(),
              "INSERT OR REPLACE INTO pending(grp,seq,attempts) VALUES(?,?,?)");
      st.Bind(1, g);
      st.Bind(2, static_cast<int64_t>(op.seq));
      st.Bind(3, static_cast<int64_t>(op.attempts));
      if (st.Step() != SQLITE_DONE) return SqlError(writer_, "set pending");
      return absl::OkStatus();
    }
    case GroupOp::Kind::kRemovePending: {
      Stmt st(writer_, write_cache_.get(), "DELETE FROM pending WHERE grp=? AND seq=?");
      st.Bind(1, g);
      st.Bind(2, static_cast<int64_t>(op.seq));
      if (st.Step() != SQLITE_DONE) return SqlError(writer_, "remove pending");
      return absl::OkStatus();
    }
    case GroupOp::Kind::kDeadLetter: {
      Stmt del(writer_, write_cache_.get(), "DELETE FROM pending WHERE grp=? AND seq=?");
      del.Bind(1, g);
      del.Bind(2, static_cast<int64_t>(op.seq));
      if (del.Step() != SQLITE_DONE) return SqlError(writer_, "remove pending");
      // The dead letter keeps its own copy: retention may drop the event.
      Stmt st(writer_, write_cache_.get(),
              "INSERT OR REPLACE INTO "
              "dead_letters(grp,seq,attempts,dead_us,ingest_us,type,payload,last_error) "
              "VALUES(?,?,?,?,?,?,?,?)");
      st.Bind(1, g);
      st.Bind(2, static_cast<int64_t>(op.seq));
      st.Bind(3, static_cast<int64_t>(op.attempts));
      st.Bind(4, ToMicros(now));
      st.Bind(5, op.event ? ToMicros(op.event->ingest_time) : ToMicros(now));
      st.Bind(6, op.event ? absl::string_view(op.event->type) : absl::string_view());
      st.BindBlob(7, op.event ? absl::string_view(op.event->payload) : absl::string_view());
      st.Bind(8, op.error);
      if (st.Step() != SQLITE_DONE) return SqlError(writer_, "dead letter");
      return absl::OkStatus();
    }
    case GroupOp::Kind::kRemoveDeadLetter: {
      Stmt st(writer_, write_cache_.get(), "DELETE FROM dead_letters WHERE grp=? AND seq=?");
      st.Bind(1, g);
      st.Bind(2, static_cast<int64_t>(op.seq));
      if (st.Step() != SQLITE_DONE) return SqlError(writer_, "remove dead letter");
      return absl::OkStatus();
    }
  }
  return absl::InternalError("unknown group op");
}

absl::StatusOr<CommitResult> SqliteEventStore::Commit(const WriteBatch& batch, absl::Time now) {
  absl::MutexLock lock(&write_mu_);
  return CommitLocked(batch, now, /*begun=*/false);
}

std::optional<absl::StatusOr<CommitResult>> SqliteEventStore::TryCommitNow(const WriteBatch& batch,
                                                                           absl::Time now) {
  if (sync_ != SyncPolicy::kNormal) return std::nullopt;
  if (!write_mu_.TryLock()) return std::nullopt;
  std::optional<absl::StatusOr<CommitResult>> out;
  // Append sends only publishes under 64 KiB inline: some 16 pages of
  // events and their index entries, well within 256 frames.
  if (checkpointer_ == nullptr || !checkpointer_->NextCommitMaySync(256)) {
    // The write lock is taken first, without the busy wait: another
    // connection writing this database sends the commit to the writer thread
    // instead of blocking this one. (The process lock of sqlite::kVfs keeps
    // other processes out; a connection of this process can still write.)
    sqlite3_busy_timeout(writer_, 0);
    bool begun;
    {
      Stmt begin(writer_, write_cache_.get(), "BEGIN IMMEDIATE");
      begun = begin.Step() == SQLITE_DONE;
    }
    sqlite3_busy_timeout(writer_, kWriterBusyMs);
    if (begun) out = CommitLocked(batch, now, /*begun=*/true);
  }
  write_mu_.Unlock();
  return out;
}

absl::StatusOr<CommitResult> SqliteEventStore::CommitLocked(const WriteBatch& batch, absl::Time now,
                                                            bool begun) {
  dedupe_.Expire(now);
  if (!begun) {
    Stmt begin(writer_, write_cache_.get(), "BEGIN");
    if (begin.Step() != SQLITE_DONE) return SqlError(writer_, "begin");
  }
  CommitResult result;
  result.duplicate_of.assign(batch.events.size(), 0);
  // Keys appended by this batch, added to the window once it committed.
  absl::flat_hash_map<std::string, uint64_t> new_keys;
  uint64_t seq = last_seq_;
  absl::Status status;
  if (!batch.events.empty()) {
    Stmt st(writer_, write_cache_.get(),
            "INSERT INTO events(seq,type,correlation_id,subject,time_us,ingest_us,payload) "
            "VALUES(?,?,?,?,?,?,?)");
    int64_t now_us = ToMicros(now);
    for (size_t i = 0; i < batch.events.size(); ++i) {
      const NewEvent* ev = batch.events[i];
      std::string key;
      if (ev->client_id) {
        key = DedupeKey(ev->source, ev->id);
        uint64_t dup = dedupe_.Find(key);
        if (dup == 0) {
          if (auto it = new_keys.find(key); it != new_keys.end()) dup = it->second;
        }
        if (dup != 0) {
          result.duplicate_of[i] = dup;
          continue;
        }
      }
      ++seq;
      if (result.first == 0) result.first = seq;
      if (!key.empty()) new_keys.emplace(std::move(key), seq);
      st.Bind(1, static_cast<int64_t>(seq));
      st.Bind(2, ev->type);
      st.BindNullable(3, ev->correlation_id);
      st.BindNullable(4, ev->subject);
      st.Bind(5, ev->time_us);
      st.Bind(6, now_us);
      st.BindBlob(7, ev->payload);
      if (st.Step() != SQLITE_DONE) {
        status = SqlError(writer_, "append event");
        break;
      }
      sqlite3_reset(st.get());
    }
  }
  for (size_t i = 0; status.ok() && i < batch.ops.size(); ++i) status = ApplyOp(batch.ops[i], now);
  if (status.ok()) {
    Stmt commit(writer_, write_cache_.get(), "COMMIT");
    if (commit.Step() != SQLITE_DONE) status = SqlError(writer_, "commit");
  }
  if (!status.ok()) {
    Exec(writer_, "ROLLBACK").IgnoreError();
    return status;
  }
  last_seq_ = seq;
  published_last_seq_ = seq;
  for (auto& [key, s] : new_keys) dedupe_.Add(key, s, now);
  return result;
}

absl::StatusOr<std::vector<EventPtr>> SqliteEventStore::ReadAfter(uint64_t after_seq,
                                                                  size_t limit) {
  absl::MutexLock lock(&read_mu_);
  Stmt st(reader_, read_cache_.get(),
          "SELECT seq, ingest_us, type, payload FROM events WHERE seq>? ORDER BY seq LIMIT ?");
  st.Bind(1, static_cast<int64_t>(after_seq));
  st.Bind(2, static_cast<int64_t>(limit));
  return CollectEvents(reader_, st);
}

absl::StatusOr<EventPtr> SqliteEventStore::ReadOne(uint64_t seq) {
  absl::MutexLock lock(&read_mu_);
  Stmt st(reader_, read_cache_.get(),
          "SELECT seq, ingest_us, type, payload FROM events WHERE seq=?");
  st.Bind(1, static_cast<int64_t>(seq));
  absl::StatusOr<std::vector<EventPtr>> evs = CollectEvents(reader_, st);
  if (!evs.ok()) return evs.status();
  if (evs->empty()) return absl::NotFoundError(absl::StrCat("event ", seq, " is not stored"));
  return evs->front();
}

absl::StatusOr<std::vector<EventPtr>> SqliteEventStore::Query(const HistoryQuery& q) {
  std::string sql = "SELECT seq, ingest_us, type, payload FROM events WHERE 1";
  std::vector<std::string> type_terms;
  for (size_t i = 0; i < q.exact_types.size(); ++i) type_terms.push_back("type=?");
  for (size_t i = 0; i < q.type_prefixes.size(); ++i) type_terms.push_back("(type>=? AND type<?)");
  if (!type_terms.empty()) absl::StrAppend(&sql, " AND (", absl::StrJoin(type_terms, " OR "), ")");
  if (!q.correlation_id.empty()) sql += " AND correlation_id=?";
  if (!q.subject.empty()) sql += " AND subject=?";
  if (q.since != absl::InfinitePast()) sql += " AND time_us>=?";
  if (q.before_sequence != 0) sql += " AND seq<?";
  sql += " ORDER BY seq DESC LIMIT ?";
  absl::MutexLock lock(&read_mu_);
  Stmt st(reader_, read_cache_.get(), sql);
  if (!st.ok()) return SqlError(reader_, "prepare history query");
  int i = 1;
  for (const std::string& t : q.exact_types) st.Bind(i++, t);
  for (const std::string& p : q.type_prefixes) {
    // Prefixes end with '.'; '/' is the next character, bounding the range.
    st.Bind(i++, p);
    st.Bind(i++, p.substr(0, p.size() - 1) + "/");
  }
  if (!q.correlation_id.empty()) st.Bind(i++, q.correlation_id);
  if (!q.subject.empty()) st.Bind(i++, q.subject);
  if (q.since != absl::InfinitePast()) st.Bind(i++, ToMicros(q.since));
  if (q.before_sequence != 0) st.Bind(i++, static_cast<int64_t>(q.before_sequence));
  st.Bind(i++, static_cast<int64_t>(q.limit));
  return CollectEvents(reader_, st);
}

absl::StatusOr<uint64_t> SqliteEventStore::FirstSequenceAtOrAfter(absl::Time t) {
  absl::StatusOr<StoreBounds> b = Bounds();
  if (!b.ok()) return b.status();
  // Ingest time grows with the sequence (one writer) and sequences are
  // contiguous, so bisect with point reads instead of keeping a time index,
  // which would cost a page write on every commit.
  uint64_t lo = b->first_seq == 0 ? b->last_seq + 1 : b->first_seq;
  uint64_t hi = b->last_seq + 1;
  int64_t target = ToMicros(t);
  absl::MutexLock lock(&read_mu_);
  while (lo < hi) {
    uint64_t mid = lo + (hi - lo) / 2;
    Stmt st(reader_, read_cache_.get(),
            "SELECT ingest_us FROM events WHERE seq>=? ORDER BY seq LIMIT 1");
    st.Bind(1, static_cast<int64_t>(mid));
    if (st.Step() != SQLITE_ROW || st.Int(0) >= target) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

absl::StatusOr<std::vector<EventPtr>> SqliteEventStore::ReadIngestedSince(absl::Time since) {
  absl::MutexLock lock(&read_mu_);
  // ingest_us grows with seq (one writer), so walk back from the end.
  Stmt first(reader_, read_cache_.get(),
             "SELECT IFNULL(MIN(seq),0) FROM (SELECT seq, ingest_us FROM events ORDER BY seq DESC) "
             "WHERE ingest_us>=?");
  first.Bind(1, ToMicros(since));
  if (first.Step() != SQLITE_ROW) return SqlError(reader_, "dedupe window");
  int64_t from = first.Int(0);
  if (from == 0) return std::vector<EventPtr>();
  Stmt st(reader_, read_cache_.get(),
          "SELECT seq, ingest_us, type, payload FROM events WHERE seq>=? ORDER BY seq");
  st.Bind(1, from);
  return CollectEvents(reader_, st);
}

absl::StatusOr<StoreBounds> SqliteEventStore::Bounds() {
  StoreBounds b;
  b.last_seq = published_last_seq_.load();
  absl::MutexLock lock(&read_mu_);
  Stmt st(reader_, read_cache_.get(), "SELECT IFNULL(MIN(seq),0), IFNULL(MAX(seq),0) FROM events");
  if (st.Step() != SQLITE_ROW) return SqlError(reader_, "bounds");
  b.first_seq = st.Int(0);
  uint64_t max_seq = st.Int(1);
  // Sequences are contiguous (retention only trims the head).
  b.count = b.first_seq == 0 ? 0 : max_seq - b.first_seq + 1;
  return b;
}

absl::StatusOr<std::vector<GroupRecord>> SqliteEventStore::LoadGroups() {
  absl::MutexLock lock(&read_mu_);
  Stmt st(reader_, read_cache_.get(),
          "SELECT name, types, cursor, max_deliveries FROM groups ORDER BY name");
  std::vector<GroupRecord> out;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) {
    GroupRecord g;
    g.name = st.Text(0);
    std::string types = st.Text(1);
    if (!types.empty()) g.types = absl::StrSplit(types, ',');
    g.cursor = st.Int(2);
    g.max_deliveries = static_cast<uint32_t>(st.Int(3));
    out.push_back(std::move(g));
  }
  if (rc != SQLITE_DONE) return SqlError(reader_, "load groups");
  return out;
}

absl::StatusOr<std::vector<PendingRecord>> SqliteEventStore::LoadPending(const std::string& group) {
  absl::MutexLock lock(&read_mu_);
  Stmt st(reader_, read_cache_.get(), "SELECT seq, attempts FROM pending WHERE grp=? ORDER BY seq");
  st.Bind(1, group);
  std::vector<PendingRecord> out;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) {
    out.push_back(
        PendingRecord{static_cast<uint64_t>(st.Int(0)), static_cast<uint32_t>(st.Int(1))});
  }
  if (rc != SQLITE_DONE) return SqlError(reader_, "load pending");
  return out;
}

absl::StatusOr<std::vector<DeadLetterRecord>> SqliteEventStore::ListDeadLetters(
    const std::string& group, uint64_t after_seq, size_t limit) {
  absl::MutexLock lock(&read_mu_);
  Stmt st(reader_, read_cache_.get(),
          "SELECT seq, ingest_us, type, payload, attempts, dead_us, last_error FROM dead_letters "
          "WHERE grp=? AND seq>? ORDER BY seq LIMIT ?");
  st.Bind(1, group);
  st.Bind(2, static_cast<int64_t>(after_seq));
  st.Bind(3, static_cast<int64_t>(limit));
  std::vector<DeadLetterRecord> out;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) {
    out.push_back(DeadLetterRecord{group, MakeStored(st.Int(0), st.Int(1), st.Text(2), st.Blob(3)),
                                   static_cast<uint32_t>(st.Int(4)),
                                   absl::FromUnixMicros(st.Int(5)), st.Text(6)});
  }
  if (rc != SQLITE_DONE) return SqlError(reader_, "list dead letters");
  return out;
}

absl::StatusOr<uint64_t> SqliteEventStore::CountDeadLetters(const std::string& group) {
  absl::MutexLock lock(&read_mu_);
  Stmt st(reader_, read_cache_.get(), "SELECT COUNT(*) FROM dead_letters WHERE grp=?");
  st.Bind(1, group);
  if (st.Step() != SQLITE_ROW) return SqlError(reader_, "count dead letters");
  return static_cast<uint64_t>(st.Int(0));
}

absl::StatusOr<uint64_t> SqliteEventStore::ApplyRetention(absl::Time now, absl::Duration max_age,
                                                          uint64_t max_count, uint64_t max_delete) {
  absl::StatusOr<StoreBounds> b = Bounds();
  if (!b.ok()) return b.status();
  if (b->count == 0) return 0;
  uint64_t delete_below = b->first_seq;  // exclusive bound
  if (b->count > max_count) {
    delete_below = b->first_seq + std::min<uint64_t>(b->count - max_count, max_delete);
  }
  absl::MutexLock lock(&write_mu_);
  // Age: ingest_us grows with seq, so the expired events are a head run.
  Stmt age(writer_, write_cache_.get(),
           "SELECT IFNULL(MAX(seq),0) FROM (SELECT seq, ingest_us FROM events WHERE seq>=? "
           "ORDER BY seq LIMIT ?) WHERE ingest_us<?");
  age.Bind(1, static_cast<int64_t>(b->first_seq));
  age.Bind(2, static_cast<int64_t>(max_delete));
  age.Bind(3, ToMicros(now - max_age));
  if (age.Step() != SQLITE_ROW) return SqlError(writer_, "retention by age");
  uint64_t expired_upto = age.Int(0);
  delete_below = std::max(delete_below, expired_upto + 1);
  if (delete_below <= b->first_seq) return 0;
  // The last sequence is MAX(seq) of the log; write it down before retention
  // might delete the newest event, so it is never handed out again.
  Stmt meta(writer_, write_cache_.get(),
            "INSERT OR REPLACE INTO meta(key,value) VALUES('last_seq',?)");
  meta.Bind(1, static_cast<int64_t>(last_seq_));
  if (meta.Step() != SQLITE_DONE) return SqlError(writer_, "record last_seq");
  Stmt del(writer_, write_cache_.get(), "DELETE FROM events WHERE seq<?");
  del.Bind(1, static_cast<int64_t>(delete_below));
  if (del.Step() != SQLITE_DONE) return SqlError(writer_, "retention delete");
  return static_cast<uint64_t>(sqlite3_changes(writer_));
}

uint64_t SqliteEventStore::StorageBytes() {
  uint64_t total = 0;
  for (const char* suffix : {"", "-wal", "-shm"}) {
    struct stat st;
    if (stat((path_ + suffix).c_str(), &st) == 0) total += st.st_size;
  }
  return total;
}

}  // namespace switchboard::broker
