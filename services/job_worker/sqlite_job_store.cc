#include "services/job_worker/sqlite_job_store.h"

#include <filesystem>

#include "absl/strings/str_cat.h"

namespace switchboard::jobs {

namespace internal {
struct PendingPut {
  struct Row {
    std::string id, queue, correlation_id, record;
    int status = 0;
  };
  std::vector<Row> rows;
  bool done = false;
  absl::Status result;
};
}  // namespace internal

namespace {

using internal::PendingPut;
using sqlite::Stmt;

constexpr char kSchema[] = R"sql(
PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
CREATE TABLE IF NOT EXISTS jobs(
  id TEXT PRIMARY KEY, queue TEXT NOT NULL, status INTEGER NOT NULL,
  correlation_id TEXT, updated_us INTEGER NOT NULL, record BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_by_updated ON jobs(updated_us);
CREATE INDEX IF NOT EXISTS jobs_by_correlation ON jobs(correlation_id) WHERE correlation_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS retried(queue TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS paused(queue TEXT PRIMARY KEY);
)sql";

}  // namespace

SqliteJobStore::SqliteJobStore(sqlite3* db, sqlite3* reader, absl::Duration retention)
    : retention_(retention),
      db_(db),
      stmts_(std::make_unique<sqlite::StmtCache>()),
      reader_(reader),
      read_stmts_(std::make_unique<sqlite::StmtCache>()) {}

absl::StatusOr<std::unique_ptr<SqliteJobStore>> SqliteJobStore::Open(const std::string& data_dir,
                                                                     absl::Duration retention) {
  absl::StatusOr<sqlite3*> db = sqlite::OpenDatabase(data_dir, "jobs.db", kSchema);
  if (!db.ok()) return db.status();
  std::string path = (std::filesystem::path(data_dir) / "jobs.db").string();
  absl::StatusOr<sqlite3*> opened = sqlite::OpenConnection(path, 0, /*query_only=*/true);
  if (!opened.ok()) {
    sqlite3_close(*db);
    return opened.status();
  }
  sqlite3* reader = *opened;
  sqlite3_busy_timeout(reader, 5000);
  // PutMany's commits never checkpoint: the fsync of the database file was
  // most of a round's record time.
  auto checkpointer = sqlite::WalCheckpointer::Start(*db);
  if (!checkpointer.ok()) {
    sqlite3_close(reader);
    sqlite3_close(*db);
    return checkpointer.status();
  }
  std::unique_ptr<SqliteJobStore> store(new SqliteJobStore(*db, reader, retention));
  absl::MutexLock lock(&store->mu_);
  store->checkpointer_ = *std::move(checkpointer);
  return store;
}

SqliteJobStore::~SqliteJobStore() {
  {
    absl::MutexLock lock(&read_mu_);
    read_stmts_->Clear();
    sqlite3_close_v2(reader_);
  }
  absl::MutexLock lock(&mu_);
  checkpointer_.reset();  // before the connection it hooks into closes
  stmts_->Clear();
  sqlite3_close_v2(db_);
}

void SqliteJobStore::EndStaleReadLocked() {
  // A read transaction whose COMMIT and ROLLBACK both failed would pin an
  // old snapshot (and the WAL) for every later read: end it first.
  if (!sqlite3_get_autocommit(reader_)) sqlite::Exec(reader_, "ROLLBACK").IgnoreError();
}

absl::StatusOr<std::optional<v1::Job>> SqliteJobStore::ReadLocked(const std::string& id) {
  Stmt st(reader_, read_stmts_.get(), "SELECT record FROM jobs WHERE id=?");
  st.Bind(1, id);
  int rc = st.Step();
  if (rc == SQLITE_DONE) return std::optional<v1::Job>();
  if (rc != SQLITE_ROW) return sqlite::Error(reader_, "get job");
  v1::Job job;
  absl::string_view b = st.Blob(0);
  if (!job.ParseFromArray(b.data(), static_cast<int>(b.size()))) {
    return absl::DataLossError(absl::StrCat("get job ", id, ": unreadable record"));
  }
  return std::optional<v1::Job>(std::move(job));
}

absl::StatusOr<std::optional<v1::Job>> SqliteJobStore::Get(const std::string& id) {
  absl::MutexLock lock(&read_mu_);
  EndStaleReadLocked();
  return ReadLocked(id);
}

absl::StatusOr<std::vector<std::optional<v1::Job>>> SqliteJobStore::GetMany(
    const std::vector<std::string>& ids) {
  absl::MutexLock lock(&read_mu_);
  EndStaleReadLocked();
  // One read transaction: one WAL snapshot and lock for all the lookups.
  if (Stmt begin(reader_, read_stmts_.get(), "BEGIN"); begin.Step() != SQLITE_DONE) {
    return sqlite::Error(reader_, "get jobs: begin");
  }
  std::vector<std::optional<v1::Job>> out;
  out.reserve(ids.size());
  absl::Status failed;
  for (const std::string& id : ids) {
    absl::StatusOr<std::optional<v1::Job>> job = ReadLocked(id);
    if (!job.ok()) {
      failed = job.status();
      break;
    }
    out.push_back(*std::move(job));
  }
  // A read transaction commits nothing; ending it releases the snapshot.
  if (Stmt end(reader_, read_stmts_.get(), "COMMIT"); end.Step() != SQLITE_DONE) {
    sqlite::Exec(reader_, "ROLLBACK").IgnoreError();
  }
  if (!failed.ok()) return failed;
  return out;
}

absl::Status SqliteJobStore::CommitPuts(const std::vector<std::shared_ptr<PendingPut>>& batch) {
  absl::MutexLock lock(&mu_);
  if (!sqlite3_get_autocommit(db_)) {
    // An earlier transaction whose ROLLBACK failed is still open: end it, or
    // every later commit fails on BEGIN.
    sqlite::Exec(db_, "ROLLBACK").IgnoreError();
  }
  if (Stmt begin(db_, stmts_.get(), "BEGIN"); begin.Step() != SQLITE_DONE) {
    return sqlite::Error(db_, "begin");
  }
  // A failed step (even COMMIT, on SQLITE_BUSY) may leave the transaction
  // open: roll it back.
  auto fail = [this](const char* what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    absl::Status s = sqlite::Error(db_, what);
    if (!sqlite3_get_autocommit(db_)) sqlite::Exec(db_, "ROLLBACK").IgnoreError();
    return s;
  };
  size_t rows = 0;
  int64_t now = absl::ToUnixMicros(absl::Now());
  for (const auto& put : batch) {
    rows += put->rows.size();
    for (const PendingPut::Row& row : put->rows) {
      Stmt st(db_, stmts_.get(),
              "INSERT OR REPLACE INTO jobs(id,queue,status,correlation_id,updated_us,record) "
              "VALUES(?,?,?,?,?,?)");
      st.Bind(1, row.id);
      st.Bind(2, row.queue);
      st.Bind(3, static_cast<int64_t>(row.status));
      st.BindNullable(4, row.correlation_id);
      st.Bind(5, now);
      st.BindBlob(6, row.record);
      if (st.Step() != SQLITE_DONE) return fail("put job");
      if (row.status == v1::JOB_STATUS_RETRY_SCHEDULED) {
        Stmt r(db_, stmts_.get(),
               "INSERT INTO retried(queue,value) VALUES(?,1) "
               "ON CONFLICT(queue) DO UPDATE SET value=value+1");
        r.Bind(1, row.queue);
        if (r.Step() != SQLITE_DONE) return fail("count retry");
      }
    }
  }
  // Retention, a little per commit (never a long transaction), and always
  // more than the commit wrote, so it catches up.
  {
    Stmt old(db_, stmts_.get(),
             "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE updated_us < ? "
             "ORDER BY updated_us LIMIT ?)");
    old.Bind(1, now - absl::ToInt64Microseconds(retention_));
    old.Bind(2, static_cast<int64_t>(200 + 2 * rows));
    if (old.Step() != SQLITE_DONE) return fail("drop old jobs");
  }
  int rc;
  {
    Stmt commit(db_, stmts_.get(), "COMMIT");
    rc = commit.Step();
  }  // reset before a ROLLBACK
  return rc == SQLITE_DONE ? absl::OkStatus() : fail("commit");
}

absl::Status SqliteJobStore::PutMany(const std::vector<v1::Job>& jobs) {
  if (jobs.empty()) return absl::OkStatus();
  auto p = std::make_shared<PendingPut>();
  p->rows.reserve(jobs.size());
  for (const v1::Job& job : jobs) {
    p->rows.push_back(
        {job.id(), job.queue(), job.correlation_id(), job.SerializeAsString(), job.status()});
  }
  absl::MutexLock lock(&queue_mu_);
  queue_.push_back(p);
  while (!p->done) {
    if (!committing_) {
      committing_ = true;
      std::vector<std::shared_ptr<PendingPut>> batch;
      batch.swap(queue_);
      queue_mu_.Unlock();
      absl::Status s = CommitPuts(batch);
      queue_mu_.Lock();
      for (auto& b : batch) {
        b->result = s;
        b->done = true;
      }
      committing_ = false;
      continue;
    }
    auto wake = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) { return p->done || !committing_; };
    queue_mu_.Await(absl::Condition(&wake));
  }
  return p->result;
}

absl::StatusOr<std::vector<v1::Job>> SqliteJobStore::List(const JobQuery& q) {
  std::string sql = "SELECT record FROM jobs WHERE 1";
  if (!q.queue.empty()) sql += " AND queue=?";
  if (q.status != v1::JOB_STATUS_UNSPECIFIED) sql += " AND status=?";
  if (!q.correlation_id.empty()) sql += " AND correlation_id=?";
  sql += " ORDER BY updated_us DESC LIMIT ?";
  absl::MutexLock lock(&read_mu_);
  EndStaleReadLocked();
  Stmt st(reader_, read_stmts_.get(), sql);
  int i = 1;
  if (!q.queue.empty()) st.Bind(i++, q.queue);
  if (q.status != v1::JOB_STATUS_UNSPECIFIED) st.Bind(i++, static_cast<int64_t>(q.status));
  if (!q.correlation_id.empty()) st.Bind(i++, q.correlation_id);
  st.Bind(i++, static_cast<int64_t>(q.limit));
  std::vector<v1::Job> out;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) {
    v1::Job job;
    absl::string_view b = st.Blob(0);
    job.ParseFromArray(b.data(), static_cast<int>(b.size()));
    out.push_back(std::move(job));
  }
  if (rc != SQLITE_DONE) return sqlite::Error(reader_, "list jobs");
  return out;
}

absl::StatusOr<uint64_t> SqliteJobStore::NextCounter(const std::string& name) {
  absl::MutexLock lock(&mu_);
  Stmt st(db_, stmts_.get(),
          "INSERT INTO counters(name,value) VALUES(?,1) "
          "ON CONFLICT(name) DO UPDATE SET value=value+1 RETURNING value");
  st.Bind(1, name);
  if (st.Step() != SQLITE_ROW) return sqlite::Error(db_, "next counter");
  uint64_t v = static_cast<uint64_t>(st.Int(0));
  // Finish the statement so its implicit transaction commits now.
  while (st.Step() == SQLITE_ROW) {
  }
  return v;
}

absl::StatusOr<std::map<std::pair<std::string, int>, uint64_t>>
SqliteJobStore::CountByQueueAndStatus() {
  absl::MutexLock lock(&read_mu_);
  EndStaleReadLocked();
  Stmt st(reader_, read_stmts_.get(),
          "SELECT queue, status, COUNT(*) FROM jobs GROUP BY queue, status");
  std::map<std::pair<std::string, int>, uint64_t> out;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) {
    out[{st.Text(0), static_cast<int>(st.Int(1))}] = static_cast<uint64_t>(st.Int(2));
  }
  if (rc != SQLITE_DONE) return sqlite::Error(reader_, "count jobs");
  return out;
}

absl::StatusOr<std::map<std::string, uint64_t>> SqliteJobStore::RetriedByQueue() {
  absl::MutexLock lock(&read_mu_);
  EndStaleReadLocked();
  Stmt st(reader_, read_stmts_.get(), "SELECT queue, value FROM retried");
  std::map<std::string, uint64_t> out;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) out[st.Text(0)] = static_cast<uint64_t>(st.Int(1));
  if (rc != SQLITE_DONE) return sqlite::Error(reader_, "count retries");
  return out;
}

absl::Status SqliteJobStore::SetPaused(const std::string& queue, bool paused) {
  absl::MutexLock lock(&mu_);
  Stmt st(db_, stmts_.get(),
          paused ? "INSERT OR IGNORE INTO paused(queue) VALUES(?)"
                 : "DELETE FROM paused WHERE queue=?");
  st.Bind(1, queue);
  if (st.Step() != SQLITE_DONE) return sqlite::Error(db_, "pause queue");
  return absl::OkStatus();
}

absl::StatusOr<std::set<std::string>> SqliteJobStore::PausedQueues() {
  absl::MutexLock lock(&read_mu_);
  EndStaleReadLocked();
  Stmt st(reader_, read_stmts_.get(), "SELECT queue FROM paused");
  std::set<std::string> out;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) out.insert(std::string(st.Text(0)));
  if (rc != SQLITE_DONE) return sqlite::Error(reader_, "paused queues");
  return out;
}

}  // namespace switchboard::jobs
