#pragma once
// The CUDA driver API, opened at run time.
//
// sparsejit never links libcuda: on a machine without a GPU driver (CI, a build host) the
// library and the CLI still start, compile kernels with NVRTC and use the database. The
// driver's entry points are resolved once through cuGetProcAddress, which picks the version
// of each function that matches the cuda.h we were built with.
//
// Use through SJ_CU(call), which checks the result and names the call in the error:
//     SJ_CU(cuMemAlloc(&ptr, bytes));
#include <cuda.h>

#include <string>

namespace sparsejit::jit {

// Every driver function sparsejit calls. X(name) with the name as written in cuda.h;
// cuda.h's own macros map it to the versioned symbol (cuMemAlloc -> cuMemAlloc_v2).
#define SPARSEJIT_DRIVER_FUNCTIONS(X) \
  X(cuInit)                           \
  X(cuDriverGetVersion)               \
  X(cuGetErrorName)                   \
  X(cuGetErrorString)                 \
  X(cuDeviceGetCount)                 \
  X(cuDeviceGet)                      \
  X(cuDeviceGetName)                  \
  X(cuDeviceGetAttribute)             \
  X(cuDeviceTotalMem)                 \
  X(cuDeviceGetUuid)                  \
  X(cuDevicePrimaryCtxRetain)         \
  X(cuDevicePrimaryCtxRelease)        \
  X(cuCtxSetCurrent)                  \
  X(cuCtxGetCurrent)                  \
  X(cuCtxSynchronize)                 \
  X(cuModuleLoadData)                 \
  X(cuModuleUnload)                   \
  X(cuModuleGetFunction)              \
  X(cuFuncSetAttribute)               \
  X(cuFuncGetAttribute)               \
  X(cuLaunchKernel)                   \
  X(cuMemAlloc)                       \
  X(cuMemFree)                        \
  X(cuMemGetInfo)                     \
  X(cuMemcpyHtoD)                     \
  X(cuMemcpyDtoH)                     \
  X(cuMemcpyDtoDAsync)                \
  X(cuMemsetD8)                       \
  X(cuStreamCreate)                   \
  X(cuStreamDestroy)                  \
  X(cuStreamSynchronize)              \
  X(cuEventCreate)                    \
  X(cuEventRecord)                    \
  X(cuEventSynchronize)               \
  X(cuEventElapsedTime)               \
  X(cuEventDestroy)

struct DriverApi {
#define SPARSEJIT_DECLARE_POINTER(name) decltype(&::name) name = nullptr;
  SPARSEJIT_DRIVER_FUNCTIONS(SPARSEJIT_DECLARE_POINTER)
#undef SPARSEJIT_DECLARE_POINTER
};

// The driver, opened and initialized (cuInit) on first use; thread-safe.
// Throws NoGpuError when libcuda.so.1 is missing or cuInit fails (no device, no driver),
// with one line saying which.
const DriverApi& driver();

// True when driver() would succeed; never throws. `why` receives the reason when false.
bool driver_available(std::string* why = nullptr);

// Throws CudaError naming `call` when `result` is not CUDA_SUCCESS.
void check_driver_result(CUresult result, const char* call);

}  // namespace sparsejit::jit

// Calls a driver function through the loaded table and checks its result.
#define SJ_CU(call) ::sparsejit::jit::check_driver_result(::sparsejit::jit::driver().call, #call)
