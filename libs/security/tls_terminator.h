#ifndef SWITCHBOARD_LIBS_SECURITY_TLS_TERMINATOR_H_
#define SWITCHBOARD_LIBS_SECURITY_TLS_TERMINATOR_H_

#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/security/ssl_reloader.h"
#include "libs/security/tls.h"

namespace switchboard {

// HTTPS in front of a plain HTTP server on loopback (the admin port's
// civetweb): accepts TLS (mTLS with a client CA) on the public address and
// relays each connection's bytes to the backend port.
//
// Why not civetweb's own TLS: Debian 12's civetweb 1.15 loads libssl with
// dlopen and looks up SSL_get_peer_certificate, which OpenSSL 3 no longer
// exports, so its HTTPS cannot start.
//
// One thread per connection, at most `max_connections` (more are closed at
// once); a handshake must finish within `handshake_timeout` of the accept
// (the acceptor shuts down connections past it, however slowly they drip
// bytes), and a connection that sends nothing for `idle_timeout` is closed.
class TlsTerminator {
 public:
  struct Options {
    int max_connections = 64;
    absl::Duration handshake_timeout = absl::Seconds(5);
    absl::Duration idle_timeout = absl::Seconds(30);
  };
  TlsTerminator(const ServerTlsConfig& tls, Options options);
  ~TlsTerminator();
  TlsTerminator(const TlsTerminator&) = delete;
  TlsTerminator& operator=(const TlsTerminator&) = delete;

  // Listens on `addr` (HOST:PORT, port 0 picks one) and relays to
  // 127.0.0.1:`backend_port`. Returns the bound port.
  absl::StatusOr<int> Start(const std::string& addr, int backend_port);
  // Closes the listener and every connection, joins every thread.
  void Stop();

  // The verified client certificate's identities (SAN DNS and URI names,
  // then the CN) of the connection the terminator relays from local port
  // `backend_port` (the remote port the backend sees); empty if none.
  std::vector<std::string> PeerIdentities(int backend_port) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void AcceptLoop();
  void Serve(int fd);
  void Relay(void* ssl, int fd, int backend);

  const Options options_;
  SslReloader reloader_;
  void* ssl_ctx_ = nullptr;  // SSL_CTX*
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  int backend_port_ = 0;
  std::thread acceptor_;
  std::atomic<bool> stopping_{false};
  mutable absl::Mutex mu_;
  std::set<int> open_fds_ ABSL_GUARDED_BY(mu_);
  // Connections still in their handshake, and when it must be done.
  std::map<int, absl::Time> handshake_deadline_ ABSL_GUARDED_BY(mu_);
  // Client identities by the local port of the relay's backend connection.
  std::map<int, std::vector<std::string>> identities_ ABSL_GUARDED_BY(mu_);
  struct Connection {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  // Finished ones are joined at the next accept, so this stays bounded.
  std::vector<Connection> connections_ ABSL_GUARDED_BY(mu_);
  int active_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_SECURITY_TLS_TERMINATOR_H_
