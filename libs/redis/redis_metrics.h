#ifndef SWITCHBOARD_LIBS_REDIS_REDIS_METRICS_H_
#define SWITCHBOARD_LIBS_REDIS_REDIS_METRICS_H_

#include <string>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace switchboard::redis {

// switchboard_<service>_redis_*: round trips and their latency, errors by
// kind, connections made after a lost one, topology refreshes.
class RedisMetrics {
 public:
  RedisMetrics(prometheus::Registry& registry, const std::string& service);

  prometheus::Counter& round_trips;
  prometheus::Histogram& round_trip_seconds;
  // kind: io (connection lost or refused), redirect (MOVED/ASK), retry
  // (TRYAGAIN/CLUSTERDOWN/LOADING), noscript, timeout.
  prometheus::Family<prometheus::Counter>& errors;
  prometheus::Counter& connects;
  prometheus::Counter& reconnects;
  prometheus::Counter& topology_refreshes;
  prometheus::Gauge& connections;

  void Error(const std::string& kind) { errors.Add({{"kind", kind}}).Increment(); }
};

}  // namespace switchboard::redis

#endif  // SWITCHBOARD_LIBS_REDIS_REDIS_METRICS_H_
