#include "libs/common/sqlite_backup.h"

#include <sqlite3.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "libs/common/ids.h"
#include "libs/common/sqlite_util.h"

namespace switchboard::sqlite {
namespace {

constexpr char kRoute[] = "/admin/backup/";
constexpr size_t kChunk = 256 * 1024;

int Interrupt(void* cancelled) {
  return (*static_cast<const std::function<bool()>*>(cancelled))() ? 1 : 0;
}

}  // namespace

absl::Status SnapshotDatabase(const std::string& src_path, const std::string& dest_path,
                              const std::function<bool()>& cancelled) {
  // Not query_only: SQLite counts VACUUM INTO as a write, though it writes
  // only the new file.
  absl::StatusOr<sqlite3*> db = OpenConnection(src_path, 0);
  if (!db.ok()) return db.status();
  sqlite3_busy_timeout(*db, 5000);
  sqlite3_progress_handler(*db, 1000, &Interrupt, const_cast<std::function<bool()>*>(&cancelled));
  sqlite3_stmt* st = nullptr;
  absl::Status status;
  if (sqlite3_prepare_v2(*db, "VACUUM INTO ?", -1, &st, nullptr) != SQLITE_OK) {
    status = Error(*db, "backup");
  } else {
    sqlite3_bind_text(st, 1, dest_path.c_str(), -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_INTERRUPT) {
      status = absl::CancelledError("backup: cancelled");
    } else if (rc != SQLITE_DONE) {
      status = Error(*db, "backup");
    }
  }
  sqlite3_finalize(st);
  sqlite3_close(*db);
  return status;
}

void AddBackupRoute(AdminHttpServer* http, const std::string& data_dir,
                    std::vector<std::string> files) {
  std::filesystem::path tmp = std::filesystem::path(data_dir) / "backup-tmp";
  std::error_code ec;
  std::filesystem::remove_all(tmp, ec);
  http->StreamRoute(
      "GET", kRoute, Scope::kAdmin, /*max_streams=*/2, /*query_token=*/false,
      [data_dir, tmp, files = std::move(files)](const HttpRequest& req,
                                                HttpStream* stream) -> std::optional<HttpResponse> {
        std::string name = req.path.substr(strlen(kRoute));
        if (std::find(files.begin(), files.end(), name) == files.end()) {
          return ErrorResponse(absl::NotFoundError(absl::StrCat(
              "backup: no database '", name, "' here; one of: ", absl::StrJoin(files, ", "))));
        }
        std::error_code ec;
        std::filesystem::create_directories(tmp, ec);
        std::string copy = (tmp / (NewId("backup") + ".db")).string();
        absl::Status s = SnapshotDatabase((std::filesystem::path(data_dir) / name).string(), copy,
                                          [stream] { return stream->Cancelled(); });
        std::optional<HttpResponse> out;
        if (!s.ok()) {
          out = ErrorResponse(s);
        } else {
          std::ifstream in(copy, std::ios::binary);
          if (stream->Begin(
                  200, "application/vnd.sqlite3",
                  {{"Content-Disposition", absl::StrCat("attachment; filename=\"", name, "\"")}})) {
            std::string buf(kChunk, '\0');
            while (in.read(buf.data(), buf.size()) || in.gcount() > 0) {
              if (!stream->Write(absl::string_view(buf.data(), in.gcount()))) break;
            }
          }
        }
        std::filesystem::remove(copy, ec);
        return out;
      });
}

}  // namespace switchboard::sqlite
