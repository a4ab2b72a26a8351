#include "libs/common/admin_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "prometheus/counter.h"

namespace switchboard {
namespace {

// A bare HTTP/1.0 client: enough to check what a curl user would see.
std::string HttpCall(int port, const std::string& request) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  ::send(fd, request.data(), request.size(), 0);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) out.append(buf, n);
  close(fd);
  return out;
}

TEST(AdminHttpTest, ServesMetricsHealthAndRoutes) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto& family = prometheus::BuildCounter()
                     .Name("switchboard_test_things_total")
                     .Help("t")
                     .Register(*registry);
  family.Add({}).Increment(3);
  AdminHttpServer server(registry);
  bool ready = false;
  server.SetReadiness([&] { return ready; });
  server.Route("POST", "/api/echo", [](const HttpRequest& r) {
    return HttpResponse{200, "application/json",
                        absl::StrCat("{\"got\":\"", r.body, "\",\"q\":\"",
                                     r.query.count("a") ? r.query.at("a") : "", "\"}")};
  });
  server.Route("DELETE", "/api/items/", [](const HttpRequest& r) {
    return HttpResponse{200, "application/json", r.path.substr(strlen("/api/items/"))};
  });
  absl::StatusOr<int> port = server.Start("127.0.0.1:0");
  ASSERT_TRUE(port.ok()) << port.status();
  ASSERT_GT(*port, 0);

  std::string metrics = HttpCall(*port, "GET /metrics HTTP/1.0\r\n\r\n");
  EXPECT_NE(metrics.find("switchboard_test_things_total 3"), std::string::npos) << metrics;
  EXPECT_NE(HttpCall(*port, "GET /healthz HTTP/1.0\r\n\r\n").find("200 OK"), std::string::npos);
  EXPECT_NE(HttpCall(*port, "GET /readyz HTTP/1.0\r\n\r\n").find(" 503 "), std::string::npos);
  ready = true;
  EXPECT_NE(HttpCall(*port, "GET /readyz HTTP/1.0\r\n\r\n").find("200 OK"), std::string::npos);

  std::string echo =
      HttpCall(*port, "POST /api/echo?a=x%20y HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello");
  EXPECT_NE(echo.find("{\"got\":\"hello\",\"q\":\"x y\"}"), std::string::npos) << echo;
  std::string del = HttpCall(*port, "DELETE /api/items/wh_1 HTTP/1.0\r\n\r\n");
  EXPECT_NE(del.find("wh_1"), std::string::npos) << del;
  std::string missing = HttpCall(*port, "GET /nope HTTP/1.0\r\n\r\n");
  EXPECT_NE(missing.find(" 404 "), std::string::npos) << missing;
  std::string wrong_method = HttpCall(*port, "GET /api/echo HTTP/1.0\r\n\r\n");
  EXPECT_NE(wrong_method.find(" 400 "), std::string::npos) << wrong_method;
}

TEST(AdminHttpTest, ErrorResponseNamesCode) {
  HttpResponse r = ErrorResponse(absl::InvalidArgumentError("event.type: bad"));
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body, "{\"error\":{\"code\":\"INVALID_ARGUMENT\",\"message\":\"event.type: bad\"}}");
}

}  // namespace
}  // namespace switchboard

namespace switchboard {
namespace {

std::string Nested(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

TEST(JsonNestingTest, AllowsTheLimitAndRefusesDeeper) {
  EXPECT_TRUE(CheckJsonNesting("{\"a\":" + Nested(kMaxJsonNesting - 1) + "}").ok());
  absl::Status s = CheckJsonNesting("{\"a\":" + Nested(kMaxJsonNesting) + "}");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("deeper than 100 levels"), absl::string_view::npos) << s;
}

// The parser accepts single-quoted strings too: a lone quote of the other
// kind must not hide the nesting that follows it (review finding).
TEST(JsonNestingTest, QuotesOfEitherKindAndUnterminatedStrings) {
  absl::Status s = CheckJsonNesting("{\"a\":['\"'," + Nested(200) + "]}");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(CheckJsonNesting("{\"a\":'it\\'s " + Nested(200) + "'}").ok());
  s = CheckJsonNesting("{\"a\":\"" + Nested(200));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("not terminated"), absl::string_view::npos) << s;
  EXPECT_TRUE(CheckJsonNesting("{\"a\":\"ends in a backslash \\\\\"}").ok());
}

TEST(JsonNestingTest, BracketsInsideStringsDoNotCount) {
  std::string quoted = "{\"a\":\"" + Nested(500) + "\\\"[[[[\"}";
  EXPECT_TRUE(CheckJsonNesting(quoted).ok());
  // Depth comes back down: many shallow siblings are fine.
  std::string wide = "[";
  for (int i = 0; i < 10000; ++i) wide += Nested(50) + ",";
  wide += "1]";
  EXPECT_TRUE(CheckJsonNesting(wide).ok());
}

// The probe from the robustness issue: 100 000 levels (200 KB) pinned a
// civetweb thread for over a minute in protobuf's JSON parser. Now it is
// refused with 400 before any route runs.
TEST(AdminHttpTest, DeeplyNestedBodyIsRefusedBeforeTheHandler) {
  AdminHttpServer server(std::make_shared<prometheus::Registry>());
  std::atomic<int> handled{0};
  server.Route("POST", "/api/events/test", [&](const HttpRequest&) {
    ++handled;
    return HttpResponse{200, "application/json", "{}"};
  });
  absl::StatusOr<int> port = server.Start("127.0.0.1:0");
  ASSERT_TRUE(port.ok()) << port.status();
  std::string body = "{\"type\":\"order.created\",\"data\":{\"a\":" + Nested(100000) + "}}";
  std::string resp = HttpCall(
      *port, absl::StrCat("POST /api/events/test HTTP/1.0\r\nContent-Length: ", body.size(),
                          "\r\n\r\n", body));
  EXPECT_NE(resp.find(" 400 "), std::string::npos) << resp.substr(0, 300);
  EXPECT_NE(resp.find("nested deeper than 100 levels"), std::string::npos) << resp.substr(0, 300);
  EXPECT_EQ(handled.load(), 0);
  // A body at the limit still reaches the route.
  std::string ok_body = "{\"a\":" + Nested(kMaxJsonNesting - 1) + "}";
  resp = HttpCall(*port, absl::StrCat("POST /api/events/test HTTP/1.0\r\nContent-Length: ",
                                      ok_body.size(), "\r\n\r\n", ok_body));
  EXPECT_NE(resp.find(" 200 "), std::string::npos) << resp.substr(0, 300);
  EXPECT_EQ(handled.load(), 1);
}

}  // namespace
}  // namespace switchboard
