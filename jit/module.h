#pragma once
// CUBIN -> loaded module -> kernel -> launch, through the driver API.
#include <cuda.h>

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>

namespace sparsejit::jit {

class DeviceContext;

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

struct LaunchConfig {
  Dim3 grid;
  Dim3 block;
  unsigned dynamic_shared_bytes = 0;
  CUstream stream = nullptr;
};

// A function of a loaded module. Cheap to copy; valid while its LoadedModule lives.
class Kernel {
 public:
  Kernel(CUfunction function, std::string name) : function_(function), name_(std::move(name)) {}

  // Raises the function's dynamic shared memory limit; needed above 48 KB.
  void allow_dynamic_shared_bytes(unsigned bytes) const;
  // Launches with args[i] pointing at the i-th kernel parameter. Throws CudaError naming
  // the kernel and the geometry when the driver refuses the launch.
  void launch(const LaunchConfig& config, void** args) const;
  int registers_per_thread() const;
  const std::string& name() const { return name_; }
  CUfunction handle() const { return function_; }

 private:
  CUfunction function_;
  std::string name_;
};

// A CUBIN loaded into a context; unloaded when the last owner lets go.
class LoadedModule {
 public:
  // `lowered_names` maps each name expression to its mangled name (from NVRTC). The context
  // must outlive the module.
  static std::shared_ptr<LoadedModule> load(const DeviceContext& context,
                                            std::span<const std::uint8_t> cubin,
                                            std::map<std::string, std::string> lowered_names);
  ~LoadedModule();
  LoadedModule(const LoadedModule&) = delete;
  LoadedModule& operator=(const LoadedModule&) = delete;

  // The kernel for a name expression given at compile time (e.g. "sparsejit::f<1>").
  Kernel kernel(const std::string& name_expression) const;

 private:
  LoadedModule(const DeviceContext& context, CUmodule module,
               std::map<std::string, std::string> lowered_names)
      : context_(context), module_(module), lowered_names_(std::move(lowered_names)) {}
  const DeviceContext& context_;
  CUmodule module_;
  std::map<std::string, std::string> lowered_names_;
};

}  // namespace sparsejit::jit
