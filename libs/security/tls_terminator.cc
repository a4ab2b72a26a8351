#include "libs/security/tls_terminator.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace switchboard {
namespace {

void SetTimeout(int fd, absl::Duration d) {
  timeval tv = absl::ToTimeval(d);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

// The identities of a verified client certificate, as gRPC reports them:
// SAN DNS and URI names, then the CN.
std::vector<std::string> CertificateIdentities(SSL* ssl) {
  std::vector<std::string> out;
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (cert == nullptr || SSL_get_verify_result(ssl) != X509_V_OK) return out;
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type == GEN_DNS || n->type == GEN_URI) {
      const ASN1_IA5STRING* v = n->type == GEN_DNS ? n->d.dNSName : n->d.uniformResourceIdentifier;
      out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(v)),
                       static_cast<size_t>(ASN1_STRING_length(v)));
    }
  }
  GENERAL_NAMES_free(names);
  char cn[256];
  int len = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn));
  if (len > 0) out.emplace_back(cn, static_cast<size_t>(len));
  return out;
}

bool WriteAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

}  // namespace

TlsTerminator::TlsTerminator(const ServerTlsConfig& tls, Options options)
    : options_(options), reloader_(tls) {}

TlsTerminator::~TlsTerminator() {
  Stop();
  if (ssl_ctx_ != nullptr) SSL_CTX_free(static_cast<SSL_CTX*>(ssl_ctx_));
}

absl::StatusOr<int> TlsTerminator::Start(const std::string& addr, int backend_port) {
  if (absl::Status s = reloader_.Load(); !s.ok()) return s;
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) return absl::InternalError("SSL_CTX_new failed");
  reloader_.Configure(ctx);
  ssl_ctx_ = ctx;
  backend_port_ = backend_port;

  size_t colon = addr.rfind(':');
  int port = 0;
  std::string host = colon == std::string::npos ? "" : addr.substr(0, colon);
  if (colon == std::string::npos || !absl::SimpleAtoi(addr.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError(absl::StrCat("http_addr: '", addr, "' is not HOST:PORT"));
  }
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  sockaddr_storage ss{};
  socklen_t len;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (host.empty() || inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    if (host.empty()) v4->sin_addr.s_addr = htonl(INADDR_ANY);
    len = sizeof(*v4);
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    len = sizeof(*v6);
  } else {
    return absl::InvalidArgumentError(absl::StrCat("http_addr: '", host, "' is not an address"));
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || listen(fd, 128) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    std::string why = std::strerror(errno);
    if (fd >= 0) close(fd);
    return absl::UnavailableError(absl::StrCat("http_addr: cannot listen on ", addr, ": ", why));
  }
  if (pipe2(wake_, O_CLOEXEC) != 0) {
    close(fd);
    return absl::InternalError("pipe2 failed");
  }
  listen_fd_ = fd;
  int bound = ntohs(ss.ss_family == AF_INET ? v4->sin_port : v6->sin6_port);
  acceptor_ = std::thread([this] { AcceptLoop(); });
  return bound;
}

void TlsTerminator::AcceptLoop() {
  int pause_ms = 0;  // after a failed accept (out of descriptors): no busy loop
  while (!stopping_.load()) {
    pollfd fds[2] = {{listen_fd_, static_cast<short>(pause_ms > 0 ? 0 : POLLIN), 0},
                     {wake_[0], POLLIN, 0}};
    // Wakes at least once a second to cut handshakes past their deadline.
    int ready = poll(fds, 2, pause_ms > 0 ? pause_ms : 1000);
    pause_ms = 0;
    if (fds[1].revents != 0 || stopping_.load()) break;
    absl::MutexLock lock(&mu_);
    absl::Time now = absl::Now();
    for (const auto& [conn, deadline] : handshake_deadline_) {
      if (now >= deadline) shutdown(conn, SHUT_RDWR);
    }
    for (auto it = connections_.begin(); it != connections_.end();) {
      if (it->done->load()) {
        it->thread.join();
        it = connections_.erase(it);
      } else {
        ++it;
      }
    }
    if (ready <= 0 || (fds[0].revents & POLLIN) == 0) continue;
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        pause_ms = 100;
      }
      continue;
    }
    if (active_ >= options_.max_connections) {
      close(fd);
      continue;
    }
    auto done = std::make_shared<std::atomic<bool>>(false);
    std::thread thread;
    try {
      thread = std::thread([this, fd, done] {
        Serve(fd);
        done->store(true);
      });
    } catch (const std::system_error&) {  // no thread to be had: refuse this one
      close(fd);
      continue;
    }
    ++active_;
    open_fds_.insert(fd);
    handshake_deadline_[fd] = now + options_.handshake_timeout;
    connections_.push_back({std::move(thread), done});
  }
}

void TlsTerminator::Serve(int fd) {
  // Until it is registered (after this thread started) the acceptor holds
  // mu_; waiting for it keeps the fd bookkeeping in one order.
  { absl::MutexLock lock(&mu_); }
  SSL* ssl = SSL_new(static_cast<SSL_CTX*>(ssl_ctx_));
  int backend = -1;
  int relay_port = -1;
  SetTimeout(fd, options_.handshake_timeout);
  bool shaken =
      ssl != nullptr && SSL_set_fd(ssl, fd) == 1 && !stopping_.load() && SSL_accept(ssl) == 1;
  {
    absl::MutexLock lock(&mu_);
    handshake_deadline_.erase(fd);
  }
  if (shaken) {
    backend = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in b{};
    b.sin_family = AF_INET;
    b.sin_port = htons(static_cast<uint16_t>(backend_port_));
    b.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sockaddr_in local{};
    socklen_t local_len = sizeof(local);
    if (backend >= 0 && connect(backend, reinterpret_cast<sockaddr*>(&b), sizeof(b)) == 0 &&
        getsockname(backend, reinterpret_cast<sockaddr*>(&local), &local_len) == 0) {
      relay_port = ntohs(local.sin_port);
      {
        absl::MutexLock lock(&mu_);
        open_fds_.insert(backend);
        identities_[relay_port] = CertificateIdentities(ssl);
      }
      SetTimeout(fd, options_.idle_timeout);
      SetTimeout(backend, options_.idle_timeout);
      char buf[16384];
      int idle_ms = static_cast<int>(absl::ToInt64Milliseconds(options_.idle_timeout));
      bool open = true;
      while (open && !stopping_.load()) {
        pollfd fds[2] = {{fd, POLLIN, 0}, {backend, POLLIN, 0}};
        // Bytes OpenSSL already decrypted do not show on the socket.
        if (SSL_pending(ssl) == 0 && poll(fds, 2, idle_ms) <= 0) break;
        if (SSL_pending(ssl) > 0 || fds[0].revents != 0) {
          int n = SSL_read(ssl, buf, sizeof(buf));
          open = n > 0 && WriteAll(backend, buf, static_cast<size_t>(n));
        }
        if (open && fds[1].revents != 0) {
          ssize_t n = recv(backend, buf, sizeof(buf), 0);
          open = n > 0 && SSL_write(ssl, buf, static_cast<int>(n)) == n;
        }
      }
    }
  }
  ERR_clear_error();
  if (ssl != nullptr) {
    if (shaken) SSL_shutdown(ssl);
    SSL_free(ssl);
  }
  absl::MutexLock lock(&mu_);
  if (backend >= 0) {
    open_fds_.erase(backend);
    close(backend);
  }
  if (relay_port >= 0) identities_.erase(relay_port);
  open_fds_.erase(fd);
  close(fd);
  --active_;
}

std::vector<std::string> TlsTerminator::PeerIdentities(int backend_port) const {
  absl::MutexLock lock(&mu_);
  auto it = identities_.find(backend_port);
  return it == identities_.end() ? std::vector<std::string>() : it->second;
}

void TlsTerminator::Stop() {
  if (listen_fd_ < 0) return;
  stopping_ = true;
  (void)!write(wake_[1], "x", 1);
  if (acceptor_.joinable()) acceptor_.join();
  std::vector<Connection> connections;
  {
    absl::MutexLock lock(&mu_);
    // Wakes every connection blocked in poll, a read or a handshake.
    for (int fd : open_fds_) shutdown(fd, SHUT_RDWR);
    connections.swap(connections_);
  }
  for (Connection& c : connections) c.thread.join();
  close(listen_fd_);
  close(wake_[0]);
  close(wake_[1]);
  listen_fd_ = -1;
}

}  // namespace switchboard
