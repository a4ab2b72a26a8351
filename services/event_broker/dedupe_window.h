#ifndef SWITCHBOARD_SERVICES_EVENT_BROKER_DEDUPE_WINDOW_H_
#define SWITCHBOARD_SERVICES_EVENT_BROKER_DEDUPE_WINDOW_H_

#include <cstdint>
#include <deque>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"

namespace switchboard::broker {

// The source+id keys of recently appended events, for a store that keeps
// its dedupe window in memory (the embedded one). Not thread-safe: the
// store's writer owns it.
class DedupeWindow {
 public:
  DedupeWindow(absl::Duration window, size_t max_keys) : window_(window), max_keys_(max_keys) {}

  // The sequence of an event appended with this key within the window, or 0.
  uint64_t Find(const std::string& key) const {
    auto it = seqs_.find(key);
    return it == seqs_.end() ? 0 : it->second.seq;
  }
  void Add(std::string key, uint64_t seq, absl::Time at) {
    seqs_[key] = Entry{seq, at};
    order_.emplace_back(at, std::move(key));
  }
  // Forgets keys older than the window, and the oldest beyond max_keys (a
  // flood of ids cannot grow memory without bound).
  void Expire(absl::Time now) {
    while (!order_.empty() && (order_.front().first < now - window_ || order_.size() > max_keys_)) {
      auto it = seqs_.find(order_.front().second);
      // A key added again later keeps its newer entry.
      if (it != seqs_.end() && it->second.at == order_.front().first) seqs_.erase(it);
      order_.pop_front();
    }
  }
  absl::Duration window() const { return window_; }
  size_t size() const { return seqs_.size(); }

 private:
  struct Entry {
    uint64_t seq;
    absl::Time at;
  };
  const absl::Duration window_;
  const size_t max_keys_;
  absl::flat_hash_map<std::string, Entry> seqs_;
  std::deque<std::pair<absl::Time, std::string>> order_;
};

}  // namespace switchboard::broker

#endif  // SWITCHBOARD_SERVICES_EVENT_BROKER_DEDUPE_WINDOW_H_
