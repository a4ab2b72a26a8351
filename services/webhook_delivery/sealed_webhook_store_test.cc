// Secrets at rest: the sealed store over the real SQLite store.
#include "services/webhook_delivery/sealed_webhook_store.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace switchboard::webhooks {
namespace {

const std::string kKey1(32, '\x11');
const std::string kKey2(32, '\x22');
constexpr char kSecret[] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
constexpr char kPrevious[] = "whsec_cHJldmlvdXNzZWNyZXRwcmV2aW91c3NlY3I=";

class SealedStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("sealed-" + std::to_string(getpid()) + "-" + std::to_string(rand()));
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<SealedWebhookStore> Open(std::optional<std::vector<std::string>> keys) {
    auto sqlite = SqliteWebhookStore::Open(dir_);
    EXPECT_TRUE(sqlite.ok()) << sqlite.status();
    std::optional<SecretBox> box;
    if (keys.has_value()) box = *SecretBox::FromKeys(*keys);
    return std::make_unique<SealedWebhookStore>(*std::move(sqlite), std::move(box));
  }
  WebhookRecord Record(const std::string& id) {
    WebhookRecord r;
    r.webhook.set_id(id);
    r.webhook.set_url("https://hooks.example.com/x");
    r.webhook.set_secret(kSecret);
    r.previous_secret = kPrevious;
    r.previous_expires = absl::Now() + absl::Hours(1);
    return r;
  }
  // Every byte SQLite wrote, the WAL included. (Closing these descriptors
  // drops this process's lock on the files, sqlite_util.h; no other process
  // opens them in this test.)
  std::string Disk() {
    std::string all;
    for (const auto& f : std::filesystem::directory_iterator(dir_)) {
      std::ifstream in(f.path(), std::ios::binary);
      std::stringstream ss;
      ss << in.rdbuf();
      all += ss.str();
    }
    return all;
  }

  std::filesystem::path dir_;
};

TEST_F(SealedStoreTest, TheFilesHoldNoSecretAndReadsGiveThemBack) {
  auto store = Open(std::vector<std::string>{kKey1});
  ASSERT_TRUE(store->Put(Record("wh_1")).ok());
  auto got = store->Get("wh_1");
  ASSERT_TRUE(got.ok() && got->has_value()) << got.status();
  EXPECT_EQ((*got)->webhook.secret(), kSecret);
  EXPECT_EQ((*got)->previous_secret, kPrevious);
  auto raw = store->inner()->Get("wh_1");
  ASSERT_TRUE(raw.ok() && raw->has_value());
  EXPECT_TRUE(SecretBox::IsSealed((*raw)->webhook.secret()));
  EXPECT_TRUE(SecretBox::IsSealed((*raw)->previous_secret));
  auto listed = store->List();
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->front().webhook.secret(), kSecret);
  store.reset();
  std::string disk = Disk();
  EXPECT_THAT(disk, ::testing::HasSubstr("hooks.example.com")) << "the files were read";
  EXPECT_THAT(disk, ::testing::Not(::testing::HasSubstr("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")));
  EXPECT_THAT(disk, ::testing::Not(::testing::HasSubstr("cHJldmlvdXNzZWNyZXRwcmV2aW91c3NlY3I")));
}

TEST_F(SealedStoreTest, ARotatedKeyReadsOldRecordsAndResealsAtTheNextWrite) {
  auto store = Open(std::vector<std::string>{kKey1});
  ASSERT_TRUE(store->Put(Record("wh_1")).ok());
  store = Open(std::vector<std::string>{kKey2, kKey1});
  auto got = store->Get("wh_1");
  ASSERT_TRUE(got.ok() && got->has_value()) << got.status();
  EXPECT_EQ((*got)->webhook.secret(), kSecret);
  ASSERT_TRUE(store->Put(**got).ok());  // the next write
  store = Open(std::vector<std::string>{kKey2});
  got = store->Get("wh_1");
  ASSERT_TRUE(got.ok() && got->has_value()) << got.status();
  EXPECT_EQ((*got)->webhook.secret(), kSecret);
  // Without the key that sealed them, nothing opens, and the error says why.
  store = Open(std::vector<std::string>{kKey1});
  EXPECT_EQ(store->Get("wh_1").status().code(), absl::StatusCode::kFailedPrecondition);
  store = Open(std::nullopt);
  auto none = store->List();
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(none.status().message(), ::testing::HasSubstr("--secrets_key_file"));
}

TEST_F(SealedStoreTest, ResealAllMovesEveryRecordToTheCurrentKey) {
  auto store = Open(std::nullopt);
  ASSERT_TRUE(store->Put(Record("wh_plain")).ok());
  store = Open(std::vector<std::string>{kKey1});
  ASSERT_TRUE(store->Put(Record("wh_old")).ok());
  store = Open(std::vector<std::string>{kKey2, kKey1});
  auto resealed = store->ResealAll();
  ASSERT_TRUE(resealed.ok()) << resealed.status();
  EXPECT_EQ(*resealed, 2);
  EXPECT_EQ(*store->ResealAll(), 0) << "nothing left to do";
  store = Open(std::vector<std::string>{kKey2});  // the old key can go now
  auto all = store->List();
  ASSERT_TRUE(all.ok()) << all.status();
  for (const WebhookRecord& r : *all) {
    EXPECT_EQ(r.webhook.secret(), kSecret);
    EXPECT_EQ(r.previous_secret, kPrevious);
  }
  // A record whose key is gone stops the reseal, naming the key file.
  store = Open(std::vector<std::string>{kKey1});
  EXPECT_EQ(store->ResealAll().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SealedStoreTest, PlainRecordsFromBeforeTheKeyAreReadAndSealedAtTheNextWrite) {
  auto store = Open(std::nullopt);
  ASSERT_TRUE(store->Put(Record("wh_1")).ok());
  store = Open(std::vector<std::string>{kKey1});
  auto got = store->Get("wh_1");
  ASSERT_TRUE(got.ok() && got->has_value()) << got.status();
  EXPECT_EQ((*got)->webhook.secret(), kSecret);
  ASSERT_TRUE(store->Put(**got).ok());
  auto raw = store->inner()->Get("wh_1");
  EXPECT_TRUE(SecretBox::IsSealed((*raw)->webhook.secret()));
}

TEST_F(SealedStoreTest, ASealedSecretCopiedToAnotherRecordDoesNotOpen) {
  auto store = Open(std::vector<std::string>{kKey1});
  ASSERT_TRUE(store->Put(Record("wh_1")).ok());
  WebhookRecord other = Record("wh_2");
  ASSERT_TRUE(store->inner()->Put(other).ok());
  auto victim = store->inner()->Get("wh_1");
  auto copy = store->inner()->Get("wh_2");
  (*copy)->webhook.set_secret((*victim)->webhook.secret());
  ASSERT_TRUE(store->inner()->Put(**copy).ok());
  EXPECT_EQ(store->Get("wh_2").status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace switchboard::webhooks
