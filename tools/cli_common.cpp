#include "tools/cli_common.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <iostream>
#include <stdexcept>

#include "db/paths.h"

namespace sparsejit::tools {
namespace {
const auto kProcessStart = std::chrono::steady_clock::now();  // static init, before main
}

double ms_since_process_start() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - kProcessStart)
      .count();
}

std::filesystem::path database_path(const GlobalOptions& global) {
  return global.database.empty() ? db::default_database_path()
                                 : std::filesystem::path(global.database);
}

runtime::RuntimeOptions runtime_options(const GlobalOptions& global, bool use_database) {
  runtime::RuntimeOptions options;
  options.use_database = use_database;
  if (!global.database.empty()) options.database_path = global.database;
  return options;
}

db::Database open_existing_database(const std::filesystem::path& path, bool writable) {
  if (!std::filesystem::exists(path))
    throw std::runtime_error("no database at " + path.string() +
                             " (create one with 'sparsejit precompile' or 'sparsejit tune', "
                             "or name another with --db or $SPARSEJIT_DB)");
  return db::Database::open(path, {.read_only = !writable});
}

std::string Table::render() const {
  std::vector<std::size_t> widths;
  for (const auto& row : rows_) {
    widths.resize(std::max(widths.size(), row.size()), 0);
    for (std::size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], row[c].size());
  }
  std::string out;
  for (std::size_t r = 0; r < rows_.size(); ++r) {
    std::string line;
    for (std::size_t c = 0; c < rows_[r].size(); ++c) {
      line += rows_[r][c];
      if (c + 1 < rows_[r].size()) line += std::string(widths[c] - rows_[r][c].size() + 2, ' ');
    }
    out += line + "\n";
    if (r == 0) {
      std::size_t total = 0;
      for (std::size_t w : widths) total += w + 2;
      out += std::string(total > 2 ? total - 2 : 0, '-') + "\n";
    }
  }
  return out;
}

std::optional<std::array<int, 3>> parse_shape(const std::string& text) {
  std::array<int, 3> sizes = {0, 0, 0};
  const char* position = text.data();
  const char* const end = text.data() + text.size();
  for (int i = 0; i < 3; ++i) {
    if (i > 0) {
      if (position == end || *position != 'x') return std::nullopt;
      ++position;
    }
    const auto [next, error] = std::from_chars(position, end, sizes[i]);
    if (error != std::errc{} || sizes[i] < 1) return std::nullopt;
    position = next;
  }
  if (position != end) return std::nullopt;
  return sizes;
}

CLI::Validator shape_validator() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        return parse_shape(text) ? std::string{}
                                 : "'" + text + "' is not FxHxW (three positive integers, e.g. 21x45x80)";
      },
      "FxHxW");
}

std::string format_bytes(std::int64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  return unit == 0 ? std::to_string(bytes) + " B" : format_fixed(value, 1) + " " + kUnits[unit];
}

void print_json(const nlohmann::json& json) { std::cout << json.dump(2) << "\n"; }

std::vector<std::uint16_t> repeated_random_half(std::size_t elements, templates::HalfDtype dtype,
                                                std::mt19937_64& generator) {
  const std::vector<std::uint16_t> block = templates::random_half(std::size_t{1} << 22, dtype, generator);
  std::vector<std::uint16_t> values(elements);
  for (std::size_t i = 0; i < elements; i += block.size())
    std::copy_n(block.begin(), std::min(block.size(), elements - i), values.begin() + static_cast<long>(i));
  return values;
}

std::string format_fixed(double value, int decimals) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*f", decimals, value);
  return buffer;
}

void add_timing_options(CLI::App& command, tuner::TimingOptions& timing) {
  command.add_option("--warmup-ms", timing.warmup_ms, "warm-up before timing, in ms of runs (default 25)")
      ->check(CLI::Range(0.0, 600000.0));
  command.add_option("--measure-ms", timing.measure_ms,
                     "time this many ms of runs (at least 5 runs) and report their median (default 100)")
      ->check(CLI::Range(0.0, 600000.0));
}

double median_of(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t middle = values.size() / 2;
  return values.size() % 2 == 1 ? values[middle] : (values[middle - 1] + values[middle]) / 2;
}

std::optional<std::int64_t> selected_gpu(const db::Database& database, const std::string& selector) {
  if (selector.empty()) return std::nullopt;
  for (const db::StoredGpu& gpu : database.list_gpus())
    if (std::to_string(gpu.id) == selector || gpu.gpu.fingerprint() == selector) return gpu.id;
  throw std::runtime_error("no GPU '" + selector + "' in " + database.path().string() +
                           " (--gpu takes an id or a fingerprint that 'sparsejit db gpus' shows)");
}

}  // namespace sparsejit::tools
