#ifndef SWITCHBOARD_SERVICES_EVENT_BROKER_SUBSCRIPTIONS_H_
#define SWITCHBOARD_SERVICES_EVENT_BROKER_SUBSCRIPTIONS_H_

// The broker's readers of the log, internal to the event-broker: broadcast
// streams and consumer groups (with their members), and what they share
// (catch-up state, the sink holder). Broker creates and feeds them; the
// transports see them only through Subscription and SubscriptionSink.

#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "libs/common/json_log.h"
#include "services/event_broker/broker.h"

namespace switchboard::broker {

inline std::string MakeAckId(uint64_t seq, uint32_t attempt) {
  return absl::StrCat(seq, "-", attempt);
}

inline bool ParseAckId(absl::string_view id, uint64_t* seq, uint32_t* attempt) {
  size_t dash = id.find('-');
  if (dash == absl::string_view::npos) return false;
  return absl::SimpleAtoi(id.substr(0, dash), seq) && *seq > 0 &&
         absl::SimpleAtoi(id.substr(dash + 1), attempt) && *attempt > 0;
}

// Every ack id of a request as (seq, attempt); INVALID_ARGUMENT naming the
// first malformed one. Whether the group ever handed them out is its own
// check.
inline absl::Status ParseAckIds(const google::protobuf::RepeatedPtrField<std::string>& ids,
                                std::vector<DeliveryRef>* refs) {
  if (ids.empty()) return absl::InvalidArgumentError("ack_ids: empty");
  refs->reserve(refs->size() + ids.size());
  for (int i = 0; i < ids.size(); ++i) {
    uint64_t seq;
    uint32_t attempt;
    if (!ParseAckId(ids[i], &seq, &attempt)) {
      return absl::InvalidArgumentError(
          absl::StrCat("ack_ids[", i, "]: '", ids[i].substr(0, 64), "' is not an ack id"));
    }
    refs->push_back(DeliveryRef{seq, attempt});
  }
  return absl::OkStatus();
}

// Holds a transport's sink; Close() guarantees no call after it returns.
class SinkHolder {
 public:
  explicit SinkHolder(SubscriptionSink* sink) : sink_(sink) {}
  void Wake() {
    absl::MutexLock lock(&mu_);
    if (sink_ != nullptr) sink_->OnReady();
  }
  void End(absl::Status status) {
    absl::MutexLock lock(&mu_);
    if (sink_ != nullptr) sink_->OnEnd(std::move(status));
  }
  void Close() {
    absl::MutexLock lock(&mu_);
    sink_ = nullptr;
  }

 private:
  absl::Mutex mu_;
  SubscriptionSink* sink_ ABSL_GUARDED_BY(mu_);
};

// What a subscriber's catch-up read found after `from`.
struct Scan {
  std::vector<EventPtr> events;  // matching, in order
  uint64_t examined = 0;         // last sequence looked at
  uint64_t gap_from = 0;         // events deleted by retention before they were
  uint64_t gap_to = 0;           // read (gap_to == 0: none)
  absl::Status error;
};

// Reads events after `from` (tail cache, else store) until `space` match the
// filter or kFillMaxScan were looked at. A gap means retention deleted events
// the reader had not seen; with stop_at_gap the scan ends there.
Scan ScanMatching(SubscriptionHost* broker, const TypeFilter& filter, uint64_t from, size_t space,
                  bool stop_at_gap);

// The read position and ready events of one reader of the log (a broadcast
// stream or a consumer group), fed by live offers from the writer and by
// catch-up fills. Both readers keep one under their own mutex.
struct CatchUp {
  CatchUp(uint64_t from, size_t capacity) : examined(from), capacity(capacity) {}

  // Takes the events a commit appended after prev_last, if this reader is
  // exactly there (else a fill must catch up). Returns true when `ready`
  // went from empty to non-empty; *behind says a fill is needed.
  bool TakeLive(const std::vector<EventPtr>& events, uint64_t prev_last, const TypeFilter& filter,
                bool* behind) {
    if (fill_pending || examined != prev_last) {
      *behind = true;
      return false;
    }
    bool was_empty = ready.empty();
    for (const EventPtr& ev : events) {
      if (ready.size() >= capacity) break;
      examined = ev->seq;
      if (filter.Matches(ev->type)) ready.push_back(ev);
    }
    *behind = examined != events.back()->seq;
    return was_empty && !ready.empty();
  }
  // A fill is worth queueing: none queued, the log is ahead, and there is room.
  bool WantsFill(uint64_t last_seq) const {
    return !fill_pending && examined < last_seq && ready.size() < capacity;
  }
  size_t space() const { return capacity - ready.size(); }
  // A fill's result. Returns true when `ready` went from empty to non-empty.
  bool TakeFill(std::vector<EventPtr>& got, uint64_t upto) {
    fill_pending = false;
    bool was_empty = ready.empty();
    for (EventPtr& ev : got) ready.push_back(std::move(ev));
    examined = upto;
    return was_empty && !ready.empty();
  }

  std::deque<EventPtr> ready;
  uint64_t examined;  // last sequence looked at
  bool fill_pending = false;
  const size_t capacity;
};

// ---------------------------------------------------------------------------
// Broadcast: every matching event from the start position, then live.

class BroadcastSubscription : public Subscription,
                              public std::enable_shared_from_this<BroadcastSubscription> {
 public:
  BroadcastSubscription(SubscriptionHost* broker, TypeFilter filter, uint64_t cursor,
                        SubscriptionSink* sink)
      : broker_(broker),
        filter_(std::move(filter)),
        sink_(sink),
        state_(cursor, broker->config().broadcast_buffer) {}

  std::optional<Outgoing> Next() override {
    absl::MutexLock lock(&mu_);
    if (closed_ || state_.ready.empty()) {
      MaybeRequestFillLocked();
      return std::nullopt;
    }
    Outgoing out{std::move(state_.ready.front()), 1, ""};
    state_.ready.pop_front();
    if (state_.ready.size() < state_.capacity / 2) MaybeRequestFillLocked();
    return out;
  }

  void Close() override {
    sink_.Close();
    bool was_open;
    {
      absl::MutexLock lock(&mu_);
      was_open = !closed_;
      closed_ = true;
      state_.ready.clear();
    }
    if (was_open) broker_->SubscriberCountChanged(-1);
  }

  bool closed() {
    absl::MutexLock lock(&mu_);
    return closed_;
  }
  const TypeFilter& filter() const { return filter_; }

  // A commit just appended `events` after prev_last (the committing thread:
  // the writer, a publisher's for an inline commit, or the tail thread).
  void OfferLive(const std::vector<EventPtr>& events, uint64_t prev_last) {
    bool wake = false;
    {
      absl::MutexLock lock(&mu_);
      if (closed_) return;
      bool behind = false;
      wake = state_.TakeLive(events, prev_last, filter_, &behind);
      if (behind) MaybeRequestFillLocked();
    }
    if (wake) sink_.Wake();
  }

  void End(absl::Status status) { sink_.End(std::move(status)); }

 private:
  void MaybeRequestFillLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (closed_ || !state_.WantsFill(broker_->last_sequence())) return;
    state_.fill_pending = true;
    broker_->RequestFill([self = shared_from_this()] { self->Fill(); });
  }

  // On the fill thread: catch up from the cache or the store.
  void Fill() {
    uint64_t from;
    size_t space;
    {
      absl::MutexLock lock(&mu_);
      if (closed_) {
        state_.fill_pending = false;
        return;
      }
      from = state_.examined;
      space = state_.space();
    }
    Scan scan = ScanMatching(broker_, filter_, from, space, /*stop_at_gap=*/true);
    std::vector<EventPtr>& got = scan.events;
    uint64_t examined = scan.examined;
    absl::Status error = scan.error;
    if (error.ok() && scan.gap_to != 0) {
      error = absl::ResourceExhaustedError(absl::StrCat(
          "subscriber fell behind retention: events ", scan.gap_from, "..", scan.gap_to,
          " were deleted before delivery; resubscribe with start=SEQUENCE"));
    }
    bool wake = false;
    {
      absl::MutexLock lock(&mu_);
      if (closed_) {
        state_.fill_pending = false;
        return;
      }
      wake = state_.TakeFill(got, examined);
      if (error.ok()) MaybeRequestFillLocked();
    }
    if (!error.ok()) {
      broker_->metrics()->subscribers_dropped.Increment();
      LogWarn("ending subscriber", {{"reason", error.message()}});
      sink_.End(error);
      return;
    }
    if (wake) sink_.Wake();
  }

  SubscriptionHost* const broker_;
  const TypeFilter filter_;
  SinkHolder sink_;
  absl::Mutex mu_;
  CatchUp state_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

// ---------------------------------------------------------------------------
// Consumer groups: members share the work, at-least-once with acks. A
// LocalGroup keeps the group's state in this process (the embedded store,
// one broker); a SharedGroup keeps it in a store several replicas share and
// only hands this replica's members what it claimed there.

class GroupMember;

class Group {
 public:
  virtual ~Group() = default;
  virtual const std::string& name() const = 0;
  // A subscriber joins with (possibly new) filters.
  virtual absl::Status Join(std::shared_ptr<GroupMember> member, const TypeFilter& filter) = 0;
  virtual void Leave(GroupMember* member) = 0;
  virtual std::optional<Outgoing> NextFor(GroupMember* member) = 0;
  // Events were appended after prev_last (writer or tail thread).
  virtual void OfferLive(const std::vector<EventPtr>& events, uint64_t prev_last) = 0;
  virtual absl::Status ValidateAckIds(const google::protobuf::RepeatedPtrField<std::string>& ids,
                                      std::vector<DeliveryRef>* refs) = 0;
  virtual absl::StatusOr<v1::AckResponse> Ack(const std::vector<DeliveryRef>& refs) = 0;
  // `reason` (never empty) is what ended these attempts: a dead letter
  // shows it when this was its last.
  virtual absl::StatusOr<v1::NackResponse> Nack(const std::vector<DeliveryRef>& refs,
                                                absl::Duration delay,
                                                const std::string& reason) = 0;
  virtual absl::StatusOr<uint32_t> ModifyDeadline(const std::vector<DeliveryRef>& refs,
                                                  absl::Duration deadline) = 0;
  // Housekeeping: ack deadlines that passed.
  virtual void Expire(absl::Time now) = 0;
  virtual absl::StatusOr<uint32_t> Replay(const std::vector<DeadLetterRecord>& letters) = 0;
  virtual absl::Status FillStats(v1::GroupStats* s, uint64_t last_seq) = 0;
  virtual void UpdateGauges(uint64_t last_seq) = 0;
  virtual std::vector<std::string> PatternsForStats(int* members) = 0;
  virtual void EndAll(const absl::Status& status) = 0;
};

class GroupMember : public Subscription {
 public:
  GroupMember(SubscriptionHost* broker, std::shared_ptr<Group> group, SubscriptionSink* sink,
              absl::Duration ack_deadline, uint32_t max_in_flight)
      : ack_deadline_(ack_deadline),
        max_in_flight_(max_in_flight),
        broker_(broker),
        group_(std::move(group)),
        sink_(sink) {}

  std::optional<Outgoing> Next() override { return group_->NextFor(this); }
  bool closed() const { return closed_.load(); }
  void Close() override {
    sink_.Close();
    if (!closed_.exchange(true)) {
      group_->Leave(this);
      broker_->SubscriberCountChanged(-1);
    }
  }
  void Wake() { sink_.Wake(); }
  void End(absl::Status s) { sink_.End(std::move(s)); }

  const absl::Duration ack_deadline_;
  const uint32_t max_in_flight_;

 private:
  friend class LocalGroup;
  friend class SharedGroup;
  SubscriptionHost* const broker_;
  std::shared_ptr<Group> group_;
  SinkHolder sink_;
  std::atomic<bool> closed_{false};
};

}  // namespace switchboard::broker

#endif  // SWITCHBOARD_SERVICES_EVENT_BROKER_SUBSCRIPTIONS_H_
