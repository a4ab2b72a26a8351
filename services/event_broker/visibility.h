#ifndef SWITCHBOARD_SERVICES_EVENT_BROKER_VISIBILITY_H_
#define SWITCHBOARD_SERVICES_EVENT_BROKER_VISIBILITY_H_

#include "libs/common/auth.h"
#include "switchboard/broker/v1/broker.pb.h"

namespace switchboard::broker {

// History and stats show a principal only the event types it may subscribe
// to (SPEC §6): other events, subscriptions and groups are left out; the
// totals stay. Anonymous callers (authentication off) see everything.
void OnlyVisible(const Principal& caller, v1::GetEventHistoryResponse* history);
void OnlyVisible(const Principal& caller, v1::GetStatsResponse* stats);
// A group's dead letters: only those of types the caller may subscribe to
// (a scope limited to a group still sees only its own types there).
void OnlyVisible(const Principal& caller, v1::ListDeadLettersResponse* dead);

}  // namespace switchboard::broker

#endif  // SWITCHBOARD_SERVICES_EVENT_BROKER_VISIBILITY_H_
