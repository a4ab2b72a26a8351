#ifndef SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_DELIVERY_STORE_H_
#define SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_DELIVERY_STORE_H_

#include <sqlite3.h>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/common/sqlite_util.h"
#include "libs/common/wal_checkpointer.h"
#include "services/webhook_delivery/due_index.h"
#include "switchboard/webhooks/v1/webhooks.pb.h"

namespace switchboard::webhooks {

// An endpoint's rate limit as a token bucket: `burst` tokens at most, one
// more every 1/per_second s, one taken per request.
struct RateLimitSpec {
  double per_second = 0;
  double burst = 1;
};

// Token buckets per endpoint, for stores that keep them in memory.
class RateBuckets {
 public:
  // Takes a token of `webhook_id` at `now` if it has one; otherwise returns
  // false and sets *next to when it will.
  bool Take(const std::string& webhook_id, const RateLimitSpec& rate, absl::Time now,
            absl::Time* next);

 private:
  struct Bucket {
    double tokens = 0;
    absl::Time last = absl::InfinitePast();
  };
  std::map<std::string, Bucket> buckets_;
};

// A delivery with the request body it sends on every attempt.
struct DeliveryRecord {
  v1::WebhookDelivery delivery;  // status, attempts, next_attempt_at
  std::string body;
  absl::Time next_attempt = absl::InfinitePast();
  // The claim this copy came from (Claim sets it): only its holder's write
  // of this claim counts.
  uint64_t claim = 0;
};

// A claimed delivery: its id and the claim's token.
using ClaimRef = std::pair<std::string, uint64_t>;

// What a claim may take (see DeliveryStore::Claim).
struct ClaimRequest {
  absl::Time now;
  size_t limit = 0;
  // Endpoints that can take nothing more now on this replica: their backlog
  // must not hide the others' deliveries.
  std::vector<std::string> skip_webhooks;
  std::string owner;  // the claiming replica
  // Identifies this claim: the same request sent again (a lost reply)
  // answers the same deliveries instead of claiming more.
  std::string request_id;
  absl::Duration lease = absl::Seconds(30);
  // Deliveries of one endpoint under lease at once, over every replica.
  int max_per_webhook = 8;
  // The endpoints that have a rate limit.
  std::map<std::string, RateLimitSpec> rate_limits;
};

struct Claimed {
  std::vector<DeliveryRecord> records;
  // Endpoints whose due deliveries wait for their rate limit, with when the
  // next request may go.
  std::map<std::string, absl::Time> throttled;
  // Endpoints with due deliveries and max_per_webhook under lease already
  // (by other replicas too).
  std::set<std::string> full;
};

// The outbox: deliveries are recorded here before the broker event is acked,
// so a crash loses none. (webhook_id, event_id) is unique: recording the same
// event again after a redelivery creates nothing new. Replicas sharing the
// outbox claim due deliveries under a lease: a claimed delivery is nobody
// else's until its owner records the attempt, gives it back, or stops
// renewing the lease (it died), when it is due again for everyone.
class DeliveryStore {
 public:
  virtual ~DeliveryStore() = default;
  // Returns how many were new.
  virtual absl::StatusOr<int> Create(const std::vector<DeliveryRecord>& records) = 0;
  // Create, only while the webhook registry sharing this store is still at
  // `registry_generation` (WebhookStore::Generation), checked in the same
  // atomic step; when it has moved nothing is written and the answer is
  // kAborted: the caller matched its events against an old registry. With
  // no records it only checks. Stores whose registry no other process
  // changes (WebhookStore::shared false) answer kUnimplemented.
  virtual absl::StatusOr<int> CreateIfRegistryAt(const std::vector<DeliveryRecord>& records,
                                                 uint64_t registry_generation);
  // Replaces a delivery whoever holds it (a redelivery starts over); ends
  // its lease.
  virtual absl::Status Update(const DeliveryRecord& record) = 0;
  // Records attempts of deliveries `owner` claimed, in one transaction, and
  // ends their leases. A delivery claimed again since (by anyone: the lease
  // ran out) or replaced meanwhile (a redelivery) is left as it is: only the
  // write of the record's own claim (DeliveryRecord::claim) counts.
  virtual absl::Status UpdateMany(const std::vector<DeliveryRecord>& records,
                                  const std::string& owner) = 0;
  // Claims up to `limit` pending deliveries due at `now`, earliest first,
  // under a lease for `owner`: neither those of skip_webhooks, nor more of
  // one endpoint than max_per_webhook under lease together, nor more than
  // an endpoint's rate limit lets go now.
  virtual absl::StatusOr<Claimed> Claim(const ClaimRequest& request) = 0;
  // Extends the leases `owner` still holds to `until`.
  virtual absl::Status Renew(const std::vector<std::string>& ids, const std::string& owner,
                             absl::Time until) = 0;
  // Gives claimed deliveries back unattempted: due again for everyone now.
  virtual absl::Status Release(const std::vector<ClaimRef>& claims, const std::string& owner) = 0;
  // When the next pending delivery not of `skip_webhooks` is due (or its
  // lease runs out); InfiniteFuture when none.
  virtual absl::StatusOr<absl::Time> NextDue(
      const std::vector<std::string>& skip_webhooks = {}) = 0;
  virtual absl::StatusOr<std::vector<DeliveryRecord>> List(const std::string& webhook_id,
                                                           v1::DeliveryStatus status,
                                                           const std::string& event_id,
                                                           size_t limit) = 0;
  virtual absl::StatusOr<std::map<int, uint64_t>> CountByStatus() = 0;
  // Pending deliveries due at `now` and scheduled later (or under lease).
  virtual absl::StatusOr<std::pair<uint64_t, uint64_t>> CountPending(absl::Time now) = 0;
};

class SqliteDeliveryStore : public DeliveryStore {
 public:
  struct Options {
    // Claims and wake-ups read the pending deliveries from memory while there
    // are at most this many (a DueIndex, ~150 bytes each); past it, from the
    // table's index, until the backlog is down to half of it again.
    size_t max_indexed = 200'000;
  };
  static absl::StatusOr<std::unique_ptr<SqliteDeliveryStore>> Open(const std::string& data_dir,
                                                                   Options options);
  static absl::StatusOr<std::unique_ptr<SqliteDeliveryStore>> Open(const std::string& data_dir) {
    return Open(data_dir, Options());
  }
  ~SqliteDeliveryStore() override;
  absl::StatusOr<int> Create(const std::vector<DeliveryRecord>& records) override;
  absl::Status Update(const DeliveryRecord& record) override;
  absl::Status UpdateMany(const std::vector<DeliveryRecord>& records,
                          const std::string& owner) override;
  absl::StatusOr<Claimed> Claim(const ClaimRequest& request) override;
  absl::Status Renew(const std::vector<std::string>& ids, const std::string& owner,
                     absl::Time until) override;
  absl::Status Release(const std::vector<ClaimRef>& claims, const std::string& owner) override;
  absl::StatusOr<absl::Time> NextDue(const std::vector<std::string>& skip_webhooks) override;
  absl::StatusOr<std::vector<DeliveryRecord>> List(const std::string& webhook_id,
                                                   v1::DeliveryStatus status,
                                                   const std::string& event_id,
                                                   size_t limit) override;
  absl::StatusOr<std::map<int, uint64_t>> CountByStatus() override;
  absl::StatusOr<std::pair<uint64_t, uint64_t>> CountPending(absl::Time now) override;

  // Whether claims read the pending deliveries from memory (for tests).
  bool indexed() {
    absl::MutexLock lock(&mu_);
    return indexed_;
  }

 private:
  SqliteDeliveryStore(sqlite3* db, Options options) : db_(db), options_(options) {}
  // Status changes (from, to) of rows written, for counts_ once committed.
  using Transitions = std::vector<std::pair<int, int>>;
  absl::Status UpdateLocked(const DeliveryRecord& record, Transitions* moved)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CountLocked(const Transitions& moved) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::vector<DeliveryRecord>> DueLocked(absl::Time now, size_t limit,
                                                        const std::set<std::string>& skip)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Claim's two ways of finding due deliveries (they take the same ones).
  absl::Status ClaimFromIndexLocked(const ClaimRequest& req, std::set<std::string> skip,
                                    std::map<std::string, int> held, Claimed* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ClaimFromTableLocked(const ClaimRequest& req, std::set<std::string> skip,
                                    std::map<std::string, int> held, size_t live, Claimed* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes delivery `r` for req.owner under a new lease.
  void LeaseLocked(const ClaimRequest& req, DeliveryRecord& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reads every pending delivery into due_ when there are few enough;
  // otherwise tries again after a while.
  absl::Status RebuildIndexLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records written (committed) go into due_, or out of it.
  void IndexLocked(const DeliveryRecord& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // COMMIT, or ROLLBACK when that failed and left the transaction open.
  absl::Status CommitLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
  sqlite::StmtCache stmts_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<sqlite::WalCheckpointer> checkpointer_ ABSL_GUARDED_BY(mu_);
  // One process uses the file, so leases and token buckets live in memory:
  // they end with the process, as they should.
  struct Lease {
    std::string owner;
    std::string webhook_id;
    absl::Time until;
    uint64_t token = 0;
  };
  std::map<std::string, Lease> leases_ ABSL_GUARDED_BY(mu_);  // by delivery id
  // Each owner's last claim: the same request again answers the same.
  std::map<std::string, std::pair<std::string, std::vector<std::string>>> last_claims_
      ABSL_GUARDED_BY(mu_);
  uint64_t next_token_ ABSL_GUARDED_BY(mu_) = 0;
  RateBuckets buckets_ ABSL_GUARDED_BY(mu_);
  const Options options_;
  // Every pending delivery while indexed_ (see Options::max_indexed).
  DueIndex due_ ABSL_GUARDED_BY(mu_);
  bool indexed_ ABSL_GUARDED_BY(mu_) = false;
  // Deliveries by status, counted once (at the first CountByStatus) and then
  // kept as rows change: GetStats must not scan the outbox under mu_.
  std::optional<std::map<int, uint64_t>> counts_ ABSL_GUARDED_BY(mu_);
  absl::Time rebuild_after_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace switchboard::webhooks

#endif  // SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_DELIVERY_STORE_H_
