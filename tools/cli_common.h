#pragma once
// What the sparsejit subcommands share: global options, the database they name, tables.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <array>
#include <chrono>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "db/database.h"
#include "runtime/runtime.h"
#include "templates/kernel_family.h"
#include "jit/target.h"
#include "tuner/timing.h"

namespace sparsejit::tools {

struct GlobalOptions {
  std::string database;  // --db; empty: db::default_database_path()
  int exit_code = 0;     // set by the subcommand that ran
};

// Exit codes of the CLI.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitNoGpu = 2;

std::filesystem::path database_path(const GlobalOptions& global);
// Runtime options for GPU 0 with the database of --db (or the default), or none at all.
runtime::RuntimeOptions runtime_options(const GlobalOptions& global, bool use_database);
// Opens the database at `path` (read-only unless `writable`); a missing file gets an error
// saying how to create one, and is not created.
db::Database open_existing_database(const std::filesystem::path& path, bool writable = false);
// The GPU id that --gpu names: the id `db gpus` shows, or the GPU's fingerprint; none when
// `selector` is empty. An unknown GPU is an error listing where to look.
std::optional<std::int64_t> selected_gpu(const db::Database& database, const std::string& selector);

// A table for people: columns padded to their widest cell.
class Table {
 public:
  explicit Table(std::vector<std::string> header) : rows_{std::move(header)} {}
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string render() const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

// "21x45x80" -> {21, 45, 80}; std::nullopt unless it is three positive integers joined by 'x'.
std::optional<std::array<int, 3>> parse_shape(const std::string& text);
// A CLI11 check of an FxHxW option (parse_shape).
CLI::Validator shape_validator();

std::string format_bytes(std::int64_t bytes);  // "1.5 MiB"
void print_json(const nlohmann::json& json);   // to stdout, indented, with a final newline
std::string format_fixed(double value, int decimals);
// The median of `values` (the mean of the middle two for an even count); not empty.
double median_of(std::vector<double> values);

// `elements` random 16-bit values for the benches' inputs: a block of 4 Mi random values
// (never zeros) repeated, as drawing every element of a 387 M-element tensor takes minutes.
std::vector<std::uint16_t> repeated_random_half(std::size_t elements, templates::HalfDtype dtype,
                                                std::mt19937_64& generator);

// --warmup-ms and --measure-ms of the bench commands, into `timing` (defaults: the tuner's
// protocol). Under sustained load an H100 lowers its SM clock to stay within its power limit
// (nvidia-smi: "SW power cap"), which takes longer to settle than the default 25 ms warm-up,
// so a comparison between two kernels is steadier with a warm-up of a second or more.
void add_timing_options(CLI::App& command, tuner::TimingOptions& timing);

// Milliseconds since the process started (for start-to-first-launch figures).
double ms_since_process_start();

// The registered families named in `names`, all of them when `names` is empty; an unknown
// name throws, listing the registered ones.
std::vector<const templates::KernelFamily*> selected_families(const std::vector<std::string>& names);

// Compiles `work` (specializations for `targets`) into the database, `jobs` compiles at a
// time, with a progress line; prints a summary. Stored ones are not compiled again.
void precompile(const GlobalOptions& global, const std::vector<jit::KernelSpec>& work,
                const std::vector<jit::Target>& targets, unsigned jobs);

// Each file registers its subcommand.
void add_info_command(CLI::App& app, GlobalOptions& global);
void add_precompile_command(CLI::App& app, GlobalOptions& global);
void add_tune_command(CLI::App& app, GlobalOptions& global);
void add_db_command(CLI::App& app, GlobalOptions& global);
void add_db_exchange_commands(CLI::App& db, GlobalOptions& global);  // under `db`: export ... prune
void add_bench_command(CLI::App& app, GlobalOptions& global);
void add_order_command(CLI::App& app, GlobalOptions& global);
void add_report_command(CLI::App& app, GlobalOptions& global);
void add_profile_command(CLI::App& app, GlobalOptions& global);
void add_bench_attention_command(CLI::App& bench, GlobalOptions& global);  // under `bench`
void add_bench_mask_command(CLI::App& bench, GlobalOptions& global);       // under `bench`

}  // namespace sparsejit::tools
