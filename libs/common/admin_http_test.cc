#include "libs/common/admin_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

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
