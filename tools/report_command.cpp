// sparsejit report: an SVG picture of sparse attention's speed (effective TFLOP/s) against
// density, one panel per head dim, from a GPU's tuned best configs in the database, from
// `sparsejit bench attention --json` outputs, and with the peers of
// `tools/compare_peers.py attention --json-out` (cuDNN dense, FlexAttention) overlaid.
//
// Effective TFLOP/s count whole kept blocks: 4 N^2 D H (kept blocks / key blocks) / time,
// as bench attention and compare_peers.py do, so the three sources compare directly.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>

#include "templates/sparse_attention/attention_tuning.h"
#include "templates/sparse_attention/block_mask.h"
#include "tools/cli_common.h"

namespace sparsejit::tools {
namespace {

struct ReportOptions {
  std::string gpu;
  int block = 128;
  int fine_n = 0;
  std::string peers;
  std::vector<std::string> bench;
  std::string out = "sparsejit-report.svg";
};

// Where a series comes from: its marker and line style.
enum class Source { tuned, bench, peer_sparsejit, flex, dense };

struct Point {
  double density;  // kept share of key blocks
  double tflops;   // effective
};

struct Series {
  Source source;
  int tokens;  // the sequence length: the series' colour
  std::string label;
  std::vector<Point> points;  // sorted by density; a dense series has one (its TFLOP/s)
};

// One panel per head dim; series keyed by label (points of one label join one line).
using Chart = std::map<int, std::map<std::string, Series>>;

std::string with_thousands(long long value) {
  std::string digits = std::to_string(value), result;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) result += ',';
    result += digits[i];
  }
  return result;
}

void add_point(Chart& chart, int head_dim, Source source, int tokens, const std::string& label, Point point) {
  auto [entry, inserted] = chart[head_dim].try_emplace(label, Series{source, tokens, label, {}});
  entry->second.points.push_back(point);
}

// This GPU's best sparse_attention configs for blocks of `block` and fine_n, timed on the
// tuner's representative shape of each problem.
std::string add_tuned(Chart& chart, const ReportOptions& options, const db::Database& database) {
  std::map<std::int64_t, std::string> tuned_gpus;  // id -> name, GPUs with sparse_attention results
  const std::vector<db::StoredGpu> gpus = database.list_gpus();
  const std::vector<db::BestConfig> best = database.list_best_configs();
  for (const db::BestConfig& config : best)
    if (config.family == "sparse_attention")
      for (const db::StoredGpu& gpu : gpus)
        if (gpu.id == config.gpu_id) tuned_gpus[gpu.id] = gpu.gpu.name;
  std::optional<std::int64_t> gpu = selected_gpu(database, options.gpu);
  if (!gpu) {
    if (tuned_gpus.empty()) return "";
    if (tuned_gpus.size() > 1) {
      std::string ids;
      for (const auto& [id, name] : tuned_gpus) ids += " " + std::to_string(id) + " (" + name + ")";
      throw std::runtime_error("the database holds sparse_attention results of " + std::to_string(tuned_gpus.size()) +
                               " GPUs: choose one with --gpu:" + ids);
    }
    gpu = tuned_gpus.begin()->first;
  }
  for (const db::BestConfig& config : best) {
    if (config.gpu_id != *gpu || config.family != "sparse_attention") continue;
    const std::optional<templates::AttentionProblemKey> key = templates::AttentionProblemKey::parse(config.problem_key);
    if (!key || key->kind.block_q != options.block || key->kind.block_kv != options.block ||
        key->kind.fine_n != options.fine_n || config.median_ms <= 0)
      continue;
    const int tokens = templates::kAttentionTokenBuckets[key->buckets.tokens].representative;
    const int heads = templates::kAttentionBatchHeadsBuckets[key->buckets.batch_heads].representative;
    const int kv_blocks = (tokens + options.block - 1) / options.block;
    const double kept = static_cast<double>(templates::kept_blocks_per_row(
                            templates::kAttentionDensityBuckets[key->buckets.density], kv_blocks)) /
                        kv_blocks;
    const double flops = 4.0 * tokens * static_cast<double>(tokens) * key->kind.head_dim * heads * kept;
    const std::string dtype = key->kind.dtype == templates::HalfDtype::bf16 ? "" : " " + std::string(to_string(key->kind.dtype));
    add_point(chart, key->kind.head_dim, Source::tuned, tokens,
              "sparsejit tuned" + dtype + ", N=" + with_thousands(tokens) + " H=" + std::to_string(heads),
              {kept, flops / (config.median_ms * 1e9)});
  }
  return tuned_gpus.count(*gpu) ? tuned_gpus[*gpu] : "";
}

nlohmann::json read_json(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + what + " " + path);
  const nlohmann::json parsed = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) throw std::runtime_error(what + " " + path + " is not JSON");
  return parsed;
}

// A number field of a JSON object; none when missing or null.
std::optional<double> number(const nlohmann::json& object, const char* field) {
  const auto found = object.find(field);
  if (found == object.end() || !found->is_number()) return std::nullopt;
  return found->get<double>();
}

// Rows of compare_peers.py attention --json-out: {"meta": {...}, "rows": [{heads, tokens,
// head_dim, block, kept_fraction, dense_tflops, flex_tflops, sparsejit_tflops, ...}]}.
std::string add_peers(Chart& chart, const ReportOptions& options) {
  const nlohmann::json peers = read_json(options.peers, "peers file");
  if (!peers.is_object() || !peers.contains("rows") || !peers["rows"].is_array())
    throw std::runtime_error("peers file " + options.peers +
                             " has no \"rows\" array: expected the output of compare_peers.py attention --json-out");
  for (const nlohmann::json& row : peers["rows"]) {
    const std::optional<double> heads = number(row, "heads"), tokens = number(row, "tokens"),
                                head_dim = number(row, "head_dim"), block = number(row, "block"),
                                kept = number(row, "kept_fraction");
    if (!heads || !tokens || !head_dim || !kept || block.value_or(options.block) != options.block) continue;
    const int n = static_cast<int>(*tokens), d = static_cast<int>(*head_dim);
    const std::string shape = "N=" + with_thousands(n) + " H=" + std::to_string(static_cast<int>(*heads));
    if (const std::optional<double> flex = number(row, "flex_tflops"))
      add_point(chart, d, Source::flex, n, "FlexAttention, " + shape, {*kept, *flex});
    if (const std::optional<double> ours = number(row, "sparsejit_tflops"))
      add_point(chart, d, Source::peer_sparsejit, n, "sparsejit (peers run), " + shape, {*kept, *ours});
    if (const std::optional<double> dense = number(row, "dense_tflops")) {
      Series& series = chart[d].try_emplace("cuDNN dense, " + shape, Series{Source::dense, n, "cuDNN dense, " + shape, {}})
                           .first->second;
      if (series.points.empty()) series.points.push_back({1.0, *dense});
    }
  }
  return peers.contains("meta") && peers["meta"].contains("device") ? peers["meta"]["device"].get<std::string>() : "";
}

// Outputs of `sparsejit bench attention --json`: one object per file.
void add_bench(Chart& chart, const ReportOptions& options) {
  for (const std::string& path : options.bench) {
    const nlohmann::json report = read_json(path, "bench file");
    const std::optional<double> tokens = number(report, "tokens"), heads = number(report, "heads"),
                                head_dim = number(report, "head_dim"), density = number(report, "density"),
                                tflops = number(report, "effective_tflops");
    if (!tokens || !heads || !head_dim || !density || !tflops)
      throw std::runtime_error("bench file " + path +
                               " lacks tokens, heads, head_dim, density or effective_tflops: expected the output of "
                               "sparsejit bench attention --json");
    if (number(report, "block").value_or(options.block) != options.block ||
        number(report, "fine_n").value_or(0) != options.fine_n)
      continue;
    const int n = static_cast<int>(*tokens);
    add_point(chart, static_cast<int>(*head_dim), Source::bench, n,
              "sparsejit bench, N=" + with_thousands(n) + " H=" + std::to_string(static_cast<int>(*heads)),
              {*density, *tflops});
  }
}

std::string xml_escape(const std::string& text) {
  std::string escaped;
  for (char c : text) {
    switch (c) {
      case '&': escaped += "&amp;"; break;
      case '<': escaped += "&lt;"; break;
      case '>': escaped += "&gt;"; break;
      case '"': escaped += "&quot;"; break;
      default: escaped += c;
    }
  }
  return escaped;
}

std::string fixed(double value, int decimals) { return format_fixed(value, decimals); }

// The smallest 1, 2 or 5 times a power of ten at or above `value` / 5: a tick step.
double tick_step(double value) {
  const double raw = value / 5, power = std::pow(10.0, std::floor(std::log10(raw)));
  for (double factor : {1.0, 2.0, 5.0, 10.0})
    if (factor * power >= raw) return factor * power;
  return 10 * power;
}

// Panels side by side: PlotWidth x PlotHeight of plot area each, the legend below.
constexpr double kPlotWidth = 440, kPlotHeight = 300, kLeft = 64, kRight = 24, kTop = 56, kBottom = 48;
constexpr double kPanelWidth = kLeft + kPlotWidth + kRight, kLegendLine = 16;
// Densities on a log axis from 0.04 to 1.1.
constexpr double kMinDensity = 0.04, kMaxDensity = 1.1;
constexpr double kDensityTicks[] = {0.05, 0.1, 0.2, 0.3, 0.5, 1.0};

const char* colour(std::size_t index) {
  static const char* const palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"};
  return palette[index % std::size(palette)];
}

std::string marker(Source source, double x, double y, const std::string& fill) {
  std::ostringstream svg;
  switch (source) {
    case Source::tuned:
      svg << "<circle class=\"point\" cx=\"" << fixed(x, 1) << "\" cy=\"" << fixed(y, 1) << "\" r=\"3.5\" fill=\"" << fill << "\"/>";
      break;
    case Source::bench:
      svg << "<rect class=\"point\" x=\"" << fixed(x - 3.5, 1) << "\" y=\"" << fixed(y - 3.5, 1)
          << "\" width=\"7\" height=\"7\" fill=\"" << fill << "\"/>";
      break;
    case Source::peer_sparsejit:
      svg << "<path class=\"point\" d=\"M" << fixed(x, 1) << "," << fixed(y - 4.5, 1) << " l4.5,4.5 l-4.5,4.5 l-4.5,-4.5 z\" fill=\"white\" stroke=\""
          << fill << "\"/>";
      break;
    case Source::flex:
      svg << "<path class=\"point\" d=\"M" << fixed(x, 1) << "," << fixed(y - 4.5, 1) << " l4.5,8 l-9,0 z\" fill=\"white\" stroke=\"" << fill
          << "\"/>";
      break;
    case Source::dense: break;  // a line across the panel, no marker
  }
  return svg.str();
}

const char* dash(Source source) {
  switch (source) {
    case Source::tuned:
    case Source::bench: return "";
    case Source::peer_sparsejit: return " stroke-dasharray=\"2 3\"";
    case Source::flex: return " stroke-dasharray=\"6 3\"";
    case Source::dense: return " stroke-dasharray=\"10 4\"";
  }
  return "";
}

std::string render_svg(const Chart& chart, const std::string& title) {
  std::size_t most_series = 0;
  for (const auto& [head_dim, series] : chart) most_series = std::max(most_series, series.size());
  const double width = kPanelWidth * static_cast<double>(chart.size());
  const double height = kTop + kPlotHeight + kBottom + kLegendLine * static_cast<double>(most_series) + 12;
  // Colours by sequence length, the same in every panel.
  std::map<int, std::size_t> colour_of_tokens;
  for (const auto& [head_dim, series] : chart)
    for (const auto& [label, s] : series) colour_of_tokens.try_emplace(s.tokens, 0);
  std::size_t next = 0;
  for (auto& [tokens, index] : colour_of_tokens) index = next++;

  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << fixed(width, 0) << "\" height=\"" << fixed(height, 0)
      << "\" viewBox=\"0 0 " << fixed(width, 0) << " " << fixed(height, 0)
      << "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  svg << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  svg << "<text class=\"title\" x=\"12\" y=\"20\" font-size=\"14\">" << xml_escape(title) << "</text>\n";
  double panel_x = 0;
  for (const auto& [head_dim, series] : chart) {
    double top = 0;
    for (const auto& [label, s] : series)
      for (const Point& p : s.points) top = std::max(top, p.tflops);
    const double step = tick_step(top > 0 ? top : 1);
    const double y_max = std::ceil(top / step) * step + (std::fmod(top, step) == 0 ? step : 0);
    const double x0 = panel_x + kLeft, y0 = kTop + kPlotHeight;
    const auto x_of = [&](double density) {
      const double clamped = std::clamp(density, kMinDensity, kMaxDensity);
      return x0 + kPlotWidth * std::log(clamped / kMinDensity) / std::log(kMaxDensity / kMinDensity);
    };
    const auto y_of = [&](double tflops) { return y0 - kPlotHeight * tflops / y_max; };

    svg << "<g class=\"panel\" data-head-dim=\"" << head_dim << "\">\n";
    svg << "<text class=\"panel-title\" x=\"" << fixed(x0, 1) << "\" y=\"" << fixed(kTop - 10, 1)
        << "\" font-size=\"13\">head dim " << head_dim << "</text>\n";
    svg << "<g class=\"axis x\">\n<line x1=\"" << fixed(x0, 1) << "\" y1=\"" << fixed(y0, 1) << "\" x2=\""
        << fixed(x0 + kPlotWidth, 1) << "\" y2=\"" << fixed(y0, 1) << "\" stroke=\"black\"/>\n";
    for (double tick : kDensityTicks)
      svg << "<line x1=\"" << fixed(x_of(tick), 1) << "\" y1=\"" << fixed(y0, 1) << "\" x2=\"" << fixed(x_of(tick), 1)
          << "\" y2=\"" << fixed(y0 + 4, 1) << "\" stroke=\"black\"/><text class=\"tick\" x=\"" << fixed(x_of(tick), 1)
          << "\" y=\"" << fixed(y0 + 16, 1) << "\" text-anchor=\"middle\">" << format_fixed(tick, tick < 0.1 ? 2 : 1)
          << "</text>\n";
    svg << "<text class=\"label\" x=\"" << fixed(x0 + kPlotWidth / 2, 1) << "\" y=\"" << fixed(y0 + 34, 1)
        << "\" text-anchor=\"middle\">density (kept share of key blocks, log scale)</text>\n</g>\n";
    svg << "<g class=\"axis y\">\n<line x1=\"" << fixed(x0, 1) << "\" y1=\"" << fixed(kTop, 1) << "\" x2=\"" << fixed(x0, 1)
        << "\" y2=\"" << fixed(y0, 1) << "\" stroke=\"black\"/>\n";
    for (double tick = 0; tick <= y_max + step / 2; tick += step) {
      if (tick > 0)  // a grid line; the x axis is the one at 0
        svg << "<line x1=\"" << fixed(x0, 1) << "\" y1=\"" << fixed(y_of(tick), 1) << "\" x2=\"" << fixed(x0 + kPlotWidth, 1)
            << "\" y2=\"" << fixed(y_of(tick), 1) << "\" stroke=\"#e0e0e0\"/>";
      svg << "<text class=\"tick\" x=\"" << fixed(x0 - 6, 1) << "\" y=\"" << fixed(y_of(tick) + 4, 1)
          << "\" text-anchor=\"end\">" << format_fixed(tick, 0) << "</text>\n";
    }
    svg << "<text class=\"label\" transform=\"translate(" << fixed(panel_x + 16, 1) << "," << fixed(kTop + kPlotHeight / 2, 1)
        << ") rotate(-90)\" text-anchor=\"middle\">effective TFLOP/s</text>\n</g>\n";

    double legend_y = y0 + kBottom;
    for (const auto& [label, s] : series) {
      const std::string stroke = colour(colour_of_tokens.at(s.tokens));
      svg << "<g class=\"series\" data-source=\"" << static_cast<int>(s.source) << "\" data-label=\"" << xml_escape(label)
          << "\" data-points=\"" << s.points.size() << "\">\n";
      std::vector<Point> points = s.points;
      std::sort(points.begin(), points.end(), [](const Point& a, const Point& b) { return a.density < b.density; });
      if (s.source == Source::dense) {
        svg << "<line x1=\"" << fixed(x0, 1) << "\" y1=\"" << fixed(y_of(points.front().tflops), 1) << "\" x2=\""
            << fixed(x0 + kPlotWidth, 1) << "\" y2=\"" << fixed(y_of(points.front().tflops), 1) << "\" stroke=\"" << stroke
            << "\"" << dash(s.source) << "/>\n";
      } else {
        svg << "<polyline fill=\"none\" stroke=\"" << stroke << "\"" << dash(s.source) << " points=\"";
        for (const Point& p : points) svg << fixed(x_of(p.density), 1) << "," << fixed(y_of(p.tflops), 1) << " ";
        svg << "\"/>\n";
        for (const Point& p : points) {
          svg << marker(s.source, x_of(p.density), y_of(p.tflops), stroke) << "<title>" << xml_escape(label) << ": density "
              << format_fixed(p.density, 3) << ", " << format_fixed(p.tflops, 0) << " TFLOP/s</title>\n";
        }
      }
      svg << "<line x1=\"" << fixed(x0, 1) << "\" y1=\"" << fixed(legend_y - 4, 1) << "\" x2=\"" << fixed(x0 + 24, 1)
          << "\" y2=\"" << fixed(legend_y - 4, 1) << "\" stroke=\"" << stroke << "\"" << dash(s.source) << "/>"
          << marker(s.source, x0 + 12, legend_y - 4, stroke) << "<text class=\"legend\" x=\"" << fixed(x0 + 30, 1)
          << "\" y=\"" << fixed(legend_y, 1) << "\">" << xml_escape(label) << "</text>\n";
      svg << "</g>\n";
      legend_y += kLegendLine;
    }
    svg << "</g>\n";
    panel_x += kPanelWidth;
  }
  svg << "</svg>\n";
  return svg.str();
}

int run_report(const GlobalOptions& global, const ReportOptions& options) {
  Chart chart;
  std::string gpu_name;
  const std::filesystem::path path = database_path(global);
  const bool database_needed = options.peers.empty() && options.bench.empty();
  if (database_needed || std::filesystem::exists(path) || !options.gpu.empty()) {
    const db::Database database = open_existing_database(path);
    gpu_name = add_tuned(chart, options, database);
  }
  std::string peer_device;
  if (!options.peers.empty()) peer_device = add_peers(chart, options);
  add_bench(chart, options);
  std::size_t series = 0, points = 0;
  for (const auto& [head_dim, panel] : chart)
    for (const auto& [label, s] : panel) {
      ++series;
      points += s.points.size();
    }
  if (series == 0)
    throw std::runtime_error("nothing to draw for blocks of " + std::to_string(options.block) + " and fine_n " +
                             std::to_string(options.fine_n) + " in " + path.string() +
                             (options.peers.empty() ? "" : " or " + options.peers) +
                             ": tune first (sparsejit tune --family sparse_attention), or give --peers or --bench");
  const std::string on = !gpu_name.empty() ? gpu_name : peer_device;
  const std::string title = "sparse attention, bf16, blocks " + std::to_string(options.block) + "x" +
                            std::to_string(options.block) +
                            (options.fine_n > 0 ? ", fine bits 16x" + std::to_string(options.fine_n) : "") +
                            (on.empty() ? "" : ", " + on);
  std::ofstream out(options.out);
  out << render_svg(chart, title);
  out.close();
  if (!out) throw std::runtime_error("cannot write " + options.out);
  std::string head_dims;
  for (const auto& [head_dim, panel] : chart) head_dims += (head_dims.empty() ? "D=" : ", D=") + std::to_string(head_dim);
  std::cout << "wrote " << options.out << ": " << chart.size() << " panel(s) (" << head_dims << "), " << series
            << " series, " << points << " points\n";
  return kExitOk;
}

}  // namespace

void add_report_command(CLI::App& app, GlobalOptions& global) {
  auto options = std::make_shared<ReportOptions>();
  CLI::App* report = app.add_subcommand(
      "report",
      "Write an SVG picture of sparse attention's speed (effective TFLOP/s: whole kept blocks) against density,\n"
      "one panel per head dim: the GPU's tuned best configs from the database (the tuner's shape of each\n"
      "problem), 'sparsejit bench attention --json' outputs, and the peers of 'tools/compare_peers.py\n"
      "attention --json-out' (cuDNN dense as a line, FlexAttention and sparsejit from that run). No GPU needed.");
  report->add_option("--gpu", options->gpu, "the GPU whose tuned configs to draw (id or fingerprint, see 'db gpus'); "
                                            "needed when the database holds several");
  report->add_option("--block", options->block, "sparse blocks (square) to draw: 64 or 128")
      ->check(CLI::IsMember({64, 128}))
      ->capture_default_str();
  report->add_option("--fine-n", options->fine_n, "fine sub-tile width of the tuned problems to draw (0: none)")
      ->check(CLI::IsMember({0, 8, 16, 32}))
      ->capture_default_str();
  report->add_option("--peers", options->peers, "JSON of 'tools/compare_peers.py attention --json-out'")
      ->check(CLI::ExistingFile);
  report->add_option("--bench", options->bench, "JSON outputs of 'sparsejit bench attention --json' (one per file)")
      ->check(CLI::ExistingFile);
  report->add_option("-o,--out", options->out, "the SVG file to write")->capture_default_str();
  report->callback([&global, options] { global.exit_code = run_report(global, *options); });
}

}  // namespace sparsejit::tools
