#include "runtime/mask_quality.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <stdexcept>

#include "jit/driver_api.h"
#include "templates/attention_quality/attention_quality_family.h"
#include "templates/common/ceil_div.h"
#include "templates/sparse_attention/block_mask.h"

namespace sparsejit::runtime {
namespace {

void check_sizes(const QueryKeyInputs& qk) {
  if (qk.batch < 1 || qk.heads < 1 || qk.tokens_q < 1 || qk.tokens_kv < 1)
    throw std::invalid_argument("mask quality: batch, heads and tokens must be positive");
}

// sparse_attention's parameters for `inputs`, writing `o` ([B, H, N, D] dense) and `lse`.
SparseAttentionParams attention_params(const AttentionInputs& inputs, void* o, float* lse) {
  const QueryKeyInputs& qk = inputs.qk;
  SparseAttentionParams p{};
  p.q = qk.q;
  p.k = qk.k;
  p.v = inputs.v;
  p.o = o;
  p.q_batch_stride = qk.q_batch_stride;
  p.q_head_stride = qk.q_head_stride;
  p.q_token_stride = qk.q_token_stride;
  p.k_batch_stride = qk.k_batch_stride;
  p.k_head_stride = qk.k_head_stride;
  p.k_token_stride = qk.k_token_stride;
  p.v_batch_stride = inputs.v_batch_stride;
  p.v_head_stride = inputs.v_head_stride;
  p.v_token_stride = inputs.v_token_stride;
  // O: dense [B, H, N, D].
  p.o_token_stride = qk.head_dim;
  p.o_head_stride = static_cast<long long>(qk.tokens_q) * qk.head_dim;
  p.o_batch_stride = p.o_head_stride * qk.heads;
  p.lse = lse;
  p.batch = qk.batch;
  p.heads = qk.heads;
  p.tokens_q = qk.tokens_q;
  p.tokens_kv = qk.tokens_kv;
  p.softmax_scale = qk.softmax_scale;
  return p;
}

// Runs `inputs` with every key block kept (a bitmask of all ones, ceil(KB / 64) words a
// row), writing the exact O (dense [B, H, N, D]) and LSE. Synchronizes `stream` (the mask is
// freed on return).
void run_dense(Runtime& runtime, const AttentionInputs& inputs, int block_q, int block_kv, void* o, float* lse,
               CUstream stream) {
  const QueryKeyInputs& qk = inputs.qk;
  const int kv_blocks = ceil_div(qk.tokens_kv, block_kv);
  const std::size_t rows = static_cast<std::size_t>(qk.batch) * static_cast<std::size_t>(qk.heads) *
                           static_cast<std::size_t>(ceil_div(qk.tokens_q, block_q));
  const int words = templates::bitmask_words(kv_blocks);
  std::vector<unsigned long long> row_bits(static_cast<std::size_t>(words), ~0ull);
  if (kv_blocks % 64 != 0) row_bits.back() = (1ull << (kv_blocks % 64)) - 1;
  std::vector<unsigned long long> bits;
  bits.reserve(rows * words);
  for (std::size_t row = 0; row < rows; ++row) bits.insert(bits.end(), row_bits.begin(), row_bits.end());
  const jit::DeviceBuffer every_block = jit::DeviceBuffer::from_host(bits);

  SparseAttentionParams dense = attention_params(inputs, o, lse);
  dense.kv_block_bits = static_cast<const unsigned long long*>(every_block.pointer());
  dense.kv_block_words = words;
  dense.max_kv_blocks = kv_blocks;
  runtime.sparse_attention(dense, {qk.dtype, qk.head_dim, block_q, block_kv, 0}, stream);
  SJ_CU(cuStreamSynchronize(stream));
}

// block_mass of Q and K under the rows' exact `lse`: [B, H, QB, KB] on the host. Synchronizes.
std::vector<float> masses_under_lse(Runtime& runtime, const QueryKeyInputs& qk, int block_q, int block_kv,
                                    const float* lse, CUstream stream) {
  using templates::AttentionQualityFamily;
  const jit::ScopedCurrentContext current(runtime.context());
  const templates::BlockMassConfig config{qk.dtype, qk.head_dim, block_q, block_kv};
  jit::DeviceBuffer mass(static_cast<std::size_t>(qk.batch) * qk.heads * ceil_div(qk.tokens_q, block_q) *
                         ceil_div(qk.tokens_kv, block_kv) * sizeof(float));
  BlockMassParams p{};
  p.q = qk.q;
  p.k = qk.k;
  p.q_batch_stride = qk.q_batch_stride;
  p.q_head_stride = qk.q_head_stride;
  p.q_token_stride = qk.q_token_stride;
  p.k_batch_stride = qk.k_batch_stride;
  p.k_head_stride = qk.k_head_stride;
  p.k_token_stride = qk.k_token_stride;
  p.lse = lse;
  p.mass = static_cast<float*>(mass.pointer());
  p.batch = qk.batch;
  p.heads = qk.heads;
  p.tokens_q = qk.tokens_q;
  p.tokens_kv = qk.tokens_kv;
  p.softmax_scale = qk.softmax_scale;
  const jit::Kernel kernel =
      runtime.kernels().kernel(runtime.context(), AttentionQualityFamily::render_block_mass(config, runtime.target()));
  AttentionQualityFamily::launch(kernel, config, p, runtime.device().max_shared_bytes_per_block, stream);
  SJ_CU(cuStreamSynchronize(stream));
  return mass.download_as<float>();
}

}  // namespace

double MaskQualityReport::mean_recall() const {
  return recall.empty() ? 0.0 : std::accumulate(recall.begin(), recall.end(), 0.0) / static_cast<double>(recall.size());
}

double MaskQualityReport::relative_error() const {
  const double error = std::accumulate(squared_error.begin(), squared_error.end(), 0.0);
  const double reference = std::accumulate(squared_reference.begin(), squared_reference.end(), 0.0);
  return std::sqrt(error / reference);
}

double MaskQualityReport::slice_relative_error(std::size_t slice) const {
  return std::sqrt(squared_error.at(slice) / squared_reference.at(slice));
}

MaskQuality::MaskQuality(Runtime& runtime, const AttentionInputs& inputs, int block_q, int block_kv, CUstream stream)
    : runtime_(runtime),
      inputs_(inputs),
      block_q_(block_q),
      block_kv_(block_kv),
      q_blocks_(ceil_div(inputs.qk.tokens_q, block_q)),
      kv_blocks_(ceil_div(inputs.qk.tokens_kv, block_kv)),
      stream_(stream) {
  const QueryKeyInputs& qk = inputs.qk;
  check_sizes(qk);
  const jit::ScopedCurrentContext current(runtime_.context());
  const std::size_t slices = static_cast<std::size_t>(qk.batch) * static_cast<std::size_t>(qk.heads);
  const std::size_t rows = slices * static_cast<std::size_t>(qk.tokens_q);
  dense_o_ = jit::DeviceBuffer(rows * static_cast<std::size_t>(qk.head_dim) * 2);
  sparse_o_ = jit::DeviceBuffer(dense_o_.bytes());
  dense_lse_ = jit::DeviceBuffer(rows * sizeof(float));
  sparse_lse_ = jit::DeviceBuffer(rows * sizeof(float));
  partials_ = jit::DeviceBuffer(slices * templates::output_error_chunks(qk.tokens_q) * 3 * sizeof(double));
  run_dense(runtime_, inputs_, block_q_, block_kv_, dense_o_.pointer(), static_cast<float*>(dense_lse_.pointer()),
            stream_);
}

const std::vector<float>& MaskQuality::block_masses() {
  if (masses_.empty())
    masses_ = masses_under_lse(runtime_, inputs_.qk, block_q_, block_kv_,
                               static_cast<const float*>(dense_lse_.pointer()), stream_);
  return masses_;
}

std::vector<float> exact_block_masses(Runtime& runtime, const QueryKeyInputs& inputs, int block_q, int block_kv,
                                      CUstream stream) {
  check_sizes(inputs);
  const jit::ScopedCurrentContext current(runtime.context());
  // The row LSE does not depend on V: K serves as V (same tokens and head dim).
  AttentionInputs keys_as_values{inputs, inputs.k, inputs.k_batch_stride, inputs.k_head_stride, inputs.k_token_stride};
  const std::size_t rows = static_cast<std::size_t>(inputs.batch) * static_cast<std::size_t>(inputs.heads) *
                           static_cast<std::size_t>(inputs.tokens_q);
  jit::DeviceBuffer o(rows * static_cast<std::size_t>(inputs.head_dim) * 2), lse(rows * sizeof(float));
  run_dense(runtime, keys_as_values, block_q, block_kv, o.pointer(), static_cast<float*>(lse.pointer()), stream);
  return masses_under_lse(runtime, inputs, block_q, block_kv, static_cast<const float*>(lse.pointer()), stream);
}

MaskQualityReport MaskQuality::measure(const DeviceBlockMask& mask, int fine_n) {
  using templates::AttentionQualityFamily;
  const QueryKeyInputs& qk = inputs_.qk;
  const jit::ScopedCurrentContext current(runtime_.context());
  SparseAttentionParams sparse =
      attention_params(inputs_, sparse_o_.pointer(), static_cast<float*>(sparse_lse_.pointer()));
  sparse.kv_block_count = mask.kv_block_count;
  sparse.kv_block_index = mask.kv_block_index;
  sparse.fine_bits = mask.fine_bits;
  sparse.max_kv_blocks = mask.layout.max_kv_blocks;
  runtime_.sparse_attention(sparse, {qk.dtype, qk.head_dim, block_q_, block_kv_, mask.fine_bits ? fine_n : 0}, stream_);

  const templates::OutputErrorConfig config{qk.dtype, qk.head_dim};
  OutputErrorParams p{};
  p.o = sparse_o_.pointer();
  p.o_reference = dense_o_.pointer();
  p.o_token_stride = sparse.o_token_stride;
  p.o_head_stride = sparse.o_head_stride;
  p.o_batch_stride = sparse.o_batch_stride;
  p.lse = static_cast<const float*>(sparse_lse_.pointer());
  p.lse_reference = static_cast<const float*>(dense_lse_.pointer());
  p.partials = static_cast<double*>(partials_.pointer());
  p.batch = qk.batch;
  p.heads = qk.heads;
  p.tokens = qk.tokens_q;
  const jit::Kernel kernel =
      runtime_.kernels().kernel(runtime_.context(), AttentionQualityFamily::render_output_error(config, runtime_.target()));
  AttentionQualityFamily::launch(kernel, config, p, stream_);
  SJ_CU(cuStreamSynchronize(stream_));

  const std::vector<double> partials = partials_.download_as<double>();
  const std::size_t slices = static_cast<std::size_t>(qk.batch) * qk.heads;
  const std::size_t chunks = static_cast<std::size_t>(templates::output_error_chunks(qk.tokens_q));
  MaskQualityReport report;
  report.recall.assign(slices, 0.0);
  report.squared_error.assign(slices, 0.0);
  report.squared_reference.assign(slices, 0.0);
  for (std::size_t slice = 0; slice < slices; ++slice) {
    for (std::size_t c = 0; c < chunks; ++c) {
      const double* sums = &partials[(slice * chunks + c) * 3];
      report.squared_error[slice] += sums[0];
      report.squared_reference[slice] += sums[1];
      report.recall[slice] += sums[2];
    }
    report.recall[slice] /= qk.tokens_q;
  }
  return report;
}

std::vector<std::vector<double>> oracle_recall_curves(std::span<const float> masses, int slices, int q_blocks,
                                                      int kv_blocks, int tokens_q) {
  if (slices < 1 || q_blocks < 1 || kv_blocks < 1 || tokens_q < 1)
    throw std::invalid_argument("oracle_recall_curves: sizes must be positive");
  const std::size_t row_length = static_cast<std::size_t>(kv_blocks);
  if (masses.size() != static_cast<std::size_t>(slices) * q_blocks * row_length)
    throw std::invalid_argument("oracle_recall_curves: " + std::to_string(masses.size()) + " masses for " +
                                std::to_string(slices) + " x " + std::to_string(q_blocks) + " x " +
                                std::to_string(kv_blocks));
  std::vector<std::vector<double>> curves(static_cast<std::size_t>(slices), std::vector<double>(row_length + 1, 0.0));
  std::vector<double> row(row_length);
  for (int slice = 0; slice < slices; ++slice) {
    std::vector<double>& curve = curves[static_cast<std::size_t>(slice)];
    for (int qb = 0; qb < q_blocks; ++qb) {
      const float* first = masses.data() + (static_cast<std::size_t>(slice) * q_blocks + qb) * row_length;
      std::copy(first, first + row_length, row.begin());
      std::sort(row.begin(), row.end(), std::greater<>());
      double kept = 0.0;
      for (std::size_t k = 0; k < row_length; ++k) curve[k + 1] += (kept += row[k]);
    }
    for (double& value : curve) value /= tokens_q;
  }
  return curves;
}

double density_for_recall(std::span<const double> curve, double recall) {
  if (curve.size() < 2) throw std::invalid_argument("density_for_recall: a curve has at least k = 0 and k = 1");
  const std::size_t kv_blocks = curve.size() - 1;
  for (std::size_t k = 1; k < kv_blocks; ++k)
    if (curve[k] >= recall) return static_cast<double>(k) / static_cast<double>(kv_blocks);
  return 1.0;
}

}  // namespace sparsejit::runtime
