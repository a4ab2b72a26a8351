#include "services/job_worker/handlers.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"

namespace switchboard::jobs {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

const Value* Field(const Struct& s, const std::string& name) {
  auto it = s.fields().find(name);
  return it == s.fields().end() ? nullptr : &it->second;
}

std::string StringField(const Struct& s, const std::string& name, const std::string& def = "") {
  const Value* v = Field(s, name);
  return v != nullptr && v->has_string_value() ? v->string_value() : def;
}

double NumberField(const Struct& s, const std::string& name, double def = 0) {
  const Value* v = Field(s, name);
  return v != nullptr && v->kind_case() == Value::kNumberValue ? v->number_value() : def;
}

events::v1::Event Emit(const std::string& type) {
  events::v1::Event ev;
  ev.set_type(type);
  return ev;
}

void Set(events::v1::Event& ev, const std::string& key, const std::string& v) {
  (*ev.mutable_data()->mutable_fields())[key].set_string_value(v);
}
void Set(events::v1::Event& ev, const std::string& key, double v) {
  (*ev.mutable_data()->mutable_fields())[key].set_number_value(v);
}
void Set(events::v1::Event& ev, const std::string& key, const char* v) {
  Set(ev, key, std::string(v));
}
void Copy(events::v1::Event& ev, const Struct& from, const std::string& key) {
  if (const Value* v = Field(from, key)) (*ev.mutable_data()->mutable_fields())[key] = *v;
}

// The order a job is about: orderId in the data, else the event subject.
std::string OrderIdOf(const events::v1::Event& trigger) {
  std::string id = StringField(trigger.data(), "orderId");
  return id.empty() ? trigger.subject() : id;
}

// An order.* event in the original design's OrderStatusWebhook shape: the
// order as the triggering event carried it (orderId, orderNumber,
// customerId, total, currency, items, paymentInfo, metadata), with this
// step's status and when it changed. Status vocabulary: created,
// payment_processing, paid, payment_failed, inventory_reserved, confirmed,
// completed.
events::v1::Event OrderEvent(const std::string& type, const events::v1::Event& trigger,
                             const std::string& order_id, const std::string& status) {
  events::v1::Event ev = Emit(type);
  const Struct& in = trigger.data();
  Set(ev, "orderId", order_id);
  for (const char* key :
       {"orderNumber", "customerId", "total", "currency", "items", "paymentInfo", "metadata"}) {
    Copy(ev, in, key);
  }
  auto& f = *ev.mutable_data()->mutable_fields();
  if (!f.count("currency")) f["currency"].set_string_value("USD");
  if (!f.count("items")) f["items"].mutable_list_value();
  if (!f.count("metadata")) f["metadata"].mutable_struct_value();
  if (!f.count("total")) f["total"].set_number_value(0);
  Set(ev, "status", status);
  Set(ev, "statusChangedAt",
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()));
  return ev;
}

class OrderCreation : public JobHandler {
 public:
  absl::StatusOr<JobOutput> Run(const JobContext& ctx) override {
    const Struct& in = ctx.trigger.data();
    // The order id follows from the checkout event, so a re-run after a
    // crash names the same order.
    std::string suffix = ctx.trigger.id().substr(ctx.trigger.id().find('_') + 1);
    std::string order_id = absl::StrCat("ord_", suffix);
    absl::StatusOr<uint64_t> number = ctx.next_counter("orderNumber");
    if (!number.ok()) return number.status();
    events::v1::Event ev = OrderEvent("order.created", ctx.trigger, order_id, "created");
    ev.set_subject(order_id);
    (*ev.mutable_data()->mutable_fields()).erase("paymentInfo");
    Set(ev, "orderNumber", static_cast<double>(*number));
    Set(ev, "customerId", StringField(in, "customerId", ctx.trigger.user_id()));
    Set(ev, "total", NumberField(in, "total"));
    return JobOutput{{std::move(ev)}};
  }
};

class PaymentProcessing : public JobHandler {
 public:
  absl::StatusOr<JobOutput> Run(const JobContext& ctx) override {
    const Struct& in = ctx.trigger.data();
    std::string order_id = OrderIdOf(ctx.trigger);
    double total = NumberField(in, "total");
    std::string customer = StringField(in, "customerId");
    JobOutput out;
    events::v1::Event processing =
        OrderEvent("order.payment_processing", ctx.trigger, order_id, "payment_processing");
    Set(processing, "amount", total);
    out.events.push_back(std::move(processing));

    std::string reason;
    if (ctx.payment_rule.fail_above_total() > 0 && total > ctx.payment_rule.fail_above_total()) {
      reason = absl::StrCat("amount ", total, " is above the limit of ",
                            ctx.payment_rule.fail_above_total());
    }
    for (const std::string& c : ctx.payment_rule.fail_customer_ids()) {
      if (c == customer) reason = absl::StrCat("customer ", customer, " is declined");
    }
    if (!reason.empty()) {
      events::v1::Event failed =
          OrderEvent("order.payment_failed", ctx.trigger, order_id, "payment_failed");
      Set(failed, "amount", total);
      Set(failed, "reason", reason);
      Struct& payment =
          *(*failed.mutable_data()->mutable_fields())["paymentInfo"].mutable_struct_value();
      (*payment.mutable_fields())["status"].set_string_value("failed");
      (*payment.mutable_fields())["amount"].set_number_value(total);
      (*payment.mutable_fields())["reason"].set_string_value(reason);
      out.events.push_back(std::move(failed));
    } else {
      events::v1::Event done = OrderEvent("order.payment_completed", ctx.trigger, order_id, "paid");
      std::string payment_id = absl::StrCat("pay_", order_id.substr(order_id.find('_') + 1));
      Set(done, "amount", total);
      Set(done, "paymentId", payment_id);
      Struct& payment =
          *(*done.mutable_data()->mutable_fields())["paymentInfo"].mutable_struct_value();
      (*payment.mutable_fields())["paymentId"].set_string_value(payment_id);
      (*payment.mutable_fields())["method"].set_string_value(
          StringField(in, "paymentMethod", "card"));
      (*payment.mutable_fields())["amount"].set_number_value(total);
      (*payment.mutable_fields())["status"].set_string_value("captured");
      out.events.push_back(std::move(done));
    }
    return out;
  }
};

class InventoryUpdate : public JobHandler {
 public:
  absl::StatusOr<JobOutput> Run(const JobContext& ctx) override {
    events::v1::Event ev = OrderEvent("order.inventory_updated", ctx.trigger,
                                      OrderIdOf(ctx.trigger), "inventory_reserved");
    return JobOutput{{std::move(ev)}};
  }
};

class SendConfirmation : public JobHandler {
 public:
  absl::StatusOr<JobOutput> Run(const JobContext& ctx) override {
    std::string order_id = OrderIdOf(ctx.trigger);
    events::v1::Event sent =
        OrderEvent("order.confirmation_sent", ctx.trigger, order_id, "confirmed");
    Set(sent, "channel", "email");
    events::v1::Event completed = OrderEvent("order.completed", ctx.trigger, order_id, "completed");
    return JobOutput{{std::move(sent), std::move(completed)}};
  }
};

class AbandonedCartEmail : public JobHandler {
 public:
  absl::StatusOr<JobOutput> Run(const JobContext& ctx) override {
    events::v1::Event ev = Emit("email.sent");
    Copy(ev, ctx.trigger.data(), "customerId");
    Copy(ev, ctx.trigger.data(), "cartId");
    Set(ev, "template", "abandoned-cart");
    return JobOutput{{std::move(ev)}};
  }
};

class Noop : public JobHandler {
 public:
  absl::StatusOr<JobOutput> Run(const JobContext&) override { return JobOutput{}; }
};

class Flaky : public JobHandler {
 public:
  absl::StatusOr<JobOutput> Run(const JobContext& ctx) override {
    double fail_times = NumberField(ctx.trigger.data(), "failTimes", 2);
    if (fail_times < 0 || ctx.job.attempt() <= fail_times) {
      return absl::UnavailableError(
          absl::StrCat("flaky: attempt ", ctx.job.attempt(), " fails on purpose"));
    }
    return JobOutput{};
  }
};

// Sleeps data.sleepMs (default 1000), waking early at its deadline.
class Sleep : public JobHandler {
 public:
  absl::StatusOr<JobOutput> Run(const JobContext& ctx) override {
    absl::Time until =
        absl::Now() + absl::Milliseconds(NumberField(ctx.trigger.data(), "sleepMs", 1000));
    absl::Time wake = std::min(until, ctx.deadline);
    if (ctx.cancel != nullptr) {
      ctx.cancel->WaitForNotificationWithDeadline(wake);
    } else {
      absl::SleepFor(wake - absl::Now());
    }
    return JobOutput{};
  }
};

}  // namespace

void HandlerRegistry::Register(const std::string& job_type, std::unique_ptr<JobHandler> handler) {
  handlers_[job_type] = std::move(handler);
}

JobHandler* HandlerRegistry::Find(const std::string& job_type) const {
  auto it = handlers_.find(job_type);
  return it == handlers_.end() ? nullptr : it->second.get();
}

std::vector<std::string> HandlerRegistry::Types() const {
  std::vector<std::string> out;
  for (const auto& [type, h] : handlers_) out.push_back(type);
  return out;
}

void RegisterBuiltinHandlers(HandlerRegistry* registry) {
  registry->Register("order-creation", std::make_unique<OrderCreation>());
  registry->Register("payment-processing", std::make_unique<PaymentProcessing>());
  registry->Register("inventory-update", std::make_unique<InventoryUpdate>());
  registry->Register("send-confirmation", std::make_unique<SendConfirmation>());
  registry->Register("abandoned-cart-email", std::make_unique<AbandonedCartEmail>());
  registry->Register("noop", std::make_unique<Noop>());
  registry->Register("flaky", std::make_unique<Flaky>());
  registry->Register("sleep", std::make_unique<Sleep>());
}

}  // namespace switchboard::jobs
