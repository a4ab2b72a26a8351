#ifndef SWITCHBOARD_SERVICES_EVENT_BROKER_TEST_UTIL_H_
#define SWITCHBOARD_SERVICES_EVENT_BROKER_TEST_UTIL_H_

#include <cstdlib>
#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "services/event_broker/event_store.h"
#include "switchboard/events/v1/event.pb.h"

namespace switchboard::broker {

// A fresh directory under $TMPDIR, removed with the object.
class TempDir {
 public:
  TempDir() {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "switchboard-test-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline events::v1::Event MakeEvent(const std::string& type, const std::string& id = "",
                                   const std::string& correlation_id = "") {
  events::v1::Event ev;
  ev.set_type(type);
  ev.set_id(id);
  ev.set_source("test");
  ev.set_correlation_id(correlation_id);
  (*ev.mutable_data()->mutable_fields())["n"].set_number_value(1);
  return ev;
}

// The store-ready form of an event, as Broker::Prepare makes it.
inline NewEvent ToNewEvent(const events::v1::Event& ev) {
  NewEvent n;
  n.payload = ev.SerializeAsString();
  n.type = ev.type();
  n.id = ev.id();
  n.source = ev.source();
  n.correlation_id = ev.correlation_id();
  n.subject = ev.subject();
  n.time_us = ev.time().seconds() * 1000000 + ev.time().nanos() / 1000;
  n.client_id = !ev.id().empty();
  return n;
}

}  // namespace switchboard::broker

#endif  // SWITCHBOARD_SERVICES_EVENT_BROKER_TEST_UTIL_H_
