#include "libs/common/wal_checkpointer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "libs/common/json_log.h"
#include "libs/common/sqlite_util.h"
#include "libs/common/thread_name.h"

namespace switchboard::sqlite {

absl::StatusOr<std::unique_ptr<WalCheckpointer>> WalCheckpointer::Start(sqlite3* writer,
                                                                        Options options) {
  const char* path = sqlite3_db_filename(writer, "main");
  if (path == nullptr || *path == '\0') {
    return absl::InvalidArgumentError("sqlite checkpointer: the database has no file");
  }
  // The WAL file is cut back to 64 MiB when it restarts, so one burst does
  // not leave it large.
  if (absl::Status s = Exec(writer, "PRAGMA journal_size_limit=67108864"); !s.ok()) return s;
  absl::StatusOr<sqlite3*> opened = OpenConnection(path, 0);
  if (!opened.ok()) return opened.status();
  sqlite3* conn = *opened;
  // synchronous=NORMAL: a checkpoint fsyncs the WAL and the database file
  // under NORMAL as under FULL; only OFF (never here) would skip that.
  if (sqlite3_busy_timeout(conn, 1000) != SQLITE_OK ||
      !Exec(conn, "PRAGMA synchronous=NORMAL").ok()) {
    absl::Status s = Error(conn, "open checkpointer");
    sqlite3_close(conn);
    return s;
  }
  std::unique_ptr<WalCheckpointer> c(new WalCheckpointer(writer, conn, options));
  // Replaces SQLite's automatic checkpoint (which is itself a WAL hook: a
  // later PRAGMA wal_autocheckpoint on `writer` would replace this one).
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
  if (thread_.joinable()) thread_.join();
  sqlite3_wal_hook(writer_, nullptr, nullptr);
  absl::MutexLock lock(&conn_mu_);
  sqlite3_close_v2(conn_);
}

// Runs on the committing thread, inside its COMMIT: a flag, and only past
// inline_frames a checkpoint.
int WalCheckpointer::OnCommit(void* self, sqlite3* db, const char* name, int frames) {
  auto* c = static_cast<WalCheckpointer*>(self);
  {
    absl::MutexLock lock(&c->mu_);
    c->wal_may_restart_ = false;
    // Counted from the last checkpoint, not from the WAL's start: a WAL that
    // has not restarted yet (a reader still on it) would otherwise wake a
    // checkpoint, and its fsyncs, at every commit.
    if (frames < c->wal_frames_) {  // the WAL restarted from its start
      c->checked_ = 0;
      c->inline_at_ = 0;
    }
    c->wal_frames_ = frames;
    if (frames - c->checked_ >= c->options_.wake_frames) c->wake_ = true;
    // Past inline_frames, once per wake_frames (or inline_frames) more: a
    // reader that keeps the WAL from restarting does not make every commit
    // checkpoint.
    int spacing = std::min(c->options_.wake_frames, c->options_.inline_frames);
    if (frames < c->options_.inline_frames || frames - c->inline_at_ < spacing) {
      return SQLITE_OK;
    }
    c->inline_at_ = frames;
  }
  // No commit can land during this one (this connection is the writer), so
  // it copies every frame no reader holds and the next write starts the WAL
  // over. SQLITE_BUSY (the thread is checkpointing): tried at the next commit.
  int log_frames = 0, copied = 0;
  int rc = sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, &log_frames, &copied);
  absl::MutexLock lock(&c->mu_);
  if (rc == SQLITE_OK) {
    ++c->inline_runs_;
    if (log_frames >= 0) c->checked_ = log_frames;
    if (log_frames >= 0 && copied == log_frames) c->wal_may_restart_ = true;
    c->wake_ = false;  // nothing left for the thread
  } else if (rc == SQLITE_BUSY) {
    c->inline_at_ = 0;  // the thread's checkpoint will end soon: the next commit tries again
  } else if (absl::Now() >= c->next_inline_log_) {
    // Tried again after wake_frames more; the WAL keeps growing meanwhile.
    c->next_inline_log_ = absl::Now() + absl::Minutes(1);
    LogWarn("inline WAL checkpoint failed; the WAL grows until one succeeds",
            {{"error", sqlite3_errstr(rc)}, {"wal_frames", static_cast<uint64_t>(frames)}});
  }
  return SQLITE_OK;
}

absl::StatusOr<int> WalCheckpointer::CheckpointNow() {
  int log_frames = 0, copied = 0;
  absl::Status error;
  {
    absl::MutexLock lock(&conn_mu_);
    int rc =
        sqlite3_wal_checkpoint_v2(conn_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log_frames, &copied);
    if (rc == SQLITE_BUSY) {
      // Another connection is checkpointing (the writer at inline_frames).
      error = absl::UnavailableError("checkpoint: another connection is checkpointing");
    } else if (rc != SQLITE_OK) {
      error = Error(conn_, "checkpoint");
    }
  }
  absl::MutexLock lock(&mu_);
  ++runs_;
  if (!error.ok()) {
    // Tried again after wake_frames more frames or at the interval, not at
    // every commit; the WAL keeps everything meanwhile.
    checked_ = wal_frames_;
    return error;
  }
  if (log_frames < 0) return 0;  // not in WAL mode: nothing to copy
  if (copied == log_frames) wal_may_restart_ = true;
  // Frames a reader kept it from copying are tried again after wake_frames
  // more. A WAL that restarted during the checkpoint (the hook saw fewer
  // frames since) counts from its start.
  checked_ = wal_frames_ >= log_frames ? log_frames : 0;
  return log_frames - copied;
}

void WalCheckpointer::Run() {
  SetThreadName("sb-checkpoint");
  absl::Time next_log = absl::InfinitePast();
  absl::Time last_ok = absl::Now();
  absl::MutexLock lock(&mu_);
  while (true) {
    auto due = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return wake_ || stop_; };
    mu_.AwaitWithTimeout(absl::Condition(&due), options_.interval);
    bool last = stop_;
    wake_ = false;
    mu_.Unlock();
    // A failed checkpoint leaves the WAL as it was: the next one copies it.
    absl::StatusOr<int> left = CheckpointNow();
    absl::Time now = absl::Now();
    if (left.ok()) last_ok = now;
    // Busy now and then is the writer's own checkpoint; busy for a minute is
    // someone else's lock.
    bool worth_a_line = !absl::IsUnavailable(left.status()) || now - last_ok > absl::Minutes(1);
    if (!left.ok() && worth_a_line && now >= next_log) {
      next_log = now + absl::Minutes(1);
      LogWarn("WAL checkpoint failed; the WAL grows until one succeeds",
              {{"error", left.status().ToString()}});
    }
    mu_.Lock();
    if (last) return;
  }
}

}  // namespace switchboard::sqlite
