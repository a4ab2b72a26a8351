#ifndef SWITCHBOARD_LIBS_COMMON_SHUTDOWN_H_
#define SWITCHBOARD_LIBS_COMMON_SHUTDOWN_H_

#include "absl/time/time.h"

namespace switchboard {

// Call first in main, before any thread starts, so that SIGTERM and SIGINT
// are delivered only to WaitForShutdownSignal and never interrupt a worker.
void BlockShutdownSignals();

// Blocks until SIGTERM or SIGINT; returns the signal number.
int WaitForShutdownSignal();

// Waits at most `timeout` for SIGTERM or SIGINT; true when one came (it is
// consumed: the caller shuts down).
bool WaitForShutdownSignalFor(absl::Duration timeout);

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_COMMON_SHUTDOWN_H_
