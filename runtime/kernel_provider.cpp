#include "runtime/kernel_provider.h"

#include <nlohmann/json.hpp>

namespace sparsejit::runtime {
namespace {

std::string lowered_names_to_json(const std::map<std::string, std::string>& names) {
  return nlohmann::json(names).dump();
}

std::map<std::string, std::string> lowered_names_from_json(const std::string& text) {
  return nlohmann::json::parse(text).get<std::map<std::string, std::string>>();
}

}  // namespace

bool KernelProvider::stored(const templates::Specialization& specialization) {
  if (database_ == nullptr) return false;
  const std::string key = specialization.request.cache_key();
  std::lock_guard lock(database_mutex_);
  return database_->find_cubin(key).has_value();
}

ProvidedBinary KernelProvider::binary(const templates::Specialization& specialization) {
  ProvidedBinary provided;
  provided.key = specialization.request.cache_key();
  if (database_ != nullptr) {
    std::optional<db::CubinRecord> record;
    {
      std::lock_guard lock(database_mutex_);
      record = database_->find_cubin(provided.key);
    }
    if (record) {
      provided.binary.cubin = std::move(record->binary);
      provided.binary.lowered_names = lowered_names_from_json(record->lowered_names_json);
      provided.binary.compile_ms = record->compile_ms;
      provided.source = BinarySource::database;
      database_hits_.fetch_add(1);
      return provided;
    }
  }
  provided.binary = jit::compile(specialization.request);  // outside the lock: compiles run in parallel
  provided.source = BinarySource::nvrtc;
  compiled_.fetch_add(1);
  if (database_ != nullptr) {
    db::CubinRecord record;
    record.key = provided.key;
    record.family = specialization.family;
    record.target = specialization.request.target.name();
    record.nvrtc_version = jit::nvrtc_version().to_string();
    record.specialization = specialization.label;
    record.lowered_names_json = lowered_names_to_json(provided.binary.lowered_names);
    record.binary = provided.binary.cubin;
    record.compile_ms = provided.binary.compile_ms;
    std::lock_guard lock(database_mutex_);
    database_->put_cubin(record);
  }
  return provided;
}

jit::Kernel KernelProvider::kernel(const jit::DeviceContext& context,
                                   const templates::Specialization& specialization) {
  const std::string key = specialization.request.cache_key();
  auto module = modules_.get_or_load(key, context.ordinal(), [&] {
    ProvidedBinary provided = binary(specialization);
    return jit::LoadedModule::load(context, provided.binary.cubin,
                                   std::move(provided.binary.lowered_names));
  });
  return module->kernel(specialization.name_expression);
}

}  // namespace sparsejit::runtime
