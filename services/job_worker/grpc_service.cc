#include "services/job_worker/grpc_service.h"

#include "libs/common/grpc_server.h"

namespace switchboard::jobs {
namespace {

template <typename Response>
grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* ctx, absl::StatusOr<Response> result,
                                 Response* response) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  if (!result.ok()) {
    reactor->Finish(ToGrpcStatus(result.status()));
  } else {
    *response = *std::move(result);
    reactor->Finish(grpc::Status::OK);
  }
  return reactor;
}

}  // namespace

grpc::ServerUnaryReactor* JobWorkerService::GetStats(grpc::CallbackServerContext* ctx,
                                                     const v1::GetStatsRequest*,
                                                     v1::GetStatsResponse* response) {
  return Answer(ctx, absl::StatusOr<v1::GetStatsResponse>(worker_->GetStats()), response);
}

grpc::ServerUnaryReactor* JobWorkerService::ListJobs(grpc::CallbackServerContext* ctx,
                                                     const v1::ListJobsRequest* request,
                                                     v1::ListJobsResponse* response) {
  return Answer(ctx, worker_->ListJobs(*request), response);
}

grpc::ServerUnaryReactor* JobWorkerService::GetJob(grpc::CallbackServerContext* ctx,
                                                   const v1::GetJobRequest* request,
                                                   v1::Job* response) {
  return Answer(ctx, worker_->GetJob(*request), response);
}

grpc::ServerUnaryReactor* JobWorkerService::PauseQueue(grpc::CallbackServerContext* ctx,
                                                       const v1::PauseQueueRequest* request,
                                                       v1::QueueStats* response) {
  return Answer(ctx, worker_->SetPaused(request->queue(), true), response);
}

grpc::ServerUnaryReactor* JobWorkerService::ResumeQueue(grpc::CallbackServerContext* ctx,
                                                        const v1::ResumeQueueRequest* request,
                                                        v1::QueueStats* response) {
  return Answer(ctx, worker_->SetPaused(request->queue(), false), response);
}

}  // namespace switchboard::jobs
