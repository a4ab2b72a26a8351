#include "libs/security/secret_box.h"

#include <fstream>

#include "absl/strings/escaping.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace switchboard {
namespace {

const std::string kKey1(32, '\x01');
const std::string kKey2(32, '\x02');

TEST(SecretBoxTest, SealsOpensAndBindsTheContext) {
  auto box = SecretBox::FromKeys({kKey1});
  ASSERT_TRUE(box.ok());
  std::string sealed = *box->Seal("whsec_topsecret", "wh_1 secret");
  EXPECT_TRUE(SecretBox::IsSealed(sealed));
  EXPECT_THAT(sealed, ::testing::Not(::testing::HasSubstr("topsecret")));
  EXPECT_NE(sealed, *box->Seal("whsec_topsecret", "wh_1 secret")) << "a fresh nonce each time";
  auto opened = box->Open(sealed, "wh_1 secret");
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(*opened, "whsec_topsecret");
  // Moved to another record, or altered: it does not open.
  EXPECT_EQ(box->Open(sealed, "wh_2 secret").status().code(), absl::StatusCode::kDataLoss);
  // Every byte is covered: flip each one of nonce, ciphertext and tag.
  size_t colon = sealed.rfind(':');
  std::string raw;
  ASSERT_TRUE(absl::Base64Unescape(sealed.substr(colon + 1), &raw));
  for (size_t i = 0; i < raw.size(); ++i) {
    std::string flipped = raw;
    flipped[i] ^= 0x01;
    std::string altered = sealed.substr(0, colon + 1) + absl::Base64Escape(flipped);
    EXPECT_EQ(box->Open(altered, "wh_1 secret").status().code(), absl::StatusCode::kDataLoss) << i;
  }
  // A value written before sealing was on passes through.
  EXPECT_EQ(*box->Open("whsec_plain", "wh_1 secret"), "whsec_plain");
}

TEST(SecretBoxTest, ARotatedRingReadsOldKeysAndSealsWithTheNewOne) {
  auto old_box = SecretBox::FromKeys({kKey1});
  ASSERT_TRUE(old_box.ok());
  std::string sealed_old = *old_box->Seal("s", "c");
  auto rotated = SecretBox::FromKeys({kKey2, kKey1});
  ASSERT_TRUE(rotated.ok());
  EXPECT_EQ(*rotated->Open(sealed_old, "c"), "s");
  EXPECT_FALSE(rotated->SealedWithCurrentKey(sealed_old));
  std::string sealed_new = *rotated->Seal("s", "c");
  EXPECT_TRUE(rotated->SealedWithCurrentKey(sealed_new));
  auto only_new = SecretBox::FromKeys({kKey2});
  ASSERT_TRUE(only_new.ok());
  EXPECT_EQ(*only_new->Open(sealed_new, "c"), "s");
  auto missing = only_new->Open(sealed_old, "c");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(missing.status().message(), ::testing::HasSubstr("--secrets_key_file"));
}

TEST(SecretBoxTest, KeyFilesAreCheckedLineByLine) {
  std::string path = ::testing::TempDir() + "/keys";
  std::ofstream(path) << "# current first\n"
                      << absl::Base64Escape(kKey2) << "\n\n"
                      << absl::Base64Escape(kKey1) << "\n";
  auto box = SecretBox::FromKeyFile(path);
  ASSERT_TRUE(box.ok()) << box.status();
  EXPECT_TRUE(box->SealedWithCurrentKey(*box->Seal("x", "c")));
  EXPECT_EQ(*box->Open(*SecretBox::FromKeys({kKey1})->Seal("x", "c"), "c"), "x");
  std::ofstream(path) << absl::Base64Escape(kKey1) << "\nshort\n";
  auto bad = SecretBox::FromKeyFile(path);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), ::testing::HasSubstr("secrets_key_file: line 2"));
  std::ofstream(path) << "# nothing\n";
  EXPECT_THAT(SecretBox::FromKeyFile(path).status().message(),
              ::testing::HasSubstr("holds no key"));
  EXPECT_THAT(SecretBox::FromKeyFile(path + ".missing").status().message(),
              ::testing::HasSubstr("cannot read"));
}

}  // namespace
}  // namespace switchboard
