// CurlMultiSender against a real local HTTP server (civetweb).
#include "services/webhook_delivery/http_sender.h"

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libs/common/admin_http.h"

namespace switchboard::webhooks {
namespace {

class HttpSenderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<AdminHttpServer>(std::make_shared<prometheus::Registry>());
    server_->Route("POST", "/ok", [this](const HttpRequest& r) {
      absl::MutexLock lock(&mu_);
      seen_body_ = r.body;
      seen_headers_ = r.headers;
      return HttpResponse{204, "text/plain", ""};
    });
    server_->Route("POST", "/fail", [](const HttpRequest&) {
      return HttpResponse{500, "text/plain", std::string(10000, 'e')};
    });
    server_->Route("POST", "/busy", [](const HttpRequest&) {
      HttpResponse r{429, "text/plain", "slow down"};
      r.headers.push_back({"Retry-After", "2"});
      return r;
    });
    server_->Route("POST", "/redirect", [](const HttpRequest&) {
      HttpResponse r{302, "text/plain", ""};
      r.headers.push_back({"Location", "/ok"});
      return r;
    });
    server_->Route("POST", "/hang", [this](const HttpRequest&) {
      release_.WaitForNotificationWithTimeout(absl::Seconds(30));
      return HttpResponse{200, "text/plain", "late"};
    });
    auto port = server_->Start("127.0.0.1:0");
    ASSERT_TRUE(port.ok());
    port_ = *port;
  }
  void TearDown() override {
    if (!release_.HasBeenNotified()) release_.Notify();
    server_.reset();
  }

  HttpResult Call(HttpCall call) {
    absl::Notification done;
    HttpResult out;
    sender_.Send(std::move(call), [&](HttpResult r) {
      out = std::move(r);
      done.Notify();
    });
    EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(20)));
    return out;
  }
  HttpCall To(const std::string& path, absl::Duration timeout = absl::Seconds(5)) {
    HttpCall c;
    c.url = absl::StrCat("http://127.0.0.1:", port_, path);
    c.body = R"({"id":"evt_1"})";
    c.headers = {{"Content-Type", "application/json"}, {"webhook-id", "evt_1"}};
    c.timeout = timeout;
    return c;
  }

  CurlMultiSender sender_;
  std::unique_ptr<AdminHttpServer> server_;
  int port_ = 0;
  absl::Notification release_;
  absl::Mutex mu_;
  std::string seen_body_;
  std::map<std::string, std::string> seen_headers_;
};

TEST_F(HttpSenderTest, PostsBodyAndHeaders) {
  HttpResult r = Call(To("/ok"));
  EXPECT_EQ(r.status, 204);
  EXPECT_TRUE(r.error.empty()) << r.error;
  absl::MutexLock lock(&mu_);
  EXPECT_EQ(seen_body_, R"({"id":"evt_1"})");
  EXPECT_EQ(seen_headers_["webhook-id"], "evt_1");
  EXPECT_EQ(seen_headers_["content-type"], "application/json");
}

TEST_F(HttpSenderTest, ErrorsRetryAfterAndNoRedirects) {
  HttpResult r = Call(To("/fail"));
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(r.body.size(), 4096u) << "response bodies are cut at 4 KiB";
  r = Call(To("/busy"));
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.retry_after, "2");
  r = Call(To("/redirect"));
  EXPECT_EQ(r.status, 302) << "redirects are not followed";
}

TEST_F(HttpSenderTest, TimeoutsAndRefusedConnectionsAreErrors) {
  HttpResult r = Call(To("/hang", absl::Milliseconds(300)));
  EXPECT_EQ(r.status, 0);
  EXPECT_TRUE(r.timed_out);
  EXPECT_FALSE(r.error.empty());
  HttpCall refused = To("/ok");
  refused.url = "http://127.0.0.1:1/ok";
  r = Call(refused);
  EXPECT_EQ(r.status, 0);
  EXPECT_FALSE(r.timed_out);
  EXPECT_FALSE(r.error.empty());
}

TEST_F(HttpSenderTest, PinnedAddressIsUsedInsteadOfDns) {
  HttpCall c = To("/ok");
  c.url = absl::StrCat("http://pinned.invalid:", port_, "/ok");
  c.resolve = absl::StrCat("pinned.invalid:", port_, ":127.0.0.1");
  EXPECT_EQ(Call(c).status, 204);
}

TEST_F(HttpSenderTest, AHangingEndpointDoesNotDelayOthers) {
  absl::Notification hung;
  sender_.Send(To("/hang", absl::Seconds(20)), [&](HttpResult) { hung.Notify(); });
  for (int i = 0; i < 20; ++i) {
    HttpResult r = Call(To("/ok"));
    ASSERT_EQ(r.status, 204);
    EXPECT_LT(r.latency, absl::Seconds(2));
  }
  EXPECT_FALSE(hung.HasBeenNotified());
  release_.Notify();
  EXPECT_TRUE(hung.WaitForNotificationWithTimeout(absl::Seconds(10)));
}

}  // namespace
}  // namespace switchboard::webhooks
