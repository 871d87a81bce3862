#include "runtime/database_cubin_store.h"

#include <nlohmann/json.hpp>

namespace sparsejit::runtime {
namespace {

jit::CompiledBinary to_binary(db::CubinRecord& record) {
  jit::CompiledBinary binary;
  binary.cubin = std::move(record.binary);
  binary.lowered_names =
      nlohmann::json::parse(record.lowered_names_json).get<std::map<std::string, std::string>>();
  binary.compile_ms = record.compile_ms;
  return binary;
}

}  // namespace

std::optional<jit::CompiledBinary> DatabaseCubinStore::find(const std::string& key, const std::string& source_key) {
  std::optional<db::CubinRecord> record;
  {
    std::lock_guard lock(mutex_);
    record = database_.find_cubin(key);
    // A row of schema v2: the next process finds it by its source key, without NVRTC.
    if (record && record->source_key.empty()) database_.record_cubin_source_key(key, source_key);
  }
  if (!record) return std::nullopt;
  return to_binary(*record);
}

std::optional<jit::StoredBinary> DatabaseCubinStore::find_by_source(const std::string& source_key) {
  std::optional<db::CubinRecord> record;
  {
    std::lock_guard lock(mutex_);
    record = database_.find_cubin_by_source(source_key);
  }
  if (!record) return std::nullopt;
  return jit::StoredBinary{record->key, record->nvrtc_version, to_binary(*record)};
}

void DatabaseCubinStore::put(const std::string& key, const jit::KernelSpec& spec,
                             const jit::CompiledBinary& binary) {
  db::CubinRecord record;
  record.key = key;
  record.source_key = spec.request.source_key();
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
