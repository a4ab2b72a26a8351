#include "services/webhook_delivery/webhook_store.h"

#include <filesystem>

#include "absl/strings/str_cat.h"

namespace switchboard::webhooks {
namespace {

using sqlite::Stmt;

constexpr char kSchema[] = R"sql(
PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
CREATE TABLE IF NOT EXISTS webhooks(
  id TEXT PRIMARY KEY, record BLOB NOT NULL, previous_secret TEXT NOT NULL,
  previous_expires_us INTEGER NOT NULL, version INTEGER NOT NULL DEFAULT 1);
)sql";

constexpr char kColumns[] = "record, previous_secret, previous_expires_us, version";

WebhookRecord FromRow(Stmt& st) {
  WebhookRecord r;
  absl::string_view blob = st.Blob(0);
  r.webhook.ParseFromArray(blob.data(), static_cast<int>(blob.size()));
  r.previous_secret = st.Text(1);
  r.previous_expires = absl::FromUnixMicros(st.Int(2));
  r.version = static_cast<uint64_t>(st.Int(3));
  return r;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteWebhookStore>> SqliteWebhookStore::Open(
    const std::string& data_dir) {
  absl::StatusOr<sqlite3*> db = sqlite::OpenDatabase(data_dir, "webhooks.db", kSchema);
  if (!db.ok()) return db.status();
  if (absl::Status s =
          sqlite::EnsureColumn(*db, "webhooks", "version", "INTEGER NOT NULL DEFAULT 1");
      !s.ok()) {
    sqlite3_close_v2(*db);
    return s;
  }
  return std::unique_ptr<SqliteWebhookStore>(new SqliteWebhookStore(*db));
}

SqliteWebhookStore::~SqliteWebhookStore() {
  absl::MutexLock lock(&mu_);
  stmts_.Clear();
  sqlite3_close_v2(db_);
}

absl::StatusOr<uint64_t> SqliteWebhookStore::Put(const WebhookRecord& r) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::optional<WebhookRecord>> current = GetLocked(r.webhook.id());
  if (!current.ok()) return current.status();
  uint64_t stored = current->has_value() ? (*current)->version : 0;
  if (stored != r.version) {
    return absl::AbortedError(absl::StrCat("webhook '", r.webhook.id(), "' changed meanwhile"));
  }
  Stmt st(db_, &stmts_,
          "INSERT OR REPLACE INTO webhooks(id,record,previous_secret,previous_expires_us,version) "
          "VALUES(?,?,?,?,?)");
  st.Bind(1, r.webhook.id());
  st.BindBlob(2, r.webhook.SerializeAsString());
  st.Bind(3, r.previous_secret);
  st.Bind(4, r.previous_expires == absl::InfinitePast() ? int64_t{0}
                                                        : absl::ToUnixMicros(r.previous_expires));
  st.Bind(5, static_cast<int64_t>(stored + 1));
  if (st.Step() != SQLITE_DONE) return sqlite::Error(db_, "put webhook");
  ++generation_;
  return stored + 1;
}

absl::StatusOr<std::optional<WebhookRecord>> SqliteWebhookStore::Get(const std::string& id) {
  absl::MutexLock lock(&mu_);
  return GetLocked(id);
}

absl::StatusOr<std::optional<WebhookRecord>> SqliteWebhookStore::GetLocked(const std::string& id) {
  Stmt st(db_, &stmts_, absl::StrCat("SELECT ", kColumns, " FROM webhooks WHERE id=?"));
  st.Bind(1, id);
  int rc = st.Step();
  if (rc == SQLITE_DONE) return std::optional<WebhookRecord>();
  if (rc != SQLITE_ROW) return sqlite::Error(db_, "get webhook");
  return std::optional<WebhookRecord>(FromRow(st));
}

absl::StatusOr<bool> SqliteWebhookStore::Delete(const std::string& id) {
  absl::MutexLock lock(&mu_);
  Stmt st(db_, &stmts_, "DELETE FROM webhooks WHERE id=?");
  st.Bind(1, id);
  if (st.Step() != SQLITE_DONE) return sqlite::Error(db_, "delete webhook");
  ++generation_;
  return sqlite3_changes(db_) > 0;
}

absl::StatusOr<std::vector<WebhookRecord>> SqliteWebhookStore::List() {
  absl::MutexLock lock(&mu_);
  Stmt st(db_, &stmts_, absl::StrCat("SELECT ", kColumns, " FROM webhooks ORDER BY id"));
  std::vector<WebhookRecord> out;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) out.push_back(FromRow(st));
  if (rc != SQLITE_DONE) return sqlite::Error(db_, "list webhooks");
  return out;
}

absl::StatusOr<uint64_t> SqliteWebhookStore::Generation() {
  absl::MutexLock lock(&mu_);
  return generation_;
}

}  // namespace switchboard::webhooks
