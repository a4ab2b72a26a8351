#ifndef SWITCHBOARD_SERVICES_JOB_WORKER_GRPC_SERVICE_H_
#define SWITCHBOARD_SERVICES_JOB_WORKER_GRPC_SERVICE_H_

#include "libs/common/auth.h"
#include "libs/common/executor.h"
#include "services/job_worker/worker.h"
#include "switchboard/jobs/v1/jobs.grpc.pb.h"

namespace switchboard::jobs {

// gRPC edge of the worker: hands each call to Worker. ListJobs and GetJob
// read the job store, so they run on the service's executor, never on a gRPC
// reaction thread.
class JobWorkerService final : public v1::JobWorker::CallbackService {
 public:
  // `auth` (may be null: everyone may call) must outlive the service.
  explicit JobWorkerService(Worker* worker, Authenticator* auth = nullptr)
      : worker_(worker), auth_(auth), slow_("sb-jobs-rpc", 2, 256) {}

  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* ctx,
                                     const v1::GetStatsRequest* request,
                                     v1::GetStatsResponse* response) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* ctx,
                                     const v1::ListJobsRequest* request,
                                     v1::ListJobsResponse* response) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* ctx,
                                   const v1::GetJobRequest* request, v1::Job* response) override;
  grpc::ServerUnaryReactor* PauseQueue(grpc::CallbackServerContext* ctx,
                                       const v1::PauseQueueRequest* request,
                                       v1::QueueStats* response) override;
  grpc::ServerUnaryReactor* ResumeQueue(grpc::CallbackServerContext* ctx,
                                        const v1::ResumeQueueRequest* request,
                                        v1::QueueStats* response) override;

 private:
  Worker* const worker_;
  Authenticator* const auth_;
  Executor slow_;
};

}  // namespace switchboard::jobs

#endif  // SWITCHBOARD_SERVICES_JOB_WORKER_GRPC_SERVICE_H_
