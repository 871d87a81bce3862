#include "jit/kernel_provider.h"

#include <utility>

#include "jit/error.h"
#include "jit/nvrtc_api.h"

namespace sparsejit::jit {

std::optional<ProvidedBinary> KernelProvider::stored_binary(const KernelSpec& spec, const std::string& source_key,
                                                            const std::string& why) {
  if (store_ == nullptr) return std::nullopt;
  if (std::optional<StoredBinary> found = store_->find_by_source(source_key))
    return ProvidedBinary{std::move(found->key), std::move(found->binary), BinarySource::store};
  nvrtc(why);
  std::string key = spec.request.cache_key();
  if (std::optional<CompiledBinary> found = store_->find(key, source_key))
    return ProvidedBinary{std::move(key), std::move(*found), BinarySource::store};
  return std::nullopt;
}

std::optional<std::string> KernelProvider::stored_key(const KernelSpec& spec) {
  std::optional<ProvidedBinary> found =
      stored_binary(spec, spec.request.source_key(), "looking up the stored CUBIN of " + spec.label);
  if (!found) return std::nullopt;
  return std::move(found->key);
}

ProvidedBinary KernelProvider::binary(const KernelSpec& spec) {
  const std::string source_key = spec.request.source_key();
  const std::string why = "compiling " + spec.label +
                          (store_ != nullptr ? " (no CUBIN of it is stored under its source key " + source_key + ")" : "");
  if (std::optional<ProvidedBinary> found = stored_binary(spec, source_key, why)) {
    store_hits_.fetch_add(1);
    return std::move(*found);
  }
  nvrtc(why);  // opens NVRTC, or says what needed it
  return compile_and_store(spec, spec.request.cache_key());
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
    if (!stored) {  // by the cache key, else compiled
      ProvidedBinary provided = binary(spec);
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
