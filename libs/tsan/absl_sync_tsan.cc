// ThreadSanitizer sees the happens-before of a lock only when the lock's code
// was built with -fsanitize=thread. Debian's Abseil is not, so every
// absl::Mutex (ours, and gRPC's, which it uses for its own locks) would look
// like no lock at all and TSAN would report races on correctly locked data.
//
// This file, linked into every binary of the TSAN build only, interposes the
// entry points of absl::Mutex, absl::CondVar and absl::Notification: each
// calls the real function (found with dlsym(RTLD_NEXT)) and tells TSAN about
// the acquire or release it performs. It adds exactly the edges the real
// primitives provide, so races on data that is *not* under the lock are still
// reported. Lock-order (deadlock) detection is not modelled, and reader locks
// are modelled like exclusive ones (our code takes none).
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/base/config.h"
#include "absl/base/macros.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

#define SB_STR2(x) #x
#define SB_STR(x) SB_STR2(x)

namespace {

// "_ZN4absl" "7debian3" + rest: the mangled name of an Abseil member.
// A leading 'K' in `rest` marks a const member (_ZNK...).
std::string Mangled(const char* rest) {
  std::string ns = SB_STR(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  std::string prefix = "_ZN";
  if (rest[0] == 'K') {
    prefix += 'K';
    ++rest;
  }
  return prefix + "4absl" + std::to_string(ns.size()) + ns + rest;
}

void* Real(const char* rest) {
  std::string name = Mangled(rest);
  void* fn = dlsym(RTLD_NEXT, name.c_str());
  if (fn == nullptr) {
    std::fprintf(stderr, "absl_sync_tsan: no %s\n", name.c_str());
    std::abort();
  }
  return fn;
}

#define REAL(type, rest)                                       \
  static const auto real = reinterpret_cast<type>(Real(rest)); \
  (void)0

void Acquire(const void* p) { __tsan_acquire(const_cast<void*>(p)); }
void Release(const void* p) { __tsan_release(const_cast<void*>(p)); }

// Abseil evaluates a waiter's Condition while it holds the mutex, on the
// waiting thread or on the thread that is unlocking. Evaluating it is a
// critical section of its own: acquire before, release after. The wrapper
// and the Condition live on the waiter's stack and reach the unlocking
// thread through Abseil's (uninstrumented) waiter queue: the waiter releases
// them when it builds them, the evaluator acquires them first.
struct GuardedCondition {
  const void* mu;
  const absl::Condition* cond;
};
bool EvalGuarded(void* arg) {
  Acquire(arg);
  auto* g = static_cast<GuardedCondition*>(arg);
  Acquire(g->mu);
  bool r = g->cond->Eval();
  Release(g->mu);
  return r;
}

// Abseil's own deadlock detector (on in Debian's build) keeps a graph under
// an uninstrumented spin lock, which TSAN would report. Lock-order
// inversions are therefore not checked in this build: the acquire/release
// edges below model happens-before only.
const bool kNoAbslDeadlockGraph = [] {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return true;
}();

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

using VoidFn = void (*)(void*);
using BoolFn = bool (*)(void*);
using CondFn = void (*)(void*, const Condition&);
using CondBoolDurFn = bool (*)(void*, const Condition&, Duration);
using CondBoolTimeFn = bool (*)(void*, const Condition&, Time);
using CvFn = void (*)(void*, Mutex*);
using CvDurFn = bool (*)(void*, Mutex*, Duration);
using CvTimeFn = bool (*)(void*, Mutex*, Time);
using NoteDurFn = bool (*)(const void*, Duration);
using NoteTimeFn = bool (*)(const void*, Time);
using NoteVoidConstFn = void (*)(const void*);

void Mutex::Lock() {
  REAL(VoidFn, "5Mutex4LockEv");
  real(this);
  Acquire(this);
}
void Mutex::ReaderLock() {
  REAL(VoidFn, "5Mutex10ReaderLockEv");
  real(this);
  Acquire(this);
}
bool Mutex::TryLock() {
  REAL(BoolFn, "5Mutex7TryLockEv");
  bool got = real(this);
  if (got) Acquire(this);
  return got;
}
bool Mutex::ReaderTryLock() {
  REAL(BoolFn, "5Mutex13ReaderTryLockEv");
  bool got = real(this);
  if (got) Acquire(this);
  return got;
}
void Mutex::Unlock() {
  REAL(VoidFn, "5Mutex6UnlockEv");
  Release(this);
  real(this);
}
void Mutex::ReaderUnlock() {
  REAL(VoidFn, "5Mutex12ReaderUnlockEv");
  Release(this);
  real(this);
}
void Mutex::LockWhen(const Condition& cond) {
  REAL(CondFn, "5Mutex8LockWhenERKNS0_9ConditionE");
  GuardedCondition g{this, &cond};
  Release(&g);  // published to whichever thread evaluates it
  real(this, Condition(&EvalGuarded, &g));
  Acquire(this);
}
void Mutex::ReaderLockWhen(const Condition& cond) {
  REAL(CondFn, "5Mutex14ReaderLockWhenERKNS0_9ConditionE");
  GuardedCondition g{this, &cond};
  Release(&g);  // published to whichever thread evaluates it
  real(this, Condition(&EvalGuarded, &g));
  Acquire(this);
}
bool Mutex::LockWhenWithTimeout(const Condition& cond, Duration timeout) {
  REAL(CondBoolDurFn, "5Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  GuardedCondition g{this, &cond};
  Release(&g);  // published to whichever thread evaluates it
  bool r = real(this, Condition(&EvalGuarded, &g), timeout);
  Acquire(this);
  return r;
}
bool Mutex::LockWhenWithDeadline(const Condition& cond, Time deadline) {
  REAL(CondBoolTimeFn, "5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  GuardedCondition g{this, &cond};
  Release(&g);  // published to whichever thread evaluates it
  bool r = real(this, Condition(&EvalGuarded, &g), deadline);
  Acquire(this);
  return r;
}
bool Mutex::ReaderLockWhenWithTimeout(const Condition& cond, Duration timeout) {
  REAL(CondBoolDurFn, "5Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  GuardedCondition g{this, &cond};
  Release(&g);  // published to whichever thread evaluates it
  bool r = real(this, Condition(&EvalGuarded, &g), timeout);
  Acquire(this);
  return r;
}
bool Mutex::ReaderLockWhenWithDeadline(const Condition& cond, Time deadline) {
  REAL(CondBoolTimeFn, "5Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  GuardedCondition g{this, &cond};
  Release(&g);  // published to whichever thread evaluates it
  bool r = real(this, Condition(&EvalGuarded, &g), deadline);
  Acquire(this);
  return r;
}
// Await releases the lock while it waits and holds it again on return.
void Mutex::Await(const Condition& cond) {
  REAL(CondFn, "5Mutex5AwaitERKNS0_9ConditionE");
  Release(this);
  GuardedCondition g{this, &cond};
  Release(&g);  // published to whichever thread evaluates it
  real(this, Condition(&EvalGuarded, &g));
  Acquire(this);
}
bool Mutex::AwaitWithTimeout(const Condition& cond, Duration timeout) {
  REAL(CondBoolDurFn, "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Release(this);
  GuardedCondition g{this, &cond};
  Release(&g);  // published to whichever thread evaluates it
  bool r = real(this, Condition(&EvalGuarded, &g), timeout);
  Acquire(this);
  return r;
}
bool Mutex::AwaitWithDeadline(const Condition& cond, Time deadline) {
  REAL(CondBoolTimeFn, "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Release(this);
  GuardedCondition g{this, &cond};
  Release(&g);  // published to whichever thread evaluates it
  bool r = real(this, Condition(&EvalGuarded, &g), deadline);
  Acquire(this);
  return r;
}

void CondVar::Wait(Mutex* mu) {
  REAL(CvFn, "7CondVar4WaitEPNS0_5MutexE");
  Release(mu);
  real(this, mu);
  Acquire(mu);
}
bool CondVar::WaitWithTimeout(Mutex* mu, Duration timeout) {
  REAL(CvDurFn, "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  Release(mu);
  bool r = real(this, mu, timeout);
  Acquire(mu);
  return r;
}
bool CondVar::WaitWithDeadline(Mutex* mu, Time deadline) {
  REAL(CvTimeFn, "7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  Release(mu);
  bool r = real(this, mu, deadline);
  Acquire(mu);
  return r;
}

void Notification::Notify() {
  REAL(VoidFn, "12Notification6NotifyEv");
  Release(this);
  real(this);
}
void Notification::WaitForNotification() const {
  REAL(NoteVoidConstFn, "K12Notification19WaitForNotificationEv");
  real(this);
  Acquire(this);
}
bool Notification::WaitForNotificationWithTimeout(Duration timeout) const {
  REAL(NoteDurFn, "K12Notification30WaitForNotificationWithTimeoutENS0_8DurationE");
  bool r = real(this, timeout);
  if (r) Acquire(this);
  return r;
}
bool Notification::WaitForNotificationWithDeadline(Time deadline) const {
  REAL(NoteTimeFn, "K12Notification31WaitForNotificationWithDeadlineENS0_4TimeE");
  bool r = real(this, deadline);
  if (r) Acquire(this);
  return r;
}

ABSL_NAMESPACE_END
}  // namespace absl
