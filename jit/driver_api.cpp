#include "jit/driver_api.h"

#include <cudaTypedefs.h>
#include <dlfcn.h>

#include <mutex>
#include <string>
#include <type_traits>

#include "jit/error.h"
#include "jit/shared_library.h"

namespace sparsejit::jit {
namespace {

using GetProcAddress = CUresult (*)(const char*, void**, int, cuuint64_t,
                                    CUdriverProcAddressQueryResult*);

struct LoadedDriver {
  DriverApi api;
  std::string failure;  // empty when api is usable
};

LoadedDriver load_driver() {
  LoadedDriver loaded;
  const OpenedLibrary library = open_first_library({"libcuda.so.1"});
  if (library.handle == nullptr) {
    loaded.failure = "no CUDA driver: libcuda.so.1 could not be opened (" + library.failed.at(0).error +
                     "); this machine has no NVIDIA GPU driver";
    return loaded;
  }
  auto get_proc = reinterpret_cast<GetProcAddress>(dlsym(library.handle, "cuGetProcAddress_v2"));
  if (get_proc == nullptr) {
    loaded.failure = "the CUDA driver is too old: libcuda.so.1 has no cuGetProcAddress_v2 "
                     "(a driver for CUDA 12.0 or newer is needed)";
    return loaded;
  }
  DriverApi& api = loaded.api;
#define SPARSEJIT_RESOLVE(name, version)                                                   \
  {                                                                                        \
    static_assert(std::is_same_v<decltype(&::name), PFN_##name##_v##version>,              \
                  #name ": cuda.h's prototype is not the requested ABI version");          \
    void* pointer = nullptr;                                                               \
    CUdriverProcAddressQueryResult status{};                                               \
    if (get_proc(#name, &pointer, version, CU_GET_PROC_ADDRESS_DEFAULT, &status) !=        \
            CUDA_SUCCESS ||                                                                \
        pointer == nullptr) {                                                              \
      loaded.failure = "the CUDA driver lacks " #name " (ABI " #version "): update the driver"; \
      return loaded;                                                                       \
    }                                                                                      \
    api.name = reinterpret_cast<decltype(api.name)>(pointer);                              \
  }
  SPARSEJIT_DRIVER_FUNCTIONS(SPARSEJIT_RESOLVE)
#undef SPARSEJIT_RESOLVE

  CUresult init = api.cuInit(0);
  if (init != CUDA_SUCCESS) {
    const char* name = nullptr;
    api.cuGetErrorName(init, &name);
    loaded.failure = std::string("no usable GPU: cuInit failed with ") +
                     (name != nullptr ? name : "an unknown error");
    return loaded;
  }
  int count = 0;
  if (api.cuDeviceGetCount(&count) != CUDA_SUCCESS || count == 0) {
    loaded.failure = "no GPU: the CUDA driver reports no device";
  }
  return loaded;
}

const LoadedDriver& loaded_driver() {
  static const LoadedDriver loaded = load_driver();  // thread-safe initialization
  return loaded;
}

}  // namespace

const DriverApi& driver() {
  const LoadedDriver& loaded = loaded_driver();
  if (!loaded.failure.empty()) throw NoGpuError(loaded.failure);
  return loaded.api;
}

bool driver_available(std::string* why) {
  const LoadedDriver& loaded = loaded_driver();
  if (why != nullptr) *why = loaded.failure;
  return loaded.failure.empty();
}

void check_driver_result(CUresult result, const char* call) {
  if (result == CUDA_SUCCESS) return;
  const char* name = nullptr;
  const char* text = nullptr;
  const DriverApi& api = loaded_driver().api;
  if (api.cuGetErrorName != nullptr) api.cuGetErrorName(result, &name);
  if (api.cuGetErrorString != nullptr) api.cuGetErrorString(result, &text);
  std::string message = name != nullptr ? name : "CUDA error " + std::to_string(result);
  if (text != nullptr) message += std::string(" (") + text + ")";
  throw CudaError(static_cast<int>(result), call, message);
}

}  // namespace sparsejit::jit
