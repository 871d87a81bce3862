#pragma once
// An in-process cache of loaded modules, keyed by (CUBIN key, device). Thread-safe.
#include <functional>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "jit/module.h"

namespace sparsejit::jit {

class ModuleCache {
 public:
  using Loader = std::function<std::shared_ptr<LoadedModule>()>;

  // The module cached under (key, device ordinal), or the result of `load`, which is then
  // cached. Concurrent callers for one key share one load; loads of other keys go on meanwhile.
  std::shared_ptr<LoadedModule> get_or_load(const std::string& key, int device, const Loader& load);
  std::size_t loaded_count() const { return loaded_count_.load(); }  // loads that succeeded
  void clear();

 private:
  struct Slot {
    std::once_flag loaded;
    std::shared_ptr<LoadedModule> module;
  };
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, std::shared_ptr<Slot>> slots_;
  std::atomic<std::size_t> loaded_count_{0};
};

}  // namespace sparsejit::jit
