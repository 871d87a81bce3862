#include "tools/bench_mask_quality.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <iostream>
#include <map>
#include <numeric>
#include <random>

#include "jit/device_memory.h"
#include "jit/driver_api.h"
#include "runtime/mask_builder.h"
#include "runtime/mask_quality.h"
#include "runtime/token_order.h"
#include "templates/common/half_precision.h"
#include "tools/npy_file.h"
#include "tools/synthetic_video.h"

namespace sparsejit::tools {
namespace {

using jit::copy_device_to_host_as;
using runtime::MaskQualityReport;
using templates::HalfDtype;

// One set of attention inputs on the host: [tokens, heads, head_dim] 16-bit (B = 1).
struct HostInputs {
  std::string source;  // "mostly local", or the Q file's name
  std::string grid;    // "21x45x80", or "" for a dump measured in its own order
  std::string order;   // "raster", "hilbert", or "as given"
  int heads = 0, tokens = 0;
  std::vector<std::uint16_t> q, k, v;
  std::vector<double> locality;  // per head; empty for a dump
};

struct DensityResult {
  double density = 0;
  int top_k = 0;
  std::vector<double> oracle_recall;  // per head
  MaskQualityReport block;
  int fine_top_k = 0;
  double fine_subtile_share = 0;  // fine bits' kept sub-tiles over block-only's
  MaskQualityReport fine;
};

struct InputResult {
  const HostInputs* inputs = nullptr;
  int kv_blocks = 0;
  std::vector<double> oracle_density_95;  // per head
  std::vector<DensityResult> densities;
};

double mean(const std::vector<double>& values) {
  return values.empty() ? 0.0 : std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
}

// The sub-tiles a built mask keeps: every kept pair's popcount with fine bits, else the
// pairs times the sub-tiles of a block.
long long kept_subtiles(const runtime::DeviceBlockMask& mask, int subtiles_per_block) {
  const std::vector<int> count = copy_device_to_host_as<int>(mask.kv_block_count, mask.layout.count_elements());
  if (mask.fine_bits == nullptr)
    return std::accumulate(count.begin(), count.end(), 0LL) * subtiles_per_block;
  const std::vector<std::uint64_t> bits =
      copy_device_to_host_as<std::uint64_t>(mask.fine_bits, mask.layout.index_elements());
  long long kept = 0;
  for (std::size_t row = 0; row < count.size(); ++row)
    for (int i = 0; i < count[row]; ++i)
      kept += std::popcount(bits[row * static_cast<std::size_t>(mask.layout.max_kv_blocks) + static_cast<std::size_t>(i)]);
  return kept;
}

InputResult measure_input(runtime::Runtime& runtime, runtime::MaskBuilder& builder, jit::Stream& stream,
                          const HostInputs& in, const MaskQualityOptions& o, HalfDtype dtype) {
  const jit::DeviceBuffer q = jit::DeviceBuffer::from_host(in.q), k = jit::DeviceBuffer::from_host(in.k),
                          v = jit::DeviceBuffer::from_host(in.v);
  runtime::AttentionInputs inputs;
  runtime::QueryKeyInputs& qk = inputs.qk;
  qk.q = q.pointer();
  qk.k = k.pointer();
  inputs.v = v.pointer();
  // [B, N, H, D] storage.
  qk.q_batch_stride = qk.k_batch_stride = inputs.v_batch_stride = static_cast<long long>(in.tokens) * in.heads * o.head_dim;
  qk.q_head_stride = qk.k_head_stride = inputs.v_head_stride = o.head_dim;
  qk.q_token_stride = qk.k_token_stride = inputs.v_token_stride = static_cast<long long>(in.heads) * o.head_dim;
  qk.batch = 1;
  qk.heads = in.heads;
  qk.tokens_q = qk.tokens_kv = in.tokens;
  qk.head_dim = o.head_dim;
  qk.dtype = dtype;
  qk.softmax_scale = 1.0f / std::sqrt(static_cast<float>(o.head_dim));

  runtime::MaskQuality quality(runtime, inputs, o.block, o.block, stream.handle());
  InputResult result;
  result.inputs = &in;
  result.kv_blocks = quality.kv_blocks();
  const auto curves = runtime::oracle_recall_curves(quality.block_masses(), in.heads, quality.q_blocks(),
                                                    quality.kv_blocks(), in.tokens);
  for (const auto& curve : curves) result.oracle_density_95.push_back(runtime::density_for_recall(curve, 0.95));

  const int subtiles_per_block = o.fine_n > 0 ? (o.block / 16) * (o.block / o.fine_n) : 1;
  const auto build = [&](double density, int fine_n) {
    const runtime::MaskBuildOptions options{.block_q = o.block, .block_kv = o.block, .tile = o.tile,
                                            .density = density, .fine_n = fine_n, .fine_share = o.fine_share,
                                            .keep_first_block = !o.first_block_by_score};
    const runtime::DeviceBlockMask mask = builder.build(qk, options, stream.handle());
    stream.synchronize();  // the downloads below are synchronous copies, outside the stream
    return mask;
  };
  for (double density : o.densities) {
    DensityResult row;
    row.density = density;
    const runtime::DeviceBlockMask block_mask = build(density, 0);
    row.top_k = block_mask.layout.top_k;
    for (const auto& curve : curves) row.oracle_recall.push_back(curve[static_cast<std::size_t>(row.top_k)]);
    const long long budget = kept_subtiles(block_mask, subtiles_per_block);
    row.block = quality.measure(block_mask, 0);
    if (o.fine_n > 0) {
      // The most key blocks whose fine sub-tiles fit block-only's: kept sub-tiles only grow
      // with k (the kept set and each pair's bits are nested), so a bisection finds it.
      const auto subtiles_at = [&](int top_k) {
        return kept_subtiles(build(static_cast<double>(top_k) / result.kv_blocks, o.fine_n), subtiles_per_block);
      };
      int fitting = row.top_k, too_many = result.kv_blocks + 1;
      while (too_many - fitting > 1) {
        const int middle = (fitting + too_many) / 2;
        (subtiles_at(middle) <= budget ? fitting : too_many) = middle;
      }
      row.fine_top_k = fitting;
      const runtime::DeviceBlockMask fine_mask = build(static_cast<double>(fitting) / result.kv_blocks, o.fine_n);
      row.fine_subtile_share = static_cast<double>(kept_subtiles(fine_mask, subtiles_per_block)) / budget;
      row.fine = quality.measure(fine_mask, o.fine_n);
    }
    result.densities.push_back(std::move(row));
  }
  return result;
}

// The synthetic inputs of one grid: every mix in raster and Hilbert order.
std::vector<HostInputs> synthetic_inputs(const MaskQualityOptions& o, const std::string& grid_text, HalfDtype dtype) {
  const auto [frames, height, width] = *parse_shape(grid_text);
  const runtime::VideoGrid grid{frames, height, width};
  const SyntheticVideo video(grid, o.seed);
  const std::size_t row = static_cast<std::size_t>(o.heads) * o.head_dim;  // one token's V
  std::vector<std::uint16_t> random_v;  // --synthetic-v random: [cells, heads, head_dim], raster order
  if (o.synthetic_v == "random") {
    std::mt19937_64 generator(o.seed);
    random_v = templates::random_half(static_cast<std::size_t>(grid.cells()) * row, dtype, generator);
  }
  std::vector<HostInputs> all;
  for (const std::string& mix_name : o.mixes) {
    const HeadMix mix = mix_name == "diffuse" ? HeadMix::diffuse : mix_name == "local" ? HeadMix::local : HeadMix::mixed;
    for (runtime::TokenOrder order : {runtime::TokenOrder::raster, runtime::TokenOrder::hilbert}) {
      const std::vector<int> cells = runtime::token_order(order, grid, 0);
      SyntheticAttention attention = video.attention(mix, o.heads, o.head_dim, cells, dtype);
      if (!random_v.empty())  // token i is cell cells[i]: its V follows it
        for (std::size_t i = 0; i < cells.size(); ++i)
          std::copy_n(random_v.begin() + static_cast<std::ptrdiff_t>(cells[i] * row), row,
                      attention.v.begin() + static_cast<std::ptrdiff_t>(i * row));
      all.push_back({std::string(to_string(mix)) + (random_v.empty() ? "" : ", random V"), grid.to_string(),
                     std::string(runtime::to_string(order)), o.heads, static_cast<int>(grid.cells()),
                     std::move(attention.q), std::move(attention.k), std::move(attention.v),
                     std::move(attention.locality)});
    }
  }
  return all;
}

// A dump's tensor as [tokens, heads, head_dim] 16-bit, checked against the head dim.
std::vector<std::uint16_t> dump_tensor(const std::string& path, const std::string& layout, int head_dim, HalfDtype dtype,
                                       int& heads, int& tokens) {
  const NpyArray array = read_npy(path);
  if (array.shape.size() != 3 || array.shape[2] != static_cast<std::size_t>(head_dim))
    throw std::runtime_error(path + ": expected [N, H, " + std::to_string(head_dim) + "] or [H, N, " +
                             std::to_string(head_dim) + "] (--head-dim), got " + std::to_string(array.shape.size()) +
                             " dims");
  const bool hnd = layout == "hnd" || (layout == "auto" && array.shape[0] < array.shape[1]);
  heads = static_cast<int>(hnd ? array.shape[0] : array.shape[1]);
  tokens = static_cast<int>(hnd ? array.shape[1] : array.shape[0]);
  std::vector<std::uint16_t> values = array.to_half(dtype);
  if (!hnd) return values;
  std::vector<std::uint16_t> nhd(values.size());
  const auto D = static_cast<std::size_t>(head_dim);
  for (std::size_t h = 0; h < static_cast<std::size_t>(heads); ++h)
    for (std::size_t n = 0; n < static_cast<std::size_t>(tokens); ++n)
      std::copy_n(&values[(h * tokens + n) * D], D, &nhd[(n * heads + h) * D]);
  return nhd;
}

// A user's dump: in its own order, or with grids in raster and Hilbert order of each grid.
std::vector<HostInputs> dump_inputs(const MaskQualityOptions& o, HalfDtype dtype) {
  HostInputs base;
  base.source = std::filesystem::path(o.q_file).filename().string();
  base.q = dump_tensor(o.q_file, o.layout, o.head_dim, dtype, base.heads, base.tokens);
  int heads = 0, tokens = 0;
  base.k = dump_tensor(o.k_file, o.layout, o.head_dim, dtype, heads, tokens);
  if (heads != base.heads || tokens != base.tokens)
    throw std::runtime_error(o.k_file + ": K has " + std::to_string(heads) + " heads x " + std::to_string(tokens) +
                             " tokens, Q " + std::to_string(base.heads) + " x " + std::to_string(base.tokens));
  if (!o.v_file.empty()) {
    base.v = dump_tensor(o.v_file, o.layout, o.head_dim, dtype, heads, tokens);
    if (heads != base.heads || tokens != base.tokens)
      throw std::runtime_error(o.v_file + ": V's heads and tokens differ from Q's");
  } else {
    std::mt19937_64 generator(o.seed);
    base.v = templates::random_half(base.q.size(), dtype, generator);
  }
  if (o.grids.empty()) {
    base.order = "as given";
    return {std::move(base)};
  }
  std::vector<HostInputs> all;
  const std::size_t row = static_cast<std::size_t>(base.heads) * o.head_dim;
  for (const std::string& grid_text : o.grids) {
    const auto [frames, height, width] = *parse_shape(grid_text);
    const runtime::VideoGrid grid{frames, height, width};
    if (grid.cells() > base.tokens)
      throw std::runtime_error("the grid " + grid_text + " has " + std::to_string(grid.cells()) +
                               " cells, more than the dump's " + std::to_string(base.tokens) + " tokens");
    for (runtime::TokenOrder kind : {runtime::TokenOrder::raster, runtime::TokenOrder::hilbert}) {
      const std::vector<int> order =
          runtime::token_order(kind, grid, base.tokens - static_cast<int>(grid.cells()));
      HostInputs ordered{base.source, grid.to_string(), std::string(runtime::to_string(kind)), base.heads, base.tokens,
                         {}, {}, {}, {}};
      for (auto [from, to] : {std::pair{&base.q, &ordered.q}, std::pair{&base.k, &ordered.k}, std::pair{&base.v, &ordered.v}}) {
        to->resize(from->size());
        for (std::size_t i = 0; i < order.size(); ++i)
          std::copy_n(from->begin() + static_cast<long>(order[i] * row), row, to->begin() + static_cast<long>(i * row));
      }
      all.push_back(std::move(ordered));
    }
  }
  return all;
}

nlohmann::json report_json(const MaskQualityReport& report) {
  std::vector<double> errors;
  for (std::size_t h = 0; h < report.recall.size(); ++h) errors.push_back(report.slice_relative_error(h));
  return {{"recall", report.mean_recall()}, {"relative_error", report.relative_error()},
          {"head_recall", report.recall}, {"head_relative_error", errors}};
}

}  // namespace

int run_mask_quality(const GlobalOptions& global, const MaskQualityOptions& o) {
  std::string why;
  if (!jit::driver_available(&why)) {
    std::fprintf(stderr, "sparsejit: %s; bench needs a GPU\n", why.c_str());
    return kExitNoGpu;
  }
  const HalfDtype dtype = o.dtype == "fp16" ? HalfDtype::fp16 : HalfDtype::bf16;
  runtime::Runtime runtime(runtime_options(global, !o.no_database));
  runtime.context().make_current();
  runtime::MaskBuilder builder(runtime);
  jit::Stream stream;

  // Inputs are made per grid (the larger grid's take 0.7 GB on the host) and measured in turn.
  std::vector<std::vector<HostInputs>> groups;
  std::vector<InputResult> results;
  const auto measure_group = [&](std::vector<HostInputs> group) {
    groups.push_back(std::move(group));
    for (HostInputs& in : groups.back()) {
      results.push_back(measure_input(runtime, builder, stream, in, o, dtype));
      std::fprintf(stderr, "measured %s %s %s\n", in.grid.c_str(), in.source.c_str(), in.order.c_str());
      std::vector<std::uint16_t>().swap(in.q);  // the tensors are on the device no more
      std::vector<std::uint16_t>().swap(in.k);
      std::vector<std::uint16_t>().swap(in.v);
    }
  };
  if (!o.q_file.empty()) {
    measure_group(dump_inputs(o, dtype));
  } else {
    for (const std::string& grid : o.grids) measure_group(synthetic_inputs(o, grid, dtype));
  }

  // The targets.
  struct GridTargets {
    double worst_oracle_share = 1.0;  // hierarchical / oracle recall, the lowest
    std::string worst_where;
    std::map<std::string, std::vector<double>> error_at_01;  // order -> error per source at density 0.1
    int fine_better = 0, fine_compared = 0;
  };
  std::map<std::string, GridTargets> targets;
  for (const InputResult& r : results) {
    GridTargets& t = targets[r.inputs->grid];
    for (const DensityResult& d : r.densities) {
      const double share = d.block.mean_recall() / mean(d.oracle_recall);
      if (share < t.worst_oracle_share) {
        t.worst_oracle_share = share;
        t.worst_where = r.inputs->source + ", " + r.inputs->order + ", density " + format_fixed(d.density, 2);
      }
      if (std::abs(d.density - 0.1) < 1e-9) t.error_at_01[r.inputs->order].push_back(d.block.relative_error());
      if (o.fine_n > 0) {
        ++t.fine_compared;
        t.fine_better += d.fine.mean_recall() > d.block.mean_recall();
      }
    }
  }
  const auto hilbert_over_raster = [](const GridTargets& t) {
    const auto raster = t.error_at_01.find("raster"), hilbert = t.error_at_01.find("hilbert");
    if (raster == t.error_at_01.end() || hilbert == t.error_at_01.end()) return std::nan("");
    return mean(hilbert->second) / mean(raster->second);
  };

  nlohmann::json report = {{"gpu", runtime.device().name},
                           {"dtype", o.dtype},
                           {"head_dim", o.head_dim},
                           {"tile", o.tile},
                           {"block", o.block},
                           {"fine_n", o.fine_n},
                           {"fine_share", o.fine_share},
                           {"first_block_by_score", o.first_block_by_score},
                           {"seed", o.seed},
                           {"inputs", nlohmann::json::array()},
                           {"targets", nlohmann::json::array()}};
  for (const InputResult& r : results) {
    nlohmann::json densities = nlohmann::json::array();
    for (const DensityResult& d : r.densities) {
      nlohmann::json entry = {{"density", d.density},
                              {"top_k", d.top_k},
                              {"oracle_recall", mean(d.oracle_recall)},
                              {"oracle_head_recall", d.oracle_recall},
                              {"hierarchical", report_json(d.block)}};
      if (o.fine_n > 0) {
        entry["fine"] = report_json(d.fine);
        entry["fine"]["top_k"] = d.fine_top_k;
        entry["fine"]["subtile_share"] = d.fine_subtile_share;
      }
      densities.push_back(entry);
    }
    report["inputs"].push_back({{"grid", r.inputs->grid},
                                {"source", r.inputs->source},
                                {"order", r.inputs->order},
                                {"heads", r.inputs->heads},
                                {"tokens", r.inputs->tokens},
                                {"kv_blocks", r.kv_blocks},
                                {"head_locality", r.inputs->locality},
                                {"oracle_density_for_95", r.oracle_density_95},
                                {"densities", densities}});
  }
  for (const auto& [grid, t] : targets) {
    report["targets"].push_back({{"grid", grid},
                                 {"worst_hierarchical_over_oracle", t.worst_oracle_share},
                                 {"worst_at", t.worst_where},
                                 {"hierarchical_over_oracle_met", t.worst_oracle_share >= 0.97},
                                 {"hilbert_over_raster_error_at_0.1", hilbert_over_raster(t)},
                                 {"hilbert_error_met", hilbert_over_raster(t) <= 0.85},
                                 {"fine_better", t.fine_better},
                                 {"fine_compared", t.fine_compared}});
  }
  if (o.json) {
    std::cout << report.dump() << "\n";
    return kExitOk;
  }

  std::cout << runtime.device().name << ", " << o.dtype << " D=" << o.head_dim << ", tiles of " << o.tile
            << ", blocks " << o.block;
  if (o.fine_n > 0) std::cout << ", fine bits 16x" << o.fine_n << " keeping " << format_fixed(o.fine_share, 2) << " of a pair's mass";
  std::cout << (o.first_block_by_score ? ", first block kept only for its score" : ", first block always kept");
  std::cout << "; recall: mean kept share of each query's exact softmax mass; error: ||O - O_dense|| / ||O_dense||\n";
  Table table({"grid", "input", "order", "density", "k", "oracle", "hier.", "hier./oracle", "error", "fine k",
               "fine sub-tiles", "fine recall", "fine error"});
  for (const InputResult& r : results)
    for (const DensityResult& d : r.densities) {
      const double oracle = mean(d.oracle_recall);
      table.add({r.inputs->grid, r.inputs->source, r.inputs->order, format_fixed(d.density, 2),
                 std::to_string(d.top_k) + "/" + std::to_string(r.kv_blocks), format_fixed(oracle, 4),
                 format_fixed(d.block.mean_recall(), 4), format_fixed(d.block.mean_recall() / oracle, 3),
                 format_fixed(d.block.relative_error(), 4), o.fine_n > 0 ? std::to_string(d.fine_top_k) : "-",
                 o.fine_n > 0 ? format_fixed(d.fine_subtile_share, 3) : "-",
                 o.fine_n > 0 ? format_fixed(d.fine.mean_recall(), 4) : "-",
                 o.fine_n > 0 ? format_fixed(d.fine.relative_error(), 4) : "-"});
    }
  std::cout << table.render() << "\n";

  std::cout << "Per head: locality (synthetic), the density the oracle needs for 95% recall, and the\n"
               "hierarchical recall at each density\n";
  std::vector<std::string> header = {"grid", "input", "order", "head", "locality", "oracle density 95%"};
  for (double density : o.densities) header.push_back("hier. " + format_fixed(density, 2));
  Table heads(header);
  for (const InputResult& r : results)
    for (int h = 0; h < r.inputs->heads; ++h) {
      std::vector<std::string> row = {r.inputs->grid, r.inputs->source, r.inputs->order, std::to_string(h),
                                      r.inputs->locality.empty() ? "-" : format_fixed(r.inputs->locality[h], 3),
                                      format_fixed(r.oracle_density_95[h], 3)};
      for (const DensityResult& d : r.densities) row.push_back(format_fixed(d.block.recall[h], 4));
      heads.add(row);
    }
  std::cout << heads.render() << "\n";

  std::cout << "Targets (issue 4)\n";
  Table summary({"grid", "hier./oracle, lowest (>= 0.97)", "where", "Hilbert/raster error at 0.1 (<= 0.85)",
                 "fine > block-only"});
  for (const auto& [grid, t] : targets) {
    const double ratio = hilbert_over_raster(t);
    summary.add({grid, format_fixed(t.worst_oracle_share, 3) + (t.worst_oracle_share >= 0.97 ? " met" : " NOT met"),
                 t.worst_where,
                 std::isnan(ratio) ? "-" : format_fixed(ratio, 3) + (ratio <= 0.85 ? " met" : " NOT met"),
                 o.fine_n > 0 ? std::to_string(t.fine_better) + " of " + std::to_string(t.fine_compared) +
                                    (t.fine_better == t.fine_compared ? " met" : " NOT met")
                              : "-"});
  }
  std::cout << summary.render();
  return kExitOk;
}

}  // namespace sparsejit::tools
