#include "services/job_worker/grpc_service.h"

#include "libs/common/grpc_auth.h"
#include "libs/common/grpc_server.h"

namespace switchboard::jobs {

grpc::ServerUnaryReactor* JobWorkerService::GetStats(grpc::CallbackServerContext* ctx,
                                                     const v1::GetStatsRequest*,
                                                     v1::GetStatsResponse* response) {
  if (auto caller = AuthorizeCall(auth_, *ctx, "GetStats", Scope::kJobsRead); !caller.ok()) {
    return Refuse(ctx, caller.status());
  }
  return FinishUnary(ctx, absl::StatusOr<v1::GetStatsResponse>(worker_->GetStats()), response);
}

grpc::ServerUnaryReactor* JobWorkerService::ListJobs(grpc::CallbackServerContext* ctx,
                                                     const v1::ListJobsRequest* request,
                                                     v1::ListJobsResponse* response) {
  if (auto caller = AuthorizeCall(auth_, *ctx, "ListJobs", Scope::kJobsRead); !caller.ok()) {
    return Refuse(ctx, caller.status());
  }
  return FinishOnExecutor(ctx, &slow_, response,
                          [this, request] { return worker_->ListJobs(*request); });
}

grpc::ServerUnaryReactor* JobWorkerService::GetJob(grpc::CallbackServerContext* ctx,
                                                   const v1::GetJobRequest* request,
                                                   v1::Job* response) {
  if (auto caller = AuthorizeCall(auth_, *ctx, "GetJob", Scope::kJobsRead); !caller.ok()) {
    return Refuse(ctx, caller.status());
  }
  return FinishOnExecutor(ctx, &slow_, response,
                          [this, request] { return worker_->GetJob(*request); });
}

grpc::ServerUnaryReactor* JobWorkerService::PauseQueue(grpc::CallbackServerContext* ctx,
                                                       const v1::PauseQueueRequest* request,
                                                       v1::QueueStats* response) {
  if (auto caller = AuthorizeCall(auth_, *ctx, "PauseQueue", Scope::kJobsAdmin); !caller.ok()) {
    return Refuse(ctx, caller.status());
  }
  // Stored (a shared store is a round trip): off the reaction thread.
  return FinishOnExecutor(ctx, &slow_, response,
                          [this, request] { return worker_->SetPaused(request->queue(), true); });
}

grpc::ServerUnaryReactor* JobWorkerService::ResumeQueue(grpc::CallbackServerContext* ctx,
                                                        const v1::ResumeQueueRequest* request,
                                                        v1::QueueStats* response) {
  if (auto caller = AuthorizeCall(auth_, *ctx, "ResumeQueue", Scope::kJobsAdmin); !caller.ok()) {
    return Refuse(ctx, caller.status());
  }
  return FinishOnExecutor(ctx, &slow_, response,
                          [this, request] { return worker_->SetPaused(request->queue(), false); });
}

}  // namespace switchboard::jobs
