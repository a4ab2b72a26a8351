#include "services/console/console.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/message.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/support/byte_buffer.h>

#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "libs/common/proto_json.h"
#include "services/console/console_assets.h"
#include "switchboard/broker/v1/broker.pb.h"
#include "switchboard/jobs/v1/jobs.pb.h"
#include "switchboard/webhooks/v1/webhooks.pb.h"

namespace switchboard::console {
namespace {

// What the console's page may call, and nothing else: the reads of its
// views and the actions of its buttons.
struct Method {
  absl::string_view service;  // as in the route
  absl::string_view grpc_service;
  absl::string_view name;
};
constexpr Method kMethods[] = {
    {"broker", "switchboard.broker.v1.EventBroker", "GetStats"},
    {"broker", "switchboard.broker.v1.EventBroker", "GetEventHistory"},
    {"broker", "switchboard.broker.v1.EventBroker", "ListDeadLetters"},
    {"broker", "switchboard.broker.v1.EventBroker", "ReplayDeadLetters"},
    {"jobs", "switchboard.jobs.v1.JobWorker", "GetStats"},
    {"jobs", "switchboard.jobs.v1.JobWorker", "ListJobs"},
    {"jobs", "switchboard.jobs.v1.JobWorker", "GetJob"},
    {"jobs", "switchboard.jobs.v1.JobWorker", "PauseQueue"},
    {"jobs", "switchboard.jobs.v1.JobWorker", "ResumeQueue"},
    {"webhooks", "switchboard.webhooks.v1.WebhookService", "ListWebhooks"},
    {"webhooks", "switchboard.webhooks.v1.WebhookService", "GetStats"},
    {"webhooks", "switchboard.webhooks.v1.WebhookService", "ListDeliveries"},
    {"webhooks", "switchboard.webhooks.v1.WebhookService", "RedeliverEvent"},
    {"webhooks", "switchboard.webhooks.v1.WebhookService", "SendTestEvent"},
};

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& addr, const ClientTlsConfig& tls) {
  if (addr.empty()) return nullptr;
  grpc::ChannelArguments args;
  AddTlsChannelArgs(tls, &args);
  return grpc::CreateCustomChannel(addr, GrpcChannelCredentials(tls), args);
}

HttpResponse ServeAsset(const HttpRequest& req) {
  absl::string_view name = req.path;
  absl::ConsumePrefix(&name, "/console/");
  if (name.empty()) name = "index.html";
  for (const Asset& a : ConsoleAssets()) {
    if (a.name != name) continue;
    HttpResponse r{200, std::string(a.content_type), std::string(a.data)};
    // The page has no data of its own; a strict policy keeps any injected
    // markup from running or loading anything from elsewhere.
    r.headers.emplace_back("Content-Security-Policy",
                           "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
    r.headers.emplace_back("X-Content-Type-Options", "nosniff");
    return r;
  }
  return ErrorResponse(absl::NotFoundError(absl::StrCat("no console file '", name, "'")));
}

}  // namespace

Console::Console(ConsoleConfig config)
    : config_(std::move(config)),
      jobs_(MakeChannel(config_.jobs_addr, config_.tls)),
      webhooks_(MakeChannel(config_.webhooks_addr, config_.tls)) {
  // The methods are found by name in the generated pool, which holds a
  // .proto's types only once something of it is linked in: name one type of
  // each here.
  (void)broker::v1::GetStatsRequest::descriptor();
  (void)jobs::v1::GetStatsRequest::descriptor();
  (void)webhooks::v1::GetStatsRequest::descriptor();
}

Console::~Console() = default;

void Console::SetBrokerChannel(std::shared_ptr<grpc::Channel> channel) {
  absl::MutexLock lock(&mu_);
  broker_ = std::move(channel);
}

std::shared_ptr<grpc::Channel> Console::ChannelFor(absl::string_view service) {
  if (service == "jobs") return jobs_;
  if (service == "webhooks") return webhooks_;
  absl::MutexLock lock(&mu_);
  return broker_;
}

void Console::Register(AdminHttpServer* http) {
  http->PublicRoute("GET", "/console", [](const HttpRequest&) {
    HttpResponse r{302, "text/plain", "/console/"};
    r.headers.emplace_back("Location", "/console/");
    return r;
  });
  http->PublicRoute("GET", "/console/", ServeAsset);
  http->Route("POST", "/api/console/rpc/", [this](const HttpRequest& req) {
    // A page elsewhere can make a browser POST a form or text/plain here,
    // cookies and client certificate included, without asking (CSRF);
    // JSON needs a CORS preflight, which this port never grants.
    auto type = req.headers.find("content-type");
    if (type == req.headers.end() || !absl::StartsWith(type->second, "application/json")) {
      return ErrorResponse(absl::InvalidArgumentError(
          "Content-Type: must be application/json (the console's calls are JSON)"));
    }
    absl::string_view rest = req.path;
    absl::ConsumePrefix(&rest, "/api/console/rpc/");
    size_t slash = rest.find('/');
    if (slash == absl::string_view::npos) {
      return ErrorResponse(absl::NotFoundError(
          absl::StrCat("no console method '", rest, "' (use /api/console/rpc/SERVICE/METHOD)")));
    }
    return Call(rest.substr(0, slash), rest.substr(slash + 1), req);
  });
}

HttpResponse Console::Call(absl::string_view service, absl::string_view method,
                           const HttpRequest& request) {
  const Method* found = nullptr;
  for (const Method& m : kMethods) {
    if (m.service == service && m.name == method) found = &m;
  }
  if (found == nullptr) {
    return ErrorResponse(absl::NotFoundError(absl::StrCat(
        "no console method '", service.substr(0, 40), "/", method.substr(0, 60), "'")));
  }
  const google::protobuf::MethodDescriptor* md =
      google::protobuf::DescriptorPool::generated_pool()->FindMethodByName(
          absl::StrCat(found->grpc_service, ".", found->name));
  if (md == nullptr) return ErrorResponse(absl::InternalError("console: method not linked in"));
  google::protobuf::MessageFactory* factory = google::protobuf::MessageFactory::generated_factory();
  std::unique_ptr<google::protobuf::Message> in(factory->GetPrototype(md->input_type())->New());
  std::unique_ptr<google::protobuf::Message> out(factory->GetPrototype(md->output_type())->New());
  bool empty = request.body.find_first_not_of(" \t\r\n") == std::string::npos;
  if (absl::Status s = JsonToProto(empty ? "{}" : request.body, in.get()); !s.ok()) {
    return ErrorResponse(s);
  }
  std::shared_ptr<grpc::Channel> channel = ChannelFor(service);
  if (channel == nullptr) {
    return ErrorResponse(absl::UnavailableError(
        service == "broker" ? std::string("console: the broker's gRPC server is not up yet")
                            : absl::StrCat("console: --console_", service,
                                           "_addr is not set, so this view is off")));
  }
  // The caller's bearer token goes along; gRPC aborts the process on a
  // metadata value it cannot send, so only printable ASCII passes.
  auto authorization = request.headers.find("authorization");
  if (authorization != request.headers.end()) {
    for (char c : authorization->second) {
      if (c < 0x20 || c > 0x7e) {
        return ErrorResponse(absl::UnauthenticatedError(
            "authorization: only printable ASCII is a valid bearer token"));
      }
    }
  } else if (!request.caller.anonymous) {
    // Authenticated by a client certificate alone: there is nothing to
    // forward, and the console's own certificate must not stand in for it.
    return ErrorResponse(absl::UnauthenticatedError(
        "authorization: the console calls the services with your bearer token; send one"));
  }
  std::string bytes = in->SerializeAsString();
  grpc::Slice slice(bytes);
  grpc::ByteBuffer send(&slice, 1);
  grpc::ByteBuffer received;
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + config_.call_timeout));
  if (authorization != request.headers.end()) {
    ctx.AddMetadata("authorization", authorization->second);
  }
  grpc::GenericStub stub(channel);
  absl::Notification done;
  grpc::Status status;
  // Blocks this admin HTTP thread (never a gRPC one) for at most the deadline.
  stub.UnaryCall(&ctx, absl::StrCat("/", found->grpc_service, "/", found->name),
                 grpc::StubOptions(), &send, &received, [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  if (!status.ok()) {
    return ErrorResponse(
        absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message()));
  }
  std::vector<grpc::Slice> slices;
  std::string answer;
  if (received.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) {
      answer.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  if (!out->ParseFromString(answer)) {
    return ErrorResponse(absl::InternalError("console: the service's answer does not parse"));
  }
  return HttpResponse{200, "application/json", ProtoToJson(*out)};
}

}  // namespace switchboard::console
