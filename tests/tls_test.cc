// TLS and mTLS on the real binaries, with certificates made by the openssl
// CLI: what a plain client, a client without a certificate, and a client
// with a stranger's certificate get; a certificate swapped on disk served to
// the next connection while an open stream keeps running; the whole mesh
// running the order flow with TLS on every port.
#include "libs/security/tls.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "libs/common/auth.h"
#include "switchboard/broker/v1/broker.grpc.pb.h"
#include "switchboard/jobs/v1/jobs.grpc.pb.h"
#include "switchboard/webhooks/v1/webhooks.grpc.pb.h"
#include "tests/testing/certs.h"
#include "tests/testing/process.h"

namespace switchboard {
namespace {

using testing::CertFiles;
using testing::HttpRequest;
using testing::ServiceProcess;
using testing::WaitUntil;

constexpr char kSecret[] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

// An HTTPS request with libcurl, checking the server against `ca` and
// presenting `client` when given: the HTTP status (0 when the connection or
// handshake failed), the body, and the subject of the server's certificate.
struct HttpsResult {
  long status = 0;
  std::string body;
  std::string subject;
  std::string error;
};
// `times` > 1: that many requests, each on a new connection of the same
// handle, so that a client that caches TLS sessions tries to resume one;
// the result is the last one's, or the first failure.
HttpsResult HttpsGet(const std::string& addr, const std::string& path, const std::string& ca,
                     const CertFiles* client = nullptr, const std::string& token = "",
                     int times = 1) {
  HttpsResult r;
  CURL* h = curl_easy_init();
  std::string url = absl::StrCat("https://", addr, path);
  char err[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_CAINFO, ca.c_str());
  curl_easy_setopt(h, CURLOPT_CERTINFO, 1L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, err);
  curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L);
  if (client != nullptr) {
    curl_easy_setopt(h, CURLOPT_SSLCERT, client->cert.c_str());
    curl_easy_setopt(h, CURLOPT_SSLKEY, client->key.c_str());
  }
  curl_easy_setopt(
      h, CURLOPT_WRITEFUNCTION, +[](char* p, size_t n, size_t m, void* out) {
        static_cast<std::string*>(out)->append(p, n * m);
        return n * m;
      });
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &r.body);
  std::string bearer = "Authorization: Bearer " + token;
  curl_slist* headers = token.empty() ? nullptr : curl_slist_append(nullptr, bearer.c_str());
  if (headers != nullptr) curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
  CURLcode rc = CURLE_OK;
  for (int i = 0; i < times && rc == CURLE_OK; ++i) {
    r.body.clear();
    rc = curl_easy_perform(h);
  }
  if (rc == CURLE_OK) {
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
    curl_certinfo* info = nullptr;
    curl_easy_getinfo(h, CURLINFO_CERTINFO, &info);
    for (int i = 0; info != nullptr && i < 1 && i < info->num_of_certs; ++i) {
      for (curl_slist* l = info->certinfo[i]; l != nullptr; l = l->next) {
        if (absl::StartsWith(l->data, "Subject:")) r.subject = l->data;
      }
    }
  } else {
    r.error = err;
  }
  curl_easy_cleanup(h);
  curl_slist_free_all(headers);
  return r;
}

// A bare TCP connection to 127.0.0.1:<port of host_port>; -1 on failure.
int ConnectTcp(const std::string& host_port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(std::stoi(host_port.substr(host_port.rfind(':') + 1)));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

class TlsIT : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir();
    auto ca = testing::MakeCa(dir_, "mesh-ca");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = *ca;
    auto stranger = testing::MakeCa(dir_, "stranger-ca");
    ASSERT_TRUE(stranger.ok()) << stranger.status();
    auto server = testing::MakeLeaf(ca_, dir_, "server", "broker-v1",
                                    "DNS:localhost,IP:127.0.0.1,DNS:broker.switchboard.internal");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *server;
    auto client = testing::MakeLeaf(ca_, dir_, "client", "worker", "DNS:worker.switchboard.svc");
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *client;
    auto foreign =
        testing::MakeLeaf(*stranger, dir_, "foreign", "worker", "DNS:worker.switchboard.svc");
    ASSERT_TRUE(foreign.ok()) << foreign.status();
    foreign_ = *foreign;
    stranger_ca_ = *stranger;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::vector<std::string> ServerFlags(const CertFiles& cert, bool mtls) {
    std::vector<std::string> f = {"--tls_cert=" + cert.cert, "--tls_key=" + cert.key,
                                  "--tls_reload_interval=1s"};
    if (mtls) f.push_back("--tls_client_ca=" + ca_.cert);
    return f;
  }

  void StartBroker(const std::vector<std::string>& tls) {
    std::vector<std::string> args = {"--data_dir=" + dir_ + "/broker"};
    args.insert(args.end(), tls.begin(), tls.end());
    auto b = ServiceProcess::Start(BROKER_BIN, args);
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = *std::move(b);
  }

  // A fresh channel (its own connection) with our mesh client's credentials.
  std::shared_ptr<grpc::Channel> Channel(const std::string& addr, const ClientTlsConfig& tls) {
    grpc::ChannelArguments args;
    // A distinct argument keeps gRPC from sharing a subchannel (and so a
    // connection made before a certificate swap) between channels.
    args.SetInt("switchboard.test.channel", ++channels_);
    AddTlsChannelArgs(tls, &args);
    return grpc::CreateCustomChannel(addr, GrpcChannelCredentials(tls), args);
  }
  ClientTlsConfig Tls(const std::string& ca, const CertFiles* cert = nullptr) {
    ClientTlsConfig c;
    c.enabled = true;
    c.ca_file = ca;
    if (cert != nullptr) {
      c.cert_file = cert->cert;
      c.key_file = cert->key;
    }
    return c;
  }

  // Publish over `channel`; the status, and the server's certificate CN.
  grpc::Status Publish(const std::shared_ptr<grpc::Channel>& channel,
                       std::string* server_cn = nullptr, const std::string& type = "tls.test") {
    auto stub = broker::v1::EventBroker::NewStub(channel);
    broker::v1::PublishRequest req;
    req.mutable_event()->set_type(type);
    req.mutable_event()->set_source("tls-test");
    broker::v1::PublishResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    grpc::Status s = stub->Publish(&ctx, req, &resp);
    if (s.ok() && server_cn != nullptr) {
      auto cn = ctx.auth_context()->FindPropertyValues("x509_common_name");
      *server_cn = cn.empty() ? "" : std::string(cn.front().data(), cn.front().size());
    }
    return s;
  }

  std::string dir_;
  CertFiles ca_, stranger_ca_, server_, client_, foreign_;
  std::unique_ptr<ServiceProcess> broker_;
  int channels_ = 0;
};

TEST_F(TlsIT, MtlsRefusesPlainUnknownAndForeignClientsAndServesTheRightOne) {
  ASSERT_NO_FATAL_FAILURE(StartBroker(ServerFlags(server_, /*mtls=*/true)));
  EXPECT_THAT(broker_->Log(), ::testing::HasSubstr("\"tls\":\"mtls\""));
  const std::string addr = broker_->grpc_addr();

  grpc::Status plain = Publish(grpc::CreateChannel(addr, grpc::InsecureChannelCredentials()));
  EXPECT_EQ(plain.error_code(), grpc::StatusCode::UNAVAILABLE) << plain.error_message();
  grpc::Status no_cert = Publish(Channel(addr, Tls(ca_.cert)));
  EXPECT_EQ(no_cert.error_code(), grpc::StatusCode::UNAVAILABLE) << no_cert.error_message();
  grpc::Status foreign = Publish(Channel(addr, Tls(ca_.cert, &foreign_)));
  EXPECT_EQ(foreign.error_code(), grpc::StatusCode::UNAVAILABLE) << foreign.error_message();
  // The client checks the server too: a broker certificate from a CA it does
  // not trust is refused.
  grpc::Status untrusted = Publish(Channel(addr, Tls(stranger_ca_.cert, &client_)));
  EXPECT_EQ(untrusted.error_code(), grpc::StatusCode::UNAVAILABLE) << untrusted.error_message();

  std::string cn;
  grpc::Status ok = Publish(Channel(addr, Tls(ca_.cert, &client_)), &cn);
  EXPECT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_EQ(cn, "broker-v1");

  // The name in the certificate is checked: a name it does not carry fails.
  ClientTlsConfig wrong = Tls(ca_.cert, &client_);
  wrong.server_name = "someone-else.example";
  grpc::Status wrong_name = Publish(Channel(addr, wrong));
  EXPECT_EQ(wrong_name.error_code(), grpc::StatusCode::UNAVAILABLE) << wrong_name.error_message();
  ClientTlsConfig named = Tls(ca_.cert, &client_);
  named.server_name = "broker.switchboard.internal";
  grpc::Status renamed = Publish(Channel(addr, named));
  EXPECT_TRUE(renamed.ok()) << renamed.error_message();
}

TEST_F(TlsIT, ServerTlsWithoutClientCaServesAnyTlsClientButNoPlainOne) {
  ASSERT_NO_FATAL_FAILURE(StartBroker(ServerFlags(server_, /*mtls=*/false)));
  EXPECT_THAT(broker_->Log(), ::testing::HasSubstr("\"tls\":\"tls\""));
  EXPECT_TRUE(Publish(Channel(broker_->grpc_addr(), Tls(ca_.cert))).ok());
  EXPECT_FALSE(
      Publish(grpc::CreateChannel(broker_->grpc_addr(), grpc::InsecureChannelCredentials())).ok());
}

// Kubernetes swaps a mounted Secret by pointing a symlink at a new directory:
// the next connection gets the new certificate, the open stream keeps going.
TEST_F(TlsIT, ACertificateSwappedOnDiskServesTheNextConnectionWhileAStreamKeepsRunning) {
  namespace fs = std::filesystem;
  fs::create_directories(dir_ + "/v1");
  fs::copy_file(server_.cert, dir_ + "/v1/tls.crt");
  fs::copy_file(server_.key, dir_ + "/v1/tls.key");
  fs::create_directory_symlink(dir_ + "/v1", dir_ + "/current");
  CertFiles mounted{dir_ + "/current/tls.crt", dir_ + "/current/tls.key"};
  ASSERT_NO_FATAL_FAILURE(StartBroker(ServerFlags(mounted, /*mtls=*/true)));
  const std::string addr = broker_->grpc_addr();

  // A broadcast stream on its own connection, open before the swap.
  auto stream_channel = Channel(addr, Tls(ca_.cert, &client_));
  auto stub = broker::v1::EventBroker::NewStub(stream_channel);
  grpc::ClientContext stream_ctx;
  broker::v1::SubscribeRequest sub;
  sub.add_types("tls.*");
  auto reader = stub->Subscribe(&stream_ctx, sub);
  // The stream is in place once an event published now arrives on it.
  broker::v1::Delivery delivery;
  ASSERT_TRUE(WaitUntil([&] { return Publish(Channel(addr, Tls(ca_.cert, &client_))).ok(); },
                        absl::Seconds(10)));
  if (!reader->Read(&delivery)) {
    grpc::Status st = reader->Finish();
    FAIL() << "stream ended: " << st.error_message() << "\n" << broker_->Log();
  }

  fs::create_directories(dir_ + "/v2");
  auto next =
      testing::MakeLeaf(ca_, dir_ + "/v2", "tls", "broker-v2", "DNS:localhost,IP:127.0.0.1");
  ASSERT_TRUE(next.ok()) << next.status();
  fs::rename(dir_ + "/v2/tls.pem", dir_ + "/v2/tls.crt");
  fs::create_directory_symlink(dir_ + "/v2", dir_ + "/next");
  fs::rename(dir_ + "/next", dir_ + "/current");  // atomic

  std::string cn;
  EXPECT_TRUE(WaitUntil(
      [&] {
        return Publish(Channel(addr, Tls(ca_.cert, &client_)), &cn).ok() && cn == "broker-v2";
      },
      absl::Seconds(15), absl::Milliseconds(200)))
      << "still served: " << cn << "\n"
      << broker_->Log();
  // The admin port's HTTPS serves the new certificate too.
  HttpsResult https;
  EXPECT_TRUE(WaitUntil(
      [&] {
        https = HttpsGet(broker_->http_addr(), "/healthz", ca_.cert, &client_);
        return https.status == 200 && absl::StrContains(https.subject, "broker-v2");
      },
      absl::Seconds(15), absl::Milliseconds(200)))
      << https.subject << " " << https.error;
  // The stream opened under the old certificate still delivers.
  grpc::Status published =
      Publish(Channel(addr, Tls(ca_.cert, &client_)), nullptr, "tls.after_swap");
  ASSERT_TRUE(published.ok()) << published.error_message();
  bool after_swap = false;
  while (!after_swap && reader->Read(&delivery)) {
    after_swap = delivery.event().type() == "tls.after_swap";
  }
  EXPECT_TRUE(after_swap);
  stream_ctx.TryCancel();
  reader->Finish();
}

// The admin port speaks only HTTPS (mTLS with a client CA); --metrics_addr
// keeps /metrics, /healthz and /readyz on a plain listener without the API.
TEST_F(TlsIT, TheAdminPortIsHttpsAndMetricsStayPlainOnTheirOwnListener) {
  std::vector<std::string> flags = ServerFlags(server_, /*mtls=*/true);
  flags.push_back("--metrics_addr=127.0.0.1:0");
  ASSERT_NO_FATAL_FAILURE(StartBroker(flags));
  ASSERT_FALSE(broker_->metrics_addr().empty()) << broker_->Log();
  const std::string http = broker_->http_addr();

  HttpsResult ok = HttpsGet(http, "/api/events/stats", ca_.cert, &client_);
  EXPECT_EQ(ok.status, 200) << ok.error;
  // A client that caches TLS sessions (curl, nginx, browsers) reconnects fine.
  HttpsResult again = HttpsGet(http, "/healthz", ca_.cert, &client_, "", /*times=*/3);
  EXPECT_EQ(again.status, 200) << again.error;
  EXPECT_THAT(ok.subject, ::testing::HasSubstr("broker-v1"));
  EXPECT_EQ(HttpsGet(http, "/api/events/stats", ca_.cert).status, 0) << "no client certificate";
  EXPECT_EQ(HttpsGet(http, "/api/events/stats", ca_.cert, &foreign_).status, 0)
      << "a stranger's client certificate";
  EXPECT_EQ(HttpsGet(http, "/healthz", stranger_ca_.cert, &client_).status, 0)
      << "a server certificate the client does not trust";
  EXPECT_NE(HttpRequest(http, "GET", "/api/events/stats").status, 200) << "plain HTTP";

  const std::string plain = broker_->metrics_addr();
  auto metrics = HttpRequest(plain, "GET", "/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_THAT(metrics.body, ::testing::HasSubstr("switchboard_broker_"));
  EXPECT_EQ(HttpRequest(plain, "GET", "/readyz").status, 200);
  EXPECT_EQ(HttpRequest(plain, "GET", "/healthz").status, 200);
  EXPECT_EQ(HttpRequest(plain, "GET", "/api/events/stats").status, 404);
  EXPECT_EQ(HttpRequest(plain, "POST", "/api/events/test", "{}").status, 404);

  // A client that drips its handshake a byte at a time is cut at the
  // handshake deadline (5 s from the accept), however often it sends.
  {
    int drip = ConnectTcp(http);
    ASSERT_GE(drip, 0);
    const char hello[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    size_t sent = 0;
    absl::Time start = absl::Now();
    bool cut = WaitUntil(
        [&] {
          char c;
          ssize_t got = recv(drip, &c, 1, MSG_DONTWAIT);
          if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) return true;
          if (sent < sizeof(hello) - 1) send(drip, hello + sent++, 1, MSG_NOSIGNAL);
          return false;
        },
        absl::Seconds(12), absl::Milliseconds(500));
    EXPECT_TRUE(cut) << "a dripping handshake was never cut";
    EXPECT_LT(absl::Now() - start, absl::Seconds(8));
    close(drip);
  }

  // A client that connects and never says a word holds nothing up: shutdown
  // is prompt with it still connected.
  int fd = ConnectTcp(http);
  ASSERT_GE(fd, 0);
  absl::Time before = absl::Now();
  EXPECT_EQ(broker_->Terminate(absl::Seconds(10)), 0) << broker_->Log();
  EXPECT_LT(absl::Now() - before, absl::Seconds(4));
  close(fd);
}

// The console on the broker reads job-worker over mTLS with --console_tls_*,
// and without them gets nowhere.
TEST_F(TlsIT, TheConsoleReachesTheWorkerOverMtls) {
  StartBroker({});
  auto worker = ServiceProcess::Start(WORKER_BIN, [&] {
    std::vector<std::string> a = {"--broker=" + broker_->grpc_addr(),
                                  "--data_dir=" + dir_ + "/worker"};
    for (const std::string& f : ServerFlags(server_, /*mtls=*/true)) a.push_back(f);
    return a;
  }());
  ASSERT_TRUE(worker.ok()) << worker.status();
  std::string grpc = broker_->grpc_addr(), http = broker_->http_addr();
  auto call_jobs = [&](const std::vector<std::string>& console_flags) {
    broker_.reset();  // the console's flags are read at start: restart on the same ports
    std::vector<std::string> args = {"--grpc_addr=" + grpc, "--http_addr=" + http,
                                     "--console_jobs_addr=" + (*worker)->grpc_addr()};
    args.insert(args.end(), console_flags.begin(), console_flags.end());
    StartBroker(args);
    return HttpRequest(http, "POST", "/api/console/rpc/jobs/GetStats", "{}",
                       "Content-Type: application/json\r\n");
  };
  auto plain = call_jobs({});
  EXPECT_EQ(plain.status, 503) << plain.body;
  auto mtls =
      call_jobs({"--console_tls_ca=" + ca_.cert, "--console_tls_cert=" + client_.cert,
                 "--console_tls_key=" + client_.key, "--console_tls_server_name=localhost"});
  EXPECT_EQ(mtls.status, 200) << mtls.body;
  EXPECT_THAT(mtls.body, ::testing::HasSubstr("\"name\":\"payments\""));
}

TEST_F(TlsIT, BadCertificateFlagsStopTheBinaryNamingTheFlag) {
  const std::string garbage = dir_ + "/garbage.pem";
  { std::ofstream(garbage) << "not a certificate\n"; }
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{
           {{"--tls_cert=" + server_.cert}, "tls_key: required with --tls_cert"},
           {{"--tls_key=" + server_.key}, "tls_cert: required with --tls_key"},
           {{"--tls_cert=" + garbage, "--tls_key=" + server_.key}, "tls_cert: '"},
           {{"--tls_cert=" + server_.cert, "--tls_key=" + client_.key},
            "tls_key: '" + client_.key + "' is not the key of --tls_cert"},
           {{"--tls_cert=" + server_.cert, "--tls_key=" + dir_ + "/missing.key"},
            "tls_key: cannot read"},
           {{"--tls_client_ca=" + ca_.cert}, "tls_client_ca: mTLS needs --tls_cert"},
           {{"--tls_cert=" + server_.cert, "--tls_key=" + server_.key,
             "--tls_client_ca=" + garbage},
            "tls_client_ca: '"},
       }) {
    std::vector<std::string> args = {"--data_dir=" + dir_ + "/bad", "--grpc_addr=127.0.0.1:0",
                                     "--http_addr=127.0.0.1:0"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    for (const char* bin : {BROKER_BIN, WORKER_BIN, WEBHOOK_BIN}) {
      testing::ExitResult r = testing::RunToExit(bin, args, absl::Seconds(20));
      EXPECT_EQ(r.code, 2) << bin << " " << c.says << "\n" << r.output;
      EXPECT_THAT(r.output, ::testing::HasSubstr(c.says)) << bin;
    }
  }
  // The console's client flags on the broker are checked the same way.
  for (const Case& c :
       std::vector<Case>{{{"--console_tls_ca=" + garbage}, "console_tls_ca: '"},
                         {{"--console_tls_cert=" + client_.cert}, "console_tls_key: required"}}) {
    std::vector<std::string> args = {"--data_dir=" + dir_ + "/bad3"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    testing::ExitResult r = testing::RunToExit(BROKER_BIN, args, absl::Seconds(20));
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_THAT(r.output, ::testing::HasSubstr(c.says));
  }
  for (const char* bin : {WORKER_BIN, WEBHOOK_BIN}) {
    testing::ExitResult r = testing::RunToExit(
        bin, {"--data_dir=" + dir_ + "/bad2", "--broker_tls_ca=" + garbage}, absl::Seconds(20));
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_THAT(r.output, ::testing::HasSubstr("broker_tls_ca: '")) << bin;
    r = testing::RunToExit(bin,
                           {"--data_dir=" + dir_ + "/bad2", "--broker_tls_cert=" + client_.cert},
                           absl::Seconds(20));
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_THAT(r.output, ::testing::HasSubstr("broker_tls_key: required")) << bin;
  }
}

// broker, job-worker and webhook-delivery, each serving TLS (the broker
// mTLS) with tokens on, the mesh clients presenting their certificates
// (mapped to a principal: no bearer token) and reaching the broker by an
// address list with --broker_tls_server_name: an order runs to completion
// and its webhooks arrive.
TEST_F(TlsIT, TheMeshRunsTheOrderFlowWithTlsEverywhereAndTokensOn) {
  const std::string tokens = dir_ + "/tokens.jsonl";
  std::ofstream(tokens)
      << R"({"principal":"mesh","tls_identity":"worker.switchboard.svc","scopes":)"
      << R"(["publish:order.*","publish:job.*","publish:email.*","subscribe:*@job-worker",)"
      << R"("subscribe:*@webhook-delivery","jobs:read"]})"
      << "\n"
      << R"({"principal":"ops","token_sha256":")" << Sha256Hex("tok-ops-1")
      << R"(","scopes":["webhooks:admin"]})"
      << "\n";
  std::vector<std::string> broker_flags = ServerFlags(server_, /*mtls=*/true);
  broker_flags.push_back("--auth_tokens_file=" + tokens);
  ASSERT_NO_FATAL_FAILURE(StartBroker(broker_flags));
  std::string port = broker_->grpc_addr().substr(broker_->grpc_addr().rfind(':') + 1);
  std::vector<std::string> client = {
      "--broker=ipv4:127.0.0.1:" + port, "--broker_tls_ca=" + ca_.cert,
      "--broker_tls_cert=" + client_.cert, "--broker_tls_key=" + client_.key,
      "--broker_tls_server_name=broker.switchboard.internal"};
  std::vector<std::string> args = client;
  args.push_back("--data_dir=" + dir_ + "/worker");
  args.push_back("--metrics_addr=127.0.0.1:0");
  args.push_back("--auth_tokens_file=" + tokens);
  for (auto& f : ServerFlags(server_, /*mtls=*/true)) args.push_back(f);
  auto worker = ServiceProcess::Start(WORKER_BIN, args);
  ASSERT_TRUE(worker.ok()) << worker.status();
  auto receiver = ServiceProcess::Start(RECEIVER_BIN, {std::string("--secret=") + kSecret},
                                        absl::Seconds(30), /*grpc=*/false);
  ASSERT_TRUE(receiver.ok()) << receiver.status();
  args = client;
  args.push_back("--data_dir=" + dir_ + "/webhooks");
  args.push_back("--allow_private_targets");
  args.push_back("--metrics_addr=127.0.0.1:0");
  args.push_back("--auth_tokens_file=" + tokens);
  for (auto& f : ServerFlags(server_, /*mtls=*/false)) args.push_back(f);
  auto hooks = ServiceProcess::Start(WEBHOOK_BIN, args);
  ASSERT_TRUE(hooks.ok()) << hooks.status();
  for (auto* p : {worker->get(), hooks->get()}) {
    ASSERT_TRUE(
        WaitUntil([&] { return HttpRequest(p->metrics_addr(), "GET", "/readyz").status == 200; },
                  absl::Seconds(20)))
        << p->Log();
  }
  auto hook_stub =
      webhooks::v1::WebhookService::NewStub(Channel((*hooks)->grpc_addr(), Tls(ca_.cert)));
  webhooks::v1::RegisterWebhookRequest reg;
  reg.set_url(absl::StrCat("http://", (*receiver)->http_addr(), "/webhooks"));
  reg.add_events("order.*");
  reg.set_secret(kSecret);
  webhooks::v1::Webhook hook;
  grpc::ClientContext anonymous_ctx;
  EXPECT_EQ(hook_stub->RegisterWebhook(&anonymous_ctx, reg, &hook).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext reg_ctx;
  reg_ctx.AddMetadata("authorization", "Bearer tok-ops-1");
  grpc::Status registered = hook_stub->RegisterWebhook(&reg_ctx, reg, &hook);
  ASSERT_TRUE(registered.ok()) << registered.error_message();

  auto broker_channel = Channel(broker_->grpc_addr(), Tls(ca_.cert, &client_));
  ASSERT_TRUE(Publish(broker_channel, nullptr, "order.checkout_initiated").ok());
  auto received = [&] { return HttpRequest((*receiver)->http_addr(), "GET", "/received").body; };
  EXPECT_TRUE(WaitUntil([&] { return received().find("order.completed") != std::string::npos; },
                        absl::Seconds(30)))
      << received() << "\n"
      << (*worker)->Log() << "\n"
      << (*hooks)->Log();
  // The broker's JSON routes take the client certificate's identity too (its
  // admin port is mTLS): the mapped one is served without a token, a valid
  // but unmapped one is not.
  HttpsResult mapped = HttpsGet(broker_->http_addr(), "/api/events/stats", ca_.cert, &client_);
  EXPECT_EQ(mapped.status, 200) << mapped.error << mapped.body;
  EXPECT_EQ(HttpsGet(broker_->http_addr(), "/api/events/stats", ca_.cert, &server_).status, 401);
  // webhook-delivery's JSON API is HTTPS on its admin port.
  EXPECT_EQ(HttpsGet((*hooks)->http_addr(), "/api/webhooks", ca_.cert).status, 401);
  HttpsResult listed_hooks =
      HttpsGet((*hooks)->http_addr(), "/api/webhooks", ca_.cert, nullptr, "tok-ops-1");
  EXPECT_EQ(listed_hooks.status, 200) << listed_hooks.error;
  EXPECT_THAT(listed_hooks.body, ::testing::HasSubstr(hook.id()));
  // The worker's own port serves TLS only to clients it trusts (mTLS).
  auto jobs =
      jobs::v1::JobWorker::NewStub(Channel((*worker)->grpc_addr(), Tls(ca_.cert, &client_)));
  jobs::v1::ListJobsRequest list;
  jobs::v1::ListJobsResponse listed;
  grpc::ClientContext list_ctx;
  grpc::Status ls = jobs->ListJobs(&list_ctx, list, &listed);
  ASSERT_TRUE(ls.ok()) << ls.error_message();
  EXPECT_GE(listed.jobs_size(), 4);
  auto plain_jobs = jobs::v1::JobWorker::NewStub(
      grpc::CreateChannel((*worker)->grpc_addr(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext plain_ctx;
  plain_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  EXPECT_FALSE(plain_jobs->ListJobs(&plain_ctx, list, &listed).ok());
}

}  // namespace
}  // namespace switchboard
