#ifndef SWITCHBOARD_LIBS_COMMON_THREAD_NAME_H_
#define SWITCHBOARD_LIBS_COMMON_THREAD_NAME_H_

#include <pthread.h>

#include <string>

namespace switchboard {

// Names the calling thread (shown by top -H, perf and gdb); at most 15 chars.
inline void SetThreadName(const std::string& name) {
  pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
}

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_COMMON_THREAD_NAME_H_
