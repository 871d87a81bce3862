#include "runtime/database_cubin_store.h"

#include <nlohmann/json.hpp>

namespace sparsejit::runtime {

std::optional<jit::CompiledBinary> DatabaseCubinStore::find(const std::string& key) {
  std::optional<db::CubinRecord> record;
  {
    std::lock_guard lock(mutex_);
    record = database_.find_cubin(key);
  }
  if (!record) return std::nullopt;
  jit::CompiledBinary binary;
  binary.cubin = std::move(record->binary);
  binary.lowered_names =
      nlohmann::json::parse(record->lowered_names_json).get<std::map<std::string, std::string>>();
  binary.compile_ms = record->compile_ms;
  return binary;
}

void DatabaseCubinStore::put(const std::string& key, const jit::KernelSpec& spec,
                             const jit::CompiledBinary& binary) {
  db::CubinRecord record;
  record.key = key;
  record.family = spec.family;
  record.target = spec.request.target.name();
  record.nvrtc_version = jit::nvrtc_version().to_string();
  record.specialization = spec.label;
  record.lowered_names_json = nlohmann::json(binary.lowered_names).dump();
  record.binary = binary.cubin;
  record.compile_ms = binary.compile_ms;
  std::lock_guard lock(mutex_);
  database_.put_cubin(record);
}

}  // namespace sparsejit::runtime
