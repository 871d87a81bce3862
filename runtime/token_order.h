#pragma once
// Token orders for the latent video grid (DFSAttn's reordering step): where each token of an
// F x H x W grid, plus `extra` tokens (text) after it, goes so that a block of consecutive
// tokens is a compact 3D region. Host code; the permute_tokens kernel applies the result.
//
// Tokens are numbered in raster order: the cell (f, y, x) is token (f * H + y) * W + x, and
// the extra tokens follow as F*H*W .. F*H*W + extra - 1. An order is a gather index:
// order[i] is the original token placed at position i (PermuteParams::permutation for the
// gather direction). Every order keeps the extra tokens after the video tokens, in their
// original order. Token counts are limited to int32 (the kernels' index type).
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sparsejit::runtime {

// The latent grid: frames x height x width cells, one token each.
struct VideoGrid {
  int frames = 0;
  int height = 0;
  int width = 0;

  std::int64_t cells() const {
    return std::int64_t{frames} * std::int64_t{height} * std::int64_t{width};
  }
  std::string to_string() const;  // "21x45x80"
};

// The tiles of TokenOrder::tile3d, in cells per dimension. The default 8x8x8 gave the
// smallest mean block box at blocks of 128 on the model grids among the shapes measured
// (4x8x8, 2x8x8, 1x8x16, 4x4x8, 4x4x4, 4x16x16, 2x16x16, 1x4x32, 2x2x32): a block of 128
// inside a whole tile is a 2x8x8 box; tiles cut short at the grid's edges shift the blocks
// after them off the tiles.
struct TileShape {
  int frames = 8;
  int height = 8;
  int width = 8;
};

enum class TokenOrder {
  raster,   // the identity
  tile3d,   // tiles in raster order, raster order inside a tile; edge tiles are cut short
  hilbert,  // a generalized 3D Hilbert curve over the whole (non power-of-two) grid
};
std::string_view to_string(TokenOrder order);
// "raster", "tile3d", "hilbert"; std::nullopt for any other name.
std::optional<TokenOrder> parse_token_order(std::string_view name);

// The gather index of `order` for `grid` plus `extra_tokens`: [grid.cells() + extra_tokens]
// int32. Throws std::invalid_argument for a non-positive grid or tile dimension, negative
// extra tokens, or more tokens in all than int32 can index.
std::vector<int> token_order(TokenOrder order, const VideoGrid& grid, int extra_tokens,
                             const TileShape& tile = {});

// The inverse of a gather index: scatter[order[i]] = i, so position scatter[t] holds token t
// (PermuteParams::permutation for the scatter direction, used with the gather index). Throws
// std::invalid_argument when `order` is not a permutation of 0..size-1.
std::vector<int> scatter_index(std::span<const int> order);

// How compact the blocks of an order are. Blocks are runs of `block_tokens` consecutive
// positions over the video positions 0..cells-1 (the last one may be shorter); the extra
// tokens at the end are not part of the grid and are left out.
struct OrderLocality {
  int block_tokens = 0;
  std::int64_t video_blocks = 0;       // ceil(cells / block_tokens)
  double mean_block_bbox_cells = 0;    // mean volume of a block's bounding box, in grid cells
  std::int64_t steps = 0;              // consecutive video positions i -> i+1: cells - 1
  double non_neighbour_step_share = 0; // share of those steps not between face neighbours
};

// The locality of `order` (a gather index over `grid` plus any extra tokens). Throws
// std::invalid_argument for block_tokens < 1, or when a video position does not hold a
// video token (order shorter than the grid, or entries outside 0..cells-1).
OrderLocality measure_locality(std::span<const int> order, const VideoGrid& grid,
                               int block_tokens = 128);

}  // namespace sparsejit::runtime
