#ifndef SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_SEALED_WEBHOOK_STORE_H_
#define SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_SEALED_WEBHOOK_STORE_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "libs/security/secret_box.h"
#include "services/webhook_delivery/webhook_store.h"

namespace switchboard::webhooks {

// Signing secrets encrypted at rest, in front of any WebhookStore (SQLite or
// Redis): every Put seals the current and previous secret with the box's
// first key (so rotating --secrets_key_file re-seals a record at its next
// write), every read opens them with whichever key sealed them. A store
// copied without the key reveals no secret. Without a box, secrets are
// written as they are, and a sealed one read back is FAILED_PRECONDITION
// naming --secrets_key_file.
class SealedWebhookStore : public WebhookStore {
 public:
  SealedWebhookStore(std::unique_ptr<WebhookStore> inner, std::optional<SecretBox> box);

  bool shared() const override { return inner_->shared(); }
  absl::StatusOr<uint64_t> Put(const WebhookRecord& record) override;
  absl::StatusOr<std::optional<WebhookRecord>> Get(const std::string& id) override;
  absl::StatusOr<bool> Delete(const std::string& id) override { return inner_->Delete(id); }
  absl::StatusOr<std::vector<WebhookRecord>> List() override;
  absl::StatusOr<uint64_t> Generation() override { return inner_->Generation(); }

  WebhookStore* inner() { return inner_.get(); }

  // Seals every record not sealed with the first key yet (written before the
  // key file was set, or under an older key), so that after a start the old
  // key can go. Returns how many it sealed; an error when a record does not
  // open (its key is missing).
  absl::StatusOr<int> ResealAll();

 private:
  absl::Status OpenRecord(WebhookRecord* record) const;

  std::unique_ptr<WebhookStore> inner_;
  std::optional<SecretBox> box_;
};

}  // namespace switchboard::webhooks

#endif  // SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_SEALED_WEBHOOK_STORE_H_
