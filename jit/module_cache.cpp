#include "jit/module_cache.h"

namespace sparsejit::jit {

std::shared_ptr<LoadedModule> ModuleCache::get_or_load(const std::string& key, int device,
                                                       const Loader& load) {
  std::shared_ptr<Slot> slot;
  {
    std::lock_guard lock(mutex_);
    auto& entry = slots_[{key, device}];
    if (!entry) entry = std::make_shared<Slot>();
    slot = entry;
  }
  // A throwing load leaves the flag unset, so the next caller tries again.
  std::call_once(slot->loaded, [&] {
    slot->module = load();
    loaded_count_.fetch_add(1);
  });
  return slot->module;
}

void ModuleCache::clear() {
  std::lock_guard lock(mutex_);
  slots_.clear();
}

}  // namespace sparsejit::jit
