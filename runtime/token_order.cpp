#include "runtime/token_order.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <limits>
#include <stdexcept>

#include "templates/permute/permute_family.h"

namespace sparsejit::runtime {
namespace {

constexpr std::int64_t kMaxTokens = std::numeric_limits<std::int32_t>::max();

std::string shape_string(int frames, int height, int width) {
  return std::to_string(frames) + "x" + std::to_string(height) + "x" + std::to_string(width);
}

// Throws unless the grid has positive dimensions and, with the extra tokens, at most
// kMaxTokens tokens. Checked in steps so that no product overflows int64.
void validate_tokens(const VideoGrid& grid, int extra_tokens) {
  if (grid.frames < 1 || grid.height < 1 || grid.width < 1)
    throw std::invalid_argument("video grid " + grid.to_string() +
                                ": frames, height and width must each be at least 1");
  if (extra_tokens < 0)
    throw std::invalid_argument("extra tokens: " + std::to_string(extra_tokens) +
                                " is negative");
  const std::int64_t frame_cells = std::int64_t{grid.frames} * grid.height;  // < 2^62
  if (frame_cells > kMaxTokens || frame_cells * grid.width + extra_tokens > kMaxTokens)
    throw std::invalid_argument(
        "video grid " + grid.to_string() + " plus " + std::to_string(extra_tokens) +
        " extra tokens is more than " + std::to_string(kMaxTokens) +
        " tokens, the most an int32 index can address");
}

// The raster index of a cell (f, y, x).
using Cell = std::array<int, 3>;
int token_of(const VideoGrid& grid, const Cell& cell) {
  return (cell[0] * grid.height + cell[1]) * grid.width + cell[2];
}
Cell cell_of(const VideoGrid& grid, int token) {
  return {token / (grid.height * grid.width), token / grid.width % grid.height, token % grid.width};
}

void append_extra_tokens(const VideoGrid& grid, int extra_tokens, std::vector<int>& order) {
  const int first = static_cast<int>(grid.cells());
  for (int token = first; token < first + extra_tokens; ++token) order.push_back(token);
}

// Where the tile that starts at `start` along a dimension of `size` cells ends: a tile at the
// grid's far edge keeps only the cells inside the grid.
int tile_end(int start, int tile, int size) { return start + std::min(tile, size - start); }

std::vector<int> tile3d_video_order(const VideoGrid& grid, const TileShape& tile) {
  std::vector<int> order;
  order.reserve(static_cast<std::size_t>(grid.cells()));
  for (int f0 = 0; f0 < grid.frames; f0 = tile_end(f0, tile.frames, grid.frames))
    for (int y0 = 0; y0 < grid.height; y0 = tile_end(y0, tile.height, grid.height))
      for (int x0 = 0; x0 < grid.width; x0 = tile_end(x0, tile.width, grid.width))
        for (int f = f0; f < tile_end(f0, tile.frames, grid.frames); ++f)
          for (int y = y0; y < tile_end(y0, tile.height, grid.height); ++y)
            for (int x = x0; x < tile_end(x0, tile.width, grid.width); ++x)
              order.push_back(token_of(grid, {f, y, x}));
  return order;
}

// ------------------------------------------------------------------- generalized Hilbert
//
// A 3D Hilbert-like curve through a box of any size, built by recursive box splitting (the
// idea of Cerveny's "gilbert3d"). The curve through a box with edges (a, b, c) from its
// corner `origin` starts at that corner and ends at the far end of edge a (origin moved by
// |a| - 1 cells along a). The box is cut into 2, 3 or 5 sub-boxes whose curves chain
// end-to-start through face neighbours:
//   - long along a: two boxes across a;
//   - thin along the shorter of b and c: a U in the plane of a and the longer, three boxes;
//   - otherwise: five boxes, the 8 octants of the Hilbert cube with two pairs merged.
// A path through every cell of a w x h x d box between the two ends of edge a exists only
// when w is even or w, h, d are all odd (colour the cells like a chessboard), and for w = 1
// only in a single cell. Every box the recursion visits is of that kind: the whole grid
// travels along an even dimension when it has one; the cuts have the parities that keep
// every sub-box so and leave no sub-box one cell long along its travel edge (see the cases
// below; an all-odd box, which five boxes cannot keep so, gets a U). So every step of the
// curve is between face neighbours, on every grid; on power-of-two cubes it is the classic
// 3D Hilbert curve.
//
// Why not the Hilbert curve of the bounding power-of-two cube with the empty cells dropped
// (what the DFSAttn code does)? Measured at blocks of 128 tokens, its mean block box is about
// the same (1.00x this curve's over the model grids and 40 random ones up to 31x90x90;
// 0.97x to 1.06x on the four model grids), it makes 0.4-0.9% non-neighbour steps where this
// curve makes none, and its figures swing with the assignment of the grid's axes to the
// cube's (on 21x45x80 from 160 to 266 cells). Cutting edges in the middle instead of at
// powers of two gives 1.1-1.5x larger boxes.

// An edge of a box: |length| cells along grid dimension `dim` (0 frames, 1 height, 2 width),
// towards higher coordinates when length > 0, lower ones when length < 0.
struct Edge {
  int dim;
  int length;

  int size() const { return std::abs(length); }
  int step() const { return length > 0 ? 1 : -1; }
  Edge first(int cells) const { return {dim, step() * cells}; }          // its first `cells`
  Edge rest(int cells) const { return {dim, length - step() * cells}; }  // the cells after those
  Edge reversed() const { return {dim, -length}; }
};

Cell moved(Cell cell, const Edge& edge, int cells) {
  cell[edge.dim] += edge.step() * cells;
  return cell;
}

enum class Parity { even, odd, any };

// Where to cut an edge of `length` >= 2 cells, in 1..length-1: at the largest power of two
// below the length, where the bounding power-of-two cube's curve cuts, so that sub-boxes
// get power-of-two sides where the grid allows and blocks of 2^k consecutive tokens fill
// whole sub-boxes. When `rest_travelled` (the curve also travels along the rest) and the
// rest would be one cell, at half that power. Then moved by one cell to the asked parity
// when it does not have it.
int cut_point(int length, Parity parity, bool rest_travelled) {
  int cut = 1;
  while (cut * 2 < length) cut *= 2;
  if (rest_travelled && length - cut == 1 && cut >= 2) cut /= 2;
  if (parity != Parity::any && cut % 2 != (parity == Parity::odd ? 1 : 0)) {
    if (cut + 1 <= length - 1) ++cut;
    else if (cut - 1 >= 1) --cut;
  }
  return cut;
}

class HilbertWalk {
 public:
  HilbertWalk(const VideoGrid& grid, std::vector<int>& order) : grid_(grid), order_(order) {}

  void walk(const Cell& origin, const Edge& a, const Edge& b, const Edge& c) {
    const int w = a.size(), h = b.size(), d = c.size();
    // What the cuts below keep true (see above); a box without it would get no curve.
    if ((w == 1 && h * d > 1) || (w % 2 == 1 && (h % 2 == 0 || d % 2 == 0)))
      throw std::logic_error("Hilbert order: no path of face neighbours through a box of " +
                             shape_string(w, h, d) + " cells along its first edge (a bug)");
    if (h == 1 && d == 1) {
      for (int i = 0; i < w; ++i) order_.push_back(token_of(grid_, moved(origin, a, i)));
      return;
    }
    // From here w >= 2 and max(h, d) >= 2.
    const bool all_odd = w % 2 == 1 && h % 2 == 1 && d % 2 == 1;
    if (2 * w > 3 * h && 2 * w > 3 * d) {
      // w >= 4: a2 is even and >= 2, w - a2 >= 2 has the parity of w.
      const int a2 = cut_point(w, Parity::even, /*rest_travelled=*/true);
      walk(origin, a.first(a2), b, c);
      walk(moved(origin, a, a2), a.rest(a2), b, c);
    } else if (all_odd || 3 * h > 4 * d || 3 * d > 4 * h) {
      if (h >= d) u_turn(origin, a, b, c);
      else u_turn(origin, a, c, b);
    } else {  // 3h <= 4d and 3d <= 4h: h, d >= 2
      five_boxes(origin, a, b, c);
    }
  }

 private:
  // Cuts a and b (w, h >= 2): up the first part of b beside the start of a, along a across
  // the rest of b, back down the first part of b at the end of a; each box spans all of c.
  // b2 is even and >= 2 (h >= 3 here but in a 2x2x1 box, whose boxes are single cells),
  // which keeps every box able to chain when w is even or w, h, d are all odd.
  void u_turn(const Cell& origin, const Edge& a, const Edge& b, const Edge& c) {
    const int w = a.size();
    const int a2 = cut_point(w, Parity::any, /*rest_travelled=*/false);
    const int b2 = cut_point(b.size(), Parity::even, /*rest_travelled=*/false);
    walk(origin, b.first(b2), a.first(a2), c);
    walk(moved(origin, b, b2), a, b.rest(b2), c);
    walk(moved(moved(origin, a, w - 1), b, b2 - 1), b.first(b2).reversed(),
         a.rest(a2).reversed(), c);
  }

  // Cuts a, b and c (w, h, d >= 2) at a2, b2, c2. The boxes in curve order, as ranges
  // along (a, b, c), with the edge each travels along and its first and last cells:
  //   1. [0,a2) x [0,b2) x [0,c2)   c   (0, 0, 0)      -> (0, 0, c2-1)
  //   2. [0,a2) x [0,h)  x [c2,d)   b   (0, 0, c2)     -> (0, h-1, c2)
  //   3. [0,w)  x [b2,h) x [0,c2)   a   (0, h-1, c2-1) -> (w-1, h-1, c2-1)
  //   4. [a2,w) x [0,h)  x [c2,d)   -b  (w-1, h-1, c2) -> (w-1, 0, c2)
  //   5. [a2,w) x [0,b2) x [0,c2)   -c  (w-1, 0, c2-1) -> (w-1, 0, 0)
  // w is even here (an all-odd box gets a U). Parities that let every box chain: c2 even
  // when h is even; c2 even and a2 odd when h and d are odd; a2, b2, c2 odd when h is odd
  // and d even. The cuts always have them, and c2 >= 2 except in a 2x2x2 box.
  void five_boxes(const Cell& origin, const Edge& a, const Edge& b, const Edge& c) {
    const int w = a.size(), h = b.size(), d = c.size();
    Parity a_parity = Parity::any, b_parity = Parity::any, c_parity = Parity::even;
    if (h % 2 == 1) {
      a_parity = Parity::odd;
      if (d % 2 == 0) b_parity = c_parity = Parity::odd;
    }
    const int a2 = cut_point(w, a_parity, /*rest_travelled=*/false);
    const int b2 = cut_point(h, b_parity, /*rest_travelled=*/false);
    const int c2 = cut_point(d, c_parity, /*rest_travelled=*/false);
    const Cell far_a = moved(origin, a, w - 1);
    walk(origin, c.first(c2), a.first(a2), b.first(b2));
    walk(moved(origin, c, c2), b, c.rest(c2), a.first(a2));
    walk(moved(moved(origin, b, h - 1), c, c2 - 1), a, b.rest(b2).reversed(),
         c.first(c2).reversed());
    walk(moved(moved(far_a, b, h - 1), c, c2), b.reversed(), a.rest(a2).reversed(), c.rest(c2));
    walk(moved(far_a, c, c2 - 1), c.first(c2).reversed(), a.rest(a2).reversed(), b.first(b2));
  }

  const VideoGrid& grid_;
  std::vector<int>& order_;
};

std::vector<int> hilbert_video_order(const VideoGrid& grid) {
  // The curve travels along the longest dimension of even size (see HilbertWalk: then a
  // path of face neighbours exists), else along the longest; it starts at cell (0, 0, 0).
  const std::array<int, 3> sizes = {grid.frames, grid.height, grid.width};
  int travel = 0;
  const auto better = [&](int dim, int than) {
    const bool even = sizes[dim] % 2 == 0, than_even = sizes[than] % 2 == 0;
    return even != than_even ? even : sizes[dim] > sizes[than];
  };
  for (int dim = 1; dim < 3; ++dim)
    if (better(dim, travel)) travel = dim;
  const int second = travel == 0 ? 1 : 0;
  const int third = 3 - travel - second;
  std::vector<int> order;
  order.reserve(static_cast<std::size_t>(grid.cells()));
  HilbertWalk(grid, order).walk({0, 0, 0}, {travel, sizes[travel]}, {second, sizes[second]},
                                {third, sizes[third]});
  return order;
}

}  // namespace

std::string VideoGrid::to_string() const { return shape_string(frames, height, width); }

std::string_view to_string(TokenOrder order) {
  switch (order) {
    case TokenOrder::raster: return "raster";
    case TokenOrder::tile3d: return "tile3d";
    case TokenOrder::hilbert: return "hilbert";
  }
  return "?";
}

std::optional<TokenOrder> parse_token_order(std::string_view name) {
  for (TokenOrder order : {TokenOrder::raster, TokenOrder::tile3d, TokenOrder::hilbert})
    if (name == to_string(order)) return order;
  return std::nullopt;
}

std::vector<int> token_order(TokenOrder order, const VideoGrid& grid, int extra_tokens,
                             const TileShape& tile) {
  validate_tokens(grid, extra_tokens);
  std::vector<int> gather;
  switch (order) {
    case TokenOrder::raster:
      gather.resize(static_cast<std::size_t>(grid.cells()));
      for (std::size_t i = 0; i < gather.size(); ++i) gather[i] = static_cast<int>(i);
      break;
    case TokenOrder::tile3d:
      if (tile.frames < 1 || tile.height < 1 || tile.width < 1)
        throw std::invalid_argument("tile " + shape_string(tile.frames, tile.height, tile.width) +
                                    ": frames, height and width must each be at least 1");
      gather = tile3d_video_order(grid, tile);
      break;
    case TokenOrder::hilbert:
      gather = hilbert_video_order(grid);
      break;
  }
  gather.reserve(gather.size() + static_cast<std::size_t>(extra_tokens));
  append_extra_tokens(grid, extra_tokens, gather);
  return gather;
}

std::vector<int> scatter_index(std::span<const int> order) {
  templates::validate_permutation(order);
  std::vector<int> scatter(order.size());
  for (std::size_t i = 0; i < order.size(); ++i)
    scatter[static_cast<std::size_t>(order[i])] = static_cast<int>(i);
  return scatter;
}

OrderLocality measure_locality(std::span<const int> order, const VideoGrid& grid,
                               int block_tokens) {
  validate_tokens(grid, 0);
  if (block_tokens < 1)
    throw std::invalid_argument("block of " + std::to_string(block_tokens) +
                                " tokens: must be at least 1");
  const std::int64_t cells = grid.cells();
  if (static_cast<std::int64_t>(order.size()) < cells)
    throw std::invalid_argument("order of " + std::to_string(order.size()) +
                                " tokens is shorter than the video grid " + grid.to_string() +
                                " (" + std::to_string(cells) + " cells)");
  std::vector<Cell> cell_at(static_cast<std::size_t>(cells));
  for (std::size_t i = 0; i < cell_at.size(); ++i) {
    if (order[i] < 0 || order[i] >= cells)
      throw std::invalid_argument("order[" + std::to_string(i) + "] = " +
                                  std::to_string(order[i]) +
                                  ": video positions must hold video tokens 0.." +
                                  std::to_string(cells - 1));
    cell_at[i] = cell_of(grid, order[i]);
  }

  OrderLocality locality;
  locality.block_tokens = block_tokens;
  double bbox_sum = 0;
  for (std::size_t begin = 0; begin < cell_at.size(); begin += block_tokens) {
    const std::size_t end = std::min(cell_at.size(), begin + block_tokens);
    Cell low = cell_at[begin], high = cell_at[begin];
    for (std::size_t i = begin + 1; i < end; ++i)
      for (int dim = 0; dim < 3; ++dim) {
        low[dim] = std::min(low[dim], cell_at[i][dim]);
        high[dim] = std::max(high[dim], cell_at[i][dim]);
      }
    double volume = 1;
    for (int dim = 0; dim < 3; ++dim) volume *= high[dim] - low[dim] + 1;
    bbox_sum += volume;
    ++locality.video_blocks;
  }
  locality.mean_block_bbox_cells = bbox_sum / static_cast<double>(locality.video_blocks);

  std::int64_t far_steps = 0;
  for (std::size_t i = 0; i + 1 < cell_at.size(); ++i) {
    int distance = 0;
    for (int dim = 0; dim < 3; ++dim) distance += std::abs(cell_at[i + 1][dim] - cell_at[i][dim]);
    if (distance != 1) ++far_steps;
  }
  locality.steps = cells - 1;
  locality.non_neighbour_step_share =
      locality.steps == 0 ? 0.0 : static_cast<double>(far_steps) / static_cast<double>(locality.steps);
  return locality;
}

}  // namespace sparsejit::runtime
