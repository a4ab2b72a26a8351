#ifndef SWITCHBOARD_SERVICES_CONSOLE_CONSOLE_ASSETS_H_
#define SWITCHBOARD_SERVICES_CONSOLE_CONSOLE_ASSETS_H_

#include <vector>

#include "absl/strings/string_view.h"

namespace switchboard::console {

// A file of services/console/web, compiled in by embed_assets.cmake.
struct Asset {
  absl::string_view name;  // path under /console/
  absl::string_view content_type;
  absl::string_view data;
};
const std::vector<Asset>& ConsoleAssets();

}  // namespace switchboard::console

#endif  // SWITCHBOARD_SERVICES_CONSOLE_CONSOLE_ASSETS_H_
