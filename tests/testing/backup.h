#ifndef SWITCHBOARD_TESTS_TESTING_BACKUP_H_
#define SWITCHBOARD_TESTS_TESTING_BACKUP_H_

#include <sqlite3.h>

#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/testing/process.h"

namespace switchboard::testing {

// GETs /admin/backup/`file` from the admin port at `http_addr` into
// `dir`/`file`, the way an operator would with curl. Returns the copy's path,
// or "" (with a test failure) when the answer was not a database.
inline std::string FetchBackup(const std::string& http_addr, const std::string& file,
                               const std::string& dir) {
  HttpResult r = HttpRequest(http_addr, "GET", "/admin/backup/" + file);
  EXPECT_EQ(r.status, 200) << r.head << "\n" << r.body.substr(0, 300);
  EXPECT_TRUE(absl::StrContains(r.head, "Content-Type: application/vnd.sqlite3")) << r.head;
  // The whole copy, as long as announced.
  EXPECT_TRUE(absl::StrContains(absl::StrCat(r.head, "\r\n"),
                                absl::StrCat("Content-Length: ", r.body.size(), "\r\n")))
      << r.head << "\nbody bytes: " << r.body.size();
  if (r.status != 200) return "";
  std::string path = dir + "/" + file;
  std::ofstream(path, std::ios::binary) << r.body;
  return path;
}

// One integer from `sql` on the database file at `path` (-1 on error, with a
// test failure): a copy is read with the stock VFS, as any sqlite3 would.
inline int64_t QueryInt(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  int64_t out = -1;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
      out = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
  }
  EXPECT_NE(out, -1) << sql << " on " << path << ": " << sqlite3_errmsg(db);
  sqlite3_close(db);
  return out;
}

// The copy passes SQLite's own integrity check.
inline std::string IntegrityCheck(const std::string& path) {
  sqlite3* db = nullptr;
  std::string out = "cannot open";
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
      out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    } else {
      out = sqlite3_errmsg(db);
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return out;
}

}  // namespace switchboard::testing

#endif  // SWITCHBOARD_TESTS_TESTING_BACKUP_H_
