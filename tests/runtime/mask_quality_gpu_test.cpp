// MaskQuality on a GPU against float64 references on a ragged problem: the block masses
// (block_mass_reference), the recall of a block-only mask (the reference masses of its kept
// blocks), and the recall and output error of block-only and fine-bit masks
// (sparse_attention_reference of the downloaded mask against the reference's dense output).
#include <gtest/gtest.h>

#include <cmath>

#include "jit/device_memory.h"
#include "runtime/mask_builder.h"
#include "runtime/mask_quality.h"
#include "templates/attention_quality/attention_quality_reference.h"
#include "templates/sparse_attention/attention_reference.h"
#include "tests/support/gpu_test.h"
#include "tests/support/tensor_layout.h"

namespace sparsejit::runtime {
namespace {

using jit::copy_device_to_host_as;
using templates::BlockMask;
using templates::HalfDtype;

class MaskQualityGpuTest : public testing::GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    runtime_ = std::make_unique<Runtime>(
        RuntimeOptions{.device = context().ordinal(), .database_path = std::nullopt, .use_database = false});
    stream_ = std::make_unique<jit::Stream>();
  }
  std::unique_ptr<Runtime> runtime_;
  std::unique_ptr<jit::Stream> stream_;
  std::mt19937_64 generator_ = testing::fresh_generator();
};

TEST_F(MaskQualityGpuTest, MatchesTheReferences) {
  const int heads = 2, tokens = 700, head_dim = 128;
  const HalfDtype dtype = HalfDtype::bf16;
  const std::size_t elements = static_cast<std::size_t>(heads) * tokens * head_dim;
  // Scale 1.5: rows far from uniform, so a mask's choice matters.
  const auto q = templates::random_half(elements, dtype, generator_, 1.5f);
  const auto k = templates::random_half(elements, dtype, generator_, 1.5f);
  const auto v = templates::random_half(elements, dtype, generator_);
  const jit::DeviceBuffer dq = jit::DeviceBuffer::from_host(q), dk = jit::DeviceBuffer::from_host(k),
                          dv = jit::DeviceBuffer::from_host(v);
  const auto strides = testing::dense_strides(templates::TokenLayout::bnhd, heads, tokens, head_dim);
  AttentionInputs inputs;
  QueryKeyInputs& qk = inputs.qk;
  qk.q = dq.pointer();
  qk.k = dk.pointer();
  qk.q_batch_stride = qk.k_batch_stride = inputs.v_batch_stride = strides[0];
  qk.q_head_stride = qk.k_head_stride = inputs.v_head_stride = strides[1];
  qk.q_token_stride = qk.k_token_stride = inputs.v_token_stride = strides[2];
  inputs.v = dv.pointer();
  qk.batch = 1;
  qk.heads = heads;
  qk.tokens_q = qk.tokens_kv = tokens;
  qk.head_dim = head_dim;
  qk.dtype = dtype;
  qk.softmax_scale = 1.0f / std::sqrt(static_cast<float>(head_dim));

  MaskQuality quality(*runtime_, inputs, 128, 128, stream_->handle());
  const int q_blocks = quality.q_blocks(), kv_blocks = quality.kv_blocks();

  BlockMassParams host_mass{};
  host_mass.q = q.data();
  host_mass.k = k.data();
  host_mass.q_batch_stride = host_mass.k_batch_stride = strides[0];
  host_mass.q_head_stride = host_mass.k_head_stride = strides[1];
  host_mass.q_token_stride = host_mass.k_token_stride = strides[2];
  host_mass.batch = 1;
  host_mass.heads = heads;
  host_mass.tokens_q = host_mass.tokens_kv = tokens;
  host_mass.softmax_scale = qk.softmax_scale;
  const templates::BlockMassReference mass_ref = templates::block_mass_reference(host_mass, dtype, head_dim, 128, 128);
  const std::vector<float>& masses = quality.block_masses();
  EXPECT_LE(templates::relative_l2_error(std::vector<double>(masses.begin(), masses.end()), mass_ref.mass), 1e-3);

  SparseAttentionParams host_attention{};
  host_attention.q = q.data();
  host_attention.k = k.data();
  host_attention.v = v.data();
  host_attention.q_batch_stride = host_attention.k_batch_stride = host_attention.v_batch_stride = strides[0];
  host_attention.q_head_stride = host_attention.k_head_stride = host_attention.v_head_stride = strides[1];
  host_attention.q_token_stride = host_attention.k_token_stride = host_attention.v_token_stride = strides[2];
  host_attention.batch = 1;
  host_attention.heads = heads;
  host_attention.tokens_q = host_attention.tokens_kv = tokens;
  host_attention.softmax_scale = qk.softmax_scale;
  BlockMask all;
  all.batch = 1;
  all.heads = heads;
  all.q_blocks = q_blocks;
  all.kv_blocks = all.max_kv_blocks = kv_blocks;
  all.block_q = all.block_kv = 128;
  all.count.assign(static_cast<std::size_t>(heads) * q_blocks, kv_blocks);
  for (int row = 0; row < heads * q_blocks; ++row)
    for (int kb = 0; kb < kv_blocks; ++kb) all.index.push_back(kb);
  const templates::AttentionReference dense = templates::sparse_attention_reference(host_attention, dtype, head_dim, all);

  MaskBuilder builder(*runtime_);
  for (int fine_n : {0, 16}) {
    SCOPED_TRACE(fine_n == 0 ? "block-only" : "fine bits 16");
    const MaskBuildOptions options{.density = 0.4, .fine_n = fine_n, .fine_share = 0.8};
    const DeviceBlockMask mask = builder.build(qk, options, stream_->handle());
    const MaskQualityReport report = quality.measure(mask, fine_n);

    BlockMask host;
    host.batch = 1;
    host.heads = heads;
    host.q_blocks = q_blocks;
    host.kv_blocks = kv_blocks;
    host.max_kv_blocks = mask.layout.max_kv_blocks;
    host.block_q = host.block_kv = 128;
    host.fine_n = fine_n;
    host.count = copy_device_to_host_as<int>(mask.kv_block_count, mask.layout.count_elements());
    host.index = copy_device_to_host_as<int>(mask.kv_block_index, mask.layout.index_elements());
    if (fine_n > 0)
      host.fine_bits = copy_device_to_host_as<std::uint64_t>(mask.fine_bits, mask.layout.index_elements());
    const templates::AttentionReference sparse = templates::sparse_attention_reference(host_attention, dtype, head_dim, host);

    ASSERT_EQ(report.recall.size(), static_cast<std::size_t>(heads));
    for (int h = 0; h < heads; ++h) {
      double recall = 0.0, squared_error = 0.0, squared_reference = 0.0, kept_mass = 0.0;
      for (int n = 0; n < tokens; ++n) {
        const std::size_t row = static_cast<std::size_t>(h) * tokens + n;
        recall += std::exp(sparse.lse[row] - dense.lse[row]);
        for (int d = 0; d < head_dim; ++d) {
          const double difference = sparse.o[row * head_dim + d] - dense.o[row * head_dim + d];
          squared_error += difference * difference;
          squared_reference += dense.o[row * head_dim + d] * dense.o[row * head_dim + d];
        }
      }
      for (int qb = 0; qb < q_blocks; ++qb)
        for (int kb : host.kept_blocks(0, h, qb)) kept_mass += mass_ref.mass[(static_cast<std::size_t>(h) * q_blocks + qb) * kv_blocks + kb];
      recall /= tokens;
      EXPECT_NEAR(report.recall[h], recall, 2e-3) << "head " << h;
      if (fine_n == 0) {
        EXPECT_NEAR(report.recall[h], kept_mass / tokens, 2e-3) << "head " << h;
      }
      // O is stored in bf16 (relative rounding ~4e-3 per element on both sides).
      const double expected_error = std::sqrt(squared_error / squared_reference);
      EXPECT_NEAR(report.slice_relative_error(h), expected_error, 0.05 * expected_error + 5e-3) << "head " << h;
      EXPECT_LT(report.recall[h], 1.0);
      EXPECT_GT(report.recall[h], 0.3);
    }
  }
}

}  // namespace
}  // namespace sparsejit::runtime
