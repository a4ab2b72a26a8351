#ifndef SWITCHBOARD_SERVICES_JOB_WORKER_WORKER_METRICS_H_
#define SWITCHBOARD_SERVICES_JOB_WORKER_WORKER_METRICS_H_

#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace switchboard::jobs {

// Every metric of the job-worker, registered on main's registry.
struct WorkerMetrics {
  explicit WorkerMetrics(prometheus::Registry& r)
      : jobs(prometheus::BuildCounter()
                 .Name("switchboard_worker_jobs_total")
                 .Help("Job attempts finished, by queue, job type and outcome "
                       "(completed, retried, failed, skipped_duplicate; publish_failed and "
                       "record_failed, which run again).")
                 .Register(r)),
        duration(prometheus::BuildHistogram()
                     .Name("switchboard_worker_job_duration_seconds")
                     .Help("Time a job attempt ran, by queue.")
                     .Register(r)),
        queue_depth(prometheus::BuildGauge()
                        .Name("switchboard_worker_queue_depth")
                        .Help("Jobs waiting to start, by queue.")
                        .Register(r)),
        in_flight(prometheus::BuildGauge()
                      .Name("switchboard_worker_jobs_in_flight")
                      .Help("Jobs running now, by queue.")
                      .Register(r)),
        retries(prometheus::BuildCounter()
                    .Name("switchboard_worker_job_retries_total")
                    .Help("Failed attempts that were scheduled for a retry, by queue.")
                    .Register(r)),
        queue_wait(prometheus::BuildHistogram()
                       .Name("switchboard_worker_job_queue_wait_seconds")
                       .Help("Time from a job's event arriving to its start, by queue.")
                       .Register(r)) {}

  prometheus::Family<prometheus::Counter>& jobs;          // {queue, type, outcome}
  prometheus::Family<prometheus::Histogram>& duration;    // {queue}
  prometheus::Family<prometheus::Gauge>& queue_depth;     // {queue}
  prometheus::Family<prometheus::Gauge>& in_flight;       // {queue}
  prometheus::Family<prometheus::Counter>& retries;       // {queue}
  prometheus::Family<prometheus::Histogram>& queue_wait;  // {queue}

  static const prometheus::Histogram::BucketBoundaries& Buckets() {
    static const auto* b = new prometheus::Histogram::BucketBoundaries{
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
    return *b;
  }
};

}  // namespace switchboard::jobs

#endif  // SWITCHBOARD_SERVICES_JOB_WORKER_WORKER_METRICS_H_
