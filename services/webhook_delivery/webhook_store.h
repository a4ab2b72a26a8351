#ifndef SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_WEBHOOK_STORE_H_
#define SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_WEBHOOK_STORE_H_

#include <sqlite3.h>

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

// A registration with what only the service may see: its secrets.
struct WebhookRecord {
  v1::Webhook webhook;  // `secret` holds the current secret
  std::string previous_secret;
  absl::Time previous_expires = absl::InfinitePast();
};

// Durable registry of webhooks (a Redis store comes with the scale-out mode).
class WebhookStore {
 public:
  virtual ~WebhookStore() = default;
  virtual absl::Status Put(const WebhookRecord& record) = 0;
  virtual absl::StatusOr<std::optional<WebhookRecord>> Get(const std::string& id) = 0;
  virtual absl::StatusOr<bool> Delete(const std::string& id) = 0;
  virtual absl::StatusOr<std::vector<WebhookRecord>> List() = 0;
};

class SqliteWebhookStore : public WebhookStore {
 public:
  static absl::StatusOr<std::unique_ptr<SqliteWebhookStore>> Open(const std::string& data_dir);
  ~SqliteWebhookStore() override;
  absl::Status Put(const WebhookRecord& record) override;
  absl::StatusOr<std::optional<WebhookRecord>> Get(const std::string& id) override;
  absl::StatusOr<bool> Delete(const std::string& id) override;
  absl::StatusOr<std::vector<WebhookRecord>> List() override;

 private:
  explicit SqliteWebhookStore(sqlite3* db) : db_(db) {}
  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
  sqlite::StmtCache stmts_ ABSL_GUARDED_BY(mu_);
};

}  // namespace switchboard::webhooks

#endif  // SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_WEBHOOK_STORE_H_
