#include "libs/common/wal_checkpointer.h"

#include "absl/strings/str_cat.h"
#include "libs/common/thread_name.h"

namespace switchboard::sqlite {

absl::StatusOr<std::unique_ptr<WalCheckpointer>> WalCheckpointer::Start(const std::string& path,
                                                                        sqlite3* writer,
                                                                        Options options) {
  sqlite3* conn = nullptr;
  if (sqlite3_open_v2(path.c_str(), &conn, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    absl::Status s =
        absl::InternalError(absl::StrCat("sqlite open checkpointer: ", sqlite3_errmsg(conn)));
    sqlite3_close(conn);
    return s;
  }
  sqlite3_busy_timeout(conn, 1000);
  const char* sync = options.full_sync ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL";
  if (sqlite3_exec(conn, sync, nullptr, nullptr, nullptr) != SQLITE_OK) {
    absl::Status s =
        absl::InternalError(absl::StrCat("sqlite checkpointer: ", sqlite3_errmsg(conn)));
    sqlite3_close(conn);
    return s;
  }
  // The WAL file is cut back to 64 MiB when it restarts, so one burst does
  // not leave it large.
  sqlite3_exec(writer, "PRAGMA journal_size_limit=67108864", nullptr, nullptr, nullptr);
  std::unique_ptr<WalCheckpointer> c(new WalCheckpointer(writer, conn, options));
  // Replaces SQLite's automatic checkpoint (which is itself a WAL hook).
  sqlite3_wal_hook(writer, &WalCheckpointer::OnCommit, c.get());
  c->thread_ = std::thread([p = c.get()] { p->Run(); });
  return c;
}

WalCheckpointer::WalCheckpointer(sqlite3* writer, sqlite3* conn, Options options)
    : writer_(writer), options_(options), conn_(conn) {}

WalCheckpointer::~WalCheckpointer() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
  sqlite3_wal_hook(writer_, nullptr, nullptr);
  absl::MutexLock lock(&conn_mu_);
  sqlite3_close_v2(conn_);
}

// Runs on the committing thread, inside its COMMIT: only a flag.
int WalCheckpointer::OnCommit(void* self, sqlite3*, const char*, int frames) {
  auto* c = static_cast<WalCheckpointer*>(self);
  absl::MutexLock lock(&c->mu_);
  // Counted from the last checkpoint, not from the WAL's start: a WAL that
  // has not restarted yet (a reader still on it) would otherwise wake a
  // checkpoint, and its fsyncs, at every commit.
  if (frames < c->wal_frames_) c->checked_ = 0;  // the WAL restarted from its start
  c->wal_frames_ = frames;
  if (frames - c->checked_ >= c->options_.wake_frames) c->wake_ = true;
  return SQLITE_OK;
}

absl::StatusOr<int> WalCheckpointer::CheckpointNow() {
  int log_frames = 0, copied = 0;
  {
    absl::MutexLock lock(&conn_mu_);
    int rc =
        sqlite3_wal_checkpoint_v2(conn_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log_frames, &copied);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
      return absl::InternalError(absl::StrCat("sqlite checkpoint: ", sqlite3_errmsg(conn_)));
    }
  }
  absl::MutexLock lock(&mu_);
  ++runs_;
  if (log_frames < 0) return 0;  // not in WAL mode: nothing to copy
  // Frames a reader kept it from copying are tried again after wake_frames
  // more, or at the interval.
  checked_ = log_frames;
  wal_frames_ = log_frames;
  return log_frames - copied;
}

void WalCheckpointer::Run() {
  SetThreadName("sb-checkpoint");
  absl::MutexLock lock(&mu_);
  while (true) {
    auto due = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return wake_ || stop_; };
    mu_.AwaitWithTimeout(absl::Condition(&due), options_.interval);
    bool last = stop_;
    wake_ = false;
    mu_.Unlock();
    // A failed checkpoint leaves the WAL as it was: the next one copies it.
    (void)CheckpointNow();
    mu_.Lock();
    if (last) return;
  }
}

}  // namespace switchboard::sqlite
