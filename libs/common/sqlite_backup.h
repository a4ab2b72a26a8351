#ifndef SWITCHBOARD_LIBS_COMMON_SQLITE_BACKUP_H_
#define SWITCHBOARD_LIBS_COMMON_SQLITE_BACKUP_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "libs/common/admin_http.h"

namespace switchboard::sqlite {

// Writes a consistent copy of the database at `src_path` to the new file
// `dest_path`: the database as of one moment (VACUUM INTO, one read
// transaction on a connection of its own), while writers go on. A running
// service holds its files for itself (kVfs in sqlite_util.h), so this, not an
// outside sqlite3 shell, is how one is copied. `cancelled` is polled as it
// runs: true stops it with CANCELLED.
absl::Status SnapshotDatabase(const std::string& src_path, const std::string& dest_path,
                              const std::function<bool()>& cancelled);

// GET /admin/backup/<file> on `http`, for callers with the admin scope: a
// consistent copy of <file>, one of `files` (database files in `data_dir`),
// as application/vnd.sqlite3 with its Content-Length. The copy is made in
// `data_dir`/backup-tmp (emptied here, in case a process stopped mid-backup)
// and removed once sent. One at a time (503 for another meanwhile), and only
// with room on the disk for the copy and 64 MiB more (429 otherwise, naming
// the sizes), so a backup never fills the disk under the live store. Making
// the copy stops when the server stops; a client that goes away midway does
// not stop it. Before `http` starts.
void AddBackupRoute(AdminHttpServer* http, const std::string& data_dir,
                    std::vector<std::string> files);

}  // namespace switchboard::sqlite

#endif  // SWITCHBOARD_LIBS_COMMON_SQLITE_BACKUP_H_
