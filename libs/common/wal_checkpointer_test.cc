#include "libs/common/wal_checkpointer.h"

#include <sqlite3.h>

#include <filesystem>
#include <string>

#include "gtest/gtest.h"
#include "libs/common/sqlite_util.h"
#include "tests/testing/process.h"

namespace switchboard::sqlite {
namespace {

class WalCheckpointerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = (std::filesystem::path(::switchboard::testing::MakeTempDir()) / "t.db").string();
    // As the stores open their files (sqlite_util.h).
    ASSERT_EQ(sqlite3_open_v2(path_.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                              sqlite::kVfs),
              SQLITE_OK);
    Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; CREATE TABLE t(x BLOB)");
  }
  void TearDown() override { sqlite3_close(db_); }

  void Exec(const char* sql) {
    char* err = nullptr;
    ASSERT_EQ(sqlite3_exec(db_, sql, nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
  }
  // Commits `n` rows of 3 KiB, one commit each: a page (a WAL frame) or more
  // per commit.
  void Write(int n) {
    for (int i = 0; i < n; ++i) Exec("INSERT INTO t VALUES(randomblob(3000))");
  }
  // The database file proper: it grows only when a checkpoint copies the
  // WAL into it.
  uintmax_t DbFileBytes() { return std::filesystem::file_size(path_); }
  uintmax_t WalFileBytes() { return std::filesystem::file_size(path_ + "-wal"); }
  absl::StatusOr<std::unique_ptr<WalCheckpointer>> Start(
      int wake_frames, absl::Duration interval,
      int inline_frames = WalCheckpointer::Options().inline_frames) {
    WalCheckpointer::Options o;
    o.wake_frames = wake_frames;
    o.interval = interval;
    o.inline_frames = inline_frames;
    return WalCheckpointer::Start(db_, o);
  }
  // A second connection in a read transaction: the WAL cannot start over
  // while it is open.
  sqlite3* PinReader() {
    sqlite3* reader = nullptr;
    EXPECT_EQ(sqlite3_open_v2(path_.c_str(), &reader, SQLITE_OPEN_READWRITE, sqlite::kVfs),
              SQLITE_OK);
    EXPECT_EQ(sqlite3_exec(reader, "BEGIN; SELECT COUNT(*) FROM t;", nullptr, nullptr, nullptr),
              SQLITE_OK);
    return reader;
  }
  static void Unpin(sqlite3* reader) {
    sqlite3_exec(reader, "COMMIT", nullptr, nullptr, nullptr);
    sqlite3_close(reader);
  }

  std::string path_;
  sqlite3* db_ = nullptr;
};

TEST_F(WalCheckpointerTest, TheCommittingConnectionNoLongerCheckpoints) {
  auto c = Start(1 << 30, absl::Hours(1), /*inline_frames=*/1 << 30);
  ASSERT_TRUE(c.ok()) << c.status();
  uintmax_t before = DbFileBytes();
  // Past SQLite's automatic threshold (1000 frames) several times over.
  Write(3000);
  EXPECT_EQ(DbFileBytes(), before);
  ASSERT_TRUE((*c)->CheckpointNow().ok());
  EXPECT_GT(DbFileBytes(), before + 3000u * 3000u);
}

// The broker commits on an RPC's thread only when the commit cannot fsync:
// not the first after a checkpoint that copied the whole WAL (it starts the
// WAL over and syncs its header), nor one reaching the inline checkpoint.
TEST_F(WalCheckpointerTest, NextCommitMaySyncWhenTheWalStartsOverOrIsCheckpointedInline) {
  auto c = Start(1 << 30, absl::Hours(1), /*inline_frames=*/200);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE((*c)->NextCommitMaySync(1)) << "the first commit writes a new WAL";
  Write(1);
  EXPECT_FALSE((*c)->NextCommitMaySync(1));
  ASSERT_EQ(*(*c)->CheckpointNow(), 0) << "everything copied";
  EXPECT_TRUE((*c)->NextCommitMaySync(1));
  Write(1);
  EXPECT_FALSE((*c)->NextCommitMaySync(1));
  Write(100);
  EXPECT_FALSE((*c)->NextCommitMaySync(1));
  EXPECT_TRUE((*c)->NextCommitMaySync(150)) << "one that reaches the inline checkpoint";
}

TEST_F(WalCheckpointerTest, ACommitPastTheThresholdWakesItsThread) {
  auto c = Start(100, absl::Hours(1));  // so only the hook can wake it
  ASSERT_TRUE(c.ok()) << c.status();
  uintmax_t before = DbFileBytes();
  Write(200);
  EXPECT_TRUE(::switchboard::testing::WaitUntil(
      [&] { return DbFileBytes() > before + 100u * 3000u; }, absl::Seconds(10)));
}

// A reader on the WAL keeps it from restarting, so every commit sees the WAL
// past the threshold; only frames not yet copied count.
TEST_F(WalCheckpointerTest, AWalThatCannotRestartIsNotCheckpointedAtEveryCommit) {
  auto c = Start(100, absl::Hours(1));
  ASSERT_TRUE(c.ok()) << c.status();
  Write(120);
  ASSERT_TRUE(
      ::switchboard::testing::WaitUntil([&] { return (*c)->runs() >= 1; }, absl::Seconds(10)));
  ASSERT_TRUE((*c)->CheckpointNow().ok());
  // A frame not yet copied, then a reader whose snapshot ends on it: the WAL
  // cannot restart while the reader is on it.
  Write(1);
  sqlite3* reader = PinReader();
  ASSERT_TRUE((*c)->CheckpointNow().ok());
  uint64_t before = (*c)->runs();
  Write(25);  // about 75 frames (3 a commit): fewer than wake_frames since the last run
  absl::StatusOr<int> left = (*c)->CheckpointNow();
  ASSERT_TRUE(left.ok());
  ASSERT_GT(*left, 0) << "the reader should keep the new frames in the WAL";
  // This call, and a wake left from the first 120 commits at most.
  EXPECT_LE((*c)->runs(), before + 3);
  Unpin(reader);
}

// A writer that never pauses: each checkpoint of the thread would overlap its
// commits, and the WAL starts over only when a write begins with every frame
// copied. Here the thread never wakes at all: the committing connection
// checkpoints at inline_frames, and the WAL file stays near that size.
TEST_F(WalCheckpointerTest, ASteadyWriterCannotGrowTheWalPastInlineFrames) {
  auto c = Start(1 << 30, absl::Hours(1), /*inline_frames=*/300);
  ASSERT_TRUE(c.ok()) << c.status();
  Write(1500);  // about 3 frames a commit: 4 500 frames, 18 MB of WAL unchecked
  EXPECT_GE((*c)->inline_runs(), 3u);
  EXPECT_LT(WalFileBytes(), 600u * (4096 + 24)) << "the WAL started over each time";
  EXPECT_GT(DbFileBytes(), 1000u * 3000u) << "the rows went into the database file";
}

// A reader keeps the WAL from starting over: past inline_frames the writer
// checkpoints once per wake_frames (here inline_frames) more, not at every
// commit (each of those would find frames to copy and fsync).
TEST_F(WalCheckpointerTest, AReaderOnTheWalDoesNotMakeEveryCommitCheckpoint) {
  auto c = Start(1 << 30, absl::Hours(1), /*inline_frames=*/300);
  ASSERT_TRUE(c.ok()) << c.status();
  sqlite3* reader = PinReader();
  Write(300);  // about 900 frames: past 300 by 600, 200 commits
  EXPECT_GE((*c)->inline_runs(), 1u);
  EXPECT_LE((*c)->inline_runs(), 3u);
  Unpin(reader);
}

TEST_F(WalCheckpointerTest, ASlowWriterIsCheckpointedByTheInterval) {
  auto c = Start(1 << 30, absl::Milliseconds(20));
  ASSERT_TRUE(c.ok()) << c.status();
  uintmax_t before = DbFileBytes();
  Write(10);
  EXPECT_TRUE(::switchboard::testing::WaitUntil(
      [&] { return DbFileBytes() > before + 10u * 3000u; }, absl::Seconds(10)));
}

TEST_F(WalCheckpointerTest, TheWriterWorksOnAfterItStops) {
  {
    auto c = WalCheckpointer::Start(db_);
    ASSERT_TRUE(c.ok()) << c.status();
    Write(5);
  }
  Write(5);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db_, "SELECT COUNT(*) FROM t", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(st, 0), 10);
  sqlite3_finalize(st);
}

TEST(WalCheckpointerOpen, ADatabaseWithoutAFileIsAnError) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(":memory:", &db), SQLITE_OK);
  auto c = WalCheckpointer::Start(db);
  EXPECT_FALSE(c.ok());
  sqlite3_close(db);
}

}  // namespace
}  // namespace switchboard::sqlite
