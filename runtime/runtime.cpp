#include "runtime/runtime.h"

#include "db/paths.h"
#include "runtime/gpu_record.h"

namespace sparsejit::runtime {

Runtime::Runtime(RuntimeOptions options)
    : device_(jit::query_device(options.device)),
      context_(std::make_unique<jit::DeviceContext>(options.device)),
      target_(jit::Target::for_compute_capability(device_.cc_major, device_.cc_minor)) {
  if (options.use_database) {
    database_.emplace(db::Database::open(options.database_path.value_or(db::default_database_path())));
    database_->upsert_gpu(to_gpu_record(device_));
  }
  kernels_ = std::make_unique<KernelProvider>(database());
}

void Runtime::permute_tokens(const PermuteParams& params, int head_dim,
                             templates::PermuteDirection direction, CUstream stream) {
  using templates::PermuteFamily;
  const templates::PermuteConfig config =
      templates::default_permute_config(head_dim, direction, PermuteFamily::max_vector_bytes(params));
  PermuteFamily::validate(config, params);
  const jit::Kernel kernel = kernels_->kernel(*context_, PermuteFamily::render(config, target_));
  PermuteFamily::launch(kernel, config, params, stream);
}

}  // namespace sparsejit::runtime
