#ifndef SWITCHBOARD_LIBS_COMMON_EXECUTOR_H_
#define SWITCHBOARD_LIBS_COMMON_EXECUTOR_H_

#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "libs/common/grpc_server.h"

namespace switchboard {

// A fixed pool of threads with a bounded queue, for work a gRPC reaction must
// not do itself (store queries, DNS, waiting for a commit): the reaction
// submits it and the task calls Finish. A full queue refuses new work rather
// than growing; the caller answers RESOURCE_EXHAUSTED.
class Executor {
 public:
  Executor(std::string name, int threads, size_t max_queued);
  ~Executor();  // runs what was queued, then joins
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // False when the queue is full or the executor is stopping.
  bool Submit(std::function<void()> task);

 private:
  void Run();

  const std::string name_;
  const size_t max_queued_;
  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

// Answers a unary call from `executor`: `fn` (returning absl::StatusOr<Response>)
// runs there, then the reactor finishes. The request and response objects stay
// valid until Finish, so `fn` may use the request.
template <typename Response, typename Fn>
grpc::ServerUnaryReactor* FinishOnExecutor(grpc::CallbackServerContext* ctx, Executor* executor,
                                           Response* response, Fn fn) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  bool queued = executor->Submit([reactor, response, fn = std::move(fn)]() mutable {
    absl::StatusOr<Response> result = fn();
    if (!result.ok()) {
      reactor->Finish(ToGrpcStatus(result.status()));
      return;
    }
    *response = *std::move(result);
    reactor->Finish(grpc::Status::OK);
  });
  if (!queued) {
    reactor->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                 "server busy: too many slow requests queued; retry later"));
  }
  return reactor;
}

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_COMMON_EXECUTOR_H_
