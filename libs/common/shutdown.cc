#include "libs/common/shutdown.h"

#include <csignal>

namespace switchboard {
namespace {

sigset_t ShutdownSet() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

void BlockShutdownSignals() {
  sigset_t set = ShutdownSet();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // A client that goes away mid-write must not kill the process.
  signal(SIGPIPE, SIG_IGN);
}

int WaitForShutdownSignal() {
  sigset_t set = ShutdownSet();
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  return sig;
}

bool WaitForShutdownSignalFor(absl::Duration timeout) {
  sigset_t set = ShutdownSet();
  timespec ts = absl::ToTimespec(timeout);
  return sigtimedwait(&set, nullptr, &ts) > 0;
}

}  // namespace switchboard
