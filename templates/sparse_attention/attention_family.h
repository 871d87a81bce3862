#pragma once
// Descriptor of the sparse_attention family, two kernels of the same semantics: mma.sync
// (sparse_attention.cuh, sm_80 and newer) and wgmma + TMA (sparse_attention_wgmma.cuh, the
// arch-specific sm_90a, offered on compute capability 9.0 only).
//
// A problem is fixed by dtype, head dim, the sparse block sizes (block_q x block_kv), the
// fine granularity and the mask form (block-CSR or bitmask); the tunable part is the kernel,
// its tile (BlockM x BlockN), warps and, for wgmma, pipeline stages. Every point enumerate()
// returns compiles and fits: tiles divide the blocks, a warp owns 16 or 32 rows (mma.sync) or
// a consumer warpgroup 64 (wgmma), the fine sub-tiles fit one 64-bit word, the shared memory
// fits the target, and the registers an mma.sync thread keeps live stay within a budget (see
// kMaxLiveRegistersOneRowGroup).
#include <array>
#include <string>

#include "jit/module.h"
#include "templates/kernel_family.h"
#include "templates/sparse_attention/attention_params.h"
#include "templates/common/half_precision.h"

namespace sparsejit::templates {

// Head dims of the models (DESIGN.md); 256 later.
inline constexpr std::array<int, 3> kAttentionHeadDims = {64, 96, 128};
// Sparse block sizes of the masks (query and key blocks may differ).
inline constexpr std::array<int, 2> kAttentionBlockSizes = {64, 128};
// Tiles: BlockM query rows per CTA, BlockN keys per step; 4 or 8 warps.
inline constexpr std::array<int, 2> kAttentionBlockM = {64, 128};
inline constexpr std::array<int, 3> kAttentionBlockN = {32, 64, 128};
inline constexpr std::array<int, 2> kAttentionWarps = {4, 8};
// Fine sub-tile widths in keys (0: no fine bits), FG-Attn.
inline constexpr std::array<int, 4> kAttentionFineN = {0, 8, 16, 32};
// Registers a thread keeps live across the key walk, and the most that compile without
// spills on sm_90 (ptxas 13.0 -v over every tile at D = 64/96/128, fine bits off and 16).
// Warps of two row groups hold the score and output accumulators, row_groups * (block_n / 2 +
// head_dim / 2): 160 (128x32 at D = 128) compile to 254 registers without spills. At 192,
// 128x64 at D = 128 compiles without spills since the row loads stopped keeping a 64-bit
// offset per row (ninth session) but runs no faster than 128x32 on the H100, and still spills
// 48-56 bytes with fine bits in the bitmask form; 128x128 at D = 64 spills 8: so 160 stays.
// Warps of one row group also keep Q's fragments resident (head_dim / 4): 136 compile without
// spills, 160 (64x128 or 128x128 at D = 128) spill 4-80 bytes.
inline constexpr int kMaxLiveRegistersTwoRowGroups = 160;
inline constexpr int kMaxLiveRegistersOneRowGroup = 144;

// The wgmma kernel's space: head dims in whole 64-column panels (the 128-byte swizzle rows of
// TMA), tiles of one or two 64-row consumer warpgroups, wgmma n64/n128 key steps, and K/V
// rings of 2 or 3 stages. Its warps follow from the tile: a producer warpgroup plus the
// consumers, 4 * (block_m / 64 + 1).
inline constexpr std::array<int, 2> kWgmmaHeadDims = {64, 128};
inline constexpr std::array<int, 2> kWgmmaBlockM = {64, 128};
inline constexpr std::array<int, 2> kWgmmaBlockN = {64, 128};
inline constexpr std::array<int, 2> kWgmmaStages = {2, 3};
inline constexpr int wgmma_warps(int block_m) { return 4 * (block_m / 64 + 1); }

struct AttentionConfig {
  HalfDtype dtype = HalfDtype::bf16;
  int head_dim = 128;
  int block_q = 128;
  int block_kv = 128;
  int block_m = 128;
  int block_n = 64;
  int warps = 8;
  int fine_n = 0;
  bool bitmask = false;  // the mask form the kernel reads: block bitmask, else block-CSR
  bool wgmma = false;    // the sm_90a kernel (wgmma + TMA), else mma.sync
  int stages = 2;        // wgmma: K/V pipeline stages (mma.sync double-buffers, fixed)
  // wgmma: one wave of CTAs that take the work items from a counter (the dynamic scheduler),
  // else a CTA per item. The same CUBIN either way; only the launch differs.
  bool persistent = true;

  std::string name_expression() const;  // "sparsejit::sparse_attention_forward<0, 128, ...>"
  std::string label() const;            // "sparse_attention<bf16 D=128 128x128 tile 128x64 w8>"
  int shared_bytes() const;             // dynamic shared memory of a CTA
  // Q buffers of the wgmma kernel (wgmma_attention_tile::kQBuffers): two where they fit an
  // sm_90 CTA's 227 KB beside the K/V stages, else one; 1 for mma.sync.
  int q_buffers() const;
  // Whether the wgmma kernel has room beside them to stage O for TMA stores
  // (wgmma_attention_tile::kOStaged); false for mma.sync.
  bool o_staged() const;
  // The tunable part as stored in the database: {"block_m":128,"block_n":64,"warps":8}, with
  // "wgmma":true,"stages":S for the wgmma kernel (and "persistent":false for its grid of a
  // CTA per work item).
  std::string tuning_json() const;
  friend bool operator==(const AttentionConfig&, const AttentionConfig&) = default;
};

// Shared memory a CTA may use on a target (opt-in limit): 227 KB on sm_90, 163 KB on sm_80,
// 99 KB on sm_86/sm_89.
int max_shared_bytes_for(const jit::Target& target);

// Whether the wgmma kernel is offered for a target: compute capability 9.0 (H100, H200),
// compiled for sm_90a.
bool wgmma_target(const jit::Target& target);

// Every valid tile of both kernels for one kind of problem on a target (wgmma tiles where
// wgmma_target), each once: the persistent grid, a launch choice of the same CUBIN, is left
// at its default. The family's space (enumerate) and a tuning problem's candidates.
std::vector<AttentionConfig> attention_tiles(HalfDtype dtype, int head_dim, int block_q, int block_kv, int fine_n,
                                             bool bitmask, const jit::Target& target);

// Empty when `config` is a valid point for a device with `max_shared_bytes`; else why not.
std::string attention_config_problem(const AttentionConfig& config, int max_shared_bytes);

// The built-in default for a problem on a device with `max_shared_bytes`: the first tile of a
// short preference list (measured on the H100) that fits. Throws std::invalid_argument when the problem itself is invalid
// (head dim, block sizes, fine granularity).
AttentionConfig default_attention_config(HalfDtype dtype, int head_dim, int block_q,
                                         int block_kv, int fine_n, int max_shared_bytes);
// The built-in default on `target`: where the target has the wgmma kernel (wgmma_target) and
// the head dim fits it, its widest tile (BlockM and BlockN up to 128) with the most stages (3
// or 2) that fit beside two Q buffers, else the most that fit, on the persistent grid;
// otherwise the mma.sync default
// above for the target's shared memory.
AttentionConfig default_attention_config(HalfDtype dtype, int head_dim, int block_q,
                                         int block_kv, int fine_n, const jit::Target& target);

class SparseAttentionFamily final : public KernelFamily {
 public:
  std::string_view name() const override { return "sparse_attention"; }
  std::string_view summary() const override {
    return "block-sparse attention over a block mask, optional FG-Attn fine bits (mma.sync; wgmma+TMA on sm_90)";
  }
  std::vector<jit::KernelSpec> enumerate(const jit::Target& target) const override;
  // The default grid of attention_tuning.h (default_attention_tuning_grid).
  std::vector<std::unique_ptr<TuningProblem>> tuning_problems() const override;

  static jit::KernelSpec render(const AttentionConfig& config, const jit::Target& target);
  // Throws std::invalid_argument for: an invalid config, null or misaligned pointers (16
  // bytes for Q/K/V/O and their token strides; head and batch strides that would misalign a
  // row), non-positive sizes, a null mask, fine bits missing or given against the config. Does
  // not read the mask (see validate_block_mask).
  static void validate(const AttentionConfig& config, const SparseAttentionParams& params,
                       int max_shared_bytes);
  // One CTA per query tile, head and batch (grid x, y, z). The wgmma kernel walks work items:
  // launch() lays these out along x, as a CTA each or, on the persistent grid, one wave of
  // resident CTAs that take them from the stream's work counter (jit/work_counters.h).
  static jit::LaunchConfig geometry(const AttentionConfig& config,
                                    const SparseAttentionParams& params, CUstream stream);
  // validate, raise the kernel's shared-memory limit, launch on `stream`.
  // The wgmma kernel also takes tensor maps of Q, K and V (and of O where
  // stores_o_by_tensor_map), encoded here per launch.
  static void launch(const jit::Kernel& kernel, const AttentionConfig& config,
                     const SparseAttentionParams& params, int max_shared_bytes, CUstream stream);
  // Whether the wgmma kernel stores this call's O by TMA through shared memory (what launch
  // sets o_tensor_map to): where the specialization stages O (AttentionConfig::o_staged) and
  // O's head and batch strides make a tensor map; else each thread stores its own elements.
  static bool stores_o_by_tensor_map(const AttentionConfig& config, const SparseAttentionParams& params);
};

}  // namespace sparsejit::templates
