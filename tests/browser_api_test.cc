// What browsers reach on the broker's admin port, against the real binary:
// the Server-Sent Events stream (filters, Last-Event-ID resumption with
// nothing lost, heartbeats, tokens, a stalled reader cut off with the
// broker's memory bounded, prompt shutdown) and the console's JSON-to-gRPC
// proxy (its method list, errors naming the field, the caller's token
// carried to the service).
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "libs/common/auth.h"
#include "switchboard/broker/v1/broker.grpc.pb.h"
#include "tests/testing/process.h"

namespace switchboard {
namespace {

using ::testing::HasSubstr;
using testing::HttpRequest;
using testing::MetricValue;
using testing::ServiceProcess;
using testing::WaitUntil;

// An SSE client on a raw socket: HTTP/1.1, chunked body decoded, frames
// parsed. Reads only when asked, so a test can also stop reading.
class SseClient {
 public:
  struct Frame {
    std::string event;
    uint64_t id = 0;
    std::string data;
  };

  SseClient(const std::string& host_port, const std::string& target,
            const std::string& extra_headers = "", int rcvbuf = 0, bool http10 = false) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    if (rcvbuf > 0) setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(std::stoi(host_port.substr(host_port.rfind(':') + 1)));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) return;
    std::string req =
        absl::StrCat("GET ", target, http10 ? " HTTP/1.0" : " HTTP/1.1", "\r\nHost: ", host_port,
                     "\r\nAccept: text/event-stream\r\n", extra_headers, "\r\n");
    send(fd_, req.data(), req.size(), MSG_NOSIGNAL);
  }
  ~SseClient() { Close(); }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

  // Reads what has arrived (waiting up to `wait`); false once the server
  // closed the connection.
  bool Pump(absl::Duration wait = absl::Milliseconds(50)) {
    timeval tv{0, static_cast<suseconds_t>(absl::ToInt64Microseconds(wait))};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char buf[65536];
    ssize_t n = recv(fd_, buf, sizeof(buf), 0);
    if (n == 0) return false;
    if (n > 0) raw_.append(buf, n);
    Decode();
    return true;
  }
  // Reads until `done` holds or the deadline passes.
  bool ReadUntil(const std::function<bool()>& done, absl::Duration timeout = absl::Seconds(10)) {
    return WaitUntil([&] { return !Pump() || done(); }, timeout, absl::ZeroDuration()) && done();
  }
  int status() const { return status_; }
  // A plain (not streamed) answer has arrived whole.
  bool answered() const { return status_ != 0 && !chunked_ && body_.size() >= content_length_; }
  const std::string& head() const { return head_; }
  const std::string& body() const { return body_; }
  const std::vector<Frame>& frames() const { return frames_; }
  std::vector<uint64_t> ids() const {
    std::vector<uint64_t> out;
    for (const Frame& f : frames_) out.push_back(f.id);
    return out;
  }

 private:
  void Decode() {
    if (status_ == 0) {
      size_t end = raw_.find("\r\n\r\n");
      if (end == std::string::npos) return;
      head_ = raw_.substr(0, end);
      raw_.erase(0, end + 4);
      std::vector<std::string> parts = absl::StrSplit(head_, ' ');
      if (parts.size() > 1) (void)absl::SimpleAtoi(parts[1], &status_);
      chunked_ = head_.find("Transfer-Encoding: chunked") != std::string::npos;
      if (size_t cl = head_.find("Content-Length: "); cl != std::string::npos) {
        content_length_ = std::stoul(head_.substr(cl + 16));
      }
    }
    if (!chunked_) {
      body_ += raw_;
      raw_.clear();
    }
    while (chunked_) {
      size_t line = raw_.find("\r\n");
      if (line == std::string::npos) break;
      size_t size = std::stoul(raw_.substr(0, line), nullptr, 16);
      if (raw_.size() < line + 2 + size + 2) break;
      body_ += raw_.substr(line + 2, size);
      raw_.erase(0, line + 2 + size + 2);
    }
    for (size_t end; (end = body_.find("\n\n", parsed_)) != std::string::npos;) {
      Frame f;
      for (absl::string_view l : absl::StrSplit(body_.substr(parsed_, end - parsed_), '\n')) {
        if (absl::ConsumePrefix(&l, "event: ")) f.event = std::string(l);
        if (absl::ConsumePrefix(&l, "id: ")) (void)absl::SimpleAtoi(l, &f.id);
        if (absl::ConsumePrefix(&l, "data: ")) f.data = std::string(l);
      }
      if (!f.data.empty()) frames_.push_back(f);
      if (body_.compare(parsed_, 12, ": heartbeat\n") == 0) ++heartbeats_;
      parsed_ = end + 2;
    }
  }

 public:
  int heartbeats_ = 0;

 private:
  int fd_ = -1;
  std::string raw_, head_, body_;
  size_t parsed_ = 0;
  int status_ = 0;
  bool chunked_ = false;
  size_t content_length_ = 0;
  std::vector<Frame> frames_;
};

class BrowserApiIT : public ::testing::Test {
 protected:
  void StartBroker(std::vector<std::string> extra = {}) {
    dir_ = testing::MakeTempDir();
    std::vector<std::string> args = {"--data_dir=" + dir_ + "/broker"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto b = ServiceProcess::Start(BROKER_BIN, args);
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = *std::move(b);
  }
  // Publishes through the JSON API; returns the sequence.
  uint64_t Publish(const std::string& type, const std::string& cid = "",
                   const std::string& subject = "", const std::string& user = "",
                   const std::string& headers = "", size_t pad = 0) {
    std::string body = absl::StrCat(R"({"type":")", type, R"(","source":"test","correlationId":")",
                                    cid, R"(","subject":")", subject, R"(","userId":")", user,
                                    R"(","data":{"pad":")", std::string(pad, 'x'), R"("}})");
    auto r = HttpRequest(broker_->http_addr(), "POST", "/api/events/test", body, headers);
    EXPECT_EQ(r.status, 200) << r.body;
    std::string marker = "\"sequence\":\"";
    size_t at = r.body.find(marker);
    return at == std::string::npos ? 0 : std::stoull(r.body.substr(at + marker.size()));
  }
  std::string dir_;
  std::unique_ptr<ServiceProcess> broker_;
};

TEST_F(BrowserApiIT, LastEventIdResumesWithNothingLostOrRepeated) {
  // A tiny tail cache: the resumed stream reads from the store, then hands
  // over to live events while more are being published.
  StartBroker({"--cache_events=4"});
  std::vector<uint64_t> published;
  for (int i = 0; i < 20; ++i) published.push_back(Publish("order.created"));
  Publish("user.created");  // filtered out by types
  SseClient first(broker_->http_addr(), "/api/events/stream?types=order.*&last_event_id=0");
  ASSERT_TRUE(first.ReadUntil([&] { return first.frames().size() >= 20; })) << first.body();
  EXPECT_EQ(first.status(), 200);
  EXPECT_THAT(first.head(), HasSubstr("Content-Type: text/event-stream"));
  EXPECT_EQ(first.ids(), published);
  EXPECT_EQ(first.frames()[0].event, "order.created");
  EXPECT_THAT(first.frames()[0].data, HasSubstr("\"sequence\":\"" + std::to_string(published[0])));
  uint64_t last_seen = first.frames().back().id;
  first.Close();

  // Published while the browser is away: a reconnection gets all of them.
  std::vector<uint64_t> missed;
  for (int i = 0; i < 15; ++i) missed.push_back(Publish(i % 2 ? "order.shipped" : "user.created"));
  SseClient again(broker_->http_addr(), "/api/events/stream?types=order.*",
                  absl::StrCat("Last-Event-ID: ", last_seen, "\r\n"));
  std::vector<uint64_t> want;
  for (size_t i = 0; i < missed.size(); ++i) {
    if (i % 2) want.push_back(missed[i]);
  }
  std::vector<uint64_t> during;
  std::thread publisher([&] {
    for (int i = 0; i < 40; ++i) during.push_back(Publish("order.completed"));
  });
  ASSERT_TRUE(again.ReadUntil([&] { return again.frames().size() >= 2; }));
  publisher.join();
  want.insert(want.end(), during.begin(), during.end());
  ASSERT_TRUE(again.ReadUntil([&] { return again.frames().size() >= want.size(); }));
  EXPECT_EQ(again.ids(), want);
}

TEST_F(BrowserApiIT, FiltersByCorrelationSubjectAndUser) {
  StartBroker();
  uint64_t a = Publish("order.created", "corr-a", "ord_1", "u1");
  Publish("order.created", "corr-b", "ord_2", "u2");
  uint64_t c = Publish("order.shipped", "corr-a", "ord_1", "u1");
  uint64_t d = Publish("user.updated", "corr-c", "usr_9", "u1");
  Publish("order.created", "corr-e", "ord_3", "u3");
  struct Case {
    std::string query;
    std::vector<uint64_t> want;
  };
  for (const Case& k : std::vector<Case>{{"correlation_id=corr-a", {a, c}},
                                         {"subject=ord_1&types=order.shipped", {c}},
                                         {"user_id=u1", {a, c, d}},
                                         {"user_id=u1&types=user.*", {d}}}) {
    SseClient s(broker_->http_addr(), "/api/events/stream?last_event_id=0&" + k.query);
    ASSERT_TRUE(s.ReadUntil([&] {
      return !s.frames().empty() && s.frames().back().id >= k.want.back();
    })) << k.query;
    // All five are stored already, so anything the filter let through
    // wrongly would be on its way now.
    s.ReadUntil([] { return false; }, absl::Milliseconds(300));
    std::vector<uint64_t> got = s.ids();
    EXPECT_EQ(got, k.want) << k.query;
  }
}

TEST_F(BrowserApiIT, BadRequestsNameTheParameter) {
  StartBroker();
  struct Case {
    std::string target, headers, needle;
  };
  for (const Case& k : std::vector<Case>{
           {"/api/events/stream?bogus=1", "", "bogus: unknown query parameter"},
           {"/api/events/stream?last_event_id=x", "", "last_event_id: 'x' is not a sequence"},
           {"/api/events/stream", "Last-Event-ID: 12ab\r\n", "Last-Event-ID: '12ab'"},
           {"/api/events/stream?types=Not%20A%20Type", "", "types"}}) {
    SseClient s(broker_->http_addr(), k.target, k.headers);
    ASSERT_TRUE(s.ReadUntil([&] { return s.answered(); }));
    EXPECT_EQ(s.status(), 400) << k.target;
    EXPECT_THAT(s.body(), HasSubstr(k.needle)) << k.target;
  }
}

TEST_F(BrowserApiIT, HeartbeatsKeepAnIdleStreamOpen) {
  StartBroker({"--sse_heartbeat=200ms"});
  SseClient s(broker_->http_addr(), "/api/events/stream");
  ASSERT_TRUE(s.ReadUntil([&] { return s.heartbeats_ >= 3; }, absl::Seconds(5))) << s.body();
  EXPECT_EQ(s.status(), 200);
  // A stream whose filter drops every event is busy inside the broker but
  // silent on the wire: it needs its heartbeats just the same.
  SseClient filtered(broker_->http_addr(), "/api/events/stream?correlation_id=nobody");
  ASSERT_TRUE(filtered.ReadUntil([&] { return filtered.status() == 200; }));
  absl::Time until = absl::Now() + absl::Seconds(2);
  while (absl::Now() < until) {
    Publish("order.created", "someone");
    filtered.Pump(absl::ZeroDuration());
  }
  EXPECT_GE(filtered.heartbeats_, 3) << filtered.body();
  EXPECT_TRUE(filtered.frames().empty());
}

TEST_F(BrowserApiIT, StreamsBeyondTheLimitAreRefusedAndHttp10GetsARawStream) {
  StartBroker({"--sse_max_streams=1", "--sse_heartbeat=200ms"});
  SseClient first(broker_->http_addr(), "/api/events/stream");
  ASSERT_TRUE(first.ReadUntil([&] { return first.status() == 200; }));
  SseClient second(broker_->http_addr(), "/api/events/stream");
  ASSERT_TRUE(second.ReadUntil([&] { return second.answered(); }));
  EXPECT_EQ(second.status(), 503);
  EXPECT_THAT(second.body(), HasSubstr("1 streams are open already"));
  first.Close();
  ASSERT_TRUE(WaitUntil(
      [&] { return MetricValue(broker_->http_addr(), "switchboard_broker_sse_streams") == 0; },
      absl::Seconds(10)));  // noticed at the next heartbeat
  // An HTTP/1.0 client cannot read chunks: it gets the bytes as they are,
  // up to the connection's close.
  SseClient old(broker_->http_addr(), "/api/events/stream", "", 0, /*http10=*/true);
  ASSERT_TRUE(old.ReadUntil([&] { return old.status() == 200; }));
  EXPECT_THAT(old.head(), HasSubstr("HTTP/1.0 200"));
  EXPECT_THAT(old.head(), ::testing::Not(HasSubstr("chunked")));
  uint64_t seq = Publish("order.created");
  ASSERT_TRUE(old.ReadUntil([&] { return !old.frames().empty(); }));
  EXPECT_EQ(old.frames()[0].id, seq);
}

TEST_F(BrowserApiIT, OnlyAllowedOriginsGetCorsHeaders) {
  StartBroker({"--sse_allow_origins=https://shop.example.com"});
  SseClient shop(broker_->http_addr(), "/api/events/stream",
                 "Origin: https://shop.example.com\r\n");
  ASSERT_TRUE(shop.ReadUntil([&] { return shop.status() == 200; }));
  EXPECT_THAT(shop.head(), HasSubstr("Access-Control-Allow-Origin: https://shop.example.com"));
  SseClient other(broker_->http_addr(), "/api/events/stream", "Origin: https://evil.example\r\n");
  ASSERT_TRUE(other.ReadUntil([&] { return other.status() == 200; }));
  EXPECT_THAT(other.head(), ::testing::Not(HasSubstr("Access-Control-Allow-Origin")));
  // Errors carry the header too, so the shop's page can read them.
  SseClient bad(broker_->http_addr(), "/api/events/stream?bogus=1",
                "Origin: https://shop.example.com\r\n");
  ASSERT_TRUE(bad.ReadUntil([&] { return bad.answered(); }));
  EXPECT_EQ(bad.status(), 400);
  EXPECT_THAT(bad.head(), HasSubstr("Access-Control-Allow-Origin: https://shop.example.com"));
}

// A browser tab that stops reading: its stream is cut within the write
// timeout, and the broker holds no more than a bounded buffer for it
// meanwhile, however much is published.
TEST_F(BrowserApiIT, StalledReaderIsCutWithMemoryBounded) {
  StartBroker({"--cache_events=64"});
  SseClient stalled(broker_->http_addr(), "/api/events/stream", "", /*rcvbuf=*/4096);
  ASSERT_TRUE(WaitUntil(
      [&] { return MetricValue(broker_->http_addr(), "switchboard_broker_sse_streams") == 1; },
      absl::Seconds(5)));
  // Published over gRPC, so that the admin port's threads serve nothing
  // but the stream.
  auto stub = broker::v1::EventBroker::NewStub(
      grpc::CreateChannel(broker_->grpc_addr(), grpc::InsecureChannelCredentials()));
  uint64_t rss_before = broker_->RssBytes();
  constexpr int kBatches = 240, kPerBatch = 40;  // x 32 KiB = 300 MiB published
  for (int b = 0; b < kBatches; ++b) {
    broker::v1::PublishBatchRequest req;
    for (int i = 0; i < kPerBatch; ++i) {
      events::v1::Event* ev = req.add_events();
      ev->set_type("order.created");
      ev->set_source("test");
      (*ev->mutable_data()->mutable_fields())["pad"].set_string_value(std::string(32 << 10, 'x'));
    }
    broker::v1::PublishBatchResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->PublishBatch(&ctx, req, &resp).ok());
  }
  uint64_t rss_after = broker_->RssBytes();
  // Without a stream the same publishing grows RSS by 85-110 MiB (page
  // cache, gRPC and allocator slack, which level off); a stream that kept
  // what it could not send would hold all 300 MiB on top.
#ifdef SWITCHBOARD_SANITIZER_BUILD
  const uint64_t kGrowth = 1024ull << 20;  // shadow memory and ASan's quarantine
#else
  const uint64_t kGrowth = 160ull << 20;
#endif
  EXPECT_LT(rss_after, rss_before + kGrowth)
      << "RSS grew from " << rss_before << " to " << rss_after;
  ASSERT_TRUE(WaitUntil(
      [&] {
        return MetricValue(broker_->http_addr(),
                           "switchboard_broker_sse_disconnects_total{reason=\"client_gone\"}") == 1;
      },
      absl::Seconds(30)))
      << "the stalled stream was not cut";
  EXPECT_EQ(MetricValue(broker_->http_addr(), "switchboard_broker_sse_streams"), 0);
  // The broker still serves new streams.
  SseClient fresh(broker_->http_addr(), "/api/events/stream?types=order.*");
  ASSERT_TRUE(fresh.ReadUntil([&] { return fresh.status() == 200; }));
}

TEST_F(BrowserApiIT, ShutdownIsPromptWithStreamsOpen) {
  StartBroker();
  SseClient stalled(broker_->http_addr(), "/api/events/stream", "", 4096);
  SseClient idle(broker_->http_addr(), "/api/events/stream?types=nothing.here");
  ASSERT_TRUE(WaitUntil(
      [&] { return MetricValue(broker_->http_addr(), "switchboard_broker_sse_streams") == 2; },
      absl::Seconds(5)));
  for (int i = 0; i < 200; ++i) Publish("order.created", "", "", "", "", 16 << 10);
  absl::Time start = absl::Now();
  EXPECT_EQ(broker_->Terminate(absl::Seconds(20)), 0);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  // The idle stream was ended (the last chunk, then the connection closed).
  EXPECT_TRUE(WaitUntil([&] { return !idle.Pump(); }, absl::Seconds(5)));
}

TEST_F(BrowserApiIT, StreamHonoursTokensAndScopes) {
  dir_ = testing::MakeTempDir();
  std::string tokens = dir_ + "/tokens.jsonl";
  std::ofstream(tokens) << R"({"principal":"shop-page","token_sha256":")" << Sha256Hex("tok-page")
                        << R"(","scopes":["subscribe:order.*"]})"
                        << "\n"
                        << R"({"principal":"checkout","token_sha256":")" << Sha256Hex("tok-pub")
                        << R"(","scopes":["publish:*"]})"
                        << "\n";
  auto b = ServiceProcess::Start(
      BROKER_BIN, {"--data_dir=" + dir_ + "/broker", "--auth_tokens_file=" + tokens});
  ASSERT_TRUE(b.ok()) << b.status();
  broker_ = *std::move(b);
  auto status_of = [&](const std::string& target, const std::string& headers = "") {
    SseClient s(broker_->http_addr(), target, headers);
    s.ReadUntil([&] { return s.answered() || !s.frames().empty() || s.status() == 200; });
    return std::make_pair(s.status(), s.body());
  };
  EXPECT_EQ(status_of("/api/events/stream?types=order.*").first, 401);
  EXPECT_EQ(status_of("/api/events/stream?types=order.*&access_token=wrong").first, 401);
  auto denied = status_of("/api/events/stream?types=user.*", "Authorization: Bearer tok-page\r\n");
  EXPECT_EQ(denied.first, 403);
  EXPECT_THAT(denied.second, HasSubstr("subscribe:user.*"));
  EXPECT_EQ(status_of("/api/events/stream", "Authorization: Bearer tok-page\r\n").first, 403);
  EXPECT_EQ(
      status_of("/api/events/stream?types=order.*", "Authorization: Bearer tok-pub\r\n").first,
      403);

  // EventSource cannot send headers: the token may come in the query.
  SseClient page(broker_->http_addr(), "/api/events/stream?types=order.*&access_token=tok-page");
  ASSERT_TRUE(page.ReadUntil([&] { return page.status() == 200; }));
  uint64_t seq = Publish("order.created", "c1", "", "", "Authorization: Bearer tok-pub\r\n");
  ASSERT_TRUE(page.ReadUntil([&] { return !page.frames().empty(); }));
  EXPECT_EQ(page.frames()[0].id, seq);
  // The console's page itself is public (it holds no data); its calls are not.
  EXPECT_EQ(HttpRequest(broker_->http_addr(), "GET", "/console/").status, 200);
  const std::string json = "Content-Type: application/json\r\n";
  EXPECT_EQ(HttpRequest(broker_->http_addr(), "POST", "/api/console/rpc/broker/GetStats", "", json)
                .status,
            401);
  auto stats = HttpRequest(broker_->http_addr(), "POST", "/api/console/rpc/broker/GetStats", "",
                           json + "Authorization: Bearer tok-page\r\n");
  EXPECT_EQ(stats.status, 200) << stats.body;
  // The broker's own gRPC handler decides, with the caller's scopes.
  auto replay =
      HttpRequest(broker_->http_addr(), "POST", "/api/console/rpc/broker/ReplayDeadLetters",
                  R"({"group":"g"})", "Authorization: Bearer tok-page\r\n");
  EXPECT_EQ(replay.status, 403) << replay.body;
  EXPECT_THAT(replay.body, HasSubstr("lacks scope 'admin'"));
}

TEST_F(BrowserApiIT, ConsoleProxyCallsOnlyItsMethodsAndNamesBadFields) {
  StartBroker();
  Publish("order.created", "corr-9");
  auto call = [&](const std::string& path, const std::string& body,
                  const std::string& headers = "Content-Type: application/json\r\n") {
    return HttpRequest(broker_->http_addr(), "POST", "/api/console/rpc/" + path, body, headers);
  };
  // Not JSON: what a page elsewhere could make a browser send unasked.
  auto form = call("broker/GetStats", "a=b", "Content-Type: application/x-www-form-urlencoded\r\n");
  EXPECT_EQ(form.status, 400);
  EXPECT_THAT(form.body, HasSubstr("Content-Type: must be application/json"));
  EXPECT_EQ(call("broker/GetStats", "{}", "Content-Type: text/plain\r\n").status, 400);
  // A token gRPC could not send is refused, not passed on (gRPC would abort).
  auto bad_token = call("broker/GetStats", "{}",
                        "Content-Type: application/json\r\nAuthorization: Bearer t\xc3\xa9\r\n");
  EXPECT_EQ(bad_token.status, 401);
  EXPECT_THAT(bad_token.body, HasSubstr("printable ASCII"));
  EXPECT_EQ(call("broker/GetStats", "{}").status, 200) << "the broker survived";
  auto history = call("broker/GetEventHistory", R"({"correlationId":"corr-9"})");
  EXPECT_EQ(history.status, 200) << history.body;
  EXPECT_THAT(history.body, HasSubstr("\"correlationId\":\"corr-9\""));
  EXPECT_EQ(call("broker/Publish", "{}").status, 404);
  EXPECT_EQ(call("broker", "{}").status, 404);
  auto bad = call("broker/GetEventHistory", R"({"limit":"many"})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(bad.body, HasSubstr("limit"));
  auto unknown = call("broker/ListDeadLetters", R"({"grupo":"x"})");
  EXPECT_EQ(unknown.status, 400);
  EXPECT_THAT(unknown.body, HasSubstr("grupo"));
  // Without --console_jobs_addr the Jobs view says which flag turns it on.
  auto jobs = call("jobs/GetStats", "{}");
  EXPECT_EQ(jobs.status, 503);
  EXPECT_THAT(jobs.body, HasSubstr("--console_jobs_addr"));
  auto page = HttpRequest(broker_->http_addr(), "GET", "/console/");
  EXPECT_EQ(page.status, 200);
  EXPECT_THAT(page.head, HasSubstr("Content-Security-Policy"));
  EXPECT_THAT(page.body, HasSubstr("<script src=\"console.js\">"));
  EXPECT_EQ(HttpRequest(broker_->http_addr(), "GET", "/console/console.js").status, 200);
  EXPECT_EQ(HttpRequest(broker_->http_addr(), "GET", "/console/nope.js").status, 404);
}

}  // namespace
}  // namespace switchboard
