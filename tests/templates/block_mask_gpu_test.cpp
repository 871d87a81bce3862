// block_score and block_select on the GPU against their float64 references, on fresh random
// inputs with poisoned (NaN / 0xff) outputs: every dtype x head dim x tile with the block
// pairs and layouts in rotation on ragged lengths, every CTA of the score space, the model
// lengths (32,760 whole; 75,600 on sampled query blocks), selection in both modes with ties
// and fine bits for every block pair and fine width, and with per-head k. (The mask build's
// speed is measured by `sparsejit bench mask`, not here.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "jit/device.h"
#include "jit/device_memory.h"
#include "jit/kernel_provider.h"
#include "templates/block_score/block_score_family.h"
#include "templates/block_score/block_score_reference.h"
#include "templates/block_select/block_select_family.h"
#include "templates/block_select/block_select_reference.h"
#include "templates/sparse_attention/block_mask.h"
#include "tests/support/gpu_test.h"
#include "tests/support/tensor_layout.h"

namespace sparsejit::templates {
namespace {

using Storage = TokenLayout;
using testing::dense_strides;
using testing::relative_error_bound;

// Video-like Q or K in `storage` order: a component that varies smoothly along the tokens
// (so tile means keep structure and the tile softmax is far from uniform) plus N(0, 1) noise.
std::vector<std::uint16_t> smooth_tokens(int batch, int heads, int tokens, int head_dim, HalfDtype dtype,
                                         Storage storage, std::mt19937_64& generator) {
  std::vector<std::uint16_t> values =
      random_half(static_cast<std::size_t>(batch) * heads * tokens * head_dim, dtype, generator);
  std::uniform_real_distribution<float> phase(0.f, 6.2831853f), rate(0.002f, 0.05f);
  const auto s = dense_strides(storage, heads, tokens, head_dim);
  for (int b = 0; b < batch; ++b)
    for (int h = 0; h < heads; ++h)
      for (int d = 0; d < head_dim; ++d) {
        const float offset = phase(generator), speed = rate(generator);
        for (int n = 0; n < tokens; ++n) {
          std::uint16_t& bits = values[b * s[0] + h * s[1] + n * s[2] + d];
          bits = float_to_half_bits(half_bits_to_float(bits, dtype) + std::sin(offset + speed * n), dtype);
        }
      }
  return values;
}

std::vector<double> to_doubles(const std::vector<std::uint16_t>& bits, HalfDtype dtype) {
  std::vector<double> values(bits.size());
  for (std::size_t i = 0; i < bits.size(); ++i) values[i] = half_bits_to_float(bits[i], dtype);
  return values;
}

template <class T>
std::vector<double> to_doubles(const std::vector<T>& values) {
  return {values.begin(), values.end()};
}

// One block_score problem: host inputs, device buffers (outputs poisoned), both params.
struct ScoreCase {
  BlockScoreConfig config;
  BlockScoreShape shape;
  std::vector<std::uint16_t> q, k;
  BlockScoreParams host{}, device{};
  jit::DeviceBuffer dq, dk, pooled_q, pooled_k, tile_lse, scores;

  ScoreCase(const BlockScoreConfig& c, int batch, int heads, int tokens_q, int tokens_kv, Storage storage,
            std::mt19937_64& generator)
      : config(c), shape(block_score_shape(tokens_q, tokens_kv, c.tile, c.block_q, c.block_kv)) {
    q = smooth_tokens(batch, heads, tokens_q, c.head_dim, c.dtype, storage, generator);
    k = smooth_tokens(batch, heads, tokens_kv, c.head_dim, c.dtype, storage, generator);
    dq = jit::DeviceBuffer::from_host(q);
    dk = jit::DeviceBuffer::from_host(k);
    const std::size_t slices = static_cast<std::size_t>(batch) * heads;
    pooled_q = jit::DeviceBuffer(slices * shape.tiles_q * c.head_dim * 2);
    pooled_k = jit::DeviceBuffer(slices * shape.tiles_k * c.head_dim * 2);
    tile_lse = jit::DeviceBuffer(slices * shape.tiles_q * sizeof(float));
    scores = jit::DeviceBuffer(slices * shape.q_blocks * shape.kv_blocks * sizeof(float));
    for (jit::DeviceBuffer* output : {&pooled_q, &pooled_k, &tile_lse, &scores}) output->fill(0xff);
    const auto qs = dense_strides(storage, heads, tokens_q, c.head_dim), ks = dense_strides(storage, heads, tokens_kv, c.head_dim);
    for (BlockScoreParams* p : {&host, &device}) {
      p->q_batch_stride = qs[0];
      p->q_head_stride = qs[1];
      p->q_token_stride = qs[2];
      p->k_batch_stride = ks[0];
      p->k_head_stride = ks[1];
      p->k_token_stride = ks[2];
      p->batch = batch;
      p->heads = heads;
      p->tokens_q = tokens_q;
      p->tokens_kv = tokens_kv;
      p->softmax_scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    }
    host.q = q.data();
    host.k = k.data();
    device.q = dq.pointer();
    device.k = dk.pointer();
    device.pooled_q = pooled_q.pointer();
    device.pooled_k = pooled_k.pointer();
    device.tile_lse = static_cast<float*>(tile_lse.pointer());
    device.scores = static_cast<float*>(scores.pointer());
  }
};

class BlockMaskGpuTest : public testing::GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    stream_ = std::make_unique<jit::Stream>();
    const jit::DeviceInfo info = jit::query_device(context().ordinal());
    target_ = jit::Target::for_compute_capability(info.cc_major, info.cc_minor);
    max_shared_ = info.max_shared_bytes_per_block;
  }
  void run_score(const ScoreCase& c) {
    const jit::Kernel pool = provider_.kernel(context(), BlockScoreFamily::render_pool(c.config, target_));
    const jit::Kernel score = provider_.kernel(context(), BlockScoreFamily::render_score(c.config, target_));
    BlockScoreFamily::launch(pool, score, c.config, c.device, max_shared_, stream_->handle());
    stream_->synchronize();
  }
  void run_select(const BlockSelectConfig& config, const BlockSelectParams& params) {
    const jit::Kernel kernel = provider_.kernel(context(), BlockSelectFamily::render(config, target_));
    BlockSelectFamily::launch(kernel, config, params, stream_->handle());
    stream_->synchronize();
  }
  void expect_score_matches(const ScoreCase& c, const std::string& what) {
    SCOPED_TRACE(what + " " + c.config.label());
    const BlockScoreReference ref = block_score_reference(c.host, c.config.dtype, c.config.head_dim, c.config.tile,
                                                          c.config.block_q, c.config.block_kv);
    const double bound = relative_error_bound(c.config.dtype);
    EXPECT_LE(relative_l2_error(to_doubles(c.pooled_q.download_as<std::uint16_t>(), c.config.dtype), ref.pooled_q), bound);
    EXPECT_LE(relative_l2_error(to_doubles(c.pooled_k.download_as<std::uint16_t>(), c.config.dtype), ref.pooled_k), bound);
    EXPECT_LE(relative_l2_error(to_doubles(c.tile_lse.download_as<float>()), ref.tile_lse), bound);
    EXPECT_LE(relative_l2_error(to_doubles(c.scores.download_as<float>()), ref.scores), bound)
        << "relative L2 error of the block scores (NaN: a score was not written)";
  }

  jit::KernelProvider provider_{nullptr};
  std::unique_ptr<jit::Stream> stream_;
  jit::Target target_ = jit::Target::parse("sm_90");
  int max_shared_ = 0;
  std::mt19937_64 generator_ = testing::fresh_generator();
};

// Every dtype x head dim x tile at the default CTA; the block pairs and layouts rotate, so
// each appears with every tile. Ragged lengths: 1000 queries, 1000 or 904 keys, 2 heads.
TEST_F(BlockMaskGpuTest, ScoresMatchTheReferenceForEveryDtypeHeadDimAndTile) {
  int index = 0;
  for (HalfDtype dtype : {HalfDtype::bf16, HalfDtype::fp16})
    for (int head_dim : kScoreHeadDims)
      for (int tile : kScoreTileTokens) {
        const int block_q = kScoreBlockSizes[index % 2], block_kv = kScoreBlockSizes[(index / 2) % 2];
        const Storage storage = index % 3 == 0 ? Storage::bhnd : Storage::bnhd;
        const BlockScoreConfig config = default_block_score_config(dtype, head_dim, tile, block_q, block_kv, max_shared_);
        ScoreCase c(config, index % 5 == 0 ? 2 : 1, 2, 1000, index % 2 == 0 ? 1000 : 904, storage, generator_);
        run_score(c);
        expect_score_matches(c, storage == Storage::bhnd ? "[B,H,N,D]" : "[B,N,H,D]");
        ++index;
      }
}

// Every CTA (warps x step) for two problems with the smallest and largest block pairs in tiles.
TEST_F(BlockMaskGpuTest, EveryScoreCtaMatchesTheReference) {
  for (const auto& [tile, block_q, block_kv] : {std::tuple{8, 128, 128}, std::tuple{32, 64, 64}, std::tuple{16, 128, 64}})
    for (int warps : kScoreWarps)
      for (int step : kScoreStepTiles) {
        const BlockScoreConfig config{HalfDtype::bf16, 128, tile, block_q, block_kv, warps, step};
        if (!block_score_config_problem(config, max_shared_).empty()) continue;
        ScoreCase c(config, 1, 2, 1500, 1500, Storage::bnhd, generator_);
        run_score(c);
        expect_score_matches(c, "CTA");
      }
}

TEST_F(BlockMaskGpuTest, ScoresAtModelLengths) {
  // 32,760 tokens (Wan2.1 480p), whole.
  {
    const BlockScoreConfig config = default_block_score_config(HalfDtype::bf16, 128, 16, 128, 128, max_shared_);
    ScoreCase c(config, 1, 2, 32760, 32760, Storage::bnhd, generator_);
    run_score(c);
    expect_score_matches(c, "N 32760");
  }
  // 75,600 tokens (Wan2.1 720p): the first, a middle and the ragged last query block against
  // the reference of a sub-problem with only those queries (tile rows depend on their own
  // tile and all keys; the last block keeps its ragged length).
  const BlockScoreConfig config = default_block_score_config(HalfDtype::fp16, 128, 16, 128, 128, max_shared_);
  const int tokens = 75600, head_dim = 128;
  ScoreCase c(config, 1, 1, tokens, tokens, Storage::bhnd, generator_);
  run_score(c);
  const std::vector<int> picked = {0, c.shape.q_blocks / 2, c.shape.q_blocks - 1};
  std::vector<std::uint16_t> sub_q;
  for (int qb : picked)
    sub_q.insert(sub_q.end(), c.q.begin() + static_cast<long long>(qb) * 128 * head_dim,
                 c.q.begin() + static_cast<long long>(std::min((qb + 1) * 128, tokens)) * head_dim);
  BlockScoreParams sub = c.host;
  sub.q = sub_q.data();
  sub.tokens_q = static_cast<int>(sub_q.size() / head_dim);
  sub.q_batch_stride = sub.q_head_stride = static_cast<long long>(sub.tokens_q) * head_dim;
  const BlockScoreReference ref = block_score_reference(sub, config.dtype, head_dim, 16, 128, 128);
  const std::vector<float> scores = c.scores.download_as<float>();
  std::vector<double> actual;
  for (int qb : picked)
    actual.insert(actual.end(), scores.begin() + static_cast<long long>(qb) * c.shape.kv_blocks,
                  scores.begin() + static_cast<long long>(qb + 1) * c.shape.kv_blocks);
  EXPECT_LE(relative_l2_error(actual, ref.scores), relative_error_bound(config.dtype)) << "N 75600, sampled query blocks";
}

// Selection inputs: per row a random permutation of 1..KB times 2^-12 (distinct scores whose
// sums are exact in float, so the threshold's cut is the same on both sides), every 7th row
// all equal (ties), another every 7th zeros, negatives and runs of equal scores; with fine
// bits random pooled tiles and their exact normalizers.
struct SelectCase {
  BlockSelectConfig config;
  std::vector<float> scores;
  std::vector<std::uint16_t> pooled_q, pooled_k;
  std::vector<float> lse;
  BlockSelectParams host{}, device{};
  jit::DeviceBuffer dscores, dcount, dindex, dfine, dpooled_q, dpooled_k, dlse;
  int q_blocks, kv_blocks;

  SelectCase(const BlockSelectConfig& c, int batch, int heads, int tokens, int top_k, float threshold,
             int text_blocks, std::mt19937_64& generator)
      : config(c), q_blocks((tokens + c.block_q - 1) / c.block_q), kv_blocks((tokens + c.block_kv - 1) / c.block_kv) {
    const std::size_t rows = static_cast<std::size_t>(batch) * heads * q_blocks;
    std::vector<int> permutation(static_cast<std::size_t>(kv_blocks));
    for (std::size_t r = 0; r < rows; ++r) {
      std::iota(permutation.begin(), permutation.end(), 1);
      std::shuffle(permutation.begin(), permutation.end(), generator);
      for (int value : permutation) {
        // Most rows distinct scores; every 7th all equal; another every 7th zeros, negatives
        // (both rank as 0) and runs of 4 equal positive scores: ties the selection breaks by index.
        const float mixed = value % 3 == 0 ? 0.f : value % 3 == 1 ? -0.5f : std::ldexp(static_cast<float>(value / 4), -10);
        scores.push_back(r % 7 == 3 ? 0.25f : r % 7 == 5 ? mixed : std::ldexp(static_cast<float>(value), -12));
      }
    }
    for (BlockSelectParams* p : {&host, &device}) {
      p->max_kv_blocks = top_k > 0 ? block_select_min_row_pitch(kv_blocks, top_k, text_blocks) : kv_blocks;
      p->batch = batch;
      p->heads = heads;
      p->tokens_q = p->tokens_kv = tokens;
      p->top_k = top_k;
      p->threshold = threshold;
      p->text_blocks = text_blocks;
      p->fine_share = 0.8f;
      p->softmax_scale = 0.125f;
    }
    dscores = jit::DeviceBuffer::from_host(scores);
    dcount = jit::DeviceBuffer(rows * sizeof(int));
    dindex = jit::DeviceBuffer(rows * device.max_kv_blocks * sizeof(int));
    dcount.fill(0xff);
    dindex.fill(0xff);
    host.scores = scores.data();
    device.scores = static_cast<const float*>(dscores.pointer());
    device.kv_block_count = static_cast<int*>(dcount.pointer());
    device.kv_block_index = static_cast<int*>(dindex.pointer());
    static int sink[1];
    host.kv_block_count = host.kv_block_index = sink;
    if (c.fine_n == 0) return;
    const int tiles = (tokens + c.tile - 1) / c.tile;
    const std::size_t pooled = static_cast<std::size_t>(batch) * heads * tiles * c.head_dim;
    pooled_q = random_half(pooled, c.dtype, generator);
    pooled_k = random_half(pooled, c.dtype, generator);
    for (std::size_t slice = 0; slice < static_cast<std::size_t>(batch) * heads; ++slice)
      for (int i = 0; i < tiles; ++i) {
        double normalizer = 0.0;
        for (int j = 0; j < tiles; ++j) {
          double dot = 0.0;
          for (int d = 0; d < c.head_dim; ++d)
            dot += half_bits_to_float(pooled_q[(slice * tiles + i) * c.head_dim + d], c.dtype) *
                   half_bits_to_float(pooled_k[(slice * tiles + j) * c.head_dim + d], c.dtype);
          normalizer += std::exp(dot * host.softmax_scale);
        }
        lse.push_back(static_cast<float>(std::log(normalizer)));
      }
    dpooled_q = jit::DeviceBuffer::from_host(pooled_q);
    dpooled_k = jit::DeviceBuffer::from_host(pooled_k);
    dlse = jit::DeviceBuffer::from_host(lse);
    dfine = jit::DeviceBuffer(rows * device.max_kv_blocks * sizeof(std::uint64_t));
    dfine.fill(0xff);
    static unsigned long long fine_sink[1];
    host.fine_bits = fine_sink;
    host.pooled_q = pooled_q.data();
    host.pooled_k = pooled_k.data();
    host.tile_lse = lse.data();
    device.fine_bits = static_cast<unsigned long long*>(dfine.pointer());
    device.pooled_q = dpooled_q.pointer();
    device.pooled_k = dpooled_k.pointer();
    device.tile_lse = static_cast<const float*>(dlse.pointer());
  }

  // Per-head k: head h keeps ks[h] (each in 1..top_k, the case's top_k being the largest,
  // which sized the row pitch).
  void use_head_top_k(std::vector<int> ks) {
    head_top_k = std::move(ks);
    dhead_top_k = jit::DeviceBuffer::from_host(head_top_k);
    host.top_k_per_head = head_top_k.data();
    device.top_k_per_head = static_cast<const int*>(dhead_top_k.pointer());
  }
  std::vector<int> head_top_k;
  jit::DeviceBuffer dhead_top_k;

  BlockMask device_mask() const {
    BlockMask mask;
    mask.batch = host.batch;
    mask.heads = host.heads;
    mask.q_blocks = q_blocks;
    mask.kv_blocks = kv_blocks;
    mask.max_kv_blocks = host.max_kv_blocks;
    mask.block_q = config.block_q;
    mask.block_kv = config.block_kv;
    mask.fine_n = config.fine_n;
    mask.count = dcount.download_as<int>();
    mask.index = dindex.download_as<int>();
    if (config.fine_n > 0) mask.fine_bits = dfine.download_as<std::uint64_t>();
    return mask;
  }
};

// Whether a fine word hangs on masses within 1e-4 of each other or of the share (float32 on
// the GPU could then decide otherwise); exactly equal masses (a tile split evenly over
// sub-tiles) are not ambiguous: both sides break the tie by the lower bit.
bool fine_cut_is_close(const std::vector<double>& masses, std::uint64_t word, double share) {
  const double total = std::accumulate(masses.begin(), masses.end(), 0.0);
  if (fine_word_for(masses, share * (1 + 1e-4)) != fine_word_for(masses, share * (1 - 1e-4))) return true;
  for (std::size_t a = 0; a < masses.size(); ++a)
    for (std::size_t b = 0; b < masses.size(); ++b)
      if (((word >> a) & 1u) && !((word >> b) & 1u) && masses[a] != masses[b] &&
          std::abs(masses[a] - masses[b]) <= 1e-4 * std::max(masses[a], 1e-30 * total))
        return true;
  return false;
}

void expect_select_matches(const SelectCase& c, const std::string& what) {
  SCOPED_TRACE(what + " " + c.config.label());
  const BlockMask actual = c.device_mask();
  ASSERT_NO_THROW(validate_block_mask(actual, c.host.tokens_q, c.host.tokens_kv));
  const BlockMask expected = block_select_reference(c.host, c.config);
  int pairs = 0, close = 0;
  for (int b = 0; b < c.host.batch; ++b)
    for (int h = 0; h < c.host.heads; ++h)
      for (int qb = 0; qb < c.q_blocks; ++qb) {
        const std::span<const int> got = actual.kept_blocks(b, h, qb), want = expected.kept_blocks(b, h, qb);
        ASSERT_EQ(std::vector<int>(got.begin(), got.end()), std::vector<int>(want.begin(), want.end()))
            << "row b=" << b << " h=" << h << " qb=" << qb;
        if (c.config.fine_n == 0) continue;
        for (int i = 0; i < static_cast<int>(want.size()); ++i, ++pairs) {
          const std::uint64_t want_word = expected.fine_word(b, h, qb, i);
          if (actual.fine_word(b, h, qb, i) == want_word) continue;
          const std::vector<double> masses = fine_subtile_masses(c.host, c.config, b, h, qb, want[i]);
          if (fine_cut_is_close(masses, want_word, c.host.fine_share)) {
            ++close;
            continue;
          }
          ADD_FAILURE() << "fine word of b=" << b << " h=" << h << " qb=" << qb << " kb=" << want[i] << ": 0x"
                        << std::hex << actual.fine_word(b, h, qb, i) << ", expected 0x" << want_word << std::dec;
        }
      }
  EXPECT_LE(close, pairs / 20 + 1) << "too many fine words differ on near ties";
}

// Without fine bits: every block pair, top-k (with and without text blocks, k near and past
// KB) and threshold mode, with the first block always kept and only for its score, several
// batches and heads, 4,000 tokens.
TEST_F(BlockMaskGpuTest, SelectionMatchesTheReference) {
  for (int block_q : kSelectBlockSizes)
    for (int block_kv : kSelectBlockSizes) {
      const BlockSelectConfig config = block_select_config(block_q, block_kv, 0);
      const int kv_blocks = (4000 + block_kv - 1) / block_kv;
      const struct {
        int top_k;
        float threshold;
        int text_blocks;
        int first_block_by_score;
      } modes[] = {{kept_blocks_per_row(0.3, kv_blocks), 0.f, 0, 0}, {kept_blocks_per_row(0.1, kv_blocks), 0.f, 2, 0},
                   {kv_blocks + 5, 0.f, 0, 0},                        {0, 0.5f, 0, 0},
                   {0, 0.875f, 1, 0},                                 {0, 0.f, 0, 0},
                   {kept_blocks_per_row(0.05, kv_blocks), 0.f, 0, 1}, {kept_blocks_per_row(0.1, kv_blocks), 0.f, 2, 1},
                   {0, 0.5f, 1, 1}};
      for (const auto& mode : modes) {
        SelectCase c(config, 2, 3, 4000, mode.top_k, mode.threshold, mode.text_blocks, generator_);
        c.host.first_block_by_score = c.device.first_block_by_score = mode.first_block_by_score;
        run_select(config, c.device);
        expect_select_matches(c, "top_k " + std::to_string(mode.top_k) + " threshold " + std::to_string(mode.threshold) +
                                     " text " + std::to_string(mode.text_blocks) + " first by score " +
                                     std::to_string(mode.first_block_by_score));
      }
    }
}

// Per-head k (SVOO's per-head densities): random ks per head in 1..KB + 2 (some at or past
// KB, one head at 1), with text blocks, both key block sizes, and once with fine bits.
TEST_F(BlockMaskGpuTest, SelectionWithPerHeadTopKMatchesTheReference) {
  const struct {
    BlockSelectConfig config;
    int tokens;
  } cases[] = {{block_select_config(128, 64, 0), 3000},
               {block_select_config(64, 128, 0), 3000},
               {block_select_config(128, 128, 16, HalfDtype::bf16, 128, 16), 1000}};
  for (const auto& [config, tokens] : cases) {
    const int heads = 6, kv_blocks = (tokens + config.block_kv - 1) / config.block_kv;
    std::uniform_int_distribution<int> k_of_head(1, kv_blocks + 2);
    std::vector<int> ks(heads);
    for (int& k : ks) k = k_of_head(generator_);
    ks[0] = 1;
    const int top_k = *std::max_element(ks.begin(), ks.end());
    SelectCase c(config, 2, heads, tokens, top_k, 0.f, 1, generator_);
    c.use_head_top_k(ks);
    run_select(config, c.device);
    std::string label = "per-head k";
    for (int k : ks) label += " " + std::to_string(k);
    expect_select_matches(c, label);
  }
}

// Fine bits: every valid block pair x fine width, the dtypes, head dims and tiles in rotation,
// every other case with the first block kept only for its score.
TEST_F(BlockMaskGpuTest, FineBitsMatchTheReference) {
  int index = 0;
  for (int block_q : kSelectBlockSizes)
    for (int block_kv : kSelectBlockSizes)
      for (int fine_n : {8, 16, 32}) {
        if (!fine_granularity_valid(block_q, block_kv, fine_n)) continue;
        const BlockSelectConfig config =
            block_select_config(block_q, block_kv, fine_n, index % 2 == 0 ? HalfDtype::bf16 : HalfDtype::fp16,
                                kSelectHeadDims[index % 3], kSelectTileTokens[(index / 3) % 3]);
        const int kv_blocks = (1000 + block_kv - 1) / block_kv;
        SelectCase c(config, 1, 2, 1000, index % 4 == 3 ? 0 : kept_blocks_per_row(0.4, kv_blocks), 0.75f, 1, generator_);
        c.host.first_block_by_score = c.device.first_block_by_score = index % 2;
        run_select(config, c.device);
        expect_select_matches(c, "fine");
        ++index;
      }
}

}  // namespace
}  // namespace sparsejit::templates
