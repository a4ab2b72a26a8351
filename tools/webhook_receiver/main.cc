// The "CRM receives webhook" example made real: a small HTTP receiver that
// verifies Standard Webhooks signatures and timestamps (±5 min), answers 401
// to bad ones, deduplicates on webhook-id, and logs each order's status.
//
//   webhook-receiver --http_addr=127.0.0.1:9000 --secret=whsec_...
//
// POST /webhooks (--path), /api/webhooks/order-status, /api/webhooks/worker-status and
// /api/webhooks/test receive; GET /received lists what was accepted (JSON, with counts
// per path).
#include <deque>
#include <map>
#include <set>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "libs/common/admin_http.h"
#include "libs/common/flags.h"
#include "libs/common/json_log.h"
#include "libs/common/shutdown.h"
#include "prometheus/registry.h"
#include "services/webhook_delivery/signing.h"

ABSL_FLAG(std::string, http_addr, "127.0.0.1:9000", "listen address HOST:PORT (port 0: any)");
ABSL_FLAG(std::string, secret, "",
          "webhook secret(s) to verify with (whsec_...); several comma-separated during a "
          "rotation");
ABSL_FLAG(std::string, path, "/webhooks", "the path webhooks are posted to");
ABSL_FLAG(int32_t, fail_first, 0, "answer 500 to the first N requests (for demos of retries)");
ABSL_FLAG(absl::Duration, respond_after, absl::ZeroDuration(),
          "wait this long before answering a verified webhook (a slow endpoint)");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warn or error");

namespace switchboard {
namespace {

constexpr size_t kRemembered = 100000;

class Receiver {
 public:
  Receiver(std::vector<std::string> secrets, absl::Duration respond_after)
      : secrets_(std::move(secrets)), respond_after_(respond_after) {}

  HttpResponse Handle(const HttpRequest& req) {
    auto header = [&](const char* name) {
      auto it = req.headers.find(name);
      return it == req.headers.end() ? std::string() : it->second;
    };
    std::string id = header("webhook-id");
    absl::Status verified = absl::UnauthenticatedError("no secret configured");
    for (const std::string& secret : secrets_) {
      verified = webhooks::Verify(secret, id, header("webhook-timestamp"),
                                  header("webhook-signature"), req.body, absl::Now());
      if (verified.ok()) break;
    }
    if (!verified.ok()) {
      LogWarn("rejected webhook", {{"webhook_id", id}, {"reason", verified.message()}});
      return HttpResponse{401, "application/json",
                          absl::StrCat("{\"error\":", JsonQuote(verified.message()), "}")};
    }
    // A slow endpoint: the sender may give up (or die) meanwhile, and the
    // webhook still counts as received, as it would at a real receiver.
    if (respond_after_ > absl::ZeroDuration()) absl::SleepFor(respond_after_);
    {
      absl::MutexLock lock(&mu_);
      if (failures_left_ > 0) {
        --failures_left_;
        return HttpResponse{500, "application/json", "{\"error\":\"failing on purpose\"}"};
      }
      if (!seen_.insert(id).second) {
        ++duplicates_;
        return HttpResponse{204, "application/json", ""};  // already processed: dedupe
      }
      order_.push_back(id);
      if (order_.size() > kRemembered) {
        seen_.erase(order_.front());
        order_.pop_front();
      }
      received_.push_back(req.body);
      if (received_.size() > 10000) received_.pop_front();
      ++by_path_[req.path];
    }
    google::protobuf::Struct body;
    if (google::protobuf::util::JsonStringToMessage(req.body, &body).ok()) {
      const auto& f = body.fields();
      std::string type = f.count("event") ? f.at("event").string_value() : "";
      std::string order, status;
      if (f.count("data")) {
        const auto& data = f.at("data").struct_value().fields();
        if (data.count("orderId")) order = data.at("orderId").string_value();
        if (data.count("status")) status = data.at("status").string_value();
      }
      LogInfo("webhook received", {{"webhook_id", id},
                                   {"event", type},
                                   {"order_id", order},
                                   {"order_status", status},
                                   {"x_webhook_event", header("x-webhook-event")}});
    }
    return HttpResponse{204, "application/json", ""};
  }

  HttpResponse List() {
    absl::MutexLock lock(&mu_);
    std::string out = absl::StrCat("{\"duplicates\":", duplicates_, ",\"byPath\":{");
    bool first_path = true;
    for (const auto& [path, n] : by_path_) {
      absl::StrAppend(&out, first_path ? "" : ",", JsonQuote(path), ":", n);
      first_path = false;
    }
    out += "},\"events\":[";
    bool first = true;
    for (const std::string& b : received_) {
      absl::StrAppend(&out, first ? "" : ",", b);
      first = false;
    }
    out += "]}";
    return HttpResponse{200, "application/json", out};
  }

  void FailFirst(int n) {
    absl::MutexLock lock(&mu_);
    failures_left_ = n;
  }

 private:
  const std::vector<std::string> secrets_;
  const absl::Duration respond_after_;
  absl::Mutex mu_;
  std::set<std::string> seen_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> order_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> received_ ABSL_GUARDED_BY(mu_);
  uint64_t duplicates_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, uint64_t> by_path_ ABSL_GUARDED_BY(mu_);  // accepted, per path
  int failures_left_ ABSL_GUARDED_BY(mu_) = 0;
};

int Run() {
  std::vector<std::string> secrets =
      absl::StrSplit(absl::GetFlag(FLAGS_secret), ',', absl::SkipEmpty());
  for (const std::string& s : secrets) {
    if (absl::StatusOr<std::string> key = webhooks::DecodeSecret(s); !key.ok()) {
      LogError("bad flag", {{"error", std::string(key.status().message())}});
      return 2;
    }
  }
  if (secrets.empty()) {
    LogError("bad flag", {{"error", "secret: required (whsec_...)"}});
    return 2;
  }
  Receiver receiver(secrets, absl::GetFlag(FLAGS_respond_after));
  receiver.FailFirst(absl::GetFlag(FLAGS_fail_first));
  AdminHttpServer http(std::make_shared<prometheus::Registry>());
  // The original design's receiving endpoints ("Order Status Webhooks"),
  // besides --path; each verifies the signature the same way.
  std::set<std::string> paths = {absl::GetFlag(FLAGS_path), "/api/webhooks/order-status",
                                 "/api/webhooks/worker-status", "/api/webhooks/test"};
  for (const std::string& path : paths) {
    http.Route("POST", path, [&](const HttpRequest& r) { return receiver.Handle(r); });
  }
  http.Route("GET", "/received", [&](const HttpRequest&) { return receiver.List(); });
  absl::StatusOr<int> port = http.Start(absl::GetFlag(FLAGS_http_addr));
  if (!port.ok()) {
    LogError("cannot listen", {{"error", port.status().ToString()}});
    return 1;
  }
  std::string addr = absl::StrCat(
      absl::GetFlag(FLAGS_http_addr).substr(0, absl::GetFlag(FLAGS_http_addr).rfind(':')), ":",
      *port);
  Log(LogLevel::kStartup, absl::StrCat("listening http=", addr), {{"http", addr}});
  WaitForShutdownSignal();
  http.Stop();
  return 0;
}

}  // namespace
}  // namespace switchboard

int main(int argc, char** argv) {
  switchboard::InitService(argc, argv, "webhook-receiver",
                           "a sample webhook receiver that verifies Standard Webhooks signatures.",
                           {{"WEBHOOK_SECRET", "secret"}});
  return switchboard::Run();
}
