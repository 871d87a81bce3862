// sparsejit order: the token order of a latent video grid, how compact its blocks are next to
// raster order's, and optionally its gather indices in a file. Needs no GPU and no database.
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <limits>
#include <optional>
#include <utility>

#include "runtime/token_order.h"
#include "tools/cli_common.h"

namespace sparsejit::tools {
namespace {

struct OrderOptions {
  std::string grid;  // FxHxW
  int extra_tokens = 0;
  std::string order = "hilbert";
  std::string tile = "8x8x8";  // FxHxW, for tile3d
  int block_tokens = 128;
  bool json = false;
  std::string out;  // where to write the int32 gather indices; empty: nowhere
};


void write_int32_file(const std::string& path, const std::vector<int>& values) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (out)
    out.write(reinterpret_cast<const char*>(values.data()),
              static_cast<std::streamsize>(values.size() * sizeof(int)));
  if (!out) throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
}

int run_order(const OrderOptions& options) {
  // Both shapes passed shape_validator().
  const auto [frames, height, width] = *parse_shape(options.grid);
  const runtime::VideoGrid grid{frames, height, width};
  const auto [tile_frames, tile_height, tile_width] = *parse_shape(options.tile);
  const runtime::TileShape tile{tile_frames, tile_height, tile_width};
  const runtime::TokenOrder kind = *runtime::parse_token_order(options.order);
  const std::vector<int> order = runtime::token_order(kind, grid, options.extra_tokens, tile);
  if (!options.out.empty()) write_int32_file(options.out, order);

  // The chosen order first, then raster for comparison.
  std::vector<std::pair<runtime::TokenOrder, runtime::OrderLocality>> figures = {
      {kind, runtime::measure_locality(order, grid, options.block_tokens)}};
  if (kind != runtime::TokenOrder::raster)
    figures.push_back({runtime::TokenOrder::raster,
                       runtime::measure_locality(
                           runtime::token_order(runtime::TokenOrder::raster, grid, 0), grid,
                           options.block_tokens)});
  const runtime::OrderLocality& chosen = figures.front().second;

  if (options.json) {
    nlohmann::json report = {
        {"grid", {{"frames", grid.frames}, {"height", grid.height}, {"width", grid.width}}},
        {"video_tokens", grid.cells()},
        {"extra_tokens", options.extra_tokens},
        {"order", options.order},
        {"block_tokens", options.block_tokens},
        {"video_blocks", chosen.video_blocks},
        {"steps", chosen.steps}};
    if (kind == runtime::TokenOrder::tile3d)
      report["tile"] = {{"frames", tile.frames}, {"height", tile.height}, {"width", tile.width}};
    for (const auto& [figure_order, locality] : figures)
      report["locality"][std::string(runtime::to_string(figure_order))] = {
          {"mean_block_bbox_cells", locality.mean_block_bbox_cells},
          {"non_neighbour_step_share", locality.non_neighbour_step_share}};
    if (!options.out.empty()) report["out"] = options.out;
    std::cout << report.dump(2) << "\n";
    return kExitOk;
  }

  std::cout << "grid " << grid.to_string() << ": " << grid.cells() << " video tokens + "
            << options.extra_tokens << " extra; " << chosen.video_blocks << " blocks of "
            << options.block_tokens << " video tokens\n\n";
  Table table({"order", "mean block box (cells)", "non-neighbour steps"});
  for (const auto& [figure_order, locality] : figures) {
    std::string name(runtime::to_string(figure_order));
    if (figure_order == runtime::TokenOrder::tile3d) name += " " + options.tile;
    table.add({name, format_fixed(locality.mean_block_bbox_cells, 1),
               format_fixed(100 * locality.non_neighbour_step_share, 2) + "%"});
  }
  std::cout << table.render();
  if (!options.out.empty())
    std::cout << "\nwrote " << order.size() << " int32 gather indices to " << options.out << "\n";
  return kExitOk;
}

}  // namespace

void add_order_command(CLI::App& app, GlobalOptions& global) {
  auto options = std::make_shared<OrderOptions>();
  CLI::App* command = app.add_subcommand(
      "order",
      "Token order of a latent video grid (extra text tokens kept last): the mean bounding box\n"
      "of a block of consecutive tokens and the share of steps between cells that are not face\n"
      "neighbours, next to raster order's; optionally the int32 gather indices in a file\n"
      "(position i holds original token out[i]).");
  command->add_option("--grid", options->grid, "latent grid, frames x height x width (e.g. 21x45x80)")
      ->required()
      ->check(shape_validator());
  command->add_option("--extra", options->extra_tokens, "extra (text) tokens after the video tokens")
      ->check(CLI::Range(0, std::numeric_limits<int>::max()));
  command->add_option("--order", options->order, "hilbert, raster or tile3d (default hilbert)")
      ->check(CLI::IsMember({"hilbert", "raster", "tile3d"}));
  CLI::Option* tile = command->add_option("--tile", options->tile, "tile3d's tiles, FxHxW (default 8x8x8)")
                          ->check(shape_validator());
  command->add_option("--block", options->block_tokens, "tokens per block (default 128)")
      ->check(CLI::Range(1, std::numeric_limits<int>::max()));
  command->add_flag("--json", options->json, "print JSON");
  command->add_option("--out", options->out, "write the int32 gather indices to this file");
  command->callback([&global, options, tile] {
    if (tile->count() > 0 && options->order != "tile3d")
      throw CLI::ValidationError("--tile", "applies only to --order tile3d");
    global.exit_code = run_order(*options);
  });
}

}  // namespace sparsejit::tools
