#pragma once
// CPU reference of block_select, in float64 over the kernel's inputs (the float32 scores,
// the 16-bit pooled tiles, the float32 tile LSE), with the same rules
// (block_select_params.h): the always-kept blocks first, then descending score, equal scores
// the lower index first; fine sub-tiles by descending mass, equal masses the lower bit first.
#include <cstdint>
#include <vector>

#include "templates/block_select/block_select_family.h"
#include "templates/block_select/block_select_params.h"
#include "templates/sparse_attention/block_mask.h"

namespace sparsejit::templates {

// The mask block_select writes, for host_params whose scores, top_k_per_head (when given)
// and, with fine bits, pooled_q, pooled_k, tile_lse are HOST pointers; the output pointers
// are ignored. The returned mask has max_kv_blocks = host_params.max_kv_blocks and unused
// index entries -1. Throws std::invalid_argument where BlockSelectFamily::validate would,
// and for a per-head k outside 1..top_k.
BlockMask block_select_reference(const BlockSelectParams& host_params, const BlockSelectConfig& config);

// The masses of the 16 x fine_n sub-tiles of pair (b, h, qb, kb), bit order (qs *
// (block_kv / fine_n) + ks): the tile probabilities exp(Qp[i] . Kp[j] * scale - tile_lse[i])
// of the overlapping tiles, each times the share of the tile's real tokens inside the
// sub-tile (a sub-tile past the end of the tokens has mass 0). Needs fine_n > 0.
std::vector<double> fine_subtile_masses(const BlockSelectParams& host_params, const BlockSelectConfig& config,
                                        int b, int h, int qb, int kb);

// The fine word for `masses` (one per bit): in the order of descending mass (equal: lower bit
// first), the fewest sub-tiles whose mass reaches share * total, at least one.
std::uint64_t fine_word_for(const std::vector<double>& masses, double share);

}  // namespace sparsejit::templates
