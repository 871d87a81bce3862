#include "jit/kernel_provider.h"

#include <utility>

#include "jit/error.h"
#include "jit/nvrtc_api.h"

namespace sparsejit::jit {

std::optional<std::string> KernelProvider::stored_key(const KernelSpec& spec) {
  if (store_ == nullptr) return std::nullopt;
  const std::string source_key = spec.request.source_key();
  if (std::optional<StoredBinary> found = store_->find_by_source(source_key)) return found->key;
  std::string key = spec.request.cache_key();
  if (store_->find(key, source_key)) return key;
  return std::nullopt;
}

ProvidedBinary KernelProvider::binary(const KernelSpec& spec) {
  const std::string source_key = spec.request.source_key();
  if (store_ != nullptr) {
    if (std::optional<StoredBinary> found = store_->find_by_source(source_key)) {
      store_hits_.fetch_add(1);
      return ProvidedBinary{std::move(found->key), std::move(found->binary), BinarySource::store};
    }
  }
  return binary_with_nvrtc(spec, source_key);
}

ProvidedBinary KernelProvider::binary_with_nvrtc(const KernelSpec& spec, const std::string& source_key) {
  // Opens NVRTC, or says what needed it.
  nvrtc("compiling " + spec.label +
        (store_ != nullptr ? " (no CUBIN of it is stored under its source key " + source_key + ")" : ""));
  std::string key = spec.request.cache_key();
  if (store_ != nullptr) {
    if (std::optional<CompiledBinary> found = store_->find(key, source_key)) {
      store_hits_.fetch_add(1);
      return ProvidedBinary{std::move(key), std::move(*found), BinarySource::store};
    }
  }
  return compile_and_store(spec, key);
}

ProvidedBinary KernelProvider::compile_and_store(const KernelSpec& spec, const std::string& key) {
  ProvidedBinary provided{key, compile(spec.request), BinarySource::nvrtc};
  compiled_.fetch_add(1);
  if (store_ != nullptr) store_->put(provided.key, spec, provided.binary);
  return provided;
}

namespace {

// The message of a CudaError without the "<call> failed: " that what() starts with.
std::string message_of(const CudaError& error) {
  const std::string text = error.what();
  const std::string prefix = error.call() + " failed: ";
  return text.starts_with(prefix) ? text.substr(prefix.size()) : text;
}

}  // namespace

Kernel KernelProvider::kernel(const DeviceContext& context, const KernelSpec& spec) {
  const std::string source_key = spec.request.source_key();
  auto module = modules_.get_or_load(source_key, context.ordinal(), [&]() -> std::shared_ptr<LoadedModule> {
    std::optional<StoredBinary> stored;
    if (store_ != nullptr) stored = store_->find_by_source(source_key);
    if (!stored) {
      ProvidedBinary provided = binary_with_nvrtc(spec, source_key);
      return LoadedModule::load(context, provided.binary.cubin, std::move(provided.binary.lowered_names));
    }
    try {
      auto loaded = LoadedModule::load(context, stored->binary.cubin, stored->binary.lowered_names);
      store_hits_.fetch_add(1);
      return loaded;
    } catch (const CudaError& refused) {
      // E.g. a CUBIN of an NVRTC newer than this driver: compile it with this process's NVRTC.
      const std::string why = "the driver refused the stored CUBIN of " + spec.label + " (key " + stored->key +
                              ", compiled by NVRTC " + stored->nvrtc_version + "): " + message_of(refused);
      try {
        nvrtc("compiling " + spec.label + " again");
        ProvidedBinary provided = compile_and_store(spec, spec.request.cache_key());
        return LoadedModule::load(context, provided.binary.cubin, std::move(provided.binary.lowered_names));
      } catch (const JitError& also) {
        throw CudaError(refused.code(), refused.call(),
                        why + "; compiling it again with this process's NVRTC failed too: " + also.what());
      }
    }
  });
  return module->kernel(spec.name_expression);
}

}  // namespace sparsejit::jit
