#ifndef SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_DELIVERY_STORE_H_
#define SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_DELIVERY_STORE_H_

#include <sqlite3.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/common/sqlite_util.h"
#include "switchboard/webhooks/v1/webhooks.pb.h"

namespace switchboard::webhooks {

// A delivery with the request body it sends on every attempt.
struct DeliveryRecord {
  v1::WebhookDelivery delivery;  // status, attempts, next_attempt_at
  std::string body;
  absl::Time next_attempt = absl::InfinitePast();
};

// The outbox: deliveries are recorded here before the broker event is acked,
// so a crash loses none. (webhook_id, event_id) is unique: recording the same
// event again after a redelivery creates nothing new.
class DeliveryStore {
 public:
  virtual ~DeliveryStore() = default;
  // Returns how many were new.
  virtual absl::StatusOr<int> Create(const std::vector<DeliveryRecord>& records) = 0;
  virtual absl::Status Update(const DeliveryRecord& record) = 0;
  // Several updates in one transaction.
  virtual absl::Status UpdateMany(const std::vector<DeliveryRecord>& records) = 0;
  // Pending deliveries due at `now`, earliest first, except those of
  // `skip_webhooks` (endpoints that can take nothing more now: their backlog
  // must not hide the others' deliveries).
  virtual absl::StatusOr<std::vector<DeliveryRecord>> Due(
      absl::Time now, size_t limit, const std::vector<std::string>& skip_webhooks = {}) = 0;
  // When the next pending delivery not of `skip_webhooks` is due;
  // InfiniteFuture when none.
  virtual absl::StatusOr<absl::Time> NextDue(
      const std::vector<std::string>& skip_webhooks = {}) = 0;
  virtual absl::StatusOr<std::vector<DeliveryRecord>> List(const std::string& webhook_id,
                                                           v1::DeliveryStatus status,
                                                           const std::string& event_id,
                                                           size_t limit) = 0;
  virtual absl::StatusOr<std::map<int, uint64_t>> CountByStatus() = 0;
  // Pending deliveries due at `now` and scheduled later.
  virtual absl::StatusOr<std::pair<uint64_t, uint64_t>> CountPending(absl::Time now) = 0;
};

class SqliteDeliveryStore : public DeliveryStore {
 public:
  static absl::StatusOr<std::unique_ptr<SqliteDeliveryStore>> Open(const std::string& data_dir);
  ~SqliteDeliveryStore() override;
  absl::StatusOr<int> Create(const std::vector<DeliveryRecord>& records) override;
  absl::Status Update(const DeliveryRecord& record) override;
  absl::Status UpdateMany(const std::vector<DeliveryRecord>& records) override;
  absl::StatusOr<std::vector<DeliveryRecord>> Due(
      absl::Time now, size_t limit, const std::vector<std::string>& skip_webhooks) override;
  absl::StatusOr<absl::Time> NextDue(const std::vector<std::string>& skip_webhooks) override;
  absl::StatusOr<std::vector<DeliveryRecord>> List(const std::string& webhook_id,
                                                   v1::DeliveryStatus status,
                                                   const std::string& event_id,
                                                   size_t limit) override;
  absl::StatusOr<std::map<int, uint64_t>> CountByStatus() override;
  absl::StatusOr<std::pair<uint64_t, uint64_t>> CountPending(absl::Time now) override;

 private:
  explicit SqliteDeliveryStore(sqlite3* db) : db_(db) {}
  absl::Status UpdateLocked(const DeliveryRecord& record) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
  sqlite::StmtCache stmts_ ABSL_GUARDED_BY(mu_);
};

}  // namespace switchboard::webhooks

#endif  // SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_DELIVERY_STORE_H_
