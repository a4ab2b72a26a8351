#ifndef SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_DUE_INDEX_H_
#define SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_DUE_INDEX_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"

namespace switchboard::webhooks {

// The embedded outbox's pending deliveries in memory, per endpoint, by due
// time: the scheduler's claims and wake-ups read them here instead of
// scanning the table's index past every delivery still under lease on each
// round (that scan and its row reads were over half the delivery thread's
// time). Not thread-safe: the store guards it with its own lock.
class DueIndex {
 public:
  // Where a visit goes after a delivery (see Visit).
  enum class Next {
    kContinue,     // on to the next delivery, of any endpoint
    kSkipWebhook,  // none more of this endpoint
    kStop,         // the visit is over
  };

  // Adds a pending delivery, or moves it to its new due time.
  void Put(const std::string& id, const std::string& webhook_id, int64_t due_us);
  void Remove(const std::string& id);
  bool Contains(const std::string& id) const { return by_id_.contains(id); }
  void Clear();
  size_t size() const { return by_id_.size(); }

  // Visits deliveries due at `now_us`, earliest first over every endpoint,
  // ties by endpoint id then delivery id (as the table's index orders them),
  // except those of `skip`. `fn` must not change the index.
  void Visit(
      int64_t now_us, const std::set<std::string>& skip,
      const std::function<Next(const std::string& id, const std::string& webhook_id)>& fn) const;

  // The earliest time a delivery not of `skip` may be claimed: its due time,
  // or for one under lease (lease_end returns when that lease ends) the later
  // of the two. Looks past an endpoint's leased deliveries only. nullopt
  // when nothing is pending.
  std::optional<int64_t> NextDue(
      const std::set<std::string>& skip,
      const std::function<std::optional<int64_t>(const std::string& id)>& lease_end) const;

 private:
  using Key = std::pair<int64_t, std::string>;  // (due_us, delivery id)
  struct Entry {
    int64_t due_us;
    std::string webhook_id;
  };
  absl::flat_hash_map<std::string, Entry> by_id_;
  std::map<std::string, std::set<Key>> by_webhook_;  // each endpoint's queue
};

}  // namespace switchboard::webhooks

#endif  // SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_DUE_INDEX_H_
