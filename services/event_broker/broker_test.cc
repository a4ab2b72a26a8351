// Broker logic on a real SQLite store with a fake clock: dedupe, retention,
// start positions, redelivery and dead-lettering, group cursor persistence,
// flow control. (Store faults, overload and shutdown races:
// broker_faults_test.cc.)
#include "absl/synchronization/notification.h"
#include "google/protobuf/util/message_differencer.h"
#include "services/event_broker/broker_test_fixture.h"

namespace switchboard::broker {
namespace {

using namespace ::switchboard::broker::test_support;  // NOLINT: the fixture's names

TEST_F(BrokerTest, DedupeWindowReturnsOriginalSequence) {
  PublishResult first = Publish(MakeEvent("order.created", "evt_client_1"));
  EXPECT_FALSE(first.duplicate);
  PublishResult again = Publish(MakeEvent("order.created", "evt_client_1"));
  EXPECT_TRUE(again.duplicate);
  EXPECT_EQ(again.sequence, first.sequence);
  // Same id from another source is a different event.
  events::v1::Event other = MakeEvent("order.created", "evt_client_1");
  other.set_source("other-service");
  EXPECT_FALSE(Publish(other).duplicate);
  // A duplicate inside one batch.
  auto batch =
      broker_->PublishAndWait({MakeEvent("order.paid", "evt_b"), MakeEvent("order.paid", "evt_b")});
  ASSERT_TRUE(batch.ok());
  EXPECT_FALSE((*batch)[0].duplicate);
  EXPECT_TRUE((*batch)[1].duplicate);
  EXPECT_EQ((*batch)[0].sequence, (*batch)[1].sequence);

  clock_.Advance(absl::Minutes(3));
  PublishResult later = Publish(MakeEvent("order.created", "evt_client_1"));
  EXPECT_FALSE(later.duplicate) << "the dedupe window is 2 minutes";
  EXPECT_GT(later.sequence, first.sequence);
}

TEST_F(BrokerTest, CommitsStayUnderMaxCommitBytesAndFlushWaitsForAll) {
  config_.max_commit_bytes = 1;  // every commit takes exactly one publish
  Open();
  std::atomic<int> done{0};
  constexpr int kPublishes = 20;
  for (int i = 0; i < kPublishes; ++i) {
    absl::StatusOr<std::vector<NewEvent>> prepared = [&] {
      internal::RawEvent ev;
      ev.ParseFromString(MakeEvent("order.created").SerializeAsString());
      internal::RawEvent* p = &ev;
      return broker_->Prepare(absl::MakeConstSpan(&p, 1), "event");
    }();
    ASSERT_TRUE(prepared.ok()) << prepared.status();
    broker_->Append(*std::move(prepared), [&](absl::StatusOr<std::vector<PublishResult>> r) {
      EXPECT_TRUE(r.ok()) << r.status();
      ++done;
    });
  }
  broker_->FlushWrites();
  EXPECT_EQ(done.load(), kPublishes) << "FlushWrites returned before every publish committed";
  EXPECT_EQ(broker_->last_sequence(), static_cast<uint64_t>(kPublishes));
  // One commit per publish (the first may have found one alone anyway).
  auto commits = metrics_->commit_events.Collect().histogram.sample_count;
  EXPECT_EQ(commits, static_cast<uint64_t>(kPublishes));
}

TEST_F(BrokerTest, DedupeWindowSurvivesRestart) {
  PublishResult first = Publish(MakeEvent("order.created", "evt_x"));
  Open();
  PublishResult again = Publish(MakeEvent("order.created", "evt_x"));
  EXPECT_TRUE(again.duplicate);
  EXPECT_EQ(again.sequence, first.sequence);
}

TEST_F(BrokerTest, RetentionByCountAndAge) {
  config_.retention_count = 5;
  Open();
  for (int i = 0; i < 10; ++i) Publish(MakeEvent("order.created"));
  broker_->Tick();
  auto stats = broker_->GetStats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->total_events(), 5u);
  EXPECT_EQ(stats->first_sequence(), 6u);
  EXPECT_EQ(stats->last_sequence(), 10u);

  clock_.Advance(absl::Hours(24 * 8));
  Publish(MakeEvent("order.created"));
  broker_->Tick();
  stats = broker_->GetStats();
  EXPECT_EQ(stats->total_events(), 1u) << "events older than 7 days are gone";
  EXPECT_EQ(stats->first_sequence(), 11u);
}

TEST_F(BrokerTest, BroadcastGetsMatchingEventsFromStartThenLive) {
  Publish(MakeEvent("order.created"));
  Publish(MakeEvent("cart.abandoned"));
  CollectingSink sink;
  v1::SubscribeRequest req;
  req.set_start(v1::SubscribeRequest::EARLIEST);
  req.add_types("order.*");
  Subscribe(sink, req);
  Publish(MakeEvent("order.completed"));
  auto got = sink.WaitFor(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].event->type, "order.created");
  EXPECT_EQ(got[1].event->type, "order.completed");
  EXPECT_EQ(got[1].attempt, 1u);
  EXPECT_TRUE(got[1].ack_id.empty());
}

TEST_F(BrokerTest, StartPositions) {
  for (int i = 0; i < 5; ++i) Publish(MakeEvent("order.created"));
  CollectingSink latest, from_seq;
  v1::SubscribeRequest req;
  Subscribe(latest, req);
  req.set_start(v1::SubscribeRequest::SEQUENCE);
  req.set_start_sequence(4);
  Subscribe(from_seq, req);
  Publish(MakeEvent("order.created"));
  auto got = from_seq.WaitFor(3);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].event->seq, 4u);
  auto live = latest.WaitFor(1);
  ASSERT_EQ(live.size(), 1u);
  EXPECT_EQ(live[0].event->seq, 6u);

  CollectingSink bad;
  req.set_start_sequence(100);
  auto sub = broker_->Subscribe(req, &bad);
  ASSERT_FALSE(sub.ok());
  EXPECT_EQ(sub.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(sub.status().message(), "start_sequence:")) << sub.status();
}

TEST_F(BrokerTest, StartAtTimeBeginsWithTheFirstEventStoredThen) {
  absl::Time t0 = clock_.Now();
  for (int i = 0; i < 3; ++i) Publish(MakeEvent("order.created"));
  clock_.Advance(absl::Hours(1));
  Publish(MakeEvent("order.paid"));
  Publish(MakeEvent("order.paid"));
  CollectingSink sink;
  v1::SubscribeRequest req;
  req.set_start(v1::SubscribeRequest::TIME);
  *req.mutable_start_time() =
      TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t0 + absl::Minutes(30)));
  Subscribe(sink, req);
  auto got = sink.WaitFor(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].event->seq, 4u);
  EXPECT_EQ(got[1].event->seq, 5u);
  broker_->FlushWrites();
  EXPECT_EQ(sink.count(), 2u);

  CollectingSink missing;
  req.clear_start_time();
  EXPECT_EQ(broker_->Subscribe(req, &missing).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(BrokerTest, UnackedEventIsRedeliveredAfterDeadlineThenDeadLettered) {
  config_.default_max_deliveries = 3;
  Open();
  CollectingSink sink;
  v1::SubscribeRequest req = GroupRequest("workers");
  req.set_max_deliveries(3);
  Subscribe(sink, req);
  Publish(MakeEvent("order.created", "evt_1"));
  auto got = sink.WaitFor(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].attempt, 1u);

  clock_.Advance(absl::Seconds(29));
  broker_->Tick();
  EXPECT_EQ(sink.count(), 1u) << "not before the deadline";
  clock_.Advance(absl::Seconds(2));
  broker_->Tick();
  got = sink.WaitFor(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1].attempt, 2u);
  EXPECT_EQ(got[1].event->seq, got[0].event->seq);

  clock_.Advance(absl::Seconds(31));
  broker_->Tick();
  got = sink.WaitFor(3);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[2].attempt, 3u);

  clock_.Advance(absl::Seconds(31));
  broker_->Tick();
  broker_->FlushWrites();
  EXPECT_EQ(sink.count(), 3u) << "third delivery was the last";
  v1::ListDeadLettersRequest list;
  list.set_group("workers");
  auto dead = broker_->ListDeadLetters(list);
  ASSERT_TRUE(dead.ok());
  ASSERT_EQ(dead->dead_letters_size(), 1);
  EXPECT_EQ(dead->dead_letters(0).event().id(), "evt_1");
  EXPECT_EQ(dead->dead_letters(0).delivery_attempts(), 3u);
  EXPECT_EQ(dead->dead_letters(0).last_error(), "ack deadline expired");
  auto stats = broker_->GetStats();
  ASSERT_EQ(stats->groups_size(), 1);
  EXPECT_EQ(stats->groups(0).dead_lettered(), 1u);
  EXPECT_EQ(stats->groups(0).redelivered(), 2u);
  EXPECT_EQ(stats->groups(0).pending(), 0u);

  // Replay puts it back with a fresh count.
  v1::ReplayDeadLettersRequest replay;
  replay.set_group("workers");
  auto replayed = broker_->ReplayDeadLetters(replay);
  ASSERT_TRUE(replayed.ok()) << replayed.status();
  EXPECT_EQ(replayed->replayed(), 1u);
  got = sink.WaitFor(4);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[3].attempt, 1u);
  EXPECT_TRUE(Ack("workers", {got[3].ack_id}).ok());
  broker_->FlushWrites();
  EXPECT_EQ(broker_->ListDeadLetters(list)->dead_letters_size(), 0);
}

// The dead letter shows what ended its last attempt: that nack's reason
// (not an earlier one's), "nacked" for a nack without one, or the member
// leaving. A reason past 1024 bytes is refused and changes nothing.
TEST_F(BrokerTest, DeadLettersShowTheLastAttemptsError) {
  CollectingSink sink;
  v1::SubscribeRequest req = GroupRequest("workers");
  req.set_max_deliveries(2);
  Subscribe(sink, req);
  for (int i = 1; i <= 3; ++i) Publish(MakeEvent("order.created", absl::StrCat("evt_", i)));
  auto got = sink.WaitFor(3);
  ASSERT_EQ(got.size(), 3u);
  auto nack = [&](const Outgoing& d, std::string reason) {
    v1::NackRequest n;
    n.set_group("workers");
    n.add_ack_ids(d.ack_id);
    n.set_reason(std::move(reason));
    return broker_->Nack(n);
  };
  absl::StatusOr<v1::NackResponse> too_long = nack(got[0], std::string(1025, 'x'));
  ASSERT_TRUE(absl::IsInvalidArgument(too_long.status())) << too_long.status();
  EXPECT_THAT(std::string(too_long.status().message()), ::testing::HasSubstr("reason"));
  // Refused, it changed nothing: attempt 1 is still the one to nack.
  absl::StatusOr<v1::NackResponse> first = nack(got[0], "card declined (attempt 1)");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->nacked(), 1u) << "the refused nack was applied";
  ASSERT_TRUE(nack(got[1], std::string(1024, 'y')).ok());
  got = sink.WaitFor(5);
  ASSERT_EQ(got.size(), 5u);
  for (size_t i = 3; i < 5; ++i) {
    EXPECT_EQ(got[i].attempt, 2u);
    std::string reason = got[i].event->seq == 1 ? "" : "card declined (attempt 2)";
    ASSERT_TRUE(nack(got[i], reason).ok());
  }
  // Event 3 is still held at attempt 1 when its member leaves; once more
  // through a new member, which leaves too.
  sink.Close();
  CollectingSink second;
  Subscribe(second, req);
  ASSERT_EQ(second.WaitFor(1).size(), 1u);
  EXPECT_EQ(second.WaitFor(1)[0].event->seq, 3u);
  EXPECT_EQ(second.WaitFor(1)[0].attempt, 2u);
  second.Close();
  broker_->FlushWrites();
  v1::ListDeadLettersRequest list;
  list.set_group("workers");
  auto dead = broker_->ListDeadLetters(list);
  ASSERT_TRUE(dead.ok()) << dead.status();
  ASSERT_EQ(dead->dead_letters_size(), 3);
  EXPECT_EQ(dead->dead_letters(0).last_error(), "nacked") << "not attempt 1's reason";
  EXPECT_EQ(dead->dead_letters(1).last_error(), "card declined (attempt 2)");
  EXPECT_EQ(dead->dead_letters(2).last_error(), "subscriber left before acking");
}

TEST_F(BrokerTest, NackWithDelayRedeliversAfterDelay) {
  CollectingSink sink;
  Subscribe(sink, GroupRequest("workers"));
  Publish(MakeEvent("order.created"));
  auto got = sink.WaitFor(1);
  ASSERT_EQ(got.size(), 1u);
  v1::NackRequest nack;
  nack.set_group("workers");
  nack.add_ack_ids(got[0].ack_id);
  *nack.mutable_delay() = TimeUtil::SecondsToDuration(5);
  ASSERT_TRUE(broker_->Nack(nack).ok());
  sink.Drain();
  EXPECT_EQ(sink.count(), 1u);
  clock_.Advance(absl::Seconds(5));
  broker_->Tick();
  got = sink.WaitFor(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1].attempt, 2u);
}

TEST_F(BrokerTest, MembersShareWorkAndRespectMaxInFlight) {
  CollectingSink a, b;
  v1::SubscribeRequest req = GroupRequest("workers");
  req.set_max_in_flight(3);
  Subscribe(a, req);
  Subscribe(b, req);
  for (int i = 0; i < 10; ++i) Publish(MakeEvent("order.created"));
  a.WaitFor(3);
  b.WaitFor(3);
  broker_->FlushWrites();
  EXPECT_EQ(a.count(), 3u);
  EXPECT_EQ(b.count(), 3u);
  std::set<uint64_t> seen;
  for (auto& o : a.WaitFor(3)) EXPECT_TRUE(seen.insert(o.event->seq).second);
  for (auto& o : b.WaitFor(3)) EXPECT_TRUE(seen.insert(o.event->seq).second) << "delivered twice";
  // Acking frees a slot.
  ASSERT_TRUE(Ack("workers", {a.WaitFor(3)[0].ack_id}).ok());
  EXPECT_EQ(a.WaitFor(4).size(), 4u);
}

TEST_F(BrokerTest, GroupResumesFromCommittedPositionAfterRestart) {
  {
    CollectingSink sink;
    Subscribe(sink, GroupRequest("workers"));
    for (int i = 0; i < 4; ++i) Publish(MakeEvent("order.created"));
    auto got = sink.WaitFor(4);
    ASSERT_EQ(got.size(), 4u);
    ASSERT_TRUE(Ack("workers", {got[0].ack_id, got[1].ack_id, got[3].ack_id}).ok());
    broker_->FlushWrites();
  }
  Publish(MakeEvent("order.created"));  // seq 5, never delivered
  broker_->FlushWrites();
  Open();  // restart on the same data dir
  CollectingSink sink;
  // LATEST is ignored for an existing group: it resumes.
  Subscribe(sink, GroupRequest("workers", v1::SubscribeRequest::LATEST));
  auto got = sink.WaitFor(2);
  ASSERT_EQ(got.size(), 2u);
  std::map<uint64_t, uint32_t> by_seq;
  for (auto& o : got) by_seq[o.event->seq] = o.attempt;
  EXPECT_THAT(by_seq, ::testing::ElementsAre(::testing::Pair(3u, 2u), ::testing::Pair(5u, 1u)));
}

TEST_F(BrokerTest, AckErrorsNameTheField) {
  CollectingSink sink;
  Subscribe(sink, GroupRequest("workers"));
  Publish(MakeEvent("order.created"));
  auto got = sink.WaitFor(1);
  auto r = Ack("workers", {got[0].ack_id, "garbage"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(r.status().message(), "ack_ids[1]:")) << r.status();
  r = Ack("workers", {"99-1"});
  EXPECT_TRUE(absl::StartsWith(r.status().message(), "ack_ids[0]: unknown ack id")) << r.status();
  r = Ack("nope", {got[0].ack_id});
  EXPECT_TRUE(absl::StartsWith(r.status().message(), "group:")) << r.status();
  r = Ack("workers", {});
  EXPECT_EQ(r.status().message(), "ack_ids: empty");
  // Nothing changed: the event is still pending and can be acked once.
  r = Ack("workers", {got[0].ack_id});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->acked(), 1u);
  r = Ack("workers", {got[0].ack_id});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->already_acked(), 1u);
}

TEST_F(BrokerTest, PausedBroadcastSubscriberStaysBoundedAndCatchesUp) {
  config_.broadcast_buffer = 16;
  config_.cache_events = 64;
  Open();
  CollectingSink slow, fast;
  v1::SubscribeRequest req;
  slow.SetPaused(true);
  Subscribe(slow, req);
  Subscribe(fast, req);
  for (int i = 0; i < 50; ++i) {
    std::vector<events::v1::Event> batch;
    for (int j = 0; j < 20; ++j) batch.push_back(MakeEvent("order.created"));
    ASSERT_TRUE(broker_->PublishAndWait(std::move(batch)).ok());
  }
  EXPECT_EQ(fast.WaitFor(1000).size(), 1000u);
  EXPECT_EQ(slow.count(), 0u);
  slow.SetPaused(false);
  // It catches up from the store, past the in-memory cache.
  auto got = slow.WaitFor(1000);
  ASSERT_EQ(got.size(), 1000u);
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i].event->seq, i + 1);
}

TEST_F(BrokerTest, PublishRejectsBadInputAndStoresNothing) {
  auto r = broker_->PublishAndWait({});
  EXPECT_EQ(r.status().message(), "events: empty batch");
  r = broker_->PublishAndWait({MakeEvent("order.created"), MakeEvent("Bad")});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StartsWith(r.status().message(), "events[1].type:")) << r.status();
  EXPECT_EQ(broker_->GetStats()->total_events(), 0u) << "a bad batch stores nothing";
}

// The broker parses publish requests as wire twins whose event `data` is
// bytes (raw_event.proto): they must keep every other field of the public
// messages, by number, name and type, or the broker would drop fields.
TEST(RawEventTest, WireTwinsHaveThePublicMessagesFields) {
  using google::protobuf::Descriptor;
  using google::protobuf::FieldDescriptor;
  auto same = [](const Descriptor* pub, const Descriptor* raw) {
    ASSERT_EQ(pub->field_count(), raw->field_count()) << pub->full_name();
    for (int i = 0; i < pub->field_count(); ++i) {
      const FieldDescriptor* f = pub->field(i);
      const FieldDescriptor* r = raw->FindFieldByNumber(f->number());
      ASSERT_NE(r, nullptr) << f->full_name();
      EXPECT_EQ(r->name(), f->name());
      if (f->full_name() == "switchboard.events.v1.Event.data") {
        EXPECT_EQ(r->type(), FieldDescriptor::TYPE_BYTES);
        EXPECT_TRUE(r->is_repeated()) << "every occurrence kept, as protobuf merges them";
        continue;
      }
      ASSERT_EQ(r->type(), f->type()) << f->full_name();
      EXPECT_EQ(r->is_repeated(), f->is_repeated()) << f->full_name();
      if (f->is_map()) {
        ASSERT_TRUE(r->is_map()) << f->full_name();
        EXPECT_EQ(r->message_type()->map_key()->type(), f->message_type()->map_key()->type());
        EXPECT_EQ(r->message_type()->map_value()->type(), f->message_type()->map_value()->type());
      } else if (f->message_type() == events::v1::Event::descriptor()) {
        EXPECT_EQ(r->message_type(), internal::RawEvent::descriptor()) << f->full_name();
      } else if (f->type() == FieldDescriptor::TYPE_MESSAGE) {
        EXPECT_EQ(r->message_type(), f->message_type()) << f->full_name();
      }
    }
  };
  same(events::v1::Event::descriptor(), internal::RawEvent::descriptor());
  same(v1::PublishRequest::descriptor(), internal::RawPublishRequest::descriptor());
  same(v1::PublishBatchRequest::descriptor(), internal::RawPublishBatchRequest::descriptor());
}

// The stored event is the client's, `data` included: nested objects, lists,
// and an empty object (still present).
TEST_F(BrokerTest, StoredEventsKeepTheirDataWithoutTheBrokerParsingIt) {
  events::v1::Event full = MakeEvent("order.created", "evt-full");
  auto& f = *full.mutable_data()->mutable_fields();
  f["total"].set_number_value(12.5);
  f["paid"].set_bool_value(true);
  auto* items = f["items"].mutable_list_value();
  (*items->add_values()->mutable_struct_value()->mutable_fields())["sku"].set_string_value("a");
  items->add_values()->set_null_value(google::protobuf::NULL_VALUE);
  events::v1::Event empty = MakeEvent("order.created", "evt-empty");
  empty.mutable_data()->Clear();
  empty.mutable_data();  // present, no fields
  events::v1::Event none = MakeEvent("order.created", "evt-none");
  none.clear_data();
  ASSERT_TRUE(broker_->PublishAndWait({full, empty, none}).ok());
  absl::StatusOr<v1::GetEventHistoryResponse> h = [&] {
    v1::GetEventHistoryRequest req;
    req.set_limit(10);
    return broker_->GetEventHistory(req);
  }();
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(h->events_size(), 3);
  std::map<std::string, events::v1::Event> by_id;
  for (const events::v1::Event& e : h->events()) by_id[e.id()] = e;
  EXPECT_TRUE(
      google::protobuf::util::MessageDifferencer::Equals(by_id["evt-full"].data(), full.data()))
      << by_id["evt-full"].data().DebugString();
  EXPECT_TRUE(by_id["evt-empty"].has_data());
  EXPECT_EQ(by_id["evt-empty"].data().fields_size(), 0);
  EXPECT_FALSE(by_id["evt-none"].has_data());
}

// What the broker accepts must parse where an event sits deepest: in a
// DeliveryBatch (batch, delivery, event, data), one level deeper than in the
// publish request.
TEST_F(BrokerTest, PublishRefusesDataTooDeepForADeliveryBatch) {
  auto prepare = [&](int levels, bool list_leaf) {
    google::protobuf::Struct data;
    google::protobuf::Value& leaf = (*data.mutable_fields())["leaf"];
    if (list_leaf) {
      leaf.mutable_list_value()->add_values()->set_number_value(1);
    } else {
      leaf.set_number_value(1);
    }
    for (int i = 0; i < levels; ++i) {
      google::protobuf::Struct outer;
      *(*outer.mutable_fields())["a"].mutable_struct_value() = std::move(data);
      data = std::move(outer);
    }
    broker::v1::DeliveryBatch batch;
    *batch.add_deliveries()->mutable_event()->mutable_data() = data;
    bool parses = broker::v1::DeliveryBatch().ParseFromString(batch.SerializeAsString());
    internal::RawEvent ev;
    ev.ParseFromString(MakeEvent("order.created").SerializeAsString());
    ev.clear_data();
    ev.add_data(data.SerializeAsString());
    internal::RawEvent* p = &ev;
    return std::make_pair(parses, broker_->Prepare(absl::MakeConstSpan(&p, 1), "event").ok());
  };
  // Below the Struct: 31 levels and a number, 95 messages; with a list
  // holding the number, 97 (a DeliveryBatch's limit); 32 levels, 98 (within
  // a publish request's limit, past a DeliveryBatch's).
  EXPECT_EQ(prepare(31, false), std::make_pair(true, true));
  EXPECT_EQ(prepare(31, true), std::make_pair(true, true));
  EXPECT_EQ(prepare(32, false), std::make_pair(false, false));
}

// Unknown fields are kept, but groups among them nest no deeper than 8.
TEST_F(BrokerTest, PublishRefusesUnknownGroupsNestedDeep) {
  auto prepare = [&](int depth) {
    std::string groups;
    for (int i = 0; i < depth; ++i) groups = "\xa3\x01" + groups + "\xa4\x01";  // field 20
    internal::RawEvent ev;
    EXPECT_TRUE(ev.ParseFromString(MakeEvent("order.created").SerializeAsString() + groups));
    internal::RawEvent* p = &ev;
    return broker_->Prepare(absl::MakeConstSpan(&p, 1), "event").status();
  };
  EXPECT_TRUE(prepare(8).ok());
  absl::Status deep = prepare(9);
  EXPECT_EQ(deep.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(deep.message(), "event: unknown fields nest groups 9 deep (at most 8)");
}

// Field 8 twice on the wire (two serialized events concatenated): protobuf
// merges the two Structs, and a subscriber must see both halves.
TEST_F(BrokerTest, DataSentInTwoPiecesIsStoredAsProtobufMergesThem) {
  events::v1::Event first = MakeEvent("order.created", "evt-pieces");
  first.mutable_data()->Clear();
  (*first.mutable_data()->mutable_fields())["a"].set_number_value(1);
  events::v1::Event second;
  (*second.mutable_data()->mutable_fields())["b"].set_number_value(2);
  internal::RawEvent raw;
  ASSERT_TRUE(raw.ParseFromString(first.SerializeAsString() + second.SerializeAsString()));
  ASSERT_EQ(raw.data_size(), 2);
  internal::RawEvent* p = &raw;
  absl::StatusOr<std::vector<NewEvent>> prepared =
      broker_->Prepare(absl::MakeConstSpan(&p, 1), "event");
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  absl::Notification committed;
  broker_->Append(*std::move(prepared), [&](absl::StatusOr<std::vector<PublishResult>> r) {
    EXPECT_TRUE(r.ok()) << r.status();
    committed.Notify();
  });
  ASSERT_TRUE(committed.WaitForNotificationWithTimeout(absl::Seconds(10)));
  v1::GetEventHistoryRequest req;
  req.set_limit(10);
  absl::StatusOr<v1::GetEventHistoryResponse> h = broker_->GetEventHistory(req);
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(h->events_size(), 1);
  const auto& fields = h->events(0).data().fields();
  EXPECT_EQ(fields.size(), 2u);
  EXPECT_TRUE(fields.contains("a") && fields.contains("b"));
}

TEST_F(BrokerTest, PublishRefusesDataThatIsNotAStruct) {
  internal::RawEvent ev;
  ev.ParseFromString(MakeEvent("order.created").SerializeAsString());
  ev.add_data(std::string("\x0a\x05\x0a\x01", 4));  // an entry longer than the data
  internal::RawEvent* p = &ev;
  absl::StatusOr<std::vector<NewEvent>> prepared =
      broker_->Prepare(absl::MakeConstSpan(&p, 1), "events");
  EXPECT_EQ(prepared.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(prepared.status().message(), "events[0].data: not a valid google.protobuf.Struct");
}

// Item 11 of the robustness issue: a group-state change the store always
// refuses used to be put back in front of the queue and committed with every
// later publish, failing them all; and FlushWrites counted it as done.
}  // namespace
}  // namespace switchboard::broker
