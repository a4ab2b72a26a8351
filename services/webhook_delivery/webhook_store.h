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
  // Bumped by every write; 0 for a record never stored.
  uint64_t version = 0;
};

// Durable registry of webhooks: embedded (one replica) or shared by every
// replica of a deployment (Redis). Writes compare versions, so two replicas
// changing one webhook at once cannot lose either change.
class WebhookStore {
 public:
  virtual ~WebhookStore() = default;
  // Whether other replicas write to this store too (then the registry
  // re-reads it when Generation moves).
  virtual bool shared() const { return false; }
  // Stores `record` if the stored version is still `record.version` (0: no
  // record with its id yet) and returns the new version; ABORTED when someone
  // changed or removed it in between.
  virtual absl::StatusOr<uint64_t> Put(const WebhookRecord& record) = 0;
  virtual absl::StatusOr<std::optional<WebhookRecord>> Get(const std::string& id) = 0;
  virtual absl::StatusOr<bool> Delete(const std::string& id) = 0;
  virtual absl::StatusOr<std::vector<WebhookRecord>> List() = 0;
  // A number that changes with every Put and Delete (by any replica).
  virtual absl::StatusOr<uint64_t> Generation() = 0;
};

class SqliteWebhookStore : public WebhookStore {
 public:
  static absl::StatusOr<std::unique_ptr<SqliteWebhookStore>> Open(const std::string& data_dir);
  ~SqliteWebhookStore() override;
  absl::StatusOr<uint64_t> Put(const WebhookRecord& record) override;
  absl::StatusOr<std::optional<WebhookRecord>> Get(const std::string& id) override;
  absl::StatusOr<bool> Delete(const std::string& id) override;
  absl::StatusOr<std::vector<WebhookRecord>> List() override;
  absl::StatusOr<uint64_t> Generation() override;

 private:
  explicit SqliteWebhookStore(sqlite3* db) : db_(db) {}
  absl::StatusOr<std::optional<WebhookRecord>> GetLocked(const std::string& id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
  sqlite::StmtCache stmts_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // one process writes
};

}  // namespace switchboard::webhooks

#endif  // SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_WEBHOOK_STORE_H_
