#include "templates/sparse_attention/attention_family.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <stdexcept>

#include "jit/driver_api.h"
#include "jit/work_counters.h"
#include "templates/sparse_attention/attention_tuning.h"
#include "templates/sparse_attention/block_mask.h"

namespace sparsejit::templates {

std::string AttentionConfig::name_expression() const {
  // mma.sync: <dtype, D, BQ, BKV, BM, BN, warps, fine, bitmask>; wgmma: stages for warps.
  return std::string(wgmma ? "sparsejit::sparse_attention_forward_wgmma<" : "sparsejit::sparse_attention_forward<") +
         std::to_string(dtype_template_code(dtype)) + ", " + std::to_string(head_dim) + ", " +
         std::to_string(block_q) + ", " + std::to_string(block_kv) + ", " + std::to_string(block_m) + ", " +
         std::to_string(block_n) + ", " + std::to_string(wgmma ? stages : warps) + ", " + std::to_string(fine_n) +
         ", " + (bitmask ? "true" : "false") + ">";
}

std::string AttentionConfig::label() const {
  return "sparse_attention<" + std::string(to_string(dtype)) + " D=" + std::to_string(head_dim) +
         " blocks " + std::to_string(block_q) + "x" + std::to_string(block_kv) + " tile " +
         std::to_string(block_m) + "x" + std::to_string(block_n) + " w" + std::to_string(warps) +
         (wgmma ? " wgmma s" + std::to_string(stages) + (persistent ? "" : " per-item grid") : "") +
         (fine_n > 0 ? " fine " + std::to_string(fine_n) : "") + (bitmask ? " bitmask" : "") + ">";
}

namespace {

// Whether a head or batch stride (in 16-bit elements) fits a tensor map: whole 16 bytes,
// below 2^40 bytes.
bool tensor_map_strides(long long stride) { return stride >= 0 && (stride * 2) % 16 == 0 && stride * 2 < (1LL << 40); }

// The wgmma kernel's dynamic shared memory with `q_buffers` Q buffers and O staged or not
// (wgmma_attention_tile::shared_bytes_with): 1024 bytes of alignment slack, the Q buffers, the
// O staging tiles (a Q buffer's size) and `stages` K and V tiles unpadded (swizzled), and per
// Q buffer two mbarriers (full, empty) and an 8-byte slot for the item index handed to the
// consumers, per stage four (K and V full and empty).
constexpr int kWgmmaMaxSharedBytes = 227 * 1024;  // wgmma_attention_tile::kMaxSharedBytes
int wgmma_shared_bytes(const AttentionConfig& c, int q_buffers, bool o_staged) {
  return 1024 + ((q_buffers + (o_staged ? 1 : 0)) * c.block_m + 2 * c.stages * c.block_n) * c.head_dim * 2 +
         (3 * q_buffers + 4 * c.stages) * 8;
}

}  // namespace

int AttentionConfig::shared_bytes() const {
  // mma.sync: Q and two K and V tiles, rows padded by 16 bytes.
  if (wgmma) return wgmma_shared_bytes(*this, q_buffers(), o_staged());
  return (block_m + 4 * block_n) * (head_dim + 8) * 2;
}

int AttentionConfig::q_buffers() const {
  if (!wgmma) return 1;
  return wgmma_shared_bytes(*this, 2, false) <= kWgmmaMaxSharedBytes ? 2 : 1;  // wgmma_attention_tile::kQBuffers
}

bool AttentionConfig::o_staged() const {  // wgmma_attention_tile::kOStaged
  return wgmma && wgmma_shared_bytes(*this, q_buffers(), true) <= kWgmmaMaxSharedBytes;
}

std::string AttentionConfig::tuning_json() const {
  nlohmann::json tile{{"block_m", block_m}, {"block_n", block_n}, {"warps", warps}};
  if (wgmma) {
    tile["wgmma"] = true;
    tile["stages"] = stages;
    if (!persistent) tile["persistent"] = false;
  }
  return tile.dump();
}

int max_shared_bytes_for(const jit::Target& target) {
  if (target.major() >= 9) return 227 * 1024;
  if (target.major() == 8 && target.minor() == 0) return 163 * 1024;
  return 99 * 1024;
}

namespace {

// The mma.sync kernel's tile constraints (sparse_attention.cuh).
std::string mma_sync_config_problem(const AttentionConfig& c) {
  if (!table_contains(kAttentionBlockM, c.block_m) || c.block_q % c.block_m != 0)
    return "tile rows " + std::to_string(c.block_m) + " must be 64 or 128 and divide block_q";
  if (!table_contains(kAttentionBlockN, c.block_n) || c.block_kv % c.block_n != 0)
    return "tile keys " + std::to_string(c.block_n) + " must be 32, 64 or 128 and divide block_kv";
  if (!table_contains(kAttentionWarps, c.warps) || (c.block_m / c.warps != 16 && c.block_m / c.warps != 32))
    return "each of the " + std::to_string(c.warps) + " warps must own 16 or 32 of the " +
           std::to_string(c.block_m) + " rows";
  const int row_groups = c.block_m / c.warps / 16;
  const int live_registers = row_groups * (c.block_n / 2 + c.head_dim / 2) +
                             (row_groups == 1 ? c.head_dim / 4 : 0);
  const int register_budget =
      row_groups == 1 ? kMaxLiveRegistersOneRowGroup : kMaxLiveRegistersTwoRowGroups;
  if (live_registers > register_budget)
    return "the tile keeps " + std::to_string(live_registers) + " registers per thread live, more than " +
           std::to_string(register_budget) + " (it would spill)";
  return {};
}

// The wgmma kernel's constraints (sparse_attention_wgmma.cuh), after the ones it shares.
std::string wgmma_config_problem(const AttentionConfig& c) {
  if (!table_contains(kWgmmaHeadDims, c.head_dim))
    return "the wgmma kernel takes head dims 64 and 128 (got " + std::to_string(c.head_dim) + ")";
  if (!table_contains(kWgmmaBlockM, c.block_m) || c.block_q % c.block_m != 0)
    return "wgmma tile rows " + std::to_string(c.block_m) + " must be 64 or 128 and divide block_q";
  if (!table_contains(kWgmmaBlockN, c.block_n) || c.block_kv % c.block_n != 0)
    return "wgmma tile keys " + std::to_string(c.block_n) + " must be 64 or 128 and divide block_kv";
  if (c.warps != wgmma_warps(c.block_m))
    return "the wgmma kernel with " + std::to_string(c.block_m) + " rows runs " +
           std::to_string(wgmma_warps(c.block_m)) + " warps (got " + std::to_string(c.warps) + ")";
  if (!table_contains(kWgmmaStages, c.stages))
    return "wgmma pipeline stages must be 2 or 3 (got " + std::to_string(c.stages) + ")";
  return {};
}

}  // namespace

std::string attention_config_problem(const AttentionConfig& c, int max_shared_bytes) {
  if (!table_contains(kAttentionHeadDims, c.head_dim))
    return "head dim " + std::to_string(c.head_dim) + " is not supported (64, 96 or 128)";
  if (!table_contains(kAttentionBlockSizes, c.block_q) || !table_contains(kAttentionBlockSizes, c.block_kv))
    return "sparse block sizes must be 64 or 128 (got " + std::to_string(c.block_q) + "x" +
           std::to_string(c.block_kv) + ")";
  if (c.fine_n != 0 && !fine_granularity_valid(c.block_q, c.block_kv, c.fine_n))
    return "fine sub-tiles of 16x" + std::to_string(c.fine_n) + " do not fit one 64-bit word for " +
           std::to_string(c.block_q) + "x" + std::to_string(c.block_kv) + " blocks";
  if (std::string problem = c.wgmma ? wgmma_config_problem(c) : mma_sync_config_problem(c); !problem.empty())
    return problem;
  if (c.shared_bytes() > max_shared_bytes)
    return "the tile needs " + std::to_string(c.shared_bytes()) + " bytes of shared memory, more than " +
           std::to_string(max_shared_bytes);
  return {};
}

AttentionConfig default_attention_config(HalfDtype dtype, int head_dim, int block_q,
                                         int block_kv, int fine_n, int max_shared_bytes) {
  // Tiles in order of preference, {rows, keys, warps}, measured on the H100 (BENCHMARKS.md,
  // 2026-11-22, version 5, 12 heads x 32,768 tokens, density 1.0 and 0.1): warps of 32 rows
  // with few keys per step lead (two CTAs fit an SM: 254 registers x 128 threads), for D = 128
  // with 32 keys (304 TFLOP/s, against 247 for 128x64 with 8 warps and 251 for 64x64; 318
  // after version 6, where 128x64 with 4 warps, now without spills, ran 314-316; 327-334
  // after version 7) and for D <= 96 with 64 keys (270-274; 128x32 within 1%). The later entries fit where shared
  // memory or registers are short.
  struct Tile {
    int block_m, block_n, warps;
  };
  // With fine bits, warps of 16 rows lead: they skip a 16-key step with one branch over the
  // whole key-dim walk, where 32-row warps branch per step (same day: 7.8 ms against 10.6 ms
  // for 128x32 with 4 warps, 12 heads x 32,768 tokens, density 0.3, half the sub-tiles).
  const Tile wide_head[] = {{128, 32, 4}, {128, 64, 8}, {64, 64, 4}, {64, 32, 4}};
  const Tile narrow_head[] = {{128, 64, 4}, {128, 32, 4}, {128, 64, 8}, {64, 64, 4}, {64, 32, 4}};
  const Tile fine[] = {{128, 64, 8}, {128, 32, 8}, {64, 64, 4}, {64, 32, 4}};
  const std::span<const Tile> preferred = fine_n > 0        ? std::span<const Tile>(fine)
                                          : head_dim >= 128 ? std::span<const Tile>(wide_head)
                                                            : std::span<const Tile>(narrow_head);
  for (const Tile& tile : preferred) {
    const int block_m = std::min(tile.block_m, block_q);
    const AttentionConfig config{dtype, head_dim, block_q, block_kv, block_m,
                                 std::min(tile.block_n, block_kv), tile.warps * block_m / tile.block_m,
                                 fine_n};
    if (attention_config_problem(config, max_shared_bytes).empty()) return config;
  }
  const AttentionConfig smallest{dtype, head_dim, block_q, block_kv, 64, 32, 4, fine_n};
  throw std::invalid_argument("sparse_attention: no tile fits " + smallest.label() + ": " +
                              attention_config_problem(smallest, max_shared_bytes));
}

AttentionConfig default_attention_config(HalfDtype dtype, int head_dim, int block_q, int block_kv, int fine_n,
                                         const jit::Target& target) {
  // Measured on the H100 (BENCHMARKS.md, 2026-11-22, wgmma versions 2 and 3, 12 heads x
  // 32,768 tokens): the wgmma kernel runs 1.4-2.1x the mma.sync default at densities 1.0 and
  // 0.1 and with fine bits; 128-key steps beat 64 (624 against 471 TFLOP/s at D = 128), and a
  // third stage adds 2-15%. The persistent grid pays at D = 64 (+4% at density 0.1, +10% at
  // 0.05: short items, whose start it overlaps); with the dynamic scheduler (fifth session)
  // it equals a CTA per item at D = 128 (it lost 4-6% dense with static striding, its CTAs
  // drifting apart over the heads): persistent everywhere. A second Q buffer (the next
  // item's Q loads under this one) gains 2-6% at D = 64 and takes the place of the third
  // stage at D = 128, which measured equal or better with it (same session): the most stages
  // that fit beside two Q buffers, else the most that fit.
  // 64-row tiles (one consumer warpgroup) take 2 stages: the tuner's slice at density 0.1
  // (same file) found 3 stages of them 1.25-1.68x slower, two CTAs no longer sharing an SM.
  // With fine bits at D = 64 the full default grid (BENCHMARKS.md, fourth session) chose, in
  // all 24 problems of each kind: for 128 x 128 blocks 64-row wgmma tiles, 1.07-1.11x the
  // 128-row ones (a warpgroup skips its work where none of its 64 rows keeps a tile); for
  // 64 x 64 blocks the mma.sync tile, 1.03-1.05x the wgmma one (its 16-row warps skip
  // sub-tiles).
  const bool fine_narrow_head = fine_n > 0 && head_dim <= 64;
  const int max_shared = max_shared_bytes_for(target);
  if (wgmma_target(target) && table_contains(kWgmmaHeadDims, head_dim) && !(fine_narrow_head && block_q <= 64))
    for (int q_buffers : {2, 1}) {
      for (int block_m = std::min(fine_narrow_head ? 64 : 128, block_q), stages = block_m == 128 ? 3 : 2;
           stages >= 2; --stages) {
        const AttentionConfig config{dtype, head_dim, block_q, block_kv, block_m, std::min(128, block_kv),
                                     wgmma_warps(block_m), fine_n, false, true, stages, true};
        if (config.q_buffers() >= q_buffers && attention_config_problem(config, max_shared).empty()) return config;
      }
    }
  return default_attention_config(dtype, head_dim, block_q, block_kv, fine_n, max_shared);
}

jit::KernelSpec SparseAttentionFamily::render(const AttentionConfig& config, const jit::Target& target) {
  jit::KernelSpec spec;
  spec.family = "sparse_attention";
  spec.label = config.label();
  spec.name_expression = config.name_expression();
  const std::vector<std::string_view> shared_headers = {
      "sparse_attention/attention_steps.cuh", "sparse_attention/attention_params.h", "common/mma_tiles.cuh",
      "common/ptx.cuh"};
  if (config.wgmma) {
    // wgmma and setmaxnreg exist only on the arch-specific target (sm_90a).
    std::vector<std::string_view> headers = shared_headers;
    headers.insert(headers.end(), {"sparse_attention/sparse_attention_wgmma.cuh", "common/hopper.cuh"});
    spec.request = render_program("sparse_attention_wgmma.cu", "sparse_attention/sparse_attention_wgmma.cuh",
                                  headers, spec.name_expression, target.with_arch_specific(true));
  } else {
    std::vector<std::string_view> headers = shared_headers;
    headers.push_back("sparse_attention/sparse_attention.cuh");
    spec.request = render_program("sparse_attention.cu", "sparse_attention/sparse_attention.cuh", headers,
                                  spec.name_expression, target);
  }
  return spec;
}

bool wgmma_target(const jit::Target& target) { return target.major() == 9 && target.minor() == 0; }

std::vector<AttentionConfig> attention_tiles(HalfDtype dtype, int head_dim, int block_q, int block_kv, int fine_n,
                                             bool bitmask, const jit::Target& target) {
  const int max_shared = max_shared_bytes_for(target);
  std::vector<AttentionConfig> tiles;
  const auto offer = [&](const AttentionConfig& config) {
    if (attention_config_problem(config, max_shared).empty()) tiles.push_back(config);
  };
  for (int block_m : kAttentionBlockM)
    for (int block_n : kAttentionBlockN)
      for (int warps : kAttentionWarps)
        offer({dtype, head_dim, block_q, block_kv, block_m, block_n, warps, fine_n, bitmask});
  if (wgmma_target(target))
    for (int block_m : kWgmmaBlockM)
      for (int block_n : kWgmmaBlockN)
        for (int stages : kWgmmaStages)
          offer({dtype, head_dim, block_q, block_kv, block_m, block_n, wgmma_warps(block_m), fine_n, bitmask, true,
                 stages});
  return tiles;
}

std::vector<jit::KernelSpec> SparseAttentionFamily::enumerate(const jit::Target& target) const {
  std::vector<jit::KernelSpec> space;
  for (HalfDtype dtype : {HalfDtype::bf16, HalfDtype::fp16})
    for (int head_dim : kAttentionHeadDims)
      for (int block_q : kAttentionBlockSizes)
        for (int block_kv : kAttentionBlockSizes)
          for (int fine_n : kAttentionFineN)
            for (bool bitmask : {false, true})
              for (const AttentionConfig& config :
                   attention_tiles(dtype, head_dim, block_q, block_kv, fine_n, bitmask, target))
                space.push_back(render(config, target));
  return space;
}

std::vector<std::unique_ptr<TuningProblem>> SparseAttentionFamily::tuning_problems() const {
  std::vector<std::unique_ptr<TuningProblem>> problems;
  for (const AttentionProblemKey& key : default_attention_tuning_grid())
    problems.push_back(std::make_unique<SparseAttentionTuningProblem>(key));
  return problems;
}

void SparseAttentionFamily::validate(const AttentionConfig& config, const SparseAttentionParams& p,
                                     int max_shared_bytes) {
  const auto fail = [](const std::string& why) {
    throw std::invalid_argument("sparse_attention: " + why);
  };
  if (const std::string problem = attention_config_problem(config, max_shared_bytes); !problem.empty())
    fail(problem);
  if (p.batch < 1 || p.heads < 1 || p.tokens_q < 1 || p.tokens_kv < 1)
    fail("batch, heads, tokens_q and tokens_kv must be positive (got " + std::to_string(p.batch) +
         ", " + std::to_string(p.heads) + ", " + std::to_string(p.tokens_q) + ", " +
         std::to_string(p.tokens_kv) + ")");
  if (p.heads > 65535 || p.batch > 65535) fail("heads and batch must each be at most 65535");
  // The kernel's running maximum and its lazily moved softmax reference assume scale > 0.
  if (!(p.softmax_scale > 0.f) || !std::isfinite(p.softmax_scale))
    fail("softmax_scale must be positive and finite (got " + std::to_string(p.softmax_scale) + ")");
  const struct {
    const char* name;
    const void* pointer;
    long long token_stride, head_stride, batch_stride;
    bool input;  // rows loaded in 16-byte pieces (mma.sync) or by TMA (wgmma); O's stored in pairs
  } tensors[] = {{"q", p.q, p.q_token_stride, p.q_head_stride, p.q_batch_stride, true},
                 {"k", p.k, p.k_token_stride, p.k_head_stride, p.k_batch_stride, true},
                 {"v", p.v, p.v_token_stride, p.v_head_stride, p.v_batch_stride, true},
                 {"o", p.o, p.o_token_stride, p.o_head_stride, p.o_batch_stride, false}};
  for (const auto& tensor : tensors) {
    if (tensor.pointer == nullptr) fail(std::string(tensor.name) + " is null");
    if (!aligned_16(tensor.pointer) || (tensor.token_stride * 2) % 16 != 0)
      fail(std::string(tensor.name) +
           ": the pointer and the token stride (in bytes) must be multiples of 16");
    if (const std::string problem = row_stride_problem(tensor.name, tensor.head_stride, p.heads, tensor.batch_stride,
                                                       p.batch, tensor.input ? 16 : 4);
        !problem.empty())
      fail(problem);
    // O takes a tensor map only where its strides allow one (stores_o_by_tensor_map).
    if (config.wgmma && tensor.input)
      for (long long stride : {tensor.head_stride, tensor.batch_stride})
        if (!tensor_map_strides(stride))
          fail(std::string(tensor.name) + ": the wgmma kernel loads by TMA, which needs head and batch strides "
                                          "of whole 16 bytes below 2^40 bytes (got " +
               std::to_string(stride) + " elements)");
  }
  const int kv_blocks = (p.tokens_kv + config.block_kv - 1) / config.block_kv;
  const bool csr_given = p.kv_block_count != nullptr || p.kv_block_index != nullptr;
  if ((p.kv_block_bits != nullptr) != config.bitmask)
    fail(std::string("the specialization reads the mask as ") + (config.bitmask ? "a bitmask" : "block-CSR") +
         " but the parameters give " + (p.kv_block_bits != nullptr ? "a bitmask" : "none") +
         " in kv_block_bits");
  if (p.kv_block_bits != nullptr) {
    if (csr_given)
      fail("the block mask is given in both forms (kv_block_bits and kv_block_count/kv_block_index): "
           "give one");
    if (p.kv_block_words != (kv_blocks + 63) / 64)
      fail("kv_block_words " + std::to_string(p.kv_block_words) + " must be ceil(" + std::to_string(kv_blocks) +
           " key blocks / 64) = " + std::to_string((kv_blocks + 63) / 64));
  } else if (p.kv_block_count == nullptr || p.kv_block_index == nullptr) {
    fail("the block mask is null: give kv_block_count and kv_block_index (block-CSR) or "
         "kv_block_bits (bitmask)");
  }
  if (p.max_kv_blocks < 0 || p.max_kv_blocks > kv_blocks)
    fail("max_kv_blocks " + std::to_string(p.max_kv_blocks) + " is outside 0.." + std::to_string(kv_blocks));
  if (config.fine_n > 0 && p.fine_bits == nullptr)
    fail("the specialization uses fine bits of width " + std::to_string(config.fine_n) +
         " but fine_bits is null");
  if (config.fine_n == 0 && p.fine_bits != nullptr)
    fail("fine_bits were given to a specialization without fine bits (fine_n = 0)");
  const long long q_blocks = (p.tokens_q + config.block_q - 1) / config.block_q;
  if (q_blocks * (config.block_q / config.block_m) > 0x7fffffffLL) fail("too many query tiles");
  // The wgmma kernel numbers its work items (query tiles of every head and batch) in 32 bits,
  // with room for one more take per CTA past the last.
  if (config.wgmma && q_blocks * (config.block_q / config.block_m) * p.heads * p.batch >= (1LL << 30))
    fail("the wgmma kernel takes fewer than 2^30 query tiles of " + std::to_string(config.block_m) +
         " rows over all heads and batches (got " +
         std::to_string(q_blocks * (config.block_q / config.block_m) * p.heads * p.batch) + ")");
}

jit::LaunchConfig SparseAttentionFamily::geometry(const AttentionConfig& config,
                                                  const SparseAttentionParams& p, CUstream stream) {
  const int q_blocks = (p.tokens_q + config.block_q - 1) / config.block_q;
  jit::LaunchConfig launch;
  launch.grid = {static_cast<unsigned>(q_blocks * (config.block_q / config.block_m)),
                 static_cast<unsigned>(p.heads), static_cast<unsigned>(p.batch)};
  launch.block = {static_cast<unsigned>(config.warps * 32), 1, 1};
  launch.dynamic_shared_bytes = static_cast<unsigned>(config.shared_bytes());
  launch.stream = stream;
  return launch;
}

namespace {

// The TMA descriptor of one of Q, K, V as the wgmma kernel reads it: 4-D (head dim, tokens,
// heads, batch) of 16-bit elements, strides in bytes; boxes of 64 head dims (one 128-byte
// swizzled row) x `box_rows` tokens; rows past the end read as zeros.
CUtensorMap encode_tensor_map(const void* base, HalfDtype dtype, int head_dim, int tokens, int heads, int batch,
                              long long token_stride, long long head_stride, long long batch_stride,
                              int box_rows) {
  CUtensorMap map;
  const cuuint64_t dims[4] = {static_cast<cuuint64_t>(head_dim), static_cast<cuuint64_t>(tokens),
                              static_cast<cuuint64_t>(heads), static_cast<cuuint64_t>(batch)};
  const cuuint64_t strides[3] = {static_cast<cuuint64_t>(token_stride * 2), static_cast<cuuint64_t>(head_stride * 2),
                                 static_cast<cuuint64_t>(batch_stride * 2)};
  const cuuint32_t box[4] = {64, static_cast<cuuint32_t>(box_rows), 1, 1};
  const cuuint32_t element_strides[4] = {1, 1, 1, 1};
  SJ_CU(cuTensorMapEncodeTiled(
      &map, dtype == HalfDtype::bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 4,
      const_cast<void*>(base), dims, strides, box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
      CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE));
  return map;
}

// The persistent wgmma kernel's grid: one full wave of resident CTAs on the current
// context's device, or fewer when there are fewer work items.
unsigned persistent_ctas(const jit::Kernel& kernel, const AttentionConfig& config, long long work_items) {
  CUdevice device;
  SJ_CU(cuCtxGetDevice(&device));
  int multiprocessors = 0, resident = 0;
  SJ_CU(cuDeviceGetAttribute(&multiprocessors, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, device));
  SJ_CU(cuOccupancyMaxActiveBlocksPerMultiprocessor(&resident, kernel.handle(), config.warps * 32,
                                                     static_cast<std::size_t>(config.shared_bytes())));
  if (resident < 1)
    throw std::invalid_argument("sparse_attention: " + config.label() + " does not fit a multiprocessor");
  return static_cast<unsigned>(std::min<long long>(work_items, static_cast<long long>(multiprocessors) * resident));
}

}  // namespace

bool SparseAttentionFamily::stores_o_by_tensor_map(const AttentionConfig& config, const SparseAttentionParams& p) {
  return config.o_staged() && tensor_map_strides(p.o_head_stride) && tensor_map_strides(p.o_batch_stride);
}

void SparseAttentionFamily::launch(const jit::Kernel& kernel, const AttentionConfig& config,
                                   const SparseAttentionParams& params, int max_shared_bytes,
                                   CUstream stream) {
  validate(config, params, max_shared_bytes);
  kernel.allow_dynamic_shared_bytes(static_cast<unsigned>(config.shared_bytes()));
  SparseAttentionParams copy = params;
  if (!config.wgmma) {
    void* args[] = {&copy};
    kernel.launch(geometry(config, params, stream), args);
    return;
  }
  const auto& p = params;
  CUtensorMap q_map = encode_tensor_map(p.q, config.dtype, config.head_dim, p.tokens_q, p.heads, p.batch,
                                        p.q_token_stride, p.q_head_stride, p.q_batch_stride, config.block_m);
  CUtensorMap k_map = encode_tensor_map(p.k, config.dtype, config.head_dim, p.tokens_kv, p.heads, p.batch,
                                        p.k_token_stride, p.k_head_stride, p.k_batch_stride, config.block_n);
  CUtensorMap v_map = encode_tensor_map(p.v, config.dtype, config.head_dim, p.tokens_kv, p.heads, p.batch,
                                        p.v_token_stride, p.v_head_stride, p.v_batch_stride, config.block_n);
  // O's box: 64 rows, one consumer warpgroup's.
  CUtensorMap o_map{};
  copy.o_tensor_map = stores_o_by_tensor_map(config, p);
  if (copy.o_tensor_map)
    o_map = encode_tensor_map(p.o, config.dtype, config.head_dim, p.tokens_q, p.heads, p.batch, p.o_token_stride,
                              p.o_head_stride, p.o_batch_stride, 64);
  void* args[] = {&copy, &q_map, &k_map, &v_map, &o_map};
  // The kernel walks the work items along x: one wave of CTAs that take them from this
  // stream's counter, or a CTA per item (also while a graph capture has no counter left).
  jit::LaunchConfig launch = geometry(config, params, stream);
  const long long work_items = static_cast<long long>(launch.grid.x) * launch.grid.y * launch.grid.z;
  copy.work_counter =
      config.persistent ? reinterpret_cast<unsigned int*>(jit::work_counter(stream)) : nullptr;
  launch.grid = {copy.work_counter != nullptr ? persistent_ctas(kernel, config, work_items)
                                              : static_cast<unsigned>(work_items),
                 1, 1};
  kernel.launch(launch, args);
}

}  // namespace sparsejit::templates
