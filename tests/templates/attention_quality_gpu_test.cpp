// attention_quality on the GPU against its float64 references, on fresh random inputs with
// poisoned (NaN) outputs: block_mass for every dtype x head dim with the block pairs and
// layouts in rotation on ragged lengths (several key blocks, so the per-warp sums alternate
// their slots), and output_error's per-chunk sums added up per head.
#include <gtest/gtest.h>

#include <cmath>

#include "jit/device.h"
#include "jit/device_memory.h"
#include "jit/kernel_provider.h"
#include "templates/attention_quality/attention_quality_family.h"
#include "templates/attention_quality/attention_quality_reference.h"
#include "tests/support/gpu_test.h"
#include "tests/support/tensor_layout.h"

namespace sparsejit::templates {
namespace {

using testing::dense_strides;

class AttentionQualityGpuTest : public testing::GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    stream_ = std::make_unique<jit::Stream>();
    const jit::DeviceInfo info = jit::query_device(context().ordinal());
    target_ = jit::Target::for_compute_capability(info.cc_major, info.cc_minor);
    max_shared_ = info.max_shared_bytes_per_block;
  }

  jit::KernelProvider provider_{nullptr};
  std::unique_ptr<jit::Stream> stream_;
  jit::Target target_ = jit::Target::parse("sm_90");
  int max_shared_ = 0;
  std::mt19937_64 generator_ = testing::fresh_generator();
};

TEST_F(AttentionQualityGpuTest, BlockMassMatchesTheReference) {
  int index = 0;
  for (HalfDtype dtype : {HalfDtype::bf16, HalfDtype::fp16})
    for (int head_dim : kQualityHeadDims) {
      const BlockMassConfig config{dtype, head_dim, kQualityBlockSizes[index % 2], kQualityBlockSizes[(index / 2) % 2]};
      const TokenLayout layout = index % 3 == 0 ? TokenLayout::bhnd : TokenLayout::bnhd;
      const int batch = index % 2 == 0 ? 2 : 1, heads = 2, tokens_q = 301 + 64 * index, tokens_kv = 700 - 37 * index;
      SCOPED_TRACE(config.label() + " N " + std::to_string(tokens_q) + "x" + std::to_string(tokens_kv));
      // Scale 2: far from uniform rows, so misplaced mass shows.
      const auto q = random_half(static_cast<std::size_t>(batch) * heads * tokens_q * head_dim, dtype, generator_, 2.f);
      const auto k = random_half(static_cast<std::size_t>(batch) * heads * tokens_kv * head_dim, dtype, generator_, 2.f);
      const auto qs = dense_strides(layout, heads, tokens_q, head_dim), ks = dense_strides(layout, heads, tokens_kv, head_dim);
      BlockMassParams p{};
      p.q_batch_stride = qs[0];
      p.q_head_stride = qs[1];
      p.q_token_stride = qs[2];
      p.k_batch_stride = ks[0];
      p.k_head_stride = ks[1];
      p.k_token_stride = ks[2];
      p.batch = batch;
      p.heads = heads;
      p.tokens_q = tokens_q;
      p.tokens_kv = tokens_kv;
      p.softmax_scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
      BlockMassParams host = p;
      host.q = q.data();
      host.k = k.data();
      const BlockMassReference ref = block_mass_reference(host, dtype, head_dim, config.block_q, config.block_kv);

      const jit::DeviceBuffer dq = jit::DeviceBuffer::from_host(q), dk = jit::DeviceBuffer::from_host(k);
      const std::vector<float> lse(ref.lse.begin(), ref.lse.end());
      const jit::DeviceBuffer dlse = jit::DeviceBuffer::from_host(lse);
      jit::DeviceBuffer mass(ref.mass.size() * sizeof(float));
      mass.fill(0xff);  // NaN: an unwritten pair fails the comparison
      p.q = dq.pointer();
      p.k = dk.pointer();
      p.lse = static_cast<const float*>(dlse.pointer());
      p.mass = static_cast<float*>(mass.pointer());
      const jit::Kernel kernel = provider_.kernel(context(), AttentionQualityFamily::render_block_mass(config, target_));
      AttentionQualityFamily::launch(kernel, config, p, max_shared_, stream_->handle());
      stream_->synchronize();
      const std::vector<float> result = mass.download_as<float>();
      const std::vector<double> actual(result.begin(), result.end());
      EXPECT_LE(relative_l2_error(actual, ref.mass), 1e-4) << "NaN: a block pair was not written";
      ++index;
    }
}

TEST_F(AttentionQualityGpuTest, OutputErrorSumsMatchTheReference) {
  for (HalfDtype dtype : {HalfDtype::bf16, HalfDtype::fp16})
    for (int head_dim : kQualityHeadDims) {
      const OutputErrorConfig config{dtype, head_dim};
      const TokenLayout layout = head_dim == 96 ? TokenLayout::bhnd : TokenLayout::bnhd;
      const int batch = 2, heads = 3, tokens = 1000 + head_dim;  // a ragged last chunk
      SCOPED_TRACE(config.label());
      const std::size_t elements = static_cast<std::size_t>(batch) * heads * tokens * head_dim;
      const auto o = random_half(elements, dtype, generator_), reference = random_half(elements, dtype, generator_);
      std::vector<float> lse(static_cast<std::size_t>(batch) * heads * tokens), lse_reference(lse.size());
      std::normal_distribution<float> normal(3.f, 1.f);
      for (std::size_t i = 0; i < lse.size(); ++i) {
        lse_reference[i] = normal(generator_);
        lse[i] = lse_reference[i] - std::abs(normal(generator_) - 3.f);  // a kept share in (0, 1]
      }
      const auto strides = dense_strides(layout, heads, tokens, head_dim);
      OutputErrorParams p{};
      p.o_batch_stride = strides[0];
      p.o_head_stride = strides[1];
      p.o_token_stride = strides[2];
      p.batch = batch;
      p.heads = heads;
      p.tokens = tokens;
      OutputErrorParams host = p;
      host.o = o.data();
      host.o_reference = reference.data();
      host.lse = lse.data();
      host.lse_reference = lse_reference.data();
      const std::vector<double> expected = output_error_reference(host, dtype, head_dim);

      const jit::DeviceBuffer d_o = jit::DeviceBuffer::from_host(o), d_reference = jit::DeviceBuffer::from_host(reference),
                              d_lse = jit::DeviceBuffer::from_host(lse),
                              d_lse_reference = jit::DeviceBuffer::from_host(lse_reference);
      const int chunks = output_error_chunks(tokens);
      jit::DeviceBuffer partials(static_cast<std::size_t>(batch) * heads * chunks * 3 * sizeof(double));
      partials.fill(0xff);
      p.o = d_o.pointer();
      p.o_reference = d_reference.pointer();
      p.lse = static_cast<const float*>(d_lse.pointer());
      p.lse_reference = static_cast<const float*>(d_lse_reference.pointer());
      p.partials = static_cast<double*>(partials.pointer());
      const jit::Kernel kernel = provider_.kernel(context(), AttentionQualityFamily::render_output_error(config, target_));
      AttentionQualityFamily::launch(kernel, config, p, stream_->handle());
      stream_->synchronize();
      const std::vector<double> sums = partials.download_as<double>();
      std::vector<double> actual(expected.size(), 0.0);
      for (int slice = 0; slice < batch * heads; ++slice)
        for (int c = 0; c < chunks; ++c)
          for (int i = 0; i < 3; ++i) actual[slice * 3 + i] += sums[(static_cast<std::size_t>(slice) * chunks + c) * 3 + i];
      EXPECT_LE(relative_l2_error(actual, expected), 1e-5) << "NaN: a chunk was not written";
    }
}

}  // namespace
}  // namespace sparsejit::templates
