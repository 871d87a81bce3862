// Token orders for the latent video grid: every order is a permutation of every grid with the
// extra tokens last and in order, the scatter index inverts it, the Hilbert curve steps only
// between face neighbours, and the locality figures on the model grids are the measured ones.
#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <functional>
#include <map>
#include <numeric>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "runtime/token_order.h"
#include "templates/permute/permute_family.h"

namespace sparsejit::testing {
namespace {

using runtime::OrderLocality;
using runtime::TileShape;
using runtime::TokenOrder;
using runtime::VideoGrid;

constexpr TokenOrder kOrders[] = {TokenOrder::raster, TokenOrder::tile3d, TokenOrder::hilbert};

std::string describe(TokenOrder order, const VideoGrid& grid, int extra_tokens) {
  return std::string(to_string(order)) + " order of " + grid.to_string() + " + " +
         std::to_string(extra_tokens) + " extra";
}

// Checks what every order must be: cells + extra long, a permutation, the extra tokens last
// and in their original order.
void expect_valid_order(const std::vector<int>& order, const VideoGrid& grid, int extra_tokens,
                        const std::string& what) {
  const auto cells = static_cast<std::size_t>(grid.cells());
  ASSERT_EQ(order.size(), cells + static_cast<std::size_t>(extra_tokens)) << what;
  EXPECT_NO_THROW(templates::validate_permutation(order)) << what;
  std::vector<int> extra(static_cast<std::size_t>(extra_tokens));
  std::iota(extra.begin(), extra.end(), static_cast<int>(cells));
  EXPECT_TRUE(std::equal(extra.begin(), extra.end(), order.begin() + static_cast<std::ptrdiff_t>(cells)))
      << what << ": the extra tokens must follow the video tokens in their original order";
}

TEST(TokenOrderTest, EveryOrderIsAPermutationOfEveryGridUpTo9x9x9) {
  const TileShape ragged_tile{2, 3, 4};  // leaves cut-short tiles at most edges of these grids
  for (int frames = 1; frames <= 9; ++frames)
    for (int height = 1; height <= 9; ++height)
      for (int width = 1; width <= 9; ++width)
        for (int extra_tokens : {0, 5}) {
          const VideoGrid grid{frames, height, width};
          for (TokenOrder order : kOrders)
            expect_valid_order(runtime::token_order(order, grid, extra_tokens), grid, extra_tokens,
                               describe(order, grid, extra_tokens));
          expect_valid_order(runtime::token_order(TokenOrder::tile3d, grid, extra_tokens, ragged_tile),
                             grid, extra_tokens, "2x3x4 tiles, " + describe(TokenOrder::tile3d, grid, extra_tokens));
        }
}

TEST(TokenOrderTest, RasterIsTheIdentity) {
  const std::vector<int> order = runtime::token_order(TokenOrder::raster, {3, 4, 5}, 2);
  std::vector<int> identity(order.size());
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_EQ(order, identity);
}

// 2x2x3 grid in 1x2x2 tiles: per frame one whole tile, then the tile cut to one column.
TEST(TokenOrderTest, Tile3dVisitsTilesInRasterOrderAndCutsEdgeTilesShort) {
  const std::vector<int> order = runtime::token_order(TokenOrder::tile3d, {2, 2, 3}, 1, {1, 2, 2});
  EXPECT_EQ(order, (std::vector<int>{0, 1, 3, 4, 2, 5, 6, 7, 9, 10, 8, 11, 12}));
}

// Where the tiles divide the grid and hold one block each, every block is a tile.
TEST(TokenOrderTest, Tile3dBlocksAreWholeTilesWhenTheTilesDivideTheGrid) {
  const VideoGrid grid{4, 16, 24};
  const std::vector<int> order = runtime::token_order(TokenOrder::tile3d, grid, 0, {2, 8, 8});
  const OrderLocality locality = runtime::measure_locality(order, grid, 128);
  EXPECT_EQ(locality.mean_block_bbox_cells, 128.0);
  EXPECT_EQ(locality.video_blocks, 4 * 16 * 24 / 128);
}

// Gather with the order, then gather with the scatter index (or scatter with the order, as
// the permute kernel's scatter direction does): the original sequence comes back.
TEST(TokenOrderTest, TheScatterIndexUndoesTheGather) {
  for (const auto& [grid, extra_tokens] : {std::pair{VideoGrid{21, 30, 52}, 0},
                                          std::pair{VideoGrid{13, 30, 45}, 226},
                                          std::pair{VideoGrid{9, 10, 11}, 9}})
    for (TokenOrder kind : kOrders) {
      const std::string what = describe(kind, grid, extra_tokens);
      const std::vector<int> order = runtime::token_order(kind, grid, extra_tokens);
      const std::vector<int> scatter = runtime::scatter_index(order);
      ASSERT_EQ(scatter.size(), order.size()) << what;
      std::vector<int> tokens(order.size());
      std::iota(tokens.begin(), tokens.end(), 0);
      std::vector<int> gathered(order.size()), back(order.size()), scattered(order.size());
      for (std::size_t i = 0; i < order.size(); ++i) gathered[i] = tokens[static_cast<std::size_t>(order[i])];
      for (std::size_t t = 0; t < order.size(); ++t) back[t] = gathered[static_cast<std::size_t>(scatter[t])];
      for (std::size_t i = 0; i < order.size(); ++i) scattered[static_cast<std::size_t>(order[i])] = gathered[i];
      EXPECT_EQ(back, tokens) << what;
      EXPECT_EQ(scattered, tokens) << what;
      if (kind != TokenOrder::raster) {
        EXPECT_NE(gathered, tokens) << what << " moves no token";
      }
    }
}

TEST(TokenOrderTest, TheScatterIndexRefusesWhatIsNotAPermutation) {
  const auto expect_refused = [](std::vector<int> order, const std::string& part) {
    try {
      runtime::scatter_index(order);
      ADD_FAILURE() << "no exception; expected one saying '" << part << "'";
    } catch (const std::invalid_argument& error) {
      EXPECT_NE(std::string(error.what()).find(part), std::string::npos) << error.what();
    }
  };
  expect_refused({0, 2}, "permutation[1] = 2 is outside 0..1");
  expect_refused({1, 1, 0}, "permutation[1] = 1 repeats");
  expect_refused({-1, 0}, "permutation[0] = -1");
}

// ----------------------------------------------------------------------------- Hilbert

// On power-of-two cubes the curve is the classic Hilbert curve: face neighbours only, and
// every aligned run of 8^k tokens (and of 128 = 2 x 64) fills a box of that volume.
TEST(TokenOrderTest, HilbertOnPowerOfTwoCubesStepsToNeighboursAndFillsBoxes) {
  for (int side : {1, 2, 4, 8, 16, 32}) {
    const VideoGrid grid{side, side, side};
    const std::vector<int> order = runtime::token_order(TokenOrder::hilbert, grid, 0);
    const OrderLocality locality = runtime::measure_locality(order, grid, 8);
    EXPECT_EQ(locality.non_neighbour_step_share, 0.0) << grid.to_string();
    for (int block : {8, 64, 128, 512}) {
      if (block > grid.cells()) continue;
      EXPECT_EQ(runtime::measure_locality(order, grid, block).mean_block_bbox_cells, block)
          << grid.to_string() << ", blocks of " << block;
    }
  }
}

// Measured bound for other grids: no step is between cells that are not face neighbours,
// on every grid up to 9x9x9 and on a sweep of larger ones (token_order.cpp says why).
TEST(TokenOrderTest, HilbertStepsOnlyBetweenFaceNeighboursOnEveryGrid) {
  std::vector<VideoGrid> grids;
  for (int frames = 1; frames <= 9; ++frames)
    for (int height = 1; height <= 9; ++height)
      for (int width = 1; width <= 9; ++width) grids.push_back({frames, height, width});
  for (int frames : {1, 2, 3, 5, 13, 21, 33})
    for (int height : {10, 17, 30, 45, 63})
      for (int width : {11, 16, 52, 80, 97}) grids.push_back({frames, height, width});
  for (const VideoGrid& grid : grids) {
    const OrderLocality locality =
        runtime::measure_locality(runtime::token_order(TokenOrder::hilbert, grid, 0), grid);
    EXPECT_EQ(locality.non_neighbour_step_share, 0.0) << grid.to_string();
  }
}

// ------------------------------------------------------------------- the model grids

// The figures at blocks of 128 tokens, measured with this code (README, "Token orders").
struct ModelGrid {
  std::string name;
  VideoGrid grid;
  int text_tokens;
  double raster_bbox, tile3d_bbox, hilbert_bbox;       // mean block bounding box, cells
  double raster_far_steps, tile3d_far_steps;           // non-neighbour step shares (Hilbert: 0)
};

void PrintTo(const ModelGrid& model, std::ostream* os) { *os << model.name; }

class ModelGridTest : public ::testing::TestWithParam<ModelGrid> {};

TEST_P(ModelGridTest, EveryOrderIsAPermutationWithTheTextLast) {
  const ModelGrid& model = GetParam();
  for (int extra_tokens : {0, model.text_tokens, 256})
    for (TokenOrder order : kOrders)
      expect_valid_order(runtime::token_order(order, model.grid, extra_tokens), model.grid,
                         extra_tokens, describe(order, model.grid, extra_tokens));
}

TEST_P(ModelGridTest, LocalityIsTheMeasuredOne) {
  const ModelGrid& model = GetParam();
  std::map<TokenOrder, OrderLocality> figures;
  for (TokenOrder order : kOrders) {
    figures[order] = runtime::measure_locality(
        runtime::token_order(order, model.grid, model.text_tokens), model.grid, 128);
    EXPECT_EQ(figures[order].video_blocks, (model.grid.cells() + 127) / 128);
    EXPECT_EQ(figures[order].steps, model.grid.cells() - 1);
  }
  const OrderLocality& raster = figures[TokenOrder::raster];
  const OrderLocality& tile3d = figures[TokenOrder::tile3d];
  const OrderLocality& hilbert = figures[TokenOrder::hilbert];
  EXPECT_NEAR(raster.mean_block_bbox_cells, model.raster_bbox, 0.01);
  EXPECT_NEAR(tile3d.mean_block_bbox_cells, model.tile3d_bbox, 0.01);
  EXPECT_NEAR(hilbert.mean_block_bbox_cells, model.hilbert_bbox, 0.01);
  EXPECT_NEAR(raster.non_neighbour_step_share, model.raster_far_steps, 1e-6);
  EXPECT_NEAR(tile3d.non_neighbour_step_share, model.tile3d_far_steps, 1e-6);
  EXPECT_EQ(hilbert.non_neighbour_step_share, 0.0);
  // The measured margins: Hilbert's boxes are 0.36-0.49x raster's; tile3d's are 0.35-1.11x
  // raster's and 0.93-2.43x Hilbert's (its tiles cut short at the edges of 30x52 and 30x45
  // frames make it no better than raster there).
  EXPECT_LT(hilbert.mean_block_bbox_cells, 0.50 * raster.mean_block_bbox_cells);
  EXPECT_LT(tile3d.mean_block_bbox_cells, 1.12 * raster.mean_block_bbox_cells);
  EXPECT_GT(tile3d.mean_block_bbox_cells, 0.93 * hilbert.mean_block_bbox_cells);
}

INSTANTIATE_TEST_SUITE_P(
    TokenOrder, ModelGridTest,
    ::testing::Values(
        ModelGrid{"Wan_480p_81_frames", {21, 30, 52}, 0, 394.2656, 378.2812, 155.9062, 0.019201, 0.134589},
        ModelGrid{"Wan_720p_81_frames", {21, 45, 80}, 0, 404.8731, 164.8731, 155.8765, 0.012487, 0.124988},
        ModelGrid{"HunyuanVideo_720p_129_frames", {33, 45, 80}, 256, 402.6006, 141.7610, 146.4241,
                  0.012492, 0.124993},
        ModelGrid{"CogVideoX_480p_49_frames", {13, 30, 45}, 226, 389.7754, 433.3261, 191.9493, 0.022167,
                  0.133284},
        ModelGrid{"720p_121_frames", {31, 45, 80}, 0, 408.5321, 165.9174, 177.9174, 0.012491, 0.124992}),
    [](const ::testing::TestParamInfo<ModelGrid>& info) { return info.param.name; });

// ------------------------------------------------------------------- locality, by hand

// 1x2x2 grid, order (0,0,0) (0,1,1) (0,0,1) (0,1,0), blocks of 2: both blocks span the
// whole 1x2x2 grid; steps: diagonal, neighbour, diagonal.
TEST(TokenOrderTest, LocalityOfAHandMadeOrder) {
  const std::vector<int> order = {0, 3, 1, 2, 4};  // and one extra token, left out
  const OrderLocality locality = runtime::measure_locality(order, {1, 2, 2}, 2);
  EXPECT_EQ(locality.block_tokens, 2);
  EXPECT_EQ(locality.video_blocks, 2);
  EXPECT_EQ(locality.mean_block_bbox_cells, 4.0);
  EXPECT_EQ(locality.steps, 3);
  EXPECT_DOUBLE_EQ(locality.non_neighbour_step_share, 2.0 / 3.0);
}

// The last block may be short: 1x1x5 in blocks of 2 has boxes of 2, 2 and 1 cells.
TEST(TokenOrderTest, LocalityCountsTheShortLastBlock) {
  const VideoGrid grid{1, 1, 5};
  const OrderLocality locality =
      runtime::measure_locality(runtime::token_order(TokenOrder::raster, grid, 0), grid, 2);
  EXPECT_EQ(locality.video_blocks, 3);
  EXPECT_DOUBLE_EQ(locality.mean_block_bbox_cells, 5.0 / 3.0);
  EXPECT_EQ(locality.non_neighbour_step_share, 0.0);
  const OrderLocality single = runtime::measure_locality(std::vector<int>{0}, {1, 1, 1}, 128);
  EXPECT_EQ(single.steps, 0);
  EXPECT_EQ(single.non_neighbour_step_share, 0.0);
  EXPECT_EQ(single.mean_block_bbox_cells, 1.0);
}

// ------------------------------------------------------------------------- bad input

void expect_invalid(const std::function<void()>& call, const std::vector<std::string>& parts) {
  try {
    call();
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& error) {
    for (const std::string& part : parts)
      EXPECT_NE(std::string(error.what()).find(part), std::string::npos)
          << "expected '" << part << "' in: " << error.what();
  }
}

TEST(TokenOrderTest, BadGridsTileAndExtraTokensAreRefused) {
  for (TokenOrder order : kOrders) {
    expect_invalid([&] { runtime::token_order(order, {0, 45, 80}, 0); }, {"0x45x80", "at least 1"});
    expect_invalid([&] { runtime::token_order(order, {21, -1, 80}, 0); }, {"21x-1x80", "at least 1"});
    expect_invalid([&] { runtime::token_order(order, {21, 45, 80}, -3); }, {"extra tokens", "-3"});
    // 2^31 tokens, and INT_MAX cells plus one: one more than int32 indexes (nothing allocated).
    expect_invalid([&] { runtime::token_order(order, {2048, 1024, 1024}, 0); },
                   {"2048x1024x1024", "int32", "2147483647"});
    expect_invalid([&] { runtime::token_order(order, {1, 1, INT_MAX}, 1); }, {"1 extra", "int32"});
    expect_invalid([&] { runtime::token_order(order, {INT_MAX, INT_MAX, INT_MAX}, 0); }, {"int32"});
  }
  expect_invalid([] { runtime::token_order(TokenOrder::tile3d, {4, 4, 4}, 0, {2, 0, 2}); },
                 {"tile 2x0x2", "at least 1"});
}

TEST(TokenOrderTest, BadLocalityArgumentsAreRefused) {
  const VideoGrid grid{2, 3, 4};
  const std::vector<int> order = runtime::token_order(TokenOrder::hilbert, grid, 2);
  expect_invalid([&] { runtime::measure_locality(order, grid, 0); }, {"block of 0 tokens"});
  expect_invalid([&] { runtime::measure_locality(std::span(order).first(23), grid); },
                 {"23 tokens", "2x3x4", "24 cells"});
  std::vector<int> text_inside = order;
  std::swap(text_inside[5], text_inside[24]);  // an extra token at video position 5
  expect_invalid([&] { runtime::measure_locality(text_inside, grid); }, {"order[5] = 24", "0..23"});
  expect_invalid([&] { runtime::measure_locality(order, {2, 0, 4}); }, {"2x0x4"});
}

TEST(TokenOrderTest, OrderNamesRoundTrip) {
  for (TokenOrder order : kOrders) EXPECT_EQ(runtime::parse_token_order(to_string(order)), order);
  EXPECT_EQ(runtime::parse_token_order("zigzag"), std::nullopt);
  EXPECT_EQ(runtime::parse_token_order("Hilbert"), std::nullopt);
}

}  // namespace
}  // namespace sparsejit::testing
