#include "services/webhook_delivery/sealed_webhook_store.h"

#include "absl/strings/str_cat.h"

namespace switchboard::webhooks {
namespace {

// Binds a sealed value to its record and field: moved elsewhere it does not
// open.
std::string Context(const std::string& id, const char* field) {
  return absl::StrCat("switchboard webhook ", id, " ", field);
}

}  // namespace

SealedWebhookStore::SealedWebhookStore(std::unique_ptr<WebhookStore> inner,
                                       std::optional<SecretBox> box)
    : inner_(std::move(inner)), box_(std::move(box)) {}

absl::StatusOr<uint64_t> SealedWebhookStore::Put(const WebhookRecord& record) {
  if (!box_.has_value()) return inner_->Put(record);
  WebhookRecord sealed = record;
  const std::string& id = record.webhook.id();
  if (!record.webhook.secret().empty()) {
    absl::StatusOr<std::string> s = box_->Seal(record.webhook.secret(), Context(id, "secret"));
    if (!s.ok()) return s.status();
    sealed.webhook.set_secret(*std::move(s));
  }
  if (!record.previous_secret.empty()) {
    absl::StatusOr<std::string> s =
        box_->Seal(record.previous_secret, Context(id, "previous_secret"));
    if (!s.ok()) return s.status();
    sealed.previous_secret = *std::move(s);
  }
  return inner_->Put(sealed);
}

absl::StatusOr<int> SealedWebhookStore::ResealAll() {
  if (!box_.has_value()) return 0;
  absl::StatusOr<std::vector<WebhookRecord>> raw = inner_->List();
  if (!raw.ok()) return raw.status();
  int resealed = 0;
  for (const WebhookRecord& r : *raw) {
    bool current = box_->SealedWithCurrentKey(r.webhook.secret()) &&
                   (r.previous_secret.empty() || box_->SealedWithCurrentKey(r.previous_secret));
    if (current) continue;
    WebhookRecord open = r;
    if (absl::Status s = OpenRecord(&open); !s.ok()) return s;
    absl::StatusOr<uint64_t> put = Put(open);  // compares r.version
    // Another replica wrote it meanwhile: it sealed it with its key.
    if (!put.ok() && !absl::IsAborted(put.status())) return put.status();
    if (put.ok()) ++resealed;
  }
  return resealed;
}

absl::Status SealedWebhookStore::OpenRecord(WebhookRecord* record) const {
  const std::string& id = record->webhook.id();
  auto open = [&](const std::string& value, const char* field) -> absl::StatusOr<std::string> {
    if (!SecretBox::IsSealed(value)) return value;
    if (!box_.has_value()) {
      return absl::FailedPreconditionError(
          absl::StrCat("webhook ", id,
                       ": its secret is encrypted; start webhook-delivery with the "
                       "--secrets_key_file that sealed it"));
    }
    absl::StatusOr<std::string> plain = box_->Open(value, Context(id, field));
    if (!plain.ok()) {
      return absl::Status(plain.status().code(),
                          absl::StrCat("webhook ", id, ": ", plain.status().message()));
    }
    return plain;
  };
  absl::StatusOr<std::string> secret = open(record->webhook.secret(), "secret");
  if (!secret.ok()) return secret.status();
  absl::StatusOr<std::string> previous = open(record->previous_secret, "previous_secret");
  if (!previous.ok()) return previous.status();
  record->webhook.set_secret(*std::move(secret));
  record->previous_secret = *std::move(previous);
  return absl::OkStatus();
}

absl::StatusOr<std::optional<WebhookRecord>> SealedWebhookStore::Get(const std::string& id) {
  absl::StatusOr<std::optional<WebhookRecord>> r = inner_->Get(id);
  if (!r.ok() || !r->has_value()) return r;
  if (absl::Status s = OpenRecord(&**r); !s.ok()) return s;
  return r;
}

absl::StatusOr<std::vector<WebhookRecord>> SealedWebhookStore::List() {
  absl::StatusOr<std::vector<WebhookRecord>> all = inner_->List();
  if (!all.ok()) return all;
  for (WebhookRecord& r : *all) {
    if (absl::Status s = OpenRecord(&r); !s.ok()) return s;
  }
  return all;
}

}  // namespace switchboard::webhooks
