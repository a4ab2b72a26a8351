#ifndef SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_HTTP_SENDER_H_
#define SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_HTTP_SENDER_H_

#include <curl/curl.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace switchboard::webhooks {

struct HttpCall {
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  absl::Duration timeout = absl::Seconds(30);
  // "host:port:address" pinning the vetted address (CURLOPT_RESOLVE).
  std::string resolve;
};

struct HttpResult {
  int status = 0;     // 0: no HTTP response
  std::string error;  // transport error (timeout, refused, ...)
  bool timed_out = false;
  std::string body;         // cut at 4 KiB
  std::string retry_after;  // the Retry-After header, if any
  absl::Duration latency;
};

// Outbound HTTP for deliveries (an interface, so the engine's logic can be
// tested with a fake).
class HttpSender {
 public:
  virtual ~HttpSender() = default;
  // `done` runs on the sender's thread; it must not block.
  virtual void Send(HttpCall call, std::function<void(HttpResult)> done) = 0;
  // Abandons transfers in flight and sends nothing more. After it returns no
  // `done` runs any more, so their owner may go away. Idempotent.
  virtual void Stop() {}
};

// libcurl's multi interface on one thread: connections kept alive and reused
// per host, redirects not followed, at most `max_total` transfers at once.
class CurlMultiSender : public HttpSender {
 public:
  explicit CurlMultiSender(int max_total = 256, int max_per_host = 32);
  ~CurlMultiSender() override;
  void Send(HttpCall call, std::function<void(HttpResult)> done) override;
  void Stop() override;

 private:
  struct Transfer;
  void Run();
  void Start(std::unique_ptr<Transfer> t);

  CURLM* multi_;
  absl::Mutex mu_;
  std::deque<std::unique_ptr<Transfer>> incoming_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // A wakeup is on its way to the sender thread: a burst of Sends costs one
  // (each is two syscalls), not one each.
  bool woken_ ABSL_GUARDED_BY(mu_) = false;
  // The sender thread's own: transfers running, and finished easy handles
  // kept for the next ones (reset, not rebuilt: their setup was a tenth of
  // the thread's time).
  std::map<CURL*, std::unique_ptr<Transfer>> running_;
  std::vector<CURL*> idle_;
  std::thread thread_;
};

}  // namespace switchboard::webhooks

#endif  // SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_HTTP_SENDER_H_
