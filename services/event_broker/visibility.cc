#include "services/event_broker/visibility.h"

#include <string>
#include <vector>

namespace switchboard::broker {
namespace {

template <typename Repeated, typename Keep>
void KeepOnly(Repeated* items, Keep keep) {
  int out = 0;
  for (int i = 0; i < items->size(); ++i) {
    if (keep(items->Get(i))) items->SwapElements(out++, i);
  }
  while (items->size() > out) items->RemoveLast();
}

}  // namespace

void OnlyVisible(const Principal& caller, v1::GetEventHistoryResponse* history) {
  if (caller.anonymous) return;
  KeepOnly(history->mutable_events(),
           [&](const events::v1::Event& e) { return MaySee(caller, e.type()); });
}

void OnlyVisible(const Principal& caller, v1::GetStatsResponse* stats) {
  if (caller.anonymous) return;
  KeepOnly(stats->mutable_recent_events(),
           [&](const events::v1::Event& e) { return MaySee(caller, e.type()); });
  std::vector<std::string> hidden;
  for (const auto& [pattern, count] : stats->subscriptions_by_type()) {
    if (!MaySee(caller, pattern)) hidden.push_back(pattern);
  }
  for (const std::string& pattern : hidden) stats->mutable_subscriptions_by_type()->erase(pattern);
  KeepOnly(stats->mutable_groups(),
           [&](const v1::GroupStats& g) { return RequireGroup(caller, g.name()).ok(); });
}

void OnlyVisible(const Principal& caller, v1::ListDeadLettersResponse* dead) {
  if (caller.anonymous) return;
  KeepOnly(dead->mutable_dead_letters(),
           [&](const v1::DeadLetter& d) { return MaySee(caller, d.event().type()); });
}

}  // namespace switchboard::broker
