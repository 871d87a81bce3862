#pragma once
// The database's CUBIN table as the jit layer's CubinStore: find_by_source reads the newest
// CUBIN of a source key without opening NVRTC; find by cache key gives a row stored before
// there were source keys (schema v2) its source key on the way; put records both keys.
#include <mutex>

#include "db/database.h"
#include "jit/kernel_provider.h"

namespace sparsejit::runtime {

class DatabaseCubinStore final : public jit::CubinStore {
 public:
  // `database` must outlive the store.
  explicit DatabaseCubinStore(db::Database& database) : database_(database) {}

  std::optional<jit::CompiledBinary> find(const std::string& key, const std::string& source_key) override;
  std::optional<jit::StoredBinary> find_by_source(const std::string& source_key) override;
  // Records the running NVRTC's version (opens NVRTC; a put follows a compile, which did).
  void put(const std::string& key, const jit::KernelSpec& spec,
           const jit::CompiledBinary& binary) override;

 private:
  db::Database& database_;
  // Orders this store's reads and writes (the compile pool's threads put concurrently); the
  // connection itself is serialized, so other users of the database need not take it.
  std::mutex mutex_;
};

}  // namespace sparsejit::runtime
