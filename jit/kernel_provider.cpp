#include "jit/kernel_provider.h"

namespace sparsejit::jit {

bool KernelProvider::stored(const KernelSpec& spec) {
  return store_ != nullptr && store_->find(spec.request.cache_key()).has_value();
}

ProvidedBinary KernelProvider::binary(const KernelSpec& spec) {
  ProvidedBinary provided;
  provided.key = spec.request.cache_key();
  if (store_ != nullptr) {
    if (std::optional<CompiledBinary> found = store_->find(provided.key)) {
      provided.binary = std::move(*found);
      provided.source = BinarySource::store;
      store_hits_.fetch_add(1);
      return provided;
    }
  }
  provided.binary = compile(spec.request);
  provided.source = BinarySource::nvrtc;
  compiled_.fetch_add(1);
  if (store_ != nullptr) store_->put(provided.key, spec, provided.binary);
  return provided;
}

Kernel KernelProvider::kernel(const DeviceContext& context, const KernelSpec& spec) {
  const std::string key = spec.request.cache_key();
  auto module = modules_.get_or_load(key, context.ordinal(), [&] {
    ProvidedBinary provided = binary(spec);
    return LoadedModule::load(context, provided.binary.cubin, std::move(provided.binary.lowered_names));
  });
  return module->kernel(spec.name_expression);
}

}  // namespace sparsejit::jit
