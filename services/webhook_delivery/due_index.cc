#include "services/webhook_delivery/due_index.h"

#include <algorithm>
#include <queue>
#include <vector>

namespace switchboard::webhooks {

void DueIndex::Put(const std::string& id, const std::string& webhook_id, int64_t due_us) {
  Remove(id);
  by_id_.emplace(id, Entry{due_us, webhook_id});
  by_webhook_[webhook_id].emplace(due_us, id);
}

void DueIndex::Remove(const std::string& id) {
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return;
  auto w = by_webhook_.find(it->second.webhook_id);
  if (w != by_webhook_.end()) {
    w->second.erase(Key{it->second.due_us, id});
    if (w->second.empty()) by_webhook_.erase(w);
  }
  by_id_.erase(it);
}

void DueIndex::Clear() {
  by_id_.clear();
  by_webhook_.clear();
}

void DueIndex::Visit(
    int64_t now_us, const std::set<std::string>& skip,
    const std::function<Next(const std::string& id, const std::string& webhook_id)>& fn) const {
  // A merge of the endpoints' queues: each endpoint's next delivery in a
  // heap, so skipping an endpoint drops its whole backlog at once.
  using Queues = std::map<std::string, std::set<Key>>;
  using Cursor = std::pair<std::set<Key>::const_iterator, Queues::const_iterator>;
  auto later = [](const Cursor& a, const Cursor& b) {
    const Key& x = *a.first;
    const Key& y = *b.first;
    if (x.first != y.first) return x.first > y.first;
    if (a.second->first != b.second->first) return a.second->first > b.second->first;
    return x.second > y.second;
  };
  std::priority_queue<Cursor, std::vector<Cursor>, decltype(later)> heads(later);
  for (auto w = by_webhook_.begin(); w != by_webhook_.end(); ++w) {
    if (skip.count(w->first) || w->second.empty()) continue;
    if (w->second.begin()->first <= now_us) heads.push({w->second.begin(), w});
  }
  while (!heads.empty()) {
    Cursor c = heads.top();
    heads.pop();
    Next next = fn(c.first->second, c.second->first);
    if (next == Next::kStop) return;
    if (next == Next::kSkipWebhook) continue;
    ++c.first;
    if (c.first != c.second->second.end() && c.first->first <= now_us) heads.push(c);
  }
}

std::optional<int64_t> DueIndex::NextDue(
    const std::set<std::string>& skip,
    const std::function<std::optional<int64_t>(const std::string& id)>& lease_end) const {
  std::optional<int64_t> best;
  for (const auto& [webhook_id, queue] : by_webhook_) {
    if (skip.count(webhook_id)) continue;
    for (const auto& [due_us, id] : queue) {
      if (best.has_value() && due_us >= *best) break;  // nothing earlier here
      std::optional<int64_t> until = lease_end(id);
      int64_t at = until.has_value() ? std::max(due_us, *until) : due_us;
      best = best.has_value() ? std::min(*best, at) : at;
      if (!until.has_value()) break;  // the endpoint's first unleased one
    }
  }
  return best;
}

}  // namespace switchboard::webhooks
