#include "libs/common/sqlite_backup.h"

#include <sqlite3.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "libs/common/ids.h"
#include "libs/common/json_log.h"
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
  // The copy is written with this connection's synchronous setting: no
  // fsync of a file that lives until it is sent (and would compete with the
  // store's own syncs, and delay a shutdown).
  absl::Status status = Exec(*db, "PRAGMA synchronous=OFF");
  // Polled every 100 VM steps: a shutdown waits for little copying.
  sqlite3_progress_handler(*db, 100, &Interrupt, const_cast<std::function<bool()>*>(&cancelled));
  sqlite3_stmt* st = nullptr;
  if (status.ok() && sqlite3_prepare_v2(*db, "VACUUM INTO ?", -1, &st, nullptr) != SQLITE_OK) {
    status = Error(*db, "backup");
  }
  if (status.ok()) {
    sqlite3_bind_text(st, 1, dest_path.c_str(), -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_INTERRUPT) {
      status = absl::CancelledError("backup: the service is stopping");
    } else if (rc != SQLITE_DONE) {
      status = Error(*db, "backup");
    }
  }
  sqlite3_finalize(st);
  sqlite3_close(*db);
  return status;
}

namespace {

// OK when the filesystem of `dir` has room for a copy of `file` (its WAL
// included, as VACUUM INTO reads through it) with 64 MiB to spare for the
// live store; RESOURCE_EXHAUSTED otherwise: a full disk would fail the
// service's own commits.
absl::Status CheckRoom(const std::filesystem::path& dir, const std::filesystem::path& file) {
  std::error_code ec;
  uintmax_t need = std::filesystem::file_size(file, ec);
  if (ec) need = 0;
  uintmax_t wal = std::filesystem::file_size(file.string() + "-wal", ec);
  if (!ec) need += wal;
  need += 64ull << 20;
  std::filesystem::space_info space = std::filesystem::space(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("backup: ", dir.string(), ": ", ec.message()));
  if (space.available < need) {
    return absl::ResourceExhaustedError(
        absl::StrCat("backup: ", space.available >> 20, " MiB free in ", dir.string(),
                     ", a copy of ", file.filename().string(), " needs ", need >> 20, " MiB"));
  }
  return absl::OkStatus();
}

// Sends the copy at `path` with its length: a read that fails midway leaves
// the client a body shorter than announced (an error), not a complete one.
std::optional<HttpResponse> SendCopy(const std::string& path, const std::string& name,
                                     HttpStream* stream) {
  std::error_code ec;
  uintmax_t size = std::filesystem::file_size(path, ec);
  std::ifstream in(path, std::ios::binary);
  if (ec || !in.is_open()) {
    return ErrorResponse(absl::InternalError(
        absl::StrCat("backup: cannot read the copy of ", name, ": ", ec.message())));
  }
  if (!stream->Begin(200, "application/vnd.sqlite3",
                     {{"Content-Disposition", absl::StrCat("attachment; filename=\"", name, "\"")}},
                     static_cast<int64_t>(size))) {
    return std::nullopt;
  }
  std::string buf(kChunk, '\0');
  uintmax_t sent = 0;
  while (sent < size && in.read(buf.data(), buf.size()).gcount() > 0) {
    if (!stream->Write(absl::string_view(buf.data(), in.gcount()))) break;
    sent += in.gcount();
  }
  if (sent < size) LogWarn("backup cut short", {{"file", name}, {"sent", sent}, {"size", size}});
  return std::nullopt;
}

}  // namespace

void AddBackupRoute(AdminHttpServer* http, const std::string& data_dir,
                    std::vector<std::string> files) {
  std::filesystem::path tmp = std::filesystem::path(data_dir) / "backup-tmp";
  std::error_code ec;
  std::filesystem::remove_all(tmp, ec);
  http->StreamRoute(
      "GET", kRoute, Scope::kAdmin, /*max_streams=*/1, /*query_token=*/false,
      [data_dir, tmp, files = std::move(files)](const HttpRequest& req,
                                                HttpStream* stream) -> std::optional<HttpResponse> {
        std::string name = req.path.substr(strlen(kRoute));
        if (std::find(files.begin(), files.end(), name) == files.end()) {
          return ErrorResponse(absl::NotFoundError(absl::StrCat(
              "backup: no database '", name, "' here; one of: ", absl::StrJoin(files, ", "))));
        }
        std::filesystem::path source = std::filesystem::path(data_dir) / name;
        std::error_code ec;
        std::filesystem::create_directories(tmp, ec);
        if (absl::Status room = CheckRoom(tmp, source); !room.ok()) return ErrorResponse(room);
        std::string copy = (tmp / (NewId("backup") + ".db")).string();
        absl::Status s =
            SnapshotDatabase(source.string(), copy, [stream] { return stream->Cancelled(); });
        std::optional<HttpResponse> out = s.ok() ? SendCopy(copy, name, stream) : ErrorResponse(s);
        std::filesystem::remove(copy, ec);
        return out;
      });
}

}  // namespace switchboard::sqlite
