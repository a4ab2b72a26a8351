#ifndef SWITCHBOARD_SERVICES_EVENT_BROKER_BROKER_H_
#define SWITCHBOARD_SERVICES_EVENT_BROKER_BROKER_H_

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "libs/common/clock.h"
#include "libs/common/event_rules.h"
#include "services/event_broker/broker_metrics.h"
#include "services/event_broker/event_store.h"
#include "switchboard/broker/v1/broker.pb.h"

namespace switchboard::broker {

struct BrokerConfig {
  size_t max_event_bytes = 1 << 20;
  size_t max_batch_events = 10000;
  absl::Duration retention_age = absl::Hours(24 * 7);
  uint64_t retention_count = 10'000'000;
  // Recent events kept in memory so live subscribers never touch the store.
  size_t cache_events = 16384;
  // Per broadcast subscriber: events fetched ahead of the stream.
  size_t broadcast_buffer = 256;
  // Per group: matching events fetched ahead of its members.
  size_t group_buffer = 1024;
  absl::Duration default_ack_deadline = absl::Seconds(30);
  uint32_t default_max_in_flight = 1000;
  uint32_t default_max_deliveries = 5;
  // Background threads for deadlines, retention and gauges. Unit tests turn
  // it off and call Tick() with a fake clock.
  bool run_housekeeping = true;
  absl::Duration housekeeping_interval = absl::Milliseconds(50);
  absl::Duration retention_interval = absl::Seconds(10);
  // Retention deletes at most this many events per store transaction, so a
  // large backlog never holds the store's write lock for long.
  uint64_t retention_chunk = 2000;
  // Publishes accepted but not yet committed, in serialized bytes. Past it a
  // publish is refused with RESOURCE_EXHAUSTED (the store is not keeping up).
  size_t max_queued_publish_bytes = 256u << 20;
  // One commit takes at most this many bytes of publishes (at least one
  // publish): a Redis commit is one Lua script, and Redis runs nothing else
  // meanwhile, for any replica.
  size_t max_commit_bytes = 8u << 20;
  // A group-state change the store refuses this often is dropped (logged and
  // counted): it must not block the writer or the publishes behind it.
  int max_op_failures = 5;
  // Dead letters one ReplayDeadLetters call loads and replays; replaying a
  // longer queue takes several calls.
  size_t max_replay_per_call = 10000;
  // Events GetEventHistory returns when the request gives no limit
  // (EVENT_HISTORY_SIZE of the original design).
  uint32_t default_history_limit = 1000;
  // How long PublishAndWait (the JSON API) waits for the commit before
  // DEADLINE_EXCEEDED (EVENT_EMISSION_TIMEOUT).
  absl::Duration emission_timeout = absl::Seconds(5);
  // Names this process among the replicas sharing a store (empty: made up
  // at start).
  std::string replica_id;
  // How often a replica on a shared store publishes its load (GetStats of
  // every replica sums them); a replica silent for 3 periods is gone.
  absl::Duration load_interval = absl::Seconds(1);
};

struct PublishResult {
  std::string id;
  uint64_t sequence = 0;
  bool duplicate = false;
};
using PublishCallback = std::function<void(absl::StatusOr<std::vector<PublishResult>>)>;

struct PublishWork {
  std::vector<NewEvent> events;
  PublishCallback done;
  absl::Time received;
  size_t bytes = 0;
  uint64_t ticket = 0;  // orders it among all writes, for FlushWrites
};

// A group-state change waiting for a commit; `ticket` orders it for
// FlushWrites, `failures` counts refused commits.
struct QueuedOp {
  GroupOp op;
  uint64_t ticket = 0;
  int failures = 0;
  bool refused_while_store_worked = false;
};

// One delivery handed to a subscriber's stream.
struct Outgoing {
  EventPtr event;
  uint32_t attempt = 1;
  std::string ack_id;
};

// Implemented by the transport (the gRPC stream reactor). Calls come from
// broker threads and must not block.
class SubscriptionSink {
 public:
  virtual ~SubscriptionSink() = default;
  // Subscription::Next() may now have something (after it returned nothing).
  virtual void OnReady() = 0;
  // The broker ends the stream with this status.
  virtual void OnEnd(absl::Status status) = 0;
};

// A transport's handle on one subscription.
class Subscription {
 public:
  virtual ~Subscription() = default;
  // Never blocks. Nothing now: the sink's OnReady() will say when to ask again.
  virtual std::optional<Outgoing> Next() = 0;
  // The stream is gone. After Close() returns the broker never calls the sink.
  virtual void Close() = 0;
};

class Group;
class BroadcastSubscription;

// What the broker's readers of the log (broadcast streams, groups, members)
// may ask of it: the internal seam between Broker and subscriptions.{h,cc},
// local_group.*, shared_group.*.
class SubscriptionHost {
 public:
  virtual ~SubscriptionHost() = default;
  virtual const BrokerConfig& config() const = 0;
  virtual Clock* clock() const = 0;
  virtual BrokerMetrics* metrics() const = 0;
  virtual uint64_t last_sequence() const = 0;
  virtual bool shutting_down() const = 0;
  // Group-state changes for the next commit (embedded store).
  virtual void EnqueueOps(std::vector<GroupOp> ops) = 0;
  // Runs `fill` on the fill thread (catch-up reads, claims: store calls).
  virtual void RequestFill(std::function<void()> fill) = 0;
  // Events with seq > after_seq, from the tail cache when it covers them.
  virtual absl::StatusOr<std::vector<EventPtr>> ReadEvents(uint64_t after_seq, size_t limit) = 0;
  virtual void SubscriberCountChanged(int delta) = 0;
};

// The event-broker's logic: the log (through an EventStore), group commit,
// dedupe, subscriptions and consumer groups. Transports (gRPC, JSON over HTTP)
// are thin adapters over this class.
class Broker : public SubscriptionHost {
 public:
  static absl::StatusOr<std::unique_ptr<Broker>> Create(BrokerConfig config,
                                                        std::unique_ptr<EventStore> store,
                                                        Clock* clock, BrokerMetrics* metrics);
  ~Broker();

  // Stops taking publishes and subscribers, commits what was accepted, ends
  // every stream with UNAVAILABLE so clients reconnect elsewhere.
  void Shutdown();

  // Validates events and readies them for the log on the caller's thread:
  // assigns ids and times, serializes. `field` names them in errors ("event"
  // for a single publish, "events" for a batch). Changes the messages. The
  // events are the wire twins of Event with `data` as bytes, as parsed from
  // a Publish or PublishBatch request (a Struct two messages deep).
  absl::StatusOr<std::vector<NewEvent>> Prepare(absl::Span<internal::RawEvent* const> events,
                                                absl::string_view field) const;
  // Appends durably; `done` runs once it is committed: on the writer thread,
  // or on this one before Append returns (a publish committed inline), so it
  // must not take a lock the caller holds, nor wait for writes (FlushWrites,
  // PublishAndWait): those are answered only after `done` returns.
  void Append(std::vector<NewEvent> events, PublishCallback done);
  // Prepare + Append. Bad input is answered before anything is queued.
  void Publish(std::vector<events::v1::Event> events, PublishCallback done);
  // Blocking convenience over Publish for the JSON API and tests; at most
  // config.emission_timeout (the publish may still commit after that).
  absl::StatusOr<std::vector<PublishResult>> PublishAndWait(std::vector<events::v1::Event> events);

  absl::StatusOr<std::shared_ptr<Subscription>> Subscribe(const v1::SubscribeRequest& request,
                                                          SubscriptionSink* sink);
  absl::StatusOr<v1::AckResponse> Ack(const v1::AckRequest& request);
  absl::StatusOr<v1::NackResponse> Nack(const v1::NackRequest& request);
  absl::StatusOr<v1::ModifyAckDeadlineResponse> ModifyAckDeadline(
      const v1::ModifyAckDeadlineRequest& request);
  absl::StatusOr<v1::GetEventHistoryResponse> GetEventHistory(
      const v1::GetEventHistoryRequest& request);
  absl::StatusOr<v1::GetStatsResponse> GetStats();
  absl::StatusOr<v1::ListDeadLettersResponse> ListDeadLetters(
      const v1::ListDeadLettersRequest& request);
  absl::StatusOr<v1::ReplayDeadLettersResponse> ReplayDeadLetters(
      const v1::ReplayDeadLettersRequest& request);

  // Expires ack deadlines, runs retention when due, refreshes gauges.
  void Tick();
  // Waits until every queued store write so far is committed (tests).
  void FlushWrites();

  uint64_t last_sequence() const override { return last_seq_.load(); }
  // The store answered the last probe (readiness and gRPC health follow it).
  bool store_reachable() const { return store_reachable_.load(); }
  // Several replicas share the store: group calls reach it (they block).
  bool store_shared() const { return store_->shared(); }
  bool shutting_down() const override { return shutting_down_.load(); }
  const BrokerConfig& config() const override { return config_; }
  Clock* clock() const override { return clock_; }
  BrokerMetrics* metrics() const override { return metrics_; }

  // SubscriptionHost
  void EnqueueOps(std::vector<GroupOp> ops) override;
  void RequestFill(std::function<void()> fill) override;
  absl::StatusOr<std::vector<EventPtr>> ReadEvents(uint64_t after_seq, size_t limit) override;
  void SubscriberCountChanged(int delta) override;

 private:
  Broker(BrokerConfig config, std::unique_ptr<EventStore> store, Clock* clock,
         BrokerMetrics* metrics);
  absl::Status Recover();
  void WriterLoop();
  void FillLoop();
  void HousekeepingLoop();
  // Append's commit of a publish that found nothing queued, on the caller's
  // thread (writer_busy_ taken); handed to the writer when the store would
  // make it wait.
  void CommitInline(PublishWork work);
  // The batch of `works`' events (pointing into them), numbered after every
  // sequence this broker has seen.
  WriteBatch PublishBatch(std::deque<PublishWork>& works) const;
  // Commits the publishes and ops; returns the ops to try again later.
  std::vector<QueuedOp> CommitOnce(std::deque<PublishWork>& works, std::vector<QueuedOp> ops);
  // Pipelined commits of publishes only (broker_writer.cc).
  struct InFlight;
  std::unique_ptr<InFlight> StartInFlight(std::deque<PublishWork> works, uint64_t taken_upto,
                                          size_t taken_bytes);
  // `newer_first_ticket`: the first ticket of a commit sent after this one
  // (0: none), which is not durable yet.
  void FinishInFlight(InFlight& commit, uint64_t newer_first_ticket);
  // Around a store commit carrying publishes (shared stores: own_in_flight_).
  void OwnCommitStarted(const std::deque<PublishWork>& works);
  // Answers the publishers of a commit and hands its events to delivery.
  void AnswerPublishes(std::deque<PublishWork>& works, const absl::StatusOr<CommitResult>& commit,
                       absl::Time now);
  // Bookkeeping after a commit: queued bytes, ops to retry, FlushWrites;
  // ends it (writer_busy_).
  void AfterCommit(size_t taken_bytes, uint64_t taken_upto, std::vector<QueuedOp> retry,
                   bool last_round, uint64_t newer_first_ticket);
  // Ops only, isolating those the store refuses; returns those to retry.
  // `store_works`: something else was stored this round, so a refusal is
  // about the op (it counts towards max_op_failures), not an outage.
  std::vector<QueuedOp> CommitOpsAlone(std::vector<QueuedOp> ops, absl::Time now, bool store_works);
  void RunRetention(absl::Time now);
  void Deliver(const std::vector<EventPtr>& events);
  void EndAllStreams(const absl::Status& status);
  void Dispatch(const std::vector<EventPtr>& events, uint64_t prev_last);
  void TailLoop();
  absl::StatusOr<uint64_t> StartCursor(const v1::SubscribeRequest& request);
  absl::StatusOr<std::shared_ptr<Group>> FindGroup(const std::string& name);
  // Shared stores: a Group object for every group in the store.
  absl::Status AdoptSharedGroups();
  void RecordRate(absl::Time now, uint64_t n);
  // This process's subscribers, groups and publish rate.
  ReplicaLoad LocalLoad();

  const BrokerConfig config_;
  std::unique_ptr<EventStore> store_;
  Clock* const clock_;
  BrokerMetrics* const metrics_;
  std::atomic<uint64_t> last_seq_{0};
  // The highest sequence this process committed; on a shared store the tail
  // (last_seq_) may not have reached it yet.
  std::atomic<uint64_t> committed_seq_{0};
  std::atomic<bool> shutting_down_{false};
  std::atomic<bool> store_reachable_{true};
  std::string replica_id_;

  // Writer: publishes and group ops waiting for the next commit.
  absl::Mutex write_mu_;
  std::deque<PublishWork> publish_queue_ ABSL_GUARDED_BY(write_mu_);
  size_t queued_publish_bytes_ ABSL_GUARDED_BY(write_mu_) = 0;
  std::vector<QueuedOp> op_queue_ ABSL_GUARDED_BY(write_mu_);
  // Ops a commit refused, retried alone once retry_ops_at_ has passed.
  std::vector<QueuedOp> retry_ops_ ABSL_GUARDED_BY(write_mu_);
  absl::Time retry_ops_at_ ABSL_GUARDED_BY(write_mu_) = absl::InfiniteFuture();
  // Every write (publish or op batch) gets a ticket; all tickets <=
  // durable_upto_ are stored, answered with an error, or finally dropped.
  uint64_t enqueued_writes_ ABSL_GUARDED_BY(write_mu_) = 0;
  uint64_t durable_upto_ ABSL_GUARDED_BY(write_mu_) = 0;
  bool stop_writer_ ABSL_GUARDED_BY(write_mu_) = false;
  // A commit is being made, by the writer thread or inline on a publisher's
  // thread (Append): one at a time, so sequences, dedupe and hand-offs to
  // subscribers keep commit order. Only set when inline_commits_.
  bool writer_busy_ ABSL_GUARDED_BY(write_mu_) = false;
  // Commits in a row that carried one publish and left nothing queued.
  // Inline commits wait for kInlineAfterLoneCommits of them: publishers that
  // arrive together (16 clients at once) would otherwise see an empty queue
  // now and then, and the first one's inline commit would split the batch
  // the others make (two commits where one did: a fifth fewer publishes/s).
  int lone_commits_ ABSL_GUARDED_BY(write_mu_) = 0;
  static constexpr int kInlineAfterLoneCommits = 8;
  // Larger publishes go to the writer: their commit is no longer short.
  static constexpr size_t kMaxInlineBytes = 64 * 1024;
  // The store commits on the caller's thread when that costs no wait
  // (EventStore::TryCommitNow): a publish finding nothing queued is
  // committed by its own RPC thread instead of waking the writer thread,
  // which then wakes the RPC's (a sleeping thread's wake-up is tens of
  // microseconds here, a lone SQLite commit less).
  const bool inline_commits_;

  // Counters per type, cached by whoever commits (writer_busy_).
  absl::flat_hash_map<std::string, prometheus::Counter*> published_by_type_;

  // Shared store: this replica's commits, for the tail thread to deliver
  // without reading them back from the store.
  absl::Mutex own_mu_;
  std::map<uint64_t, EventPtr> own_ ABSL_GUARDED_BY(own_mu_);
  // Commits of publishes sent and not answered: what the store appends
  // meanwhile is most likely ours, so the tail waits rather than read it.
  int own_in_flight_ ABSL_GUARDED_BY(own_mu_) = 0;

  // Tail cache: the most recent committed events, contiguous sequences.
  mutable absl::Mutex cache_mu_;
  std::deque<EventPtr> cache_ ABSL_GUARDED_BY(cache_mu_);

  // Publish rate over the last seconds.
  absl::Mutex rate_mu_;
  std::deque<std::pair<int64_t, uint64_t>> rate_ ABSL_GUARDED_BY(rate_mu_);

  absl::Mutex subs_mu_;
  std::vector<std::weak_ptr<BroadcastSubscription>> broadcasts_ ABSL_GUARDED_BY(subs_mu_);
  std::map<std::string, std::shared_ptr<Group>> groups_ ABSL_GUARDED_BY(subs_mu_);
  int subscriber_count_ ABSL_GUARDED_BY(subs_mu_) = 0;

  absl::Mutex fill_mu_;
  std::deque<std::function<void()>> fill_queue_ ABSL_GUARDED_BY(fill_mu_);
  bool stop_fill_ ABSL_GUARDED_BY(fill_mu_) = false;

  absl::Mutex hk_mu_;
  bool stop_hk_ ABSL_GUARDED_BY(hk_mu_) = false;
  // Housekeeping state: Tick() runs on the housekeeping thread (or a test's).
  absl::Mutex tick_mu_ ABSL_ACQUIRED_AFTER(hk_mu_);
  absl::Time next_retention_ ABSL_GUARDED_BY(tick_mu_) = absl::InfinitePast();
  absl::Time next_check_ ABSL_GUARDED_BY(tick_mu_) = absl::InfinitePast();
  absl::Time next_load_ ABSL_GUARDED_BY(tick_mu_) = absl::InfinitePast();

  std::thread writer_;
  std::thread filler_;
  std::thread housekeeper_;
  std::thread tailer_;
};

// The broker once it exists. main starts the edges before the store can be
// reached (Redis may come up later, and meanwhile health says NOT_SERVING);
// until set() they answer UNAVAILABLE.
class BrokerSlot {
 public:
  Broker* get() const { return broker_.load(std::memory_order_acquire); }
  void set(Broker* broker) { broker_.store(broker, std::memory_order_release); }
  static absl::Status NotReady() {
    return absl::UnavailableError("event-broker: the store is not reachable yet; retry shortly");
  }

 private:
  std::atomic<Broker*> broker_{nullptr};
};

}  // namespace switchboard::broker

#endif  // SWITCHBOARD_SERVICES_EVENT_BROKER_BROKER_H_
