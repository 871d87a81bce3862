// The C API of runtime/sparsejit.h over the C++ Runtime, MaskBuilder and token orders.
//
// Every entry point runs its body inside `guarded`, which turns each exception into a status
// and the thread's error message, so nothing is thrown across the C boundary. Checks that
// need a specific status (null, alignment, unsupported values, shapes that disagree, the
// mask's geometry) are made here; the C++ validators run after them and report whatever is
// left (sizes, scale, limits) as SPARSEJIT_ERROR_INVALID_ARGUMENT.
#include "runtime/sparsejit.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <array>
#include <limits>
#include <new>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "db/paths.h"
#include "db/sqlite.h"
#include "jit/device.h"
#include "jit/error.h"
#include "runtime/mask_builder.h"
#include "runtime/mask_schedule.h"
#include "runtime/runtime.h"
#include "runtime/token_order.h"
#include "templates/block_select/block_select_family.h"
#include "templates/permute/permute_family.h"
#include "templates/sparse_attention/attention_family.h"
#include "templates/sparse_attention/attention_tuning.h"
#include "templates/sparse_attention/block_mask.h"

struct sparsejit_runtime {
  explicit sparsejit_runtime(sparsejit::runtime::RuntimeOptions options) : runtime(std::move(options)) {}
  sparsejit::runtime::Runtime runtime;
};

struct sparsejit_mask_builder {
  explicit sparsejit_mask_builder(sparsejit::runtime::Runtime& runtime) : builder(runtime) {}
  sparsejit::runtime::MaskBuilder builder;
  bool keep_first_block = true;  // sparsejit_mask_builder_set_first_block_by_score
};

namespace {

using namespace sparsejit;
using templates::HalfDtype;
using templates::table_contains;

thread_local std::string last_error;

// A failure with the status it is reported as.
class ApiError : public std::runtime_error {
 public:
  ApiError(sparsejit_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  sparsejit_status status() const { return status_; }

 private:
  sparsejit_status status_;
};

[[noreturn]] void fail(sparsejit_status status, const std::string& message) { throw ApiError(status, message); }

sparsejit_status record(const char* function, sparsejit_status status, const char* message) noexcept {
  try {
    last_error = std::string(function) + ": " + message;
  } catch (...) {
    last_error.clear();  // no memory for the message: the status still says what happened
  }
  return status;
}

// Runs `body`, mapping every exception to its status and message.
template <class Body>
sparsejit_status guarded(const char* function, Body&& body) noexcept {
  try {
    body();
    last_error.clear();
    return SPARSEJIT_OK;
  } catch (const ApiError& error) {
    return record(function, error.status(), error.what());
  } catch (const jit::NoGpuError& error) {
    return record(function, SPARSEJIT_ERROR_NO_GPU, error.what());
  } catch (const jit::CompileError& error) {
    return record(function, SPARSEJIT_ERROR_COMPILE, error.what());
  } catch (const jit::NvrtcError& error) {
    return record(function, SPARSEJIT_ERROR_COMPILE, error.what());
  } catch (const jit::CudaError& error) {
    return record(function, error.code() == CUDA_ERROR_OUT_OF_MEMORY ? SPARSEJIT_ERROR_OUT_OF_MEMORY : SPARSEJIT_ERROR_CUDA,
                  error.what());
  } catch (const db::DatabaseError& error) {
    return record(function, SPARSEJIT_ERROR_DATABASE, error.what());
  } catch (const std::invalid_argument& error) {
    return record(function, SPARSEJIT_ERROR_INVALID_ARGUMENT, error.what());
  } catch (const std::bad_alloc&) {
    return record(function, SPARSEJIT_ERROR_OUT_OF_MEMORY, "out of host memory");
  } catch (const std::exception& error) {
    return record(function, SPARSEJIT_ERROR_INTERNAL, error.what());
  } catch (...) {
    return record(function, SPARSEJIT_ERROR_INTERNAL, "an unknown exception");
  }
}

void require_pointer(const void* pointer, const std::string& name) {
  if (pointer == nullptr) fail(SPARSEJIT_ERROR_NULL_POINTER, name + " is NULL");
}

void require_alignment(const void* pointer, std::size_t bytes, const std::string& name) {
  if (reinterpret_cast<std::uintptr_t>(pointer) % bytes != 0)
    fail(SPARSEJIT_ERROR_MISALIGNED, name + " is not aligned to " + std::to_string(bytes) + " bytes");
}

std::string list(std::span<const int> values) {
  std::string text;
  for (std::size_t i = 0; i < values.size(); ++i)
    text += (i == 0 ? "" : i + 1 == values.size() ? " or " : ", ") + std::to_string(values[i]);
  return text;
}

template <std::size_t N>
void require_supported(int value, const std::array<int, N>& supported, const std::string& what) {
  if (!table_contains(supported, value))
    fail(SPARSEJIT_ERROR_UNSUPPORTED, what + " " + std::to_string(value) + " is not supported (" + list(supported) + ")");
}

HalfDtype half_dtype(sparsejit_dtype dtype) {
  if (dtype == SPARSEJIT_BF16) return HalfDtype::bf16;
  if (dtype == SPARSEJIT_FP16) return HalfDtype::fp16;
  fail(SPARSEJIT_ERROR_UNSUPPORTED, "dtype " + std::to_string(static_cast<int>(dtype)) +
                                        " is not supported (SPARSEJIT_BF16 or SPARSEJIT_FP16)");
}

// A tensor the kernels read with 16-byte loads: data and token rows 16-byte aligned.
void check_tensor_data(const sparsejit_tensor& tensor, const std::string& name) {
  require_pointer(tensor.data, name + ".data");
  require_alignment(tensor.data, 16, name + ".data");
  if ((tensor.token_stride * 2) % 16 != 0)
    fail(SPARSEJIT_ERROR_MISALIGNED, name + ".token_stride " + std::to_string(tensor.token_stride) +
                                         " elements is not a multiple of 16 bytes (8 elements)");
}

void check_positive_shape(const sparsejit_tensor& tensor, const std::string& name) {
  if (tensor.batch < 1 || tensor.heads < 1 || tensor.tokens < 1 || tensor.head_dim < 1)
    fail(SPARSEJIT_ERROR_INVALID_ARGUMENT,
         name + " has shape [" + std::to_string(tensor.batch) + ", " + std::to_string(tensor.heads) + ", " +
             std::to_string(tensor.tokens) + ", " + std::to_string(tensor.head_dim) + "]: every size must be positive");
}

// `other` has the same batch, heads and head dim as `reference`, and the same tokens when
// `same_tokens`.
void check_same_shape(const sparsejit_tensor& reference, const std::string& reference_name,
                      const sparsejit_tensor& other, const std::string& other_name, bool same_tokens) {
  const struct {
    const char* dim;
    int32_t reference, other;
    bool compared;
  } dims[] = {{"batch", reference.batch, other.batch, true},
              {"heads", reference.heads, other.heads, true},
              {"tokens", reference.tokens, other.tokens, same_tokens},
              {"head_dim", reference.head_dim, other.head_dim, true}};
  for (const auto& dim : dims)
    if (dim.compared && dim.reference != dim.other)
      fail(SPARSEJIT_ERROR_SHAPE_MISMATCH, other_name + "." + dim.dim + " = " + std::to_string(dim.other) +
                                               " disagrees with " + reference_name + "." + dim.dim + " = " +
                                               std::to_string(dim.reference));
}

float softmax_scale_or_default(float scale, int head_dim) {
  return scale == 0.f ? 1.f / std::sqrt(static_cast<float>(head_dim)) : scale;
}

// The mask's form, blocks and geometry against tokens_q x tokens_kv (positive).
void check_mask(const sparsejit_block_mask& mask, int tokens_kv) {
  if (mask.form != SPARSEJIT_MASK_BLOCK_CSR && mask.form != SPARSEJIT_MASK_BITMASK)
    fail(SPARSEJIT_ERROR_BAD_MASK, "mask.form " + std::to_string(static_cast<int>(mask.form)) +
                                       " is neither SPARSEJIT_MASK_BLOCK_CSR nor SPARSEJIT_MASK_BITMASK");
  require_supported(mask.block_q, templates::kAttentionBlockSizes, "mask.block_q");
  require_supported(mask.block_kv, templates::kAttentionBlockSizes, "mask.block_kv");
  require_supported(mask.fine_n, templates::kAttentionFineN, "mask.fine_n");
  if (mask.fine_n > 0 && !templates::fine_granularity_valid(mask.block_q, mask.block_kv, mask.fine_n))
    fail(SPARSEJIT_ERROR_UNSUPPORTED, "mask.fine_n " + std::to_string(mask.fine_n) + ": sub-tiles of 16x" +
                                          std::to_string(mask.fine_n) + " do not fit one 64-bit word for " +
                                          std::to_string(mask.block_q) + "x" + std::to_string(mask.block_kv) +
                                          " blocks");
  const int kv_blocks = (tokens_kv + mask.block_kv - 1) / mask.block_kv;
  if (mask.form == SPARSEJIT_MASK_BLOCK_CSR) {
    require_pointer(mask.kv_block_count, "mask.kv_block_count (block-CSR form)");
    require_pointer(mask.kv_block_index, "mask.kv_block_index (block-CSR form)");
    if (mask.kv_block_bits != nullptr)
      fail(SPARSEJIT_ERROR_BAD_MASK, "mask.kv_block_bits is set but mask.form is SPARSEJIT_MASK_BLOCK_CSR: give one form");
    require_alignment(mask.kv_block_count, 4, "mask.kv_block_count");
    require_alignment(mask.kv_block_index, 4, "mask.kv_block_index");
  } else {
    require_pointer(mask.kv_block_bits, "mask.kv_block_bits (bitmask form)");
    if (mask.kv_block_count != nullptr || mask.kv_block_index != nullptr)
      fail(SPARSEJIT_ERROR_BAD_MASK,
           "mask.kv_block_count/kv_block_index are set but mask.form is SPARSEJIT_MASK_BITMASK: give one form");
    require_alignment(mask.kv_block_bits, 8, "mask.kv_block_bits");
    const int words = templates::bitmask_words(kv_blocks);
    if (mask.kv_block_words != words)
      fail(SPARSEJIT_ERROR_BAD_MASK, "mask.kv_block_words " + std::to_string(mask.kv_block_words) + " must be ceil(" +
                                         std::to_string(kv_blocks) + " key blocks / 64) = " + std::to_string(words));
  }
  if (mask.max_kv_blocks < 0 || mask.max_kv_blocks > kv_blocks)
    fail(SPARSEJIT_ERROR_BAD_MASK, "mask.max_kv_blocks " + std::to_string(mask.max_kv_blocks) + " is outside 0.." +
                                       std::to_string(kv_blocks) + " (the key blocks of " + std::to_string(tokens_kv) +
                                       " tokens in blocks of " + std::to_string(mask.block_kv) + ")");
  if (mask.fine_n > 0) {
    require_pointer(mask.fine_bits, "mask.fine_bits (fine_n = " + std::to_string(mask.fine_n) + ")");
    require_alignment(mask.fine_bits, 8, "mask.fine_bits");
  } else if (mask.fine_bits != nullptr) {
    fail(SPARSEJIT_ERROR_BAD_MASK, "mask.fine_bits is set but mask.fine_n is 0 (no fine bits)");
  }
}

// The C++ parameters of validated args.
struct AttentionCall {
  SparseAttentionParams params{};
  runtime::AttentionProblem problem;
};

// sparsejit_attention_validate's checks; the C++ call they describe.
AttentionCall validated_attention(const sparsejit_attention_args* args) {
  require_pointer(args, "args");
  const HalfDtype dtype = half_dtype(args->dtype);
  const sparsejit_tensor& q = args->q;
  const struct {
    const sparsejit_tensor& tensor;
    const char* name;
  } tensors[] = {{args->q, "q"}, {args->k, "k"}, {args->v, "v"}, {args->o, "o"}};
  for (const auto& t : tensors) check_tensor_data(t.tensor, t.name);
  for (const auto& t : tensors) check_positive_shape(t.tensor, t.name);
  require_supported(q.head_dim, templates::kAttentionHeadDims, "head dim (q.head_dim)");
  check_same_shape(q, "q", args->k, "k", false);
  check_same_shape(args->k, "k", args->v, "v", true);
  check_same_shape(q, "q", args->o, "o", true);
  require_alignment(args->lse, 4, "lse");
  check_mask(args->mask, args->k.tokens);

  AttentionCall call;
  SparseAttentionParams& p = call.params;
  p.q = args->q.data;
  p.k = args->k.data;
  p.v = args->v.data;
  p.o = args->o.data;
  const auto strides = [](const sparsejit_tensor& t, long long& batch, long long& head, long long& token) {
    batch = t.batch_stride;
    head = t.head_stride;
    token = t.token_stride;
  };
  strides(args->q, p.q_batch_stride, p.q_head_stride, p.q_token_stride);
  strides(args->k, p.k_batch_stride, p.k_head_stride, p.k_token_stride);
  strides(args->v, p.v_batch_stride, p.v_head_stride, p.v_token_stride);
  strides(args->o, p.o_batch_stride, p.o_head_stride, p.o_token_stride);
  p.lse = args->lse;
  const sparsejit_block_mask& mask = args->mask;
  p.kv_block_count = mask.kv_block_count;
  p.kv_block_index = mask.kv_block_index;
  p.fine_bits = reinterpret_cast<const unsigned long long*>(mask.fine_bits);
  p.max_kv_blocks = mask.max_kv_blocks;
  p.kv_block_bits = reinterpret_cast<const unsigned long long*>(mask.kv_block_bits);
  p.kv_block_words = mask.form == SPARSEJIT_MASK_BITMASK ? mask.kv_block_words : 0;
  p.batch = q.batch;
  p.heads = q.heads;
  p.tokens_q = q.tokens;
  p.tokens_kv = args->k.tokens;
  p.softmax_scale = softmax_scale_or_default(args->softmax_scale, q.head_dim);
  call.problem = {dtype, q.head_dim, mask.block_q, mask.block_kv, mask.fine_n};

  // What is left (sizes and limits, the scale) is the kernel family's validation, with any
  // valid tile of the problem and no device's shared-memory limit.
  constexpr int kNoSharedLimit = std::numeric_limits<int>::max();
  templates::AttentionConfig config = templates::default_attention_config(
      dtype, q.head_dim, mask.block_q, mask.block_kv, mask.fine_n, kNoSharedLimit);
  config.bitmask = mask.form == SPARSEJIT_MASK_BITMASK;
  templates::SparseAttentionFamily::validate(config, p, kNoSharedLimit);
  return call;
}

// The C++ inputs of a mask build, checked for shape only (data pointers are not read).
runtime::QueryKeyInputs mask_inputs(const sparsejit_mask_inputs* inputs, const sparsejit_mask_options* options) {
  require_pointer(inputs, "inputs");
  require_pointer(options, "options");
  const HalfDtype dtype = half_dtype(inputs->dtype);
  const sparsejit_tensor &q = inputs->q, &k = inputs->k;
  check_positive_shape(q, "q");
  check_positive_shape(k, "k");
  require_supported(q.head_dim, templates::kSelectHeadDims, "head dim (q.head_dim)");
  check_same_shape(q, "q", k, "k", false);
  require_supported(options->block_q, templates::kSelectBlockSizes, "options.block_q");
  require_supported(options->block_kv, templates::kSelectBlockSizes, "options.block_kv");
  require_supported(options->tile, templates::kSelectTileTokens, "options.tile");
  require_supported(options->fine_n, templates::kSelectFineN, "options.fine_n");
  if (options->fine_n > 0 && !templates::fine_granularity_valid(options->block_q, options->block_kv, options->fine_n))
    fail(SPARSEJIT_ERROR_UNSUPPORTED, "options.fine_n " + std::to_string(options->fine_n) + ": sub-tiles of 16x" +
                                          std::to_string(options->fine_n) + " do not fit one 64-bit word for " +
                                          std::to_string(options->block_q) + "x" + std::to_string(options->block_kv) +
                                          " blocks");
  runtime::QueryKeyInputs result;
  result.q = q.data;
  result.k = k.data;
  result.q_batch_stride = q.batch_stride;
  result.q_head_stride = q.head_stride;
  result.q_token_stride = q.token_stride;
  result.k_batch_stride = k.batch_stride;
  result.k_head_stride = k.head_stride;
  result.k_token_stride = k.token_stride;
  result.batch = q.batch;
  result.heads = q.heads;
  result.tokens_q = q.tokens;
  result.tokens_kv = k.tokens;
  result.head_dim = q.head_dim;
  result.dtype = dtype;
  result.softmax_scale = softmax_scale_or_default(inputs->softmax_scale, q.head_dim);
  return result;
}

// The C++ options; with head densities (NULL: none) their values, head_count of them.
runtime::MaskBuildOptions mask_options(const sparsejit_mask_options& options, const double* head_densities = nullptr,
                                       int32_t head_count = 0) {
  runtime::MaskBuildOptions result;
  if (head_densities != nullptr) {
    if (head_count < 1) fail(SPARSEJIT_ERROR_INVALID_ARGUMENT, "head_count = " + std::to_string(head_count) +
                                                                  " must be positive (the heads of q)");
    result.head_densities.assign(head_densities, head_densities + head_count);
  }
  result.block_q = options.block_q;
  result.block_kv = options.block_kv;
  result.tile = options.tile;
  result.density = options.density;
  result.threshold = options.threshold;
  result.text_blocks = options.text_blocks;
  result.fine_n = options.fine_n;
  result.fine_share = options.fine_share;
  return result;
}

sparsejit_mask_layout c_layout(const runtime::MaskLayout& layout) {
  sparsejit_mask_layout result;
  result.q_blocks = layout.q_blocks;
  result.kv_blocks = layout.kv_blocks;
  result.max_kv_blocks = layout.max_kv_blocks;
  result.top_k = layout.top_k;
  result.kv_block_words = templates::bitmask_words(layout.kv_blocks);
  result.rows = static_cast<int64_t>(layout.rows);
  return result;
}

// The C++ runtime of a handle (its calls make its context current themselves, from any thread).
runtime::Runtime& runtime_of(sparsejit_runtime* runtime) {
  require_pointer(runtime, "runtime");
  return runtime->runtime;
}

void layout_of(const sparsejit_mask_inputs* inputs, const sparsejit_mask_options* options,
               const double* head_densities, int32_t head_count, sparsejit_mask_layout* layout) {
  require_pointer(layout, "layout");
  const runtime::QueryKeyInputs cpp_inputs = mask_inputs(inputs, options);
  *layout = c_layout(runtime::MaskBuilder::layout(cpp_inputs, mask_options(*options, head_densities, head_count)));
}

void build(sparsejit_mask_builder* builder, const sparsejit_mask_inputs* inputs, const sparsejit_mask_options* options,
           const double* head_densities, int32_t head_count, sparsejit_stream stream, sparsejit_block_mask* mask,
           sparsejit_mask_layout* layout) {
  require_pointer(builder, "builder");
  require_pointer(mask, "mask");
  const runtime::QueryKeyInputs cpp_inputs = mask_inputs(inputs, options);
  check_tensor_data(inputs->q, "q");
  check_tensor_data(inputs->k, "k");
  require_alignment(mask->kv_block_count, 4, "mask->kv_block_count");
  require_alignment(mask->kv_block_index, 4, "mask->kv_block_index");
  require_alignment(mask->fine_bits, 8, "mask->fine_bits");
  // The caller's buffers, written by the build (the struct is const for attention, which
  // only reads them).
  runtime::DeviceBlockMask output;
  output.kv_block_count = const_cast<int*>(mask->kv_block_count);
  output.kv_block_index = const_cast<int*>(mask->kv_block_index);
  output.fine_bits = reinterpret_cast<unsigned long long*>(const_cast<uint64_t*>(mask->fine_bits));
  runtime::MaskBuildOptions cpp_options = mask_options(*options, head_densities, head_count);
  cpp_options.keep_first_block = builder->keep_first_block;
  const runtime::DeviceBlockMask built = builder->builder.build_into(cpp_inputs, cpp_options, output, stream);
  sparsejit_block_mask result{};
  result.form = SPARSEJIT_MASK_BLOCK_CSR;
  result.block_q = options->block_q;
  result.block_kv = options->block_kv;
  result.kv_block_count = built.kv_block_count;
  result.kv_block_index = built.kv_block_index;
  result.max_kv_blocks = built.layout.max_kv_blocks;
  result.fine_n = options->fine_n;
  result.fine_bits = reinterpret_cast<const uint64_t*>(built.fine_bits);
  *mask = result;
  if (layout != nullptr) *layout = c_layout(built.layout);
}

}  // namespace

extern "C" {

const char* sparsejit_last_error_message(void) { return last_error.c_str(); }

const char* sparsejit_status_name(sparsejit_status status) {
  switch (status) {
    case SPARSEJIT_OK: return "SPARSEJIT_OK";
    case SPARSEJIT_ERROR_NULL_POINTER: return "SPARSEJIT_ERROR_NULL_POINTER";
    case SPARSEJIT_ERROR_MISALIGNED: return "SPARSEJIT_ERROR_MISALIGNED";
    case SPARSEJIT_ERROR_UNSUPPORTED: return "SPARSEJIT_ERROR_UNSUPPORTED";
    case SPARSEJIT_ERROR_SHAPE_MISMATCH: return "SPARSEJIT_ERROR_SHAPE_MISMATCH";
    case SPARSEJIT_ERROR_BAD_MASK: return "SPARSEJIT_ERROR_BAD_MASK";
    case SPARSEJIT_ERROR_INVALID_ARGUMENT: return "SPARSEJIT_ERROR_INVALID_ARGUMENT";
    case SPARSEJIT_ERROR_NO_GPU: return "SPARSEJIT_ERROR_NO_GPU";
    case SPARSEJIT_ERROR_DATABASE: return "SPARSEJIT_ERROR_DATABASE";
    case SPARSEJIT_ERROR_COMPILE: return "SPARSEJIT_ERROR_COMPILE";
    case SPARSEJIT_ERROR_CUDA: return "SPARSEJIT_ERROR_CUDA";
    case SPARSEJIT_ERROR_OUT_OF_MEMORY: return "SPARSEJIT_ERROR_OUT_OF_MEMORY";
    case SPARSEJIT_ERROR_INTERNAL: return "SPARSEJIT_ERROR_INTERNAL";
  }
  return "unknown status";
}

int sparsejit_api_version(void) { return SPARSEJIT_API_VERSION; }

sparsejit_tensor sparsejit_tensor_dense(void* data, sparsejit_layout layout, int32_t batch, int32_t heads,
                                        int32_t tokens, int32_t head_dim) {
  const int64_t h = heads, n = tokens, d = head_dim;
  sparsejit_tensor tensor{data, batch, heads, tokens, head_dim, h * n * d, n * d, d};
  if (layout == SPARSEJIT_LAYOUT_BNHD) {
    tensor.head_stride = d;
    tensor.token_stride = h * d;
  }
  return tensor;
}

void sparsejit_runtime_options_init(sparsejit_runtime_options* options) {
  if (options != nullptr) *options = {0, nullptr, 1};
}

sparsejit_status sparsejit_runtime_create(const sparsejit_runtime_options* options, sparsejit_runtime** runtime) {
  return guarded(__func__, [&] {
    require_pointer(runtime, "runtime");
    sparsejit_runtime_options chosen;
    sparsejit_runtime_options_init(&chosen);
    if (options != nullptr) chosen = *options;
    if (chosen.device < 0)
      fail(SPARSEJIT_ERROR_INVALID_ARGUMENT, "device " + std::to_string(chosen.device) + " is negative");
    if (const int count = jit::device_count(); chosen.device >= count)
      fail(SPARSEJIT_ERROR_NO_GPU, "there is no GPU " + std::to_string(chosen.device) + ": this machine has " +
                                       std::to_string(count));
    runtime::RuntimeOptions cpp_options;
    cpp_options.device = chosen.device;
    cpp_options.use_database = chosen.use_database != 0;
    if (cpp_options.use_database) {
      try {
        cpp_options.database_path = chosen.database_path != nullptr ? std::filesystem::path(chosen.database_path)
                                                                   : db::default_database_path();
      } catch (const std::runtime_error& error) {  // no default path applies
        fail(SPARSEJIT_ERROR_DATABASE, error.what());
      }
    }
    *runtime = new sparsejit_runtime(std::move(cpp_options));
  });
}

void sparsejit_runtime_destroy(sparsejit_runtime* runtime) { delete runtime; }

sparsejit_status sparsejit_token_order(sparsejit_token_order_kind kind, int32_t frames, int32_t height, int32_t width,
                                       int32_t extra_tokens, int32_t* order, int64_t capacity) {
  return guarded(__func__, [&] {
    require_pointer(order, "order");
    runtime::TokenOrder cpp_kind;
    switch (kind) {
      case SPARSEJIT_ORDER_RASTER: cpp_kind = runtime::TokenOrder::raster; break;
      case SPARSEJIT_ORDER_TILE3D: cpp_kind = runtime::TokenOrder::tile3d; break;
      case SPARSEJIT_ORDER_HILBERT: cpp_kind = runtime::TokenOrder::hilbert; break;
      default:
        fail(SPARSEJIT_ERROR_INVALID_ARGUMENT, "kind " + std::to_string(static_cast<int>(kind)) +
                                                   " is not a sparsejit_token_order_kind");
    }
    const std::vector<int> computed = runtime::token_order(cpp_kind, {frames, height, width}, extra_tokens);
    if (capacity < static_cast<int64_t>(computed.size()))
      fail(SPARSEJIT_ERROR_INVALID_ARGUMENT, "capacity " + std::to_string(capacity) + " is too small: the order has " +
                                                 std::to_string(computed.size()) + " tokens");
    std::memcpy(order, computed.data(), computed.size() * sizeof(int32_t));
  });
}

sparsejit_status sparsejit_permute_tokens(sparsejit_runtime* runtime, const sparsejit_permute_args* args,
                                          sparsejit_stream stream) {
  return guarded(__func__, [&] {
    // The arguments first, the runtime last: the checks need no GPU.
    require_pointer(args, "args");
    if (args->tensor_count < 1 || args->tensor_count > kMaxPermuteTensors)
      fail(SPARSEJIT_ERROR_INVALID_ARGUMENT, "tensor_count " + std::to_string(args->tensor_count) + " is outside 1.." +
                                                 std::to_string(kMaxPermuteTensors));
    if (args->direction != SPARSEJIT_PERMUTE_GATHER && args->direction != SPARSEJIT_PERMUTE_SCATTER)
      fail(SPARSEJIT_ERROR_INVALID_ARGUMENT, "direction " + std::to_string(static_cast<int>(args->direction)) +
                                                 " is not a sparsejit_permute_direction");
    require_pointer(args->permutation, "permutation");
    const sparsejit_tensor& shape = args->source[0];
    PermuteParams params{};
    for (int t = 0; t < args->tensor_count; ++t) {
      const std::string source_name = "source[" + std::to_string(t) + "]";
      const std::string destination_name = "destination[" + std::to_string(t) + "]";
      const sparsejit_tensor &source = args->source[t], &destination = args->destination[t];
      require_pointer(source.data, source_name + ".data");
      require_pointer(destination.data, destination_name + ".data");
      check_positive_shape(source, source_name);
      check_same_shape(shape, "source[0]", source, source_name, true);
      check_same_shape(shape, "source[0]", destination, destination_name, true);
      params.tensors[t] = {source.data,         destination.data,         source.batch_stride,
                           source.head_stride,  source.token_stride,      destination.batch_stride,
                           destination.head_stride, destination.token_stride};
    }
    require_supported(shape.head_dim, templates::kPermuteHeadDims, "head dim (source[0].head_dim)");
    params.permutation = args->permutation;
    params.tensor_count = args->tensor_count;
    params.batch = shape.batch;
    params.heads = shape.heads;
    params.tokens = shape.tokens;
    if (templates::PermuteFamily::max_vector_bytes(params) < 4)
      fail(SPARSEJIT_ERROR_MISALIGNED, "every data pointer and every stride * 2 bytes must be a multiple of 4 bytes");
    const templates::PermuteDirection direction = args->direction == SPARSEJIT_PERMUTE_GATHER
                                                      ? templates::PermuteDirection::gather
                                                      : templates::PermuteDirection::scatter;
    runtime_of(runtime).permute_tokens(params, shape.head_dim, direction, stream);
  });
}

void sparsejit_mask_options_init(sparsejit_mask_options* options) {
  if (options == nullptr) return;
  const runtime::MaskBuildOptions defaults;
  *options = {defaults.block_q,     defaults.block_kv, defaults.tile,       defaults.density,
              defaults.threshold,   defaults.text_blocks, defaults.fine_n, defaults.fine_share};
}

sparsejit_status sparsejit_mask_layout_of(const sparsejit_mask_inputs* inputs, const sparsejit_mask_options* options,
                                          sparsejit_mask_layout* layout) {
  return guarded(__func__, [&] { layout_of(inputs, options, nullptr, 0, layout); });
}

sparsejit_status sparsejit_mask_layout_of_per_head(const sparsejit_mask_inputs* inputs,
                                                   const sparsejit_mask_options* options,
                                                   const double* head_densities, int32_t head_count,
                                                   sparsejit_mask_layout* layout) {
  return guarded(__func__, [&] {
    require_pointer(head_densities, "head_densities");
    layout_of(inputs, options, head_densities, head_count, layout);
  });
}

sparsejit_status sparsejit_mask_builder_create(sparsejit_runtime* runtime, sparsejit_mask_builder** builder) {
  return guarded(__func__, [&] {
    require_pointer(runtime, "runtime");
    require_pointer(builder, "builder");
    *builder = new sparsejit_mask_builder(runtime->runtime);
  });
}

sparsejit_status sparsejit_mask_builder_set_first_block_by_score(sparsejit_mask_builder* builder,
                                                                int32_t by_score) {
  return guarded(__func__, [&] {
    require_pointer(builder, "builder");
    if (by_score != 0 && by_score != 1)
      fail(SPARSEJIT_ERROR_INVALID_ARGUMENT, "by_score = " + std::to_string(by_score) + " is neither 0 nor 1");
    builder->keep_first_block = by_score == 0;
  });
}

void sparsejit_mask_builder_destroy(sparsejit_mask_builder* builder) {
  delete builder;  // its buffers are freed in their own context, the caller's left current
}

sparsejit_status sparsejit_mask_build(sparsejit_mask_builder* builder, const sparsejit_mask_inputs* inputs,
                                      const sparsejit_mask_options* options, sparsejit_stream stream,
                                      sparsejit_block_mask* mask, sparsejit_mask_layout* layout) {
  return guarded(__func__, [&] { build(builder, inputs, options, nullptr, 0, stream, mask, layout); });
}

sparsejit_status sparsejit_mask_build_per_head(sparsejit_mask_builder* builder, const sparsejit_mask_inputs* inputs,
                                               const sparsejit_mask_options* options, const double* head_densities,
                                               int32_t head_count, sparsejit_stream stream, sparsejit_block_mask* mask,
                                               sparsejit_mask_layout* layout) {
  return guarded(__func__, [&] {
    require_pointer(head_densities, "head_densities");
    build(builder, inputs, options, head_densities, head_count, stream, mask, layout);
  });
}

sparsejit_status sparsejit_mask_to_bitmask(sparsejit_mask_builder* builder, const sparsejit_block_mask* csr,
                                           const sparsejit_mask_layout* layout, uint64_t* bits,
                                           sparsejit_stream stream, sparsejit_block_mask* bitmask) {
  return guarded(__func__, [&] {
    require_pointer(builder, "builder");
    require_pointer(csr, "csr");
    require_pointer(layout, "layout");
    require_pointer(bits, "bits");
    require_pointer(bitmask, "bitmask");
    if (csr->form != SPARSEJIT_MASK_BLOCK_CSR)
      fail(SPARSEJIT_ERROR_BAD_MASK, "csr->form must be SPARSEJIT_MASK_BLOCK_CSR (the builder's output)");
    require_pointer(csr->kv_block_count, "csr->kv_block_count");
    require_pointer(csr->kv_block_index, "csr->kv_block_index");
    if (csr->max_kv_blocks != layout->max_kv_blocks)
      fail(SPARSEJIT_ERROR_BAD_MASK, "csr->max_kv_blocks " + std::to_string(csr->max_kv_blocks) +
                                         " differs from layout->max_kv_blocks " + std::to_string(layout->max_kv_blocks) +
                                         ": the mask is not of this layout");
    require_alignment(bits, 8, "bits");
    runtime::DeviceBlockMask mask;
    mask.kv_block_count = const_cast<int*>(csr->kv_block_count);
    mask.kv_block_index = const_cast<int*>(csr->kv_block_index);
    mask.layout.q_blocks = layout->q_blocks;
    mask.layout.kv_blocks = layout->kv_blocks;
    mask.layout.max_kv_blocks = layout->max_kv_blocks;
    mask.layout.top_k = layout->top_k;
    mask.layout.rows = static_cast<std::size_t>(layout->rows);
    builder->builder.to_bitmask(mask, reinterpret_cast<unsigned long long*>(bits), stream);
    sparsejit_block_mask result = *csr;
    result.form = SPARSEJIT_MASK_BITMASK;
    result.kv_block_count = nullptr;
    result.kv_block_index = nullptr;
    result.kv_block_bits = bits;
    result.kv_block_words = templates::bitmask_words(layout->kv_blocks);
    *bitmask = result;
  });
}

void sparsejit_mask_schedule_init(sparsejit_mask_schedule* schedule) {
  if (schedule == nullptr) return;
  // The defaults of runtime::MaskScheduleConfig, in arrays never destroyed (the header promises
  // them to callers at any time, static destructors and atexit handlers included).
  static const auto* const defaults = new runtime::MaskScheduleConfig();
  static const auto* const dense_layers =
      new std::vector<int32_t>(defaults->dense_layers.begin(), defaults->dense_layers.end());
  *schedule = sparsejit_mask_schedule{};
  schedule->steps = defaults->steps;
  schedule->dense_steps = defaults->dense_steps;
  schedule->refresh_interval = defaults->refresh_interval;
  schedule->densities = defaults->densities.data();
  schedule->density_count = static_cast<int32_t>(defaults->densities.size());
  schedule->dense_layers = dense_layers->data();
  schedule->dense_layer_count = static_cast<int32_t>(dense_layers->size());
}

sparsejit_status sparsejit_mask_schedule_decide(const sparsejit_mask_schedule* schedule, int32_t step, int32_t layer,
                                                sparsejit_mask_decision* decision) {
  return guarded(__func__, [&] {
    require_pointer(schedule, "schedule");
    require_pointer(decision, "decision");
    // A list of `count` values at `values` (a count of 0: none).
    const auto list = [](const auto* values, int32_t count, const char* name) {
      using Value = std::remove_cv_t<std::remove_pointer_t<decltype(values)>>;
      if (count < 0)
        fail(SPARSEJIT_ERROR_INVALID_ARGUMENT,
             std::string("schedule->") + name + " has the negative count " + std::to_string(count));
      if (count > 0) require_pointer(values, std::string("schedule->") + name);
      return count > 0 ? std::vector<Value>(values, values + count) : std::vector<Value>{};
    };
    runtime::MaskScheduleConfig config;
    config.steps = schedule->steps;
    config.dense_steps = schedule->dense_steps;
    config.refresh_interval = schedule->refresh_interval;
    config.densities = list(schedule->densities, schedule->density_count, "densities");
    config.thresholds = list(schedule->thresholds, schedule->threshold_count, "thresholds");
    const std::vector<int32_t> dense_layers = list(schedule->dense_layers, schedule->dense_layer_count, "dense_layers");
    config.dense_layers.assign(dense_layers.begin(), dense_layers.end());
    const runtime::MaskDecision decided = runtime::MaskSchedule(std::move(config)).decide(step, layer);
    sparsejit_mask_decision result{};
    result.action = decided.action == runtime::MaskAction::refresh ? SPARSEJIT_MASK_REFRESH
                    : decided.action == runtime::MaskAction::reuse ? SPARSEJIT_MASK_REUSE
                                                                   : SPARSEJIT_MASK_DENSE;
    result.window = decided.window;
    result.density = decided.density;
    result.threshold = decided.threshold;
    *decision = result;
  });
}

void sparsejit_attention_args_init(sparsejit_attention_args* args) {
  if (args != nullptr) *args = sparsejit_attention_args{};
}

sparsejit_status sparsejit_attention_validate(const sparsejit_attention_args* args) {
  return guarded(__func__, [&] { validated_attention(args); });
}

sparsejit_status sparsejit_attention(sparsejit_runtime* runtime, const sparsejit_attention_args* args,
                                     sparsejit_stream stream) {
  return guarded(__func__, [&] {
    require_pointer(runtime, "runtime");
    const AttentionCall call = validated_attention(args);
    runtime::Runtime& cpp_runtime = runtime_of(runtime);
    if (args->checked != 0) {
      try {
        cpp_runtime.check_attention_mask(call.params, call.problem, stream);
      } catch (const std::invalid_argument& error) {
        fail(SPARSEJIT_ERROR_BAD_MASK, error.what());
      }
    }
    cpp_runtime.sparse_attention(call.params, call.problem, stream);
  });
}

const char* sparsejit_lookup_level_name(sparsejit_lookup_level level) {
  switch (level) {
    case SPARSEJIT_LOOKUP_EXACT: return "exact";
    case SPARSEJIT_LOOKUP_NEAREST_BUCKET: return "nearest bucket";
    case SPARSEJIT_LOOKUP_SAME_COMPUTE_CAPABILITY: return "same compute capability";
    case SPARSEJIT_LOOKUP_BUILT_IN_DEFAULT: return "built-in default";
  }
  return "unknown";
}

sparsejit_status sparsejit_attention_lookup(sparsejit_runtime* runtime, const sparsejit_attention_args* args,
                                            sparsejit_attention_choice* choice) {
  return guarded(__func__, [&] {
    require_pointer(runtime, "runtime");
    require_pointer(choice, "choice");
    const AttentionCall call = validated_attention(args);
    const runtime::AttentionChoice& found = runtime->runtime.attention_config(
        call.problem, templates::attention_call_shape(call.params, call.problem.block_kv));
    sparsejit_attention_choice result;
    switch (found.level) {
      case runtime::LookupLevel::exact: result.level = SPARSEJIT_LOOKUP_EXACT; break;
      case runtime::LookupLevel::nearest_bucket: result.level = SPARSEJIT_LOOKUP_NEAREST_BUCKET; break;
      case runtime::LookupLevel::same_compute_capability: result.level = SPARSEJIT_LOOKUP_SAME_COMPUTE_CAPABILITY; break;
      case runtime::LookupLevel::built_in_default: result.level = SPARSEJIT_LOOKUP_BUILT_IN_DEFAULT; break;
    }
    result.block_m = found.config.block_m;
    result.block_n = found.config.block_n;
    result.warps = found.config.warps;
    result.problem_key = found.problem_key.c_str();
    result.source_key = found.source_key.c_str();
    result.source_gpu = found.source_gpu.c_str();
    *choice = result;
  });
}

}  // extern "C"
