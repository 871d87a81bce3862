// sparse_attention on the GPU against the float64 CPU reference: every dtype, head dim, block
// pair and fine granularity on ragged sizes with both layouts and empty rows; every tile of
// one problem; the model sequence lengths (checked on sampled query blocks); the mask
// validation mode. Outputs are poisoned (NaN) first, so an unwritten element fails.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <optional>

#include "jit/device_memory.h"
#include "jit/driver_api.h"
#include "jit/kernel_provider.h"
#include "jit/work_counters.h"
#include "runtime/runtime.h"
#include "templates/sparse_attention/attention_family.h"
#include "templates/sparse_attention/attention_reference.h"
#include "templates/sparse_attention/block_mask.h"
#include "tests/support/gpu_test.h"
#include "tests/support/tensor_layout.h"
#include "tests/support/test_support.h"

namespace sparsejit::templates {
namespace {

using Storage = TokenLayout;
using testing::dense_strides;
using testing::relative_error_bound;

// One attention problem with its host data, device copies and both parameter sets.
struct AttentionCase {
  int batch, heads, tokens_q, tokens_kv, head_dim;
  HalfDtype dtype;
  Storage storage;
  BlockMask mask;
  std::vector<std::uint16_t> q, k, v;  // stored in `storage` order
  SparseAttentionParams host{};        // host pointers (for the reference)
  SparseAttentionParams device{};      // device pointers (for the kernel)
  jit::DeviceBuffer dq, dk, dv, dout, dlse, dcount, dindex, dfine, dbits;

  AttentionCase(int b, int h, int nq, int nkv, int d, HalfDtype type, Storage layout, BlockMask m,
                std::mt19937_64& generator, bool with_lse = true)
      : batch(b), heads(h), tokens_q(nq), tokens_kv(nkv), head_dim(d), dtype(type), storage(layout),
        mask(std::move(m)) {
    q = random_half(static_cast<std::size_t>(b) * h * nq * d, type, generator);
    k = random_half(static_cast<std::size_t>(b) * h * nkv * d, type, generator);
    v = random_half(static_cast<std::size_t>(b) * h * nkv * d, type, generator);
    dq = jit::DeviceBuffer::from_host(q);
    dk = jit::DeviceBuffer::from_host(k);
    dv = jit::DeviceBuffer::from_host(v);
    dout = jit::DeviceBuffer(q.size() * 2);
    dout.fill(0xff);  // NaN in both dtypes
    if (with_lse) {
      dlse = jit::DeviceBuffer(static_cast<std::size_t>(b) * h * nq * sizeof(float));
      dlse.fill(0xff);
    }
    dcount = jit::DeviceBuffer::from_host(mask.count);
    dindex = jit::DeviceBuffer::from_host(mask.index.empty() ? std::vector<int>{0} : mask.index);
    if (mask.fine_n > 0) dfine = jit::DeviceBuffer::from_host(mask.fine_bits);
    const auto qs = dense_strides(layout, h, nq, d), ks = dense_strides(layout, h, nkv, d);
    for (SparseAttentionParams* p : {&host, &device}) {
      p->q_batch_stride = p->o_batch_stride = qs[0];
      p->q_head_stride = p->o_head_stride = qs[1];
      p->q_token_stride = p->o_token_stride = qs[2];
      p->k_batch_stride = p->v_batch_stride = ks[0];
      p->k_head_stride = p->v_head_stride = ks[1];
      p->k_token_stride = p->v_token_stride = ks[2];
      p->max_kv_blocks = mask.max_kv_blocks;
      p->batch = b;
      p->heads = h;
      p->tokens_q = nq;
      p->tokens_kv = nkv;
      p->softmax_scale = 1.0f / std::sqrt(static_cast<float>(d));
    }
    host.q = q.data();
    host.k = k.data();
    host.v = v.data();
    device.q = dq.pointer();
    device.k = dk.pointer();
    device.v = dv.pointer();
    device.o = dout.pointer();
    device.lse = with_lse ? static_cast<float*>(dlse.pointer()) : nullptr;
    device.kv_block_count = static_cast<const int*>(dcount.pointer());
    device.kv_block_index = static_cast<const int*>(dindex.pointer());
    device.fine_bits = mask.fine_n > 0 ? static_cast<const unsigned long long*>(dfine.pointer()) : nullptr;
  }

  // Hands the kernel the mask as a bitmask instead of block-CSR (fine bits unchanged: they
  // follow the kept blocks in the same ascending order) and poisons the output again.
  void use_bitmask() {
    dbits = jit::DeviceBuffer::from_host(to_bitmask(mask).bits);
    device.kv_block_bits = static_cast<const unsigned long long*>(dbits.pointer());
    device.kv_block_words = bitmask_words(mask.kv_blocks);
    device.kv_block_count = nullptr;
    device.kv_block_index = nullptr;
    dout.fill(0xff);
    if (device.lse != nullptr) dlse.fill(0xff);
  }

  runtime::AttentionProblem problem() const {
    return {dtype, head_dim, mask.block_q, mask.block_kv, mask.fine_n};
  }

  // The kernel's O as [B, H, Nq, D] doubles, in the reference's order.
  std::vector<double> output() const {
    const std::vector<std::uint16_t> stored = dout.download_as<std::uint16_t>();
    const auto s = dense_strides(storage, heads, tokens_q, head_dim);
    std::vector<double> out(stored.size());
    std::size_t i = 0;
    for (int b = 0; b < batch; ++b)
      for (int h = 0; h < heads; ++h)
        for (int n = 0; n < tokens_q; ++n)
          for (int d = 0; d < head_dim; ++d)
            out[i++] = half_bits_to_float(stored[b * s[0] + h * s[1] + n * s[2] + d], dtype);
    return out;
  }
  std::vector<double> lse() const {
    const std::vector<float> stored = dlse.download_as<float>();
    return {stored.begin(), stored.end()};
  }
};

// Compares the kernel's output (and LSE when written) with the reference.
void expect_matches(const AttentionCase& c, const std::string& what) {
  SCOPED_TRACE(what);
  const AttentionReference reference = sparse_attention_reference(c.host, c.dtype, c.head_dim, c.mask);
  const double error = relative_l2_error(c.output(), reference.o);
  EXPECT_LE(error, relative_error_bound(c.dtype)) << "relative L2 error of O (NaN: an element was not written)";
  if (c.device.lse != nullptr) {
    const std::vector<double> lse = c.lse();
    for (std::size_t i = 0; i < lse.size(); ++i) {
      if (std::isinf(reference.lse[i])) {
        ASSERT_TRUE(std::isinf(lse[i]) && lse[i] < 0) << "row " << i << " keeps nothing: LSE must be -inf";
      } else {
        ASSERT_NEAR(lse[i], reference.lse[i], 1e-3 * std::max(1.0, std::abs(reference.lse[i]))) << "row " << i;
      }
    }
  }
}

// One model-length case (bf16, D = 128, 128 x 128 blocks, half the fine sub-tiles kept).
struct ModelLengthCase {
  int tokens, heads;
  double density;
  int fine_n;
  Storage storage;
};

class AttentionGpuTest : public testing::GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    runtime_ = std::make_unique<runtime::Runtime>(
        runtime::RuntimeOptions{.device = 0, .database_path = directory_ / "kernels.db"});
    stream_ = std::make_unique<jit::Stream>();
  }
  void run(const AttentionCase& c) {
    runtime_->sparse_attention(c.device, c.problem(), stream_->handle(), /*check_mask=*/true);
    stream_->synchronize();
  }
  // Runs one given specialization (compiled on first use) instead of the runtime's choice.
  void run_config(const AttentionConfig& config, const AttentionCase& c) {
    const jit::Kernel kernel = provider_.kernel(context(), SparseAttentionFamily::render(config, runtime_->target()));
    SparseAttentionFamily::launch(kernel, config, c.device, runtime_->device().max_shared_bytes_per_block,
                                  stream_->handle());
    stream_->synchronize();
  }
  // Case `m` on the runtime's choice, or on `config` when given, checked on sampled query
  // blocks (expect_sampled_blocks_match).
  void check_model_length(const ModelLengthCase& m, std::optional<AttentionConfig> config);
  // Why the wgmma kernel does not exist on this GPU; empty where it does.
  std::string wgmma_missing() const {
    return wgmma_target(runtime_->target())
               ? ""
               : "the wgmma kernel needs compute capability 9.0; this GPU's target is " + runtime_->target().name();
  }
  jit::KernelProvider provider_{nullptr};
  testing::TempDirectory directory_;
  std::unique_ptr<runtime::Runtime> runtime_;
  std::unique_ptr<jit::Stream> stream_;
  std::mt19937_64 generator_ = testing::fresh_generator();
};

struct Problem {
  HalfDtype dtype;
  int head_dim, block_q, block_kv, fine_n;
};
void PrintTo(const Problem& p, std::ostream* out) {
  *out << to_string(p.dtype) << "_D" << p.head_dim << "_" << p.block_q << "x" << p.block_kv << "_fine"
       << p.fine_n;
}

std::vector<Problem> all_problems() {
  std::vector<Problem> problems;
  for (HalfDtype dtype : {HalfDtype::bf16, HalfDtype::fp16})
    for (int head_dim : kAttentionHeadDims)
      for (int block_q : kAttentionBlockSizes)
        for (int block_kv : kAttentionBlockSizes)
          for (int fine_n : {0, 16}) problems.push_back({dtype, head_dim, block_q, block_kv, fine_n});
  return problems;
}

class AttentionProblems : public AttentionGpuTest, public ::testing::WithParamInterface<Problem> {};

// Ragged lengths (700 queries, 900 keys), 2 batches x 2 heads, 10% empty rows, each density
// once per layout; with fine bits half the sub-tiles of every kept pair are set.
TEST_P(AttentionProblems, MatchesTheReference) {
  const Problem p = GetParam();
  const struct {
    double density;
    Storage storage;
    bool lse;
  } runs[] = {{1.0, Storage::bnhd, true}, {0.5, Storage::bhnd, false}, {0.1, Storage::bnhd, true},
              {0.02, Storage::bhnd, true}};
  for (const auto& r : runs) {
    BlockMask mask = random_block_mask(2, 2, 700, 900, p.block_q, p.block_kv, r.density, generator_,
                                       true, p.fine_n, 0.5);
    mask = with_empty_rows(std::move(mask), 0.1, generator_);
    AttentionCase c(2, 2, 700, 900, p.head_dim, p.dtype, r.storage, std::move(mask), generator_, r.lse);
    run(c);
    expect_matches(c, "density " + std::to_string(r.density) +
                          (r.storage == Storage::bhnd ? " [B,H,N,D]" : " [B,N,H,D]"));
    if (r.density == 0.1) {  // the same mask as a bitmask: the same work in the same order
      const std::vector<std::uint16_t> from_lists = c.dout.download_as<std::uint16_t>();
      c.use_bitmask();
      run(c);
      EXPECT_EQ(c.dout.download_as<std::uint16_t>(), from_lists) << "bitmask form: O differs from block-CSR's";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllProblems, AttentionProblems, ::testing::ValuesIn(all_problems()),
                         [](const auto& info) {
                           std::ostringstream name;
                           PrintTo(info.param, &name);
                           return name.str();
                         });

// Every tile configuration of the space for one problem, with and without fine bits.
TEST_F(AttentionGpuTest, EveryTileOfTheSpace) {
  const int max_shared = runtime_->device().max_shared_bytes_per_block;
  int tested = 0;
  for (int fine_n : {0, 16})
    for (int block_m : kAttentionBlockM)
      for (int block_n : kAttentionBlockN)
        for (int warps : kAttentionWarps) {
          const AttentionConfig config{HalfDtype::bf16, 128, 128, 128, block_m, block_n, warps, fine_n};
          if (!attention_config_problem(config, max_shared).empty()) continue;
          BlockMask mask = random_block_mask(1, 2, 1000, 1000, 128, 128, 0.4, generator_, true, fine_n, 0.5);
          AttentionCase c(1, 2, 1000, 1000, 128, HalfDtype::bf16, Storage::bhnd, std::move(mask), generator_);
          run_config(config, c);
          expect_matches(c, config.label());
          ++tested;
        }
  EXPECT_GE(tested, 6);
}

// Scores that climb from tile to tile, so the softmax's reference point must move in the middle
// of a row (attention_steps.cuh: it moves only when a row of the warp passes it by more than
// 2^8). Key j is scaled by 1 + j / 16: each 64-key tile's largest scaled scores lie about 10
// above the last tile's, far past that slack, and the last tiles' reach about 150, so a
// reference left behind overflows exp2 (O turns NaN), and one not moved for a lane's own keys
// or moved differently in the lanes of a quad gives rows whose sums and O disagree. The random
// inputs elsewhere stay within the slack after the first tile. Both kernels (mma.sync always,
// wgmma where the GPU has it), every dtype and head dim, density 0.5 (kept blocks in ascending
// order), ragged lengths, empty rows.
TEST_F(AttentionGpuTest, ScoresClimbingAcrossTilesMoveTheSoftmaxReference) {
  const int max_shared = runtime_->device().max_shared_bytes_per_block;
  int tested = 0;
  for (HalfDtype dtype : {HalfDtype::bf16, HalfDtype::fp16})
    for (int head_dim : kAttentionHeadDims) {
      std::vector<AttentionConfig> configs = {default_attention_config(dtype, head_dim, 128, 128, 0, max_shared)};
      if (const AttentionConfig fast = default_attention_config(dtype, head_dim, 128, 128, 0, runtime_->target());
          fast.wgmma)
        configs.push_back(fast);
      for (const AttentionConfig& config : configs) {
        BlockMask mask = with_empty_rows(random_block_mask(1, 2, 700, 900, 128, 128, 0.5, generator_), 0.1, generator_);
        AttentionCase c(1, 2, 700, 900, head_dim, dtype, Storage::bnhd, std::move(mask), generator_);
        const auto strides = dense_strides(Storage::bnhd, c.heads, c.tokens_kv, head_dim);
        for (int h = 0; h < c.heads; ++h)
          for (int j = 0; j < c.tokens_kv; ++j)
            for (int d = 0; d < head_dim; ++d) {
              std::uint16_t& key = c.k[h * strides[1] + j * strides[2] + d];
              key = float_to_half_bits(half_bits_to_float(key, dtype) * (1.0f + j / 16.0f), dtype);
            }
        c.dk.upload({reinterpret_cast<const std::uint8_t*>(c.k.data()), c.dk.bytes()});
        run_config(config, c);
        expect_matches(c, config.label() + ", keys scaled by 1 + j / 16");
        ++tested;
      }
    }
  EXPECT_GE(tested, 6);
}

// The model lengths, checked on three sampled query blocks (first, middle, last and ragged):
// the reference of the whole sequence would take minutes on the CPU.
void expect_sampled_blocks_match(const AttentionCase& c) {
  const int q_blocks = c.mask.q_blocks, block_q = c.mask.block_q;
  const std::vector<int> picked = {0, q_blocks / 2, q_blocks - 1};
  // The sub-problem: the picked query blocks in order (the last one keeps its ragged length,
  // so block membership and fine sub-tiles of every row are unchanged), same keys.
  std::vector<int> rows;
  for (int qb : picked)
    for (int n = qb * block_q; n < std::min((qb + 1) * block_q, c.tokens_q); ++n) rows.push_back(n);
  const int sub_tokens = static_cast<int>(rows.size());
  const auto s = dense_strides(c.storage, c.heads, c.tokens_q, c.head_dim);
  std::vector<std::uint16_t> sub_q(static_cast<std::size_t>(c.batch) * c.heads * sub_tokens * c.head_dim);
  for (int b = 0; b < c.batch; ++b)
    for (int h = 0; h < c.heads; ++h)
      for (int i = 0; i < sub_tokens; ++i)
        std::memcpy(&sub_q[((static_cast<std::size_t>(b) * c.heads + h) * sub_tokens + i) * c.head_dim],
                    &c.q[b * s[0] + h * s[1] + rows[i] * s[2]], c.head_dim * 2);
  BlockMask sub_mask = c.mask;
  sub_mask.q_blocks = static_cast<int>(picked.size());
  sub_mask.count.clear();
  sub_mask.index.clear();
  sub_mask.fine_bits.clear();
  for (int b = 0; b < c.batch; ++b)
    for (int h = 0; h < c.heads; ++h)
      for (int qb : picked) {
        const std::size_t row = c.mask.row(b, h, qb);
        sub_mask.count.push_back(c.mask.count[row]);
        for (int i = 0; i < c.mask.max_kv_blocks; ++i) {
          sub_mask.index.push_back(c.mask.index[row * c.mask.max_kv_blocks + i]);
          if (c.mask.fine_n > 0) sub_mask.fine_bits.push_back(c.mask.fine_bits[row * c.mask.max_kv_blocks + i]);
        }
      }
  SparseAttentionParams sub = c.host;
  sub.q = sub_q.data();
  sub.tokens_q = sub_tokens;
  const auto sub_strides = dense_strides(Storage::bhnd, c.heads, sub_tokens, c.head_dim);
  sub.q_batch_stride = sub_strides[0];
  sub.q_head_stride = sub_strides[1];
  sub.q_token_stride = sub_strides[2];
  const AttentionReference reference = sparse_attention_reference(sub, c.dtype, c.head_dim, sub_mask);

  const std::vector<std::uint16_t> stored = c.dout.download_as<std::uint16_t>();
  std::vector<double> actual;
  for (int b = 0; b < c.batch; ++b)
    for (int h = 0; h < c.heads; ++h)
      for (int row : rows)
        for (int d = 0; d < c.head_dim; ++d)
          actual.push_back(half_bits_to_float(stored[b * s[0] + h * s[1] + row * s[2] + d], c.dtype));
  EXPECT_LE(relative_l2_error(actual, reference.o), relative_error_bound(c.dtype));
}

void AttentionGpuTest::check_model_length(const ModelLengthCase& m, std::optional<AttentionConfig> config) {
  SCOPED_TRACE("N " + std::to_string(m.tokens) + " density " + std::to_string(m.density) + " fine " +
               std::to_string(m.fine_n) + (config ? " " + config->label() : ""));
  BlockMask mask =
      random_block_mask(1, m.heads, m.tokens, m.tokens, 128, 128, m.density, generator_, true, m.fine_n, 0.5);
  AttentionCase c(1, m.heads, m.tokens, m.tokens, 128, HalfDtype::bf16, m.storage, std::move(mask), generator_,
                  false);
  if (config) run_config(*config, c);
  else run(c);
  expect_sampled_blocks_match(c);
}

TEST_F(AttentionGpuTest, ModelSequenceLengths) {
  for (const ModelLengthCase& m : {ModelLengthCase{32760, 2, 1.0, 0, Storage::bnhd},
                                   ModelLengthCase{32760, 2, 0.1, 0, Storage::bhnd},
                                   ModelLengthCase{32760, 1, 0.1, 16, Storage::bnhd},
                                   ModelLengthCase{75600, 1, 0.05, 0, Storage::bnhd}})
    check_model_length(m, std::nullopt);
}

// The wgmma kernel on every dtype x head dim x block pair x fine granularity (0, 16), at its
// widest tile: ragged lengths (700 queries, 900 keys), 2 batches x 2 heads, 10% empty rows,
// both layouts, LSE, and the bitmask form bit for bit against block-CSR.
TEST_F(AttentionGpuTest, WgmmaEveryProblem) {
  if (const std::string why = wgmma_missing(); !why.empty()) GTEST_SKIP() << why;
  int tested = 0;
  for (HalfDtype dtype : {HalfDtype::bf16, HalfDtype::fp16})
    for (int head_dim : kWgmmaHeadDims)
      for (int block_q : kAttentionBlockSizes)
        for (int block_kv : kAttentionBlockSizes)
          for (int fine_n : {0, 16}) {
            const AttentionConfig config{dtype, head_dim, block_q, block_kv, block_q, block_kv,
                                         wgmma_warps(block_q), fine_n, false, true, 2};
            const Storage storage = tested % 2 == 0 ? Storage::bnhd : Storage::bhnd;
            BlockMask mask = random_block_mask(2, 2, 700, 900, block_q, block_kv, tested % 3 == 0 ? 1.0 : 0.3,
                                               generator_, true, fine_n, 0.5);
            mask = with_empty_rows(std::move(mask), 0.1, generator_);
            AttentionCase c(2, 2, 700, 900, head_dim, dtype, storage, std::move(mask), generator_);
            run_config(config, c);
            expect_matches(c, config.label() + (storage == Storage::bhnd ? " [B,H,N,D]" : " [B,N,H,D]"));
            const std::vector<std::uint16_t> from_lists = c.dout.download_as<std::uint16_t>();
            c.use_bitmask();
            AttentionConfig bitmask_config = config;
            bitmask_config.bitmask = true;
            run_config(bitmask_config, c);
            EXPECT_EQ(c.dout.download_as<std::uint16_t>(), from_lists) << config.label() << ": bitmask form differs";
            ++tested;
          }
  EXPECT_EQ(tested, 32);
}

// Every wgmma tile and stage count of one problem (bf16, D = 128, 128x128 blocks), with and
// without fine bits (8, 16 and 32 keys wide), at density 0.4.
TEST_F(AttentionGpuTest, WgmmaEveryTile) {
  if (const std::string why = wgmma_missing(); !why.empty()) GTEST_SKIP() << why;
  const int max_shared = runtime_->device().max_shared_bytes_per_block;
  int tested = 0;
  for (int fine_n : kAttentionFineN)
    for (int block_m : kWgmmaBlockM)
      for (int block_n : kWgmmaBlockN)
        for (int stages : kWgmmaStages) {
          const AttentionConfig config{HalfDtype::bf16, 128, 128, 128, block_m, block_n, wgmma_warps(block_m),
                                       fine_n, false, true, stages};
          if (!attention_config_problem(config, max_shared).empty()) continue;
          BlockMask mask = random_block_mask(1, 2, 1000, 1000, 128, 128, 0.4, generator_, true, fine_n, 0.5);
          AttentionCase c(1, 2, 1000, 1000, 128, HalfDtype::bf16, Storage::bhnd, std::move(mask), generator_);
          run_config(config, c);
          expect_matches(c, config.label());
          // A CTA per work item instead of the persistent wave: the same work, bit for bit.
          const std::vector<std::uint16_t> persistent = c.dout.download_as<std::uint16_t>();
          c.dout.fill(0xff);
          AttentionConfig per_item = config;
          per_item.persistent = false;
          run_config(per_item, c);
          EXPECT_EQ(c.dout.download_as<std::uint16_t>(), persistent) << per_item.label();
          ++tested;
        }
  EXPECT_EQ(tested, 3 * 8);  // fine 0, 16, 32 (8-key sub-tiles of 128x128 blocks need 128 bits)
}

// The persistent grid's dynamic scheduler: launches on two streams at once, each taking its
// items from its own stream's counter, correct round after round (a counter not left at zero
// would hand the next launch no items: its poisoned output fails); the counters are distinct
// and zero afterwards. Then a launch captured on the second stream into a graph, replayed on
// the first while the second runs a launch of its own at the same time: the capture must not
// have taken the second stream's counter.
TEST_F(AttentionGpuTest, WgmmaPersistentGridOnSeveralStreamsAndInAGraph) {
  if (const std::string why = wgmma_missing(); !why.empty()) GTEST_SKIP() << why;
  const AttentionConfig config{HalfDtype::bf16, 128, 128, 128, 128, 128, wgmma_warps(128), 0, false, true, 3};
  ASSERT_TRUE(config.persistent);
  const jit::Kernel kernel = provider_.kernel(context(), SparseAttentionFamily::render(config, runtime_->target()));
  const int max_shared = runtime_->device().max_shared_bytes_per_block;
  // Enough items for several per CTA: 3 heads x 40 query blocks per case.
  AttentionCase first(1, 3, 5000, 5000, 128, HalfDtype::bf16, Storage::bnhd,
                      with_empty_rows(random_block_mask(1, 3, 5000, 5000, 128, 128, 0.3, generator_), 0.1, generator_),
                      generator_);
  AttentionCase second(1, 3, 5000, 4000, 128, HalfDtype::bf16, Storage::bhnd,
                       random_block_mask(1, 3, 5000, 4000, 128, 128, 0.1, generator_), generator_);
  jit::Stream one, two;
  for (int round = 0; round < 3; ++round) {
    for (AttentionCase* c : {&first, &second}) {
      c->dout.fill(0xff);
      c->dlse.fill(0xff);
    }
    SparseAttentionFamily::launch(kernel, config, first.device, max_shared, one.handle());
    SparseAttentionFamily::launch(kernel, config, second.device, max_shared, two.handle());
    one.synchronize();
    two.synchronize();
    expect_matches(first, "first stream, round " + std::to_string(round));
    expect_matches(second, "second stream, round " + std::to_string(round));
  }
  const CUdeviceptr counter_one = jit::work_counter(one.handle()), counter_two = jit::work_counter(two.handle());
  EXPECT_NE(counter_one, counter_two);
  for (CUdeviceptr counter : {counter_one, counter_two})
    EXPECT_EQ(jit::copy_device_to_host(reinterpret_cast<void*>(counter), jit::kWorkCounterBytes),
              std::vector<std::uint8_t>(jit::kWorkCounterBytes, 0))
        << "a finished launch leaves its counter at zero";

  CUgraph graph = nullptr;
  CUgraphExec replay = nullptr;
  SJ_CU(cuStreamBeginCapture(two.handle(), CU_STREAM_CAPTURE_MODE_GLOBAL));
  SparseAttentionFamily::launch(kernel, config, first.device, max_shared, two.handle());
  SJ_CU(cuStreamEndCapture(two.handle(), &graph));
  SJ_CU(cuGraphInstantiateWithFlags(&replay, graph, 0));
  for (int round = 0; round < 2; ++round) {
    for (AttentionCase* c : {&first, &second}) {
      c->dout.fill(0xff);
      c->dlse.fill(0xff);
    }
    SJ_CU(cuGraphLaunch(replay, one.handle()));
    SparseAttentionFamily::launch(kernel, config, second.device, max_shared, two.handle());
    one.synchronize();
    two.synchronize();
    expect_matches(first, "graph replay " + std::to_string(round));
    expect_matches(second, "beside the replay " + std::to_string(round));
  }
  SJ_CU(cuGraphExecDestroy(replay));
  SJ_CU(cuGraphDestroy(graph));
}

// O in [B, N, H, D + pad] storage, 700 tokens (a ragged last block), both wgmma head dims at
// their defaults (two Q buffers, O staged): with pad = 8 O's strides make a tensor map and the
// kernel stores O by TMA; with pad = 4 its head stride is not whole 16 bytes and each thread
// stores its elements (the wgmma kernel takes any O strides the format allows). Either way
// the elements between the heads are left as they were.
TEST_F(AttentionGpuTest, WgmmaStoresOWithAndWithoutATensorMap) {
  if (const std::string why = wgmma_missing(); !why.empty()) GTEST_SKIP() << why;
  for (int head_dim : kWgmmaHeadDims)
    for (int pad : {8, 4}) {
      const AttentionConfig config =
          default_attention_config(HalfDtype::bf16, head_dim, 128, 128, 0, runtime_->target());
      ASSERT_TRUE(config.wgmma);
      ASSERT_EQ(config.q_buffers(), 2);
      ASSERT_TRUE(config.o_staged());
      const int batch = 2, heads = 2, tokens = 700, padded = head_dim + pad;
      AttentionCase c(batch, heads, tokens, tokens, head_dim, HalfDtype::bf16, Storage::bnhd,
                      random_block_mask(batch, heads, tokens, tokens, 128, 128, 0.5, generator_), generator_);
      const std::size_t elements = static_cast<std::size_t>(batch) * tokens * heads * padded;
      jit::DeviceBuffer padded_out(elements * 2);
      padded_out.fill(0xff);
      SparseAttentionParams params = c.device;
      params.o = padded_out.pointer();
      params.o_head_stride = padded;  // 2 * (head_dim + pad) bytes
      params.o_token_stride = static_cast<long long>(heads) * padded;
      params.o_batch_stride = static_cast<long long>(tokens) * heads * padded;
      ASSERT_EQ(SparseAttentionFamily::stores_o_by_tensor_map(config, params), pad == 8);
      const jit::Kernel kernel = provider_.kernel(context(), SparseAttentionFamily::render(config, runtime_->target()));
      SparseAttentionFamily::launch(kernel, config, params, runtime_->device().max_shared_bytes_per_block,
                                    stream_->handle());
      stream_->synchronize();
      const std::vector<std::uint16_t> stored = padded_out.download_as<std::uint16_t>();
      std::vector<double> output;
      for (int b = 0; b < batch; ++b)
        for (int h = 0; h < heads; ++h)
          for (int n = 0; n < tokens; ++n)
            for (int d = 0; d < padded; ++d) {
              const std::uint16_t bits = stored[((static_cast<std::size_t>(b) * tokens + n) * heads + h) * padded + d];
              if (d < head_dim) output.push_back(half_bits_to_float(bits, HalfDtype::bf16));
              else ASSERT_EQ(bits, 0xffff) << "pad " << pad << ": padding after head " << h << " of token " << n
                                           << " was written";
            }
      const AttentionReference reference = sparse_attention_reference(c.host, c.dtype, c.head_dim, c.mask);
      EXPECT_LE(relative_l2_error(output, reference.o), relative_error_bound(c.dtype))
          << config.label() << ", pad " << pad;
    }
}

// The wgmma kernel at the model lengths (sampled query blocks, as ModelSequenceLengths).
TEST_F(AttentionGpuTest, WgmmaModelSequenceLengths) {
  if (const std::string why = wgmma_missing(); !why.empty()) GTEST_SKIP() << why;
  for (const ModelLengthCase& m : {ModelLengthCase{32760, 2, 1.0, 0, Storage::bnhd},
                                   ModelLengthCase{32760, 1, 0.1, 16, Storage::bhnd},
                                   ModelLengthCase{75600, 1, 0.05, 0, Storage::bnhd},
                                   ModelLengthCase{75600, 1, 0.1, 16, Storage::bhnd}})
    check_model_length(m, AttentionConfig{HalfDtype::bf16, 128, 128, 128, 128, 128, wgmma_warps(128), m.fine_n,
                                          false, true, 2});
}

// The bitmask form at a model length with fine bits: bit for bit the output of block-CSR.
TEST_F(AttentionGpuTest, BitmaskFormAtAModelLength) {
  BlockMask mask = random_block_mask(1, 2, 75600, 75600, 128, 128, 0.1, generator_, true, 16, 0.5);
  mask = with_empty_rows(std::move(mask), 0.05, generator_);
  AttentionCase c(1, 2, 75600, 75600, 128, HalfDtype::bf16, Storage::bnhd, std::move(mask), generator_);
  run(c);
  expect_sampled_blocks_match(c);
  const std::vector<std::uint16_t> from_lists = c.dout.download_as<std::uint16_t>();
  const std::vector<float> lse_from_lists = c.dlse.download_as<float>();
  c.use_bitmask();
  run(c);
  EXPECT_EQ(c.dout.download_as<std::uint16_t>(), from_lists);
  EXPECT_EQ(c.dlse.download_as<float>(), lse_from_lists);
}

// check_mask validates a bitmask too: a key block past the last is refused, nothing launched.
TEST_F(AttentionGpuTest, CheckedModeRefusesABadBitmask) {
  BlockMask mask = random_block_mask(1, 1, 500, 500, 128, 128, 0.5, generator_);
  AttentionCase c(1, 1, 500, 500, 64, HalfDtype::bf16, Storage::bhnd, std::move(mask), generator_);
  BlockBitmask bitmask = to_bitmask(c.mask);
  bitmask.bits[1] |= std::uint64_t{1} << 4;  // row qb = 1: key block 4 of 4
  c.use_bitmask();
  c.dbits = jit::DeviceBuffer::from_host(bitmask.bits);
  c.device.kv_block_bits = static_cast<const unsigned long long*>(c.dbits.pointer());
  try {
    run(c);
    FAIL() << "a key block past the last must be refused";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("bits[b=0, h=0, qb=1] word 0"), std::string::npos) << error.what();
  }
  const std::vector<std::uint16_t> untouched = c.dout.download_as<std::uint16_t>();
  for (std::uint16_t bits : untouched) ASSERT_EQ(bits, 0xffff) << "nothing may be launched";
}

// check_mask reads the device mask and refuses an index out of range before any launch.
TEST_F(AttentionGpuTest, CheckedModeRefusesABadMask) {
  BlockMask mask = random_block_mask(1, 1, 500, 500, 128, 128, 0.5, generator_);
  mask.index[1] = mask.kv_blocks;  // one past the last key block
  AttentionCase c(1, 1, 500, 500, 64, HalfDtype::bf16, Storage::bhnd, std::move(mask), generator_);
  try {
    run(c);
    FAIL() << "an out-of-range key block must be refused";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("index[b=0, h=0, qb=0, i=1]"), std::string::npos) << error.what();
  }
  const std::vector<std::uint16_t> untouched = c.dout.download_as<std::uint16_t>();
  for (std::uint16_t bits : untouched) ASSERT_EQ(bits, 0xffff) << "nothing may be launched";
}

// Bad pointers and shapes get clear errors, on the device path too.
TEST_F(AttentionGpuTest, RefusesMisalignedPointersAndMissingFineBits) {
  BlockMask mask = random_block_mask(1, 1, 256, 256, 128, 128, 1.0, generator_);
  AttentionCase c(1, 1, 256, 256, 128, HalfDtype::bf16, Storage::bhnd, std::move(mask), generator_);
  SparseAttentionParams shifted = c.device;
  shifted.k = static_cast<const char*>(shifted.k) + 2;
  EXPECT_THROW(runtime_->sparse_attention(shifted, c.problem(), stream_->handle()), std::invalid_argument);
  runtime::AttentionProblem fine = c.problem();
  fine.fine_n = 16;
  EXPECT_THROW(runtime_->sparse_attention(c.device, fine, stream_->handle()), std::invalid_argument);
  runtime::AttentionProblem wide = c.problem();
  wide.head_dim = 256;
  EXPECT_THROW(runtime_->sparse_attention(c.device, wide, stream_->handle()), std::invalid_argument);
}

}  // namespace
}  // namespace sparsejit::templates
