#include "libs/common/event_rules.h"

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace switchboard {
namespace {

TEST(EventTypeTest, AcceptsCatalogAndDottedNames) {
  for (const char* t : {"order.created", "order.payment_failed", "job.enqueued", "a.b.c",
                        "cart.item_added", "x1.y_2"}) {
    EXPECT_TRUE(IsValidEventType(t)) << t;
  }
}

TEST(EventTypeTest, RejectsMalformed) {
  for (const char* t :
       {"", "order", "Order.created", "order.", ".order", "order..created", "order.Created",
        "1order.created", "order.created!", "order._x", "order-created.x", "order.*", "*"}) {
    EXPECT_FALSE(IsValidEventType(t)) << t;
  }
  EXPECT_FALSE(IsValidEventType("a." + std::string(300, 'b')));
}

TEST(ValidateEventTest, NamesTheField) {
  events::v1::Event ev;
  absl::Status s = ValidateEventForPublish(ev, 1 << 20, "events[2]");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "events[2].type: required");
  ev.set_type("Bad");
  s = ValidateEventForPublish(ev, 1 << 20, "event");
  EXPECT_TRUE(absl::StartsWith(s.message(), "event.type: 'Bad'")) << s;
}

TEST(ValidateEventTest, SizeLimitNamesTheLimit) {
  events::v1::Event ev;
  ev.set_type("order.created");
  (*ev.mutable_data()->mutable_fields())["blob"].set_string_value(std::string(2000, 'x'));
  absl::Status s = ValidateEventForPublish(ev, 1024, "event");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("over the limit of 1024 bytes"), std::string::npos) << s;
  EXPECT_TRUE(ValidateEventForPublish(ev, 4096, "event").ok());
}

TEST(TypeFilterTest, ExactPrefixAndAll) {
  absl::StatusOr<TypeFilter> f = TypeFilter::Parse({"order.*", "cart.abandoned"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(f->Matches("order.created"));
  EXPECT_TRUE(f->Matches("order.payment.retry"));
  EXPECT_TRUE(f->Matches("cart.abandoned"));
  EXPECT_FALSE(f->Matches("cart.item_added"));
  EXPECT_FALSE(f->Matches("orders.created"));
  EXPECT_FALSE(f->Matches("job.started"));

  absl::StatusOr<TypeFilter> all = TypeFilter::Parse({"*"});
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->Matches("anything.at_all"));
  absl::StatusOr<TypeFilter> none_given = TypeFilter::Parse({});
  ASSERT_TRUE(none_given.ok());
  EXPECT_TRUE(none_given->MatchesAll());

  absl::StatusOr<TypeFilter> nested = TypeFilter::Parse({"order.payment.*"});
  ASSERT_TRUE(nested.ok());
  EXPECT_TRUE(nested->Matches("order.payment.done"));
  EXPECT_FALSE(nested->Matches("order.payment_failed"));
}

TEST(TypeFilterTest, MalformedFilterNamesIndex) {
  for (const char* bad : {"order.", "Order.*", "order*", "*.created", "order.**", ""}) {
    absl::StatusOr<TypeFilter> f = TypeFilter::Parse({"order.created", bad});
    ASSERT_FALSE(f.ok()) << bad;
    EXPECT_TRUE(absl::StartsWith(f.status().message(), "types[1]: ")) << f.status();
  }
}

}  // namespace
}  // namespace switchboard
