#include "services/event_broker/subscriptions.h"

namespace switchboard::broker {
namespace {

constexpr size_t kFillReadChunk = 512;
constexpr size_t kFillMaxScan = 8192;

}  // namespace

Scan ScanMatching(SubscriptionHost* broker, const TypeFilter& filter, uint64_t from, size_t space,
                  bool stop_at_gap) {
  Scan scan;
  scan.examined = from;
  for (size_t scanned = 0; scan.events.size() < space && scanned < kFillMaxScan;) {
    absl::StatusOr<std::vector<EventPtr>> evs = broker->ReadEvents(scan.examined, kFillReadChunk);
    if (!evs.ok()) {
      scan.error = evs.status();
      break;
    }
    if (evs->empty()) break;
    if (evs->front()->seq != scan.examined + 1 && scan.gap_to == 0) {
      scan.gap_from = scan.examined + 1;
      scan.gap_to = evs->front()->seq - 1;
      if (stop_at_gap) break;
    }
    for (const EventPtr& ev : *evs) {
      if (scan.events.size() >= space) break;
      scan.examined = ev->seq;
      ++scanned;
      if (filter.Matches(ev->type)) scan.events.push_back(ev);
    }
    if (evs->size() < kFillReadChunk) break;
  }
  return scan;
}

}  // namespace switchboard::broker
