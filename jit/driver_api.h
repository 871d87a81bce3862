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

// Every driver function sparsejit calls, with the ABI version to ask cuGetProcAddress for:
// X(name as written in cuda.h, version). The version is the one whose prototype cuda.h
// declares under that name (cuda.h maps cuMemAlloc to cuMemAlloc_v2, the 3020 ABI); asking
// for the newest instead can return a different signature (CUDA 13's cuCtxSynchronize takes
// a context). A static_assert in driver_api.cpp checks each pair against cudaTypedefs.h.
#define SPARSEJIT_DRIVER_FUNCTIONS(X) \
  X(cuInit, 2000)                     \
  X(cuDriverGetVersion, 2020)         \
  X(cuGetErrorName, 6000)             \
  X(cuGetErrorString, 6000)           \
  X(cuDeviceGetCount, 2000)           \
  X(cuDeviceGet, 2000)                \
  X(cuDeviceGetName, 2000)            \
  X(cuDeviceGetAttribute, 2000)       \
  X(cuDeviceTotalMem, 3020)           \
  X(cuDeviceGetUuid, 11040)           \
  X(cuDevicePrimaryCtxRetain, 7000)   \
  X(cuDevicePrimaryCtxRelease, 11000) \
  X(cuCtxSetCurrent, 4000)            \
  X(cuCtxGetCurrent, 4000)            \
  X(cuCtxGetDevice, 2000)             \
  X(cuCtxSynchronize, 2000)           \
  X(cuCtxGetId, 12000)                \
  X(cuCtxCreate, 12050)               \
  X(cuCtxDestroy, 4000)               \
  X(cuModuleLoadData, 2000)           \
  X(cuModuleUnload, 2000)             \
  X(cuModuleGetFunction, 2000)        \
  X(cuFuncSetAttribute, 9000)         \
  X(cuFuncGetAttribute, 2020)         \
  X(cuLaunchKernel, 4000)             \
  X(cuTensorMapEncodeTiled, 12000)    \
  X(cuOccupancyMaxActiveBlocksPerMultiprocessor, 6050) \
  X(cuMemAlloc, 3020)                 \
  X(cuMemFree, 3020)                  \
  X(cuMemGetInfo, 3020)               \
  X(cuMemcpyHtoD, 3020)               \
  X(cuMemcpyDtoH, 3020)               \
  X(cuMemcpyHtoDAsync, 3020)          \
  X(cuMemcpyDtoDAsync, 3020)          \
  X(cuMemsetD8, 3020)                 \
  X(cuStreamCreate, 2000)             \
  X(cuStreamDestroy, 4000)            \
  X(cuStreamSynchronize, 2000)        \
  X(cuStreamGetId, 12000)             \
  X(cuStreamIsCapturing, 10000)       \
  X(cuStreamBeginCapture, 10010)      \
  X(cuStreamEndCapture, 10000)        \
  X(cuGraphInstantiateWithFlags, 11040) \
  X(cuGraphLaunch, 10000)             \
  X(cuGraphExecDestroy, 10000)        \
  X(cuGraphDestroy, 10000)            \
  X(cuEventCreate, 2000)              \
  X(cuEventRecord, 2000)              \
  X(cuEventSynchronize, 2000)         \
  X(cuEventElapsedTime, 12080)        \
  X(cuEventDestroy, 4000)             

struct DriverApi {
#define SPARSEJIT_DECLARE_POINTER(name, version) decltype(&::name) name = nullptr;
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
