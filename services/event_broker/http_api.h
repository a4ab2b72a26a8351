#ifndef SWITCHBOARD_SERVICES_EVENT_BROKER_HTTP_API_H_
#define SWITCHBOARD_SERVICES_EVENT_BROKER_HTTP_API_H_

#include "libs/common/admin_http.h"
#include "services/event_broker/broker.h"

namespace switchboard::broker {

// The JSON API of SPEC §6 on the admin port, over the same Broker calls as
// gRPC: GET /api/events/stats, GET /api/events/history, POST /api/events/test,
// GET /health/events.
// Until the slot holds a broker every route answers 503. The admin server
// authenticates the caller; these routes check its scopes (publish:<type> for
// the test event) and show history and stats of visible types only. `auth`
// (may be null) counts refusals.
void RegisterBrokerHttpApi(AdminHttpServer* http, BrokerSlot* slot, Authenticator* auth = nullptr);

}  // namespace switchboard::broker

#endif  // SWITCHBOARD_SERVICES_EVENT_BROKER_HTTP_API_H_
