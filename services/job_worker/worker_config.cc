#include "services/job_worker/worker_config.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "libs/common/event_rules.h"
#include "libs/common/proto_time.h"

namespace switchboard::jobs {
namespace {

using google::protobuf::util::TimeUtil;

absl::Duration FromProto(const google::protobuf::Duration& d) { return FromProtoDuration(d); }

bool IsQueueName(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) return false;
  }
  return true;
}

v1::JobMapping Mapping(const std::string& event, const std::string& job, const std::string& queue) {
  v1::JobMapping m;
  m.set_event_type(event);
  m.set_job_type(job);
  m.set_queue(queue);
  return m;
}

class TextErrors : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (first.empty()) first = absl::StrCat("line ", line + 1, ":", column + 1, ": ", message);
  }
  std::string first;
};

}  // namespace

const JobRoute* ResolvedConfig::Find(const std::string& event_type) const {
  for (const JobRoute& r : routes) {
    if (r.event_type == event_type) return &r;
  }
  return nullptr;
}

std::vector<std::string> ResolvedConfig::EventTypes() const {
  std::vector<std::string> out;
  for (const JobRoute& r : routes) out.push_back(r.event_type);
  return out;
}

std::vector<v1::JobMapping> DefaultMappings() {
  return {Mapping("order.checkout_initiated", "order-creation", "order-processing"),
          Mapping("order.created", "payment-processing", "payments"),
          Mapping("order.payment_completed", "inventory-update", "inventory"),
          Mapping("order.inventory_updated", "send-confirmation", "notifications"),
          Mapping("cart.abandoned", "abandoned-cart-email", "notifications")};
}

absl::StatusOr<v1::WorkerConfig> ParseWorkerConfig(const std::string& content,
                                                   const std::string& filename) {
  v1::WorkerConfig config;
  size_t first = content.find_first_not_of(" \t\r\n");
  bool json =
      absl::EndsWith(filename, ".json") || (first != std::string::npos && content[first] == '{');
  if (json) {
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = false;
    auto s = google::protobuf::util::JsonStringToMessage(content, &config, options);
    if (!s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(filename, ": ", s.message().ToString()));
    }
    return config;
  }
  google::protobuf::TextFormat::Parser parser;
  TextErrors errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(content, &config)) {
    return absl::InvalidArgumentError(absl::StrCat(filename, ": ", errors.first));
  }
  return config;
}

absl::StatusOr<v1::WorkerConfig> LoadWorkerConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("config: cannot read '", path, "'"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseWorkerConfig(ss.str(), path);
}

absl::StatusOr<ResolvedConfig> ResolveWorkerConfig(const v1::WorkerConfig& config,
                                                   const std::vector<std::string>& job_types) {
  ResolvedConfig out;
  std::vector<v1::JobMapping> mappings;
  if (!config.replace_default_mappings()) mappings = DefaultMappings();
  std::set<std::string> seen;
  for (int i = 0; i < config.mappings_size(); ++i) {
    const v1::JobMapping& m = config.mappings(i);
    std::string f = absl::StrCat("mappings[", i, "]");
    if (!IsValidEventType(m.event_type())) {
      return absl::InvalidArgumentError(absl::StrCat(
          f, ".event_type: '", m.event_type(), "' is not an event type like 'order.created'"));
    }
    if (std::find(job_types.begin(), job_types.end(), m.job_type()) == job_types.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(f, ".job_type: unknown job type '", m.job_type(),
                       "' (known: ", absl::StrJoin(job_types, ", "), ")"));
    }
    if (!IsQueueName(m.queue())) {
      return absl::InvalidArgumentError(
          absl::StrCat(f, ".queue: '", m.queue(), "' is not a queue name ([a-z0-9_-], 1..64)"));
    }
    if (m.priority() < -1000 || m.priority() > 1000) {
      return absl::InvalidArgumentError(
          absl::StrCat(f, ".priority: ", m.priority(), " is not between -1000 and 1000"));
    }
    if (!seen.insert(m.event_type()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(f, ".event_type: '", m.event_type(), "' is mapped twice"));
    }
    mappings.erase(
        std::remove_if(mappings.begin(), mappings.end(),
                       [&](const v1::JobMapping& d) { return d.event_type() == m.event_type(); }),
        mappings.end());
    mappings.push_back(m);
  }
  if (mappings.empty()) return absl::InvalidArgumentError("mappings: none left to run");
  for (const v1::JobMapping& m : mappings) {
    out.routes.push_back(JobRoute{m.event_type(), m.job_type(), m.queue(), m.priority()});
    out.queues[m.queue()].name = m.queue();
  }
  for (int i = 0; i < config.queues_size(); ++i) {
    const v1::QueueConfig& q = config.queues(i);
    std::string f = absl::StrCat("queues[", i, "]");
    if (!IsQueueName(q.name())) {
      return absl::InvalidArgumentError(
          absl::StrCat(f, ".name: '", q.name(), "' is not a queue name ([a-z0-9_-], 1..64)"));
    }
    if (out.queues.count(q.name()) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(f, ".name: no mapping uses queue '", q.name(), "'"));
    }
    QueueSettings& s = out.queues[q.name()];
    if (q.concurrency() != 0) {
      if (q.concurrency() > 1000) {
        return absl::InvalidArgumentError(absl::StrCat(f, ".concurrency: at most 1000"));
      }
      s.concurrency = q.concurrency();
    }
    if (q.global_concurrency() > 100000) {
      return absl::InvalidArgumentError(absl::StrCat(f, ".globalConcurrency: at most 100000"));
    }
    s.global_concurrency = q.global_concurrency();
    if (q.attempts() != 0) {
      if (q.attempts() > 100) {
        return absl::InvalidArgumentError(absl::StrCat(f, ".attempts: at most 100"));
      }
      s.attempts = q.attempts();
    }
    if (q.has_timeout()) {
      absl::Duration t = FromProto(q.timeout());
      if (t <= absl::ZeroDuration() || t > absl::Hours(24)) {
        return absl::InvalidArgumentError(absl::StrCat(f, ".timeout: must be in (0, 24h]"));
      }
      s.timeout = t;
    }
    if (q.has_backoff()) {
      const v1::BackoffConfig& b = q.backoff();
      if (b.has_initial()) {
        absl::Duration d = FromProto(b.initial());
        if (d <= absl::ZeroDuration() || d > absl::Hours(1)) {
          return absl::InvalidArgumentError(
              absl::StrCat(f, ".backoff.initial: must be in (0, 1h]"));
        }
        s.backoff.initial = d;
      }
      if (b.multiplier() != 0) {
        if (b.multiplier() < 1 || b.multiplier() > 10) {
          return absl::InvalidArgumentError(
              absl::StrCat(f, ".backoff.multiplier: must be in [1, 10]"));
        }
        s.backoff.multiplier = b.multiplier();
      }
      if (b.has_max()) {
        absl::Duration d = FromProto(b.max());
        if (d <= absl::ZeroDuration() || d > absl::Hours(24)) {
          return absl::InvalidArgumentError(absl::StrCat(f, ".backoff.max: must be in (0, 24h]"));
        }
        s.backoff.max = d;
      }
      if (b.jitter() < 0 || b.jitter() > 1) {
        return absl::InvalidArgumentError(absl::StrCat(f, ".backoff.jitter: must be in [0, 1]"));
      }
      if (b.jitter() != 0) s.backoff.jitter = b.jitter();
      if (s.backoff.max < s.backoff.initial) {
        return absl::InvalidArgumentError(
            absl::StrCat(f, ".backoff.max: smaller than backoff.initial"));
      }
    }
  }
  if (config.payment_rule().fail_above_total() < 0) {
    return absl::InvalidArgumentError("payment_rule.fail_above_total: must be >= 0");
  }
  out.payment_rule = config.payment_rule();
  return out;
}

}  // namespace switchboard::jobs
