#ifndef SWITCHBOARD_LIBS_COMMON_WAL_CHECKPOINTER_H_
#define SWITCHBOARD_LIBS_COMMON_WAL_CHECKPOINTER_H_

#include <sqlite3.h>

#include <algorithm>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace switchboard::sqlite {

// Checkpoints one WAL database on a connection and a thread of its own.
//
// SQLite's automatic checkpoint runs inside the COMMIT that crosses its
// threshold: it copies the WAL into the database file and fsyncs it, some
// milliseconds on whichever thread committed, holding that store's lock. Every
// caller waiting on that store waits too; that was the tail of the webhook and
// job latencies. Here the committing connection only notes the WAL's size (a
// hook) and this thread does the copying, in passive mode (it never blocks a
// writer or a reader).
class WalCheckpointer {
 public:
  struct Options {
    // Frames in the WAL after a commit that wake the thread (SQLite's own
    // automatic threshold is 1000).
    int wake_frames = 1000;
    // Also checkpoints this often while the database is written slowly.
    absl::Duration interval = absl::Seconds(1);
    // A WAL this long is checkpointed by the committing connection itself,
    // inside its COMMIT, as SQLite's automatic checkpoint would. The WAL
    // starts over from its beginning only when a write begins with every
    // frame copied; under a steady writer each checkpoint of the thread
    // overlaps commits, so without this the WAL (and its file) could grow
    // for as long as the writer never paused.
    int inline_frames = 10000;
  };

  // Opens `writer`'s database a second time and starts the thread. From then
  // on `writer` (the connection that commits) checkpoints no more: its WAL
  // hook wakes this thread instead. Call it before `writer` is used by other
  // threads.
  static absl::StatusOr<std::unique_ptr<WalCheckpointer>> Start(sqlite3* writer, Options options);
  static absl::StatusOr<std::unique_ptr<WalCheckpointer>> Start(sqlite3* writer) {
    return Start(writer, Options());
  }
  // Stops the thread after a last checkpoint and takes the hook off `writer`
  // (which then checkpoints only when it closes). `writer` must still be open
  // and no longer in use elsewhere.
  ~WalCheckpointer();
  WalCheckpointer(const WalCheckpointer&) = delete;
  WalCheckpointer& operator=(const WalCheckpointer&) = delete;

  // One passive checkpoint now, on the caller's thread. Returns the frames
  // the WAL still holds that are not in the database yet (0: all copied), or
  // kUnavailable while another connection checkpoints. The thread logs
  // failures (at most once a minute; being busy only after a minute of it).
  absl::StatusOr<int> CheckpointNow();

  // Checkpoints run so far, by the thread or CheckpointNow (for tests).
  uint64_t runs() {
    absl::MutexLock lock(&mu_);
    return runs_;
  }
  // Whether a commit adding up to `frames` more frames to the WAL may fsync
  // inside its COMMIT even with synchronous=NORMAL: when it starts the WAL
  // over (SQLite syncs the new WAL header, and cuts the file to
  // journal_size_limit), which the first commit after a checkpoint that
  // copied the whole WAL does; or when it runs the inline checkpoint.
  // (A checkpoint completing between this call and the commit's BEGIN is not
  // seen; no other process can checkpoint a file opened through kVfs.)
  bool NextCommitMaySync(int frames) {
    absl::MutexLock lock(&mu_);
    if (wal_may_restart_) return true;
    int after = wal_frames_ + frames;
    return after >= options_.inline_frames &&
           after - inline_at_ >= std::min(options_.wake_frames, options_.inline_frames);
  }
  // Checkpoints the committing connection ran at inline_frames.
  uint64_t inline_runs() {
    absl::MutexLock lock(&mu_);
    return inline_runs_;
  }

 private:
  WalCheckpointer(sqlite3* writer, sqlite3* conn, Options options);
  static int OnCommit(void* self, sqlite3* db, const char* name, int frames);
  void Run();

  sqlite3* const writer_;
  const Options options_;
  absl::Mutex conn_mu_;
  sqlite3* conn_ ABSL_GUARDED_BY(conn_mu_);
  absl::Mutex mu_;
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  // The WAL's frames at the last commit, and at the last checkpoint.
  int wal_frames_ ABSL_GUARDED_BY(mu_) = 0;
  int checked_ ABSL_GUARDED_BY(mu_) = 0;
  int inline_at_ ABSL_GUARDED_BY(mu_) = 0;  // the WAL's frames at the writer's last checkpoint
  // A checkpoint copied every frame and no commit came since: the next one
  // starts the WAL over (true at open: the first commit may write a new WAL).
  bool wal_may_restart_ ABSL_GUARDED_BY(mu_) = true;
  absl::Time next_inline_log_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  uint64_t runs_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t inline_runs_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace switchboard::sqlite

#endif  // SWITCHBOARD_LIBS_COMMON_WAL_CHECKPOINTER_H_
