#include "services/job_worker/job_store.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"

namespace switchboard::jobs {
namespace {

absl::Status SqlError(sqlite3* db, absl::string_view what) {
  return absl::InternalError(absl::StrCat("sqlite ", what, ": ", sqlite3_errmsg(db)));
}

// A statement prepared for one use (the job store is not on a hot path that
// needs a cache: one write per finished job).
class Stmt {
 public:
  Stmt(sqlite3* db, const std::string& sql) {
    sqlite3_prepare_v2(db, sql.c_str(), static_cast<int>(sql.size()), &stmt_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  sqlite3_stmt* get() { return stmt_; }
  void Bind(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
  void Bind(int i, const std::string& v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  int Step() { return stmt_ ? sqlite3_step(stmt_) : SQLITE_MISUSE; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

constexpr char kSchema[] = R"sql(
PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
CREATE TABLE IF NOT EXISTS jobs(
  id TEXT PRIMARY KEY, queue TEXT NOT NULL, status INTEGER NOT NULL,
  correlation_id TEXT, updated_us INTEGER NOT NULL, record BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_by_updated ON jobs(updated_us);
CREATE INDEX IF NOT EXISTS jobs_by_correlation ON jobs(correlation_id) WHERE correlation_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
)sql";

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteJobStore>> SqliteJobStore::Open(const std::string& data_dir) {
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("data_dir: cannot create '", data_dir, "': ", ec.message()));
  }
  std::string path = (std::filesystem::path(data_dir) / "jobs.db").string();
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    absl::Status s = absl::InvalidArgumentError(
        absl::StrCat("data_dir: cannot open '", path, "': ", sqlite3_errmsg(db)));
    sqlite3_close(db);
    return s;
  }
  sqlite3_busy_timeout(db, 5000);
  char* err = nullptr;
  if (sqlite3_exec(db, kSchema, nullptr, nullptr, &err) != SQLITE_OK) {
    absl::Status s = absl::InternalError(absl::StrCat("sqlite schema: ", err ? err : "?"));
    sqlite3_free(err);
    sqlite3_close(db);
    return s;
  }
  return std::unique_ptr<SqliteJobStore>(new SqliteJobStore(db));
}

SqliteJobStore::~SqliteJobStore() {
  absl::MutexLock lock(&mu_);
  sqlite3_close_v2(db_);
}

absl::StatusOr<std::optional<v1::Job>> SqliteJobStore::Get(const std::string& id) {
  absl::MutexLock lock(&mu_);
  Stmt st(db_, "SELECT record FROM jobs WHERE id=?");
  st.Bind(1, id);
  int rc = st.Step();
  if (rc == SQLITE_DONE) return std::optional<v1::Job>();
  if (rc != SQLITE_ROW) return SqlError(db_, "get job");
  v1::Job job;
  job.ParseFromArray(sqlite3_column_blob(st.get(), 0), sqlite3_column_bytes(st.get(), 0));
  return std::optional<v1::Job>(std::move(job));
}

absl::Status SqliteJobStore::Put(const v1::Job& job) {
  std::string record = job.SerializeAsString();
  absl::MutexLock lock(&mu_);
  Stmt st(db_,
          "INSERT OR REPLACE INTO jobs(id,queue,status,correlation_id,updated_us,record) "
          "VALUES(?,?,?,?,?,?)");
  st.Bind(1, job.id());
  st.Bind(2, job.queue());
  st.Bind(3, static_cast<int64_t>(job.status()));
  if (job.correlation_id().empty()) {
    sqlite3_bind_null(st.get(), 4);
  } else {
    st.Bind(4, job.correlation_id());
  }
  st.Bind(5, absl::ToUnixMicros(absl::Now()));
  sqlite3_bind_blob(st.get(), 6, record.data(), static_cast<int>(record.size()), SQLITE_TRANSIENT);
  if (st.Step() != SQLITE_DONE) return SqlError(db_, "put job");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Job>> SqliteJobStore::List(const JobQuery& q) {
  std::string sql = "SELECT record FROM jobs WHERE 1";
  if (!q.queue.empty()) sql += " AND queue=?";
  if (q.status != v1::JOB_STATUS_UNSPECIFIED) sql += " AND status=?";
  if (!q.correlation_id.empty()) sql += " AND correlation_id=?";
  sql += " ORDER BY updated_us DESC LIMIT ?";
  absl::MutexLock lock(&mu_);
  Stmt st(db_, sql);
  int i = 1;
  if (!q.queue.empty()) st.Bind(i++, q.queue);
  if (q.status != v1::JOB_STATUS_UNSPECIFIED) st.Bind(i++, static_cast<int64_t>(q.status));
  if (!q.correlation_id.empty()) st.Bind(i++, q.correlation_id);
  st.Bind(i++, static_cast<int64_t>(q.limit));
  std::vector<v1::Job> out;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) {
    v1::Job job;
    job.ParseFromArray(sqlite3_column_blob(st.get(), 0), sqlite3_column_bytes(st.get(), 0));
    out.push_back(std::move(job));
  }
  if (rc != SQLITE_DONE) return SqlError(db_, "list jobs");
  return out;
}

absl::StatusOr<uint64_t> SqliteJobStore::NextCounter(const std::string& name) {
  absl::MutexLock lock(&mu_);
  Stmt st(db_,
          "INSERT INTO counters(name,value) VALUES(?,1) "
          "ON CONFLICT(name) DO UPDATE SET value=value+1 RETURNING value");
  st.Bind(1, name);
  if (st.Step() != SQLITE_ROW) return SqlError(db_, "next counter");
  return static_cast<uint64_t>(sqlite3_column_int64(st.get(), 0));
}

absl::StatusOr<std::map<std::pair<std::string, int>, uint64_t>>
SqliteJobStore::CountByQueueAndStatus() {
  absl::MutexLock lock(&mu_);
  Stmt st(db_, "SELECT queue, status, COUNT(*) FROM jobs GROUP BY queue, status");
  std::map<std::pair<std::string, int>, uint64_t> out;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) {
    std::string queue(reinterpret_cast<const char*>(sqlite3_column_text(st.get(), 0)));
    out[{queue, sqlite3_column_int(st.get(), 1)}] = sqlite3_column_int64(st.get(), 2);
  }
  if (rc != SQLITE_DONE) return SqlError(db_, "count jobs");
  return out;
}

}  // namespace switchboard::jobs
