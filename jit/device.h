#pragma once
// GPUs as the driver reports them, and their primary contexts.
#include <cuda.h>

#include <cstdint>
#include <string>

namespace sparsejit::jit {

struct DeviceInfo {
  int ordinal = 0;
  std::string name;                      // "NVIDIA H100 80GB HBM3"
  int cc_major = 0, cc_minor = 0;        // compute capability
  int sm_count = 0;
  std::int64_t memory_bytes = 0;
  int driver_version = 0;                // e.g. 13000 for CUDA 13.0
  std::string uuid;                      // "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
  int sm_clock_khz = 0;                  // nominal; the tuner records the clock it sees
  int memory_clock_khz = 0;
  int max_shared_bytes_per_block = 0;    // opt-in limit for dynamic shared memory
  int l2_bytes = 0;
};

// Number of GPUs. Throws NoGpuError when there is no driver or no device.
int device_count();
// Throws NoGpuError / CudaError (an ordinal out of range names the count).
DeviceInfo query_device(int ordinal);

// The device's primary context, retained for this object's lifetime. Kernels, buffers and
// streams of sparsejit live in primary contexts, the ones CUDA runtime users (PyTorch) share.
class DeviceContext {
 public:
  explicit DeviceContext(int ordinal);
  ~DeviceContext();
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;

  // Makes this context current on the calling thread.
  void make_current() const;
  int ordinal() const { return ordinal_; }
  CUcontext handle() const { return context_; }

 private:
  int ordinal_;
  CUdevice device_ = 0;
  CUcontext context_ = nullptr;
};

// Makes `context` current on the calling thread for this object's lifetime, then whatever was
// current before again (none, where none was). Held by the entry points that work on the GPU,
// so that each runs in its runtime's context whichever context the caller has current, and
// leaves the caller's (a CUDA runtime user's current device included) as it found it: the
// runtime's calls (Runtime, MaskBuilder, MaskCache, MaskQuality, module loads) and the
// tuner's. Lower-level pieces (DeviceBuffer's constructor, Stream, Kernel::launch, the
// families' launch) work in whatever context is current, as the driver's own calls do. Where
// `context` is already current it costs one cuCtxGetCurrent.
class ScopedCurrentContext {
 public:
  explicit ScopedCurrentContext(CUcontext context);  // throws CudaError where it cannot switch
  explicit ScopedCurrentContext(const DeviceContext& context) : ScopedCurrentContext(context.handle()) {}
  ~ScopedCurrentContext();  // never throws
  ScopedCurrentContext(const ScopedCurrentContext&) = delete;
  ScopedCurrentContext& operator=(const ScopedCurrentContext&) = delete;

 private:
  CUcontext previous_ = nullptr;
  bool switched_ = false;
};

}  // namespace sparsejit::jit
