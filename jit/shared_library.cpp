#include "jit/shared_library.h"

#include <dlfcn.h>
#include <link.h>

namespace sparsejit::jit {

OpenedLibrary open_first_library(const std::vector<std::string>& candidates) {
  OpenedLibrary opened;
  for (const std::string& name : candidates) {
    dlerror();  // clears an earlier error
    if (void* handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL)) {
      opened.handle = handle;
      opened.name = name;
      return opened;
    }
    const char* error = dlerror();
    opened.failed.push_back({name, error != nullptr ? error : "dlopen failed without a message"});
  }
  return opened;
}

std::string describe(const std::vector<LibraryAttempt>& attempts) {
  std::string text;
  for (const LibraryAttempt& attempt : attempts)
    text += (text.empty() ? "" : "; ") + attempt.name + " (" + attempt.error + ")";
  return text;
}

std::string library_path(void* handle) {
  link_map* map = nullptr;
  if (handle == nullptr || dlinfo(handle, RTLD_DI_LINKMAP, &map) != 0 || map == nullptr || map->l_name == nullptr)
    return {};
  return map->l_name;
}

}  // namespace sparsejit::jit
