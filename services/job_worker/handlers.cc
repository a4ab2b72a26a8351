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
void Copy(events::v1::Event& ev, const Struct& from, const std::string& key) {
  if (const Value* v = Field(from, key)) (*ev.mutable_data()->mutable_fields())[key] = *v;
}

// The order a job is about: orderId in the data, else the event subject.
std::string OrderIdOf(const events::v1::Event& trigger) {
  std::string id = StringField(trigger.data(), "orderId");
  return id.empty() ? trigger.subject() : id;
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
    events::v1::Event ev = Emit("order.created");
    ev.set_subject(order_id);
    Set(ev, "orderId", order_id);
    Set(ev, "orderNumber", static_cast<double>(*number));
    Set(ev, "customerId", StringField(in, "customerId", ctx.trigger.user_id()));
    Set(ev, "total", NumberField(in, "total"));
    Set(ev, "currency", StringField(in, "currency", "USD"));
    if (Field(in, "items") != nullptr) {
      Copy(ev, in, "items");
    } else {
      (*ev.mutable_data()->mutable_fields())["items"].mutable_list_value();
    }
    Set(ev, "status", "created");
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
    events::v1::Event processing = Emit("order.payment_processing");
    Set(processing, "orderId", order_id);
    Set(processing, "amount", total);
    Set(processing, "currency", StringField(in, "currency", "USD"));
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
      events::v1::Event failed = Emit("order.payment_failed");
      Set(failed, "orderId", order_id);
      Set(failed, "amount", total);
      Set(failed, "reason", reason);
      Set(failed, "status", "payment_failed");
      out.events.push_back(std::move(failed));
    } else {
      events::v1::Event done = Emit("order.payment_completed");
      Set(done, "orderId", order_id);
      Set(done, "amount", total);
      Set(done, "paymentId", absl::StrCat("pay_", order_id.substr(order_id.find('_') + 1)));
      Set(done, "status", "paid");
      Copy(done, in, "customerId");
      Copy(done, in, "items");
      out.events.push_back(std::move(done));
    }
    return out;
  }
};

class InventoryUpdate : public JobHandler {
 public:
  absl::StatusOr<JobOutput> Run(const JobContext& ctx) override {
    events::v1::Event ev = Emit("order.inventory_updated");
    Set(ev, "orderId", OrderIdOf(ctx.trigger));
    Copy(ev, ctx.trigger.data(), "items");
    Copy(ev, ctx.trigger.data(), "customerId");
    Set(ev, "status", "inventory_reserved");
    return JobOutput{{std::move(ev)}};
  }
};

class SendConfirmation : public JobHandler {
 public:
  absl::StatusOr<JobOutput> Run(const JobContext& ctx) override {
    std::string order_id = OrderIdOf(ctx.trigger);
    events::v1::Event sent = Emit("order.confirmation_sent");
    Set(sent, "orderId", order_id);
    Copy(sent, ctx.trigger.data(), "customerId");
    Set(sent, "channel", "email");
    events::v1::Event completed = Emit("order.completed");
    Set(completed, "orderId", order_id);
    Set(completed, "status", "completed");
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
