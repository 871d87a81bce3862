#include "jit/module.h"

#include "jit/device.h"
#include "jit/driver_api.h"
#include "jit/error.h"

namespace sparsejit::jit {
namespace {

std::string geometry(const LaunchConfig& config) {
  const auto dims = [](const Dim3& d) {
    return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
  };
  return "grid " + dims(config.grid) + ", block " + dims(config.block) + ", " +
         std::to_string(config.dynamic_shared_bytes) + " B dynamic shared memory";
}

}  // namespace

void Kernel::allow_dynamic_shared_bytes(unsigned bytes) const {
  check_driver_result(
      driver().cuFuncSetAttribute(function_, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                  static_cast<int>(bytes)),
      ("cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES=" + std::to_string(bytes) + ") for " +
       name_).c_str());
}

void Kernel::launch(const LaunchConfig& config, void** args) const {
  const CUresult result = driver().cuLaunchKernel(
      function_, config.grid.x, config.grid.y, config.grid.z, config.block.x, config.block.y,
      config.block.z, config.dynamic_shared_bytes, config.stream, args, nullptr);
  if (result != CUDA_SUCCESS)
    check_driver_result(result, ("cuLaunchKernel(" + name_ + ", " + geometry(config) + ")").c_str());
}

int Kernel::registers_per_thread() const {
  int registers = 0;
  SJ_CU(cuFuncGetAttribute(&registers, CU_FUNC_ATTRIBUTE_NUM_REGS, function_));
  return registers;
}

std::shared_ptr<LoadedModule> LoadedModule::load(const DeviceContext& context,
                                                 std::span<const std::uint8_t> cubin,
                                                 std::map<std::string, std::string> lowered_names) {
  if (cubin.empty()) throw JitError("cannot load an empty CUBIN");
  const ScopedCurrentContext current(context);
  CUmodule module = nullptr;
  SJ_CU(cuModuleLoadData(&module, cubin.data()));
  return std::shared_ptr<LoadedModule>(new LoadedModule(context, module, std::move(lowered_names)));
}

LoadedModule::~LoadedModule() {
  // Destructors must not throw: errors here leave the module to context teardown.
  try {
    const ScopedCurrentContext current(context_);
    driver().cuModuleUnload(module_);
  } catch (...) {
  }
}

Kernel LoadedModule::kernel(const std::string& name_expression) const {
  const auto found = lowered_names_.find(name_expression);
  if (found == lowered_names_.end())
    throw JitError("the module has no kernel for the name expression '" + name_expression +
                   "' (it was compiled with " + std::to_string(lowered_names_.size()) +
                   " name expression(s))");
  CUfunction function = nullptr;
  check_driver_result(driver().cuModuleGetFunction(&function, module_, found->second.c_str()),
                      ("cuModuleGetFunction(" + name_expression + ")").c_str());
  return Kernel(function, name_expression);
}

}  // namespace sparsejit::jit
