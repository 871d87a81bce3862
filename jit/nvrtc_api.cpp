#include "jit/nvrtc_api.h"

#include <dlfcn.h>

#include <atomic>
#include <cstdlib>
#include <string>

#include "jit/error.h"
#include "jit/shared_library.h"

// From jit/CMakeLists.txt: the NVRTC soname of the toolkit the build used, and its folder.
#ifndef SPARSEJIT_NVRTC_SONAME
#error "SPARSEJIT_NVRTC_SONAME must name the toolkit's libnvrtc (libnvrtc.so.<major>)"
#endif
#ifndef SPARSEJIT_CUDA_LIBRARY_DIR
#define SPARSEJIT_CUDA_LIBRARY_DIR ""
#endif

namespace sparsejit::jit {
namespace {

std::atomic<bool> opened{false};

struct LoadedNvrtc {
  NvrtcApi api;
  std::string failure;  // empty when api is usable: what was tried and why it failed
  bool from_environment = false;
};

LoadedNvrtc load_nvrtc() {
  LoadedNvrtc loaded;
  const char* override_name = std::getenv(kNvrtcLibraryEnvironment);
  loaded.from_environment = override_name != nullptr && *override_name != '\0';
  const OpenedLibrary library = open_first_library(nvrtc_library_candidates());
  if (library.handle == nullptr) {
    loaded.failure = "could not be loaded: tried " +
                     (loaded.from_environment ? std::string("$") + kNvrtcLibraryEnvironment + " = " : std::string()) +
                     describe(library.failed);
    return loaded;
  }
  opened.store(true, std::memory_order_release);
  NvrtcApi& api = loaded.api;
  api.library = library_path(library.handle);
  if (api.library.empty()) api.library = library.name;
#define SPARSEJIT_RESOLVE(function)                                                          \
  {                                                                                          \
    void* pointer = dlsym(library.handle, #function);                                        \
    if (pointer == nullptr) {                                                                \
      loaded.failure = "is not usable: " + api.library + " (opened as " + library.name +     \
                       ") has no " #function "; an NVRTC of CUDA 12.0 or newer is needed";    \
      return loaded;                                                                         \
    }                                                                                        \
    api.function = reinterpret_cast<decltype(api.function)>(pointer);                        \
  }
  SPARSEJIT_NVRTC_FUNCTIONS(SPARSEJIT_RESOLVE)
#undef SPARSEJIT_RESOLVE
  return loaded;
}

const LoadedNvrtc& loaded_nvrtc() {
  static const LoadedNvrtc loaded = load_nvrtc();  // thread-safe initialization, once
  return loaded;
}

}  // namespace

std::vector<std::string> nvrtc_library_candidates() {
  const char* override_name = std::getenv(kNvrtcLibraryEnvironment);
  if (override_name != nullptr && *override_name != '\0') return {override_name};
  std::vector<std::string> candidates = {SPARSEJIT_NVRTC_SONAME, "libnvrtc.so"};
  const std::string folder = SPARSEJIT_CUDA_LIBRARY_DIR;
  if (!folder.empty()) candidates.push_back(folder + "/" + SPARSEJIT_NVRTC_SONAME);
  return candidates;
}

const NvrtcApi& nvrtc(std::string_view purpose) {
  const LoadedNvrtc& loaded = loaded_nvrtc();
  if (loaded.failure.empty()) return loaded.api;
  const std::string fix =
      loaded.from_environment
          ? std::string("; point $") + kNvrtcLibraryEnvironment + " at a libnvrtc that exists, or unset it"
          : std::string("; install CUDA's NVRTC (the toolkit, or its cuda-nvrtc package) and put the folder "
                        "holding " SPARSEJIT_NVRTC_SONAME " on LD_LIBRARY_PATH, or set $") +
                kNvrtcLibraryEnvironment + " to its path";
  throw NvrtcUnavailableError("NVRTC is needed for " + std::string(purpose) + " but " + loaded.failure + fix);
}

bool nvrtc_loaded() { return opened.load(std::memory_order_acquire); }

void check_nvrtc_result(nvrtcResult result, const char* call) {
  if (result == NVRTC_SUCCESS) return;
  const NvrtcApi& api = loaded_nvrtc().api;
  const char* text = api.nvrtcGetErrorString != nullptr ? api.nvrtcGetErrorString(result) : nullptr;
  throw NvrtcError(std::string(call) + " failed: " +
                   (text != nullptr ? std::string(text) : "NVRTC error " + std::to_string(static_cast<int>(result))));
}

}  // namespace sparsejit::jit
