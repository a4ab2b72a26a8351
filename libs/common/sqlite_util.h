#ifndef SWITCHBOARD_LIBS_COMMON_SQLITE_UTIL_H_
#define SWITCHBOARD_LIBS_COMMON_SQLITE_UTIL_H_

#include <sqlite3.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace switchboard::sqlite {

inline absl::Status Error(sqlite3* db, absl::string_view what) {
  return absl::InternalError(absl::StrCat("sqlite ", what, ": ", sqlite3_errmsg(db)));
}

inline absl::Status Exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    absl::Status s = absl::InternalError(absl::StrCat("sqlite: ", err ? err : "?", " in: ", sql));
    sqlite3_free(err);
    return s;
  }
  return absl::OkStatus();
}

// Adds `column` (declared as `decl`) to `table` unless it has it: files a
// version before the column existed wrote gain it, with its default.
inline absl::Status EnsureColumn(sqlite3* db, absl::string_view table, absl::string_view column,
                                 absl::string_view decl) {
  sqlite3_stmt* st = nullptr;
  std::string probe = absl::StrCat("SELECT ", column, " FROM ", table, " LIMIT 0");
  bool has = sqlite3_prepare_v2(db, probe.c_str(), -1, &st, nullptr) == SQLITE_OK;
  sqlite3_finalize(st);
  if (has) return absl::OkStatus();
  std::string alter = absl::StrCat("ALTER TABLE ", table, " ADD COLUMN ", column, " ", decl);
  return Exec(db, alter.c_str());
}

// Every database file is opened through SQLite's "unix-excl" VFS. The first
// connection of this process to lock a file takes one POSIX write lock over
// its shared-lock range and keeps it until the file's last connection closes,
// and the WAL index lives in this process's memory (no -shm file). So a
// transaction makes no fcntl lock calls (a commit made six, each a syscall),
// and a second process given the same data_dir is refused at start instead of
// sharing the file; the price is that another process (an operator's sqlite3
// shell) gets "database is locked" for every read and write of a running
// service's database (copies: sqlite_backup.h).
inline constexpr char kVfs[] = "unix-excl";
// How long opening waits for a database another process holds (a service
// shutting down while its successor starts) before refusing it.
inline constexpr int kClaimWaitMs = 3000;

// Opens `path` read-write through kVfs (`flags` adds to that, say
// SQLITE_OPEN_CREATE) and locks it now, so that a database another process
// holds is refused here, naming the file, rather than at the first write.
// `query_only`: a connection that only reads. It is opened read-write all the
// same, as unix-excl keeps the locks of read-write connections only in this
// process; a read-only one would pass its locks to the kernel.
inline absl::StatusOr<sqlite3*> OpenConnection(const std::string& path, int flags,
                                               bool query_only = false) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | flags, kVfs) != SQLITE_OK) {
    absl::Status s = absl::InvalidArgumentError(
        absl::StrCat("data_dir: cannot open '", path, "': ", sqlite3_errmsg(db)));
    sqlite3_close(db);
    return s;
  }
  sqlite3_busy_timeout(db, kClaimWaitMs);
  int rc = sqlite3_exec(db, "SELECT count(*) FROM sqlite_master", nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) {
    absl::Status s =
        (rc & 0xff) == SQLITE_BUSY
            ? absl::FailedPreconditionError(absl::StrCat(
                  "data_dir: '", path,
                  "' is in use by another process (one data_dir belongs to one process)"))
            : absl::InvalidArgumentError(
                  absl::StrCat("data_dir: cannot read '", path, "': ", sqlite3_errmsg(db)));
    sqlite3_close(db);
    return s;
  }
  // The WAL index is in memory now: a -shm file an earlier version left is
  // nobody's (no other process can open the database while this one holds it).
  std::remove((path + "-shm").c_str());
  if (query_only) {
    if (absl::Status s = Exec(db, "PRAGMA query_only=1"); !s.ok()) {
      sqlite3_close(db);
      return s;
    }
  }
  return db;
}

// Opens (creating) `dir`/`file` and runs `schema` on it. Errors about the
// directory or file name the data_dir flag.
inline absl::StatusOr<sqlite3*> OpenDatabase(const std::string& dir, const std::string& file,
                                             const char* schema) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("data_dir: cannot create '", dir, "': ", ec.message()));
  }
  std::string path = (std::filesystem::path(dir) / file).string();
  absl::StatusOr<sqlite3*> opened = OpenConnection(path, SQLITE_OPEN_CREATE);
  if (!opened.ok()) return opened.status();
  sqlite3* db = *opened;
  sqlite3_busy_timeout(db, 5000);
  if (absl::Status s = Exec(db, schema); !s.ok()) {
    sqlite3_close(db);
    return s;
  }
  return db;
}

// Prepared statements of one connection, kept for its lifetime: preparing
// costs more than running a one-row statement. Not thread-safe: guard it with
// the connection's lock.
class StmtCache {
 public:
  StmtCache() = default;
  StmtCache(const StmtCache&) = delete;
  StmtCache& operator=(const StmtCache&) = delete;
  ~StmtCache() { Clear(); }
  sqlite3_stmt* Get(sqlite3* db, const std::string& sql) {
    auto it = stmts_.find(sql);
    if (it != stmts_.end()) return it->second;
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v3(db, sql.c_str(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                           &stmt, nullptr) != SQLITE_OK) {
      return nullptr;
    }
    stmts_.emplace(sql, stmt);
    return stmt;
  }
  // Call before closing the connection.
  void Clear() {
    for (auto& [sql, stmt] : stmts_) sqlite3_finalize(stmt);
    stmts_.clear();
  }

 private:
  std::map<std::string, sqlite3_stmt*> stmts_;
};

// A cached statement in use; reset and unbound when it goes out of scope.
class Stmt {
 public:
  Stmt(sqlite3* db, StmtCache* cache, const std::string& sql) : stmt_(cache->Get(db, sql)) {}
  ~Stmt() {
    if (stmt_ != nullptr) {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
    }
  }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  bool ok() const { return stmt_ != nullptr; }
  sqlite3_stmt* get() { return stmt_; }
  void Bind(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
  void Bind(int i, absl::string_view v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  // Empty text is stored as NULL (keeps partial indexes small).
  void BindNullable(int i, absl::string_view v) {
    if (v.empty()) {
      sqlite3_bind_null(stmt_, i);
    } else {
      Bind(i, v);
    }
  }
  void BindBlob(int i, absl::string_view v) {
    sqlite3_bind_blob(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  int Step() { return stmt_ == nullptr ? SQLITE_MISUSE : sqlite3_step(stmt_); }
  int64_t Int(int col) { return sqlite3_column_int64(stmt_, col); }
  std::string Text(int col) {
    const unsigned char* t = sqlite3_column_text(stmt_, col);
    return t ? std::string(reinterpret_cast<const char*>(t), sqlite3_column_bytes(stmt_, col)) : "";
  }
  absl::string_view Blob(int col) {
    const void* b = sqlite3_column_blob(stmt_, col);
    return b ? absl::string_view(static_cast<const char*>(b), sqlite3_column_bytes(stmt_, col))
             : absl::string_view();
  }

 private:
  sqlite3_stmt* stmt_;
};

}  // namespace switchboard::sqlite

#endif  // SWITCHBOARD_LIBS_COMMON_SQLITE_UTIL_H_
