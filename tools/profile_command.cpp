// sparsejit profile: SVOO's offline sparsity profiles (issue 4). From Q/K dumps of a few
// prompts per (diffusion step, layer) it computes on the GPU the exact softmax mass of every
// (query block, key block) pair, per head the least density whose oracle (the heaviest
// blocks of each query block) keeps recall tau, the maximum over prompts (and batch
// entries), and writes the rows (model, step, layer, head, density, tau) into the database
// in one transaction. The runtime reads them back as per-head densities
// (runtime/sparsity_profile.h).
//
// Dumps: DIR/<prompt>/step<S>_layer<L>_q.npy and _k.npy, one folder per prompt, each holding
// the same (step, layer) pairs; other files are ignored. Every header is checked before the
// GPU is asked for, so bad input is reported on any machine.
#include <algorithm>
#include <array>
#include <cmath>
#include <iostream>
#include <limits>
#include <map>
#include <regex>
#include <set>

#include "jit/device_memory.h"
#include "jit/driver_api.h"
#include "runtime/mask_quality.h"
#include "runtime/sparsity_profile.h"
#include "templates/attention_quality/attention_quality_family.h"
#include "tools/cli_common.h"
#include "tools/npy_file.h"

namespace sparsejit::tools {
namespace {

namespace fs = std::filesystem;
using templates::HalfDtype;

struct ProfileOptions {
  std::string model;
  std::string dumps;
  double tau = 0.95;
  int block_q = 128;
  int block_kv = 128;
  std::string layout = "bhnd";  // of every dump: bhnd = [B, H, N, D], bnhd = [B, N, H, D]
  std::string dtype = "bf16";   // what float32 dumps are rounded to
  double softmax_scale = 0.0;   // 0: 1 / sqrt(D)
  bool json = false;
};

struct ProfileKey {
  int step = 0;
  int layer = 0;
  auto operator<=>(const ProfileKey&) const = default;
};

// One (step, layer) of one prompt: its files and their shape as [B, H, N, D].
struct DumpPair {
  fs::path q, k;
  int batch = 0, heads = 0, tokens = 0, head_dim = 0;
  HalfDtype dtype = HalfDtype::bf16;  // what the GPU computes in
};

struct DumpSet {
  std::vector<std::string> prompts;                     // folder names, sorted
  std::map<ProfileKey, std::vector<DumpPair>> pairs;    // per key, one per prompt
};

std::string shape_text(const std::vector<std::size_t>& shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

// Checks a dump's header and returns its shape as [B, H, N, D].
std::array<int, 4> checked_shape(const fs::path& file, const NpyHeader& header, const std::string& layout) {
  const std::string name = file.string();
  if (header.shape.size() != 4)
    throw std::runtime_error(name + ": shape " + shape_text(header.shape) + " is not 4-D; expected " +
                             (layout == "bhnd" ? "[B, H, N, D]" : "[B, N, H, D]") + " (--layout " + layout + ")");
  for (std::size_t size : header.shape)
    if (size == 0 || size > static_cast<std::size_t>(std::numeric_limits<int>::max()))
      throw std::runtime_error(name + ": shape " + shape_text(header.shape) + " has an empty or oversized dimension");
  const auto dim = [&](int i) { return static_cast<int>(header.shape[static_cast<std::size_t>(i)]); };
  const std::array<int, 4> bhnd = layout == "bhnd" ? std::array<int, 4>{dim(0), dim(1), dim(2), dim(3)}
                                                   : std::array<int, 4>{dim(0), dim(2), dim(1), dim(3)};
  if (!templates::table_contains(templates::kQualityHeadDims, bhnd[3]))
    throw std::runtime_error(name + ": head dim " + std::to_string(bhnd[3]) +
                             " is not supported (64, 96 or 128; the last dimension)");
  return bhnd;
}

// Finds the dumps under --dumps and checks every header (no data is read).
DumpSet find_dumps(const ProfileOptions& o) {
  const fs::path root(o.dumps);
  if (!fs::is_directory(root))
    throw std::runtime_error("--dumps " + o.dumps + " is not a directory (expected DIR/<prompt>/step<S>_layer<L>_q.npy)");
  DumpSet set;
  for (const fs::directory_entry& entry : fs::directory_iterator(root))
    if (entry.is_directory()) set.prompts.push_back(entry.path().filename().string());
  std::sort(set.prompts.begin(), set.prompts.end());
  if (set.prompts.empty())
    throw std::runtime_error(o.dumps + " has no prompt folders (expected DIR/<prompt>/step<S>_layer<L>_q.npy and _k.npy)");

  const std::regex dump_name(R"(step([0-9]+)_layer([0-9]+)_(q|k)\.npy)");
  std::set<ProfileKey> keys;
  for (const std::string& prompt : set.prompts)
    for (const fs::directory_entry& entry : fs::directory_iterator(root / prompt)) {
      std::smatch match;
      const std::string file = entry.path().filename().string();
      if (!entry.is_regular_file() || !std::regex_match(file, match, dump_name)) continue;
      if (match[1].length() > 9 || match[2].length() > 9)
        throw std::runtime_error((root / prompt / file).string() + ": the step or layer number has more than 9 digits");
      keys.insert({std::stoi(match[1]), std::stoi(match[2])});
    }
  if (keys.empty())
    throw std::runtime_error("no step<S>_layer<L>_q.npy / _k.npy files in the prompt folders of " + o.dumps);

  const auto file_of = [&](const std::string& prompt, const ProfileKey& key, const char* tensor) {
    return root / prompt / ("step" + std::to_string(key.step) + "_layer" + std::to_string(key.layer) + "_" + tensor + ".npy");
  };
  for (const ProfileKey& key : keys)
    for (const std::string& prompt : set.prompts) {
      DumpPair pair{file_of(prompt, key, "q"), file_of(prompt, key, "k")};
      for (const fs::path& file : {pair.q, pair.k})
        if (!fs::exists(file))
          throw std::runtime_error(file.string() + " is missing (every prompt folder needs step " +
                                   std::to_string(key.step) + ", layer " + std::to_string(key.layer) +
                                   ": another prompt has it)");
      const NpyHeader q = read_npy_header(pair.q), k = read_npy_header(pair.k);
      const std::array<int, 4> q_shape = checked_shape(pair.q, q, o.layout);
      checked_shape(pair.k, k, o.layout);
      if (q.shape != k.shape)
        throw std::runtime_error(pair.k.string() + ": shape " + shape_text(k.shape) + " differs from Q's " +
                                 shape_text(q.shape) + " (" + pair.q.string() + ")");
      pair.batch = q_shape[0];
      pair.heads = q_shape[1];
      pair.tokens = q_shape[2];
      pair.head_dim = q_shape[3];
      pair.dtype = q.dtype == NpyDtype::float16   ? HalfDtype::fp16
                   : q.dtype == NpyDtype::bfloat16 ? HalfDtype::bf16
                                                   : (o.dtype == "fp16" ? HalfDtype::fp16 : HalfDtype::bf16);
      std::vector<DumpPair>& pairs = set.pairs[key];
      if (!pairs.empty() && pairs.front().heads != pair.heads)
        throw std::runtime_error(pair.q.string() + ": " + std::to_string(pair.heads) + " heads, but " +
                                 pairs.front().q.string() + " has " + std::to_string(pairs.front().heads) +
                                 " (a layer's heads are profiled across prompts)");
      pairs.push_back(std::move(pair));
    }
  return set;
}

// One prompt's (step, layer) on the GPU: per head the densities of profiled_head_densities.
std::vector<double> profile_pair(runtime::Runtime& runtime, const jit::Stream& stream, const DumpPair& pair,
                                 const ProfileOptions& o) {
  const auto upload = [&](const fs::path& file) { return jit::DeviceBuffer::from_host(read_npy(file).to_half(pair.dtype)); };
  const jit::DeviceBuffer q = upload(pair.q), k = upload(pair.k);
  runtime::QueryKeyInputs inputs;
  inputs.q = q.pointer();
  inputs.k = k.pointer();
  const long long heads = pair.heads, tokens = pair.tokens, head_dim = pair.head_dim;
  // Element strides of [B, H, N, D] (bhnd) or [B, N, H, D] (bnhd) storage.
  const bool bhnd = o.layout == "bhnd";
  inputs.q_batch_stride = inputs.k_batch_stride = heads * tokens * head_dim;
  inputs.q_head_stride = inputs.k_head_stride = bhnd ? tokens * head_dim : head_dim;
  inputs.q_token_stride = inputs.k_token_stride = bhnd ? head_dim : heads * head_dim;
  inputs.batch = pair.batch;
  inputs.heads = pair.heads;
  inputs.tokens_q = inputs.tokens_kv = pair.tokens;
  inputs.head_dim = pair.head_dim;
  inputs.dtype = pair.dtype;
  inputs.softmax_scale =
      o.softmax_scale > 0 ? static_cast<float>(o.softmax_scale) : 1.0f / std::sqrt(static_cast<float>(pair.head_dim));
  const std::vector<float> masses = runtime::exact_block_masses(runtime, inputs, o.block_q, o.block_kv, stream.handle());
  const int q_blocks = (pair.tokens + o.block_q - 1) / o.block_q, kv_blocks = (pair.tokens + o.block_kv - 1) / o.block_kv;
  return runtime::profiled_head_densities(masses, pair.batch, pair.heads, q_blocks, kv_blocks, pair.tokens, o.tau);
}

int run_profile(const GlobalOptions& global, const ProfileOptions& o) {
  const DumpSet dumps = find_dumps(o);
  std::string why;
  if (!jit::driver_available(&why)) {
    std::fprintf(stderr, "sparsejit: %s; profile needs a GPU (it computes the exact attention of the dumps)\n",
                 why.c_str());
    return kExitNoGpu;
  }
  runtime::Runtime runtime(runtime_options(global, true));  // opens the database: a bad path fails now
  runtime.context().make_current();
  db::Database& database = *runtime.database();
  const jit::Stream stream;

  std::map<ProfileKey, std::vector<double>> densities;  // per head, the max over prompts
  for (const auto& [key, pairs] : dumps.pairs) {
    for (const DumpPair& pair : pairs) runtime::keep_densest(densities[key], profile_pair(runtime, stream, pair, o));
    std::fprintf(stderr, "profiled step %d layer %d (%zu prompt%s)\n", key.step, key.layer, pairs.size(),
                 pairs.size() == 1 ? "" : "s");
  }
  std::vector<db::SparsityProfile> rows;
  for (const auto& [key, heads] : densities)
    for (std::size_t h = 0; h < heads.size(); ++h)
      rows.push_back({.model = o.model, .step = key.step, .layer = key.layer, .head = static_cast<int>(h),
                      .density = heads[h], .tau = o.tau});
  database.replace_sparsity_profiles(rows);

  if (o.json) {
    nlohmann::json report = {{"model", o.model},
                             {"tau", o.tau},
                             {"block_q", o.block_q},
                             {"block_kv", o.block_kv},
                             {"database", database.path().string()},
                             {"prompts", dumps.prompts},
                             {"rows", rows.size()},
                             {"profiles", nlohmann::json::array()}};
    for (const auto& [key, heads] : densities)
      report["profiles"].push_back({{"step", key.step}, {"layer", key.layer}, {"densities", heads}});
    print_json(report);
    return kExitOk;
  }
  std::cout << "model " << o.model << ": " << rows.size() << " rows (step, layer, head) written to "
            << database.path().string() << "; recall " << format_fixed(o.tau, 3) << " of the exact softmax mass, "
            << dumps.prompts.size() << (dumps.prompts.size() == 1 ? " prompt" : " prompts (max over them)") << ", blocks " << o.block_q << "x" << o.block_kv << "\n";
  Table table({"step", "layer", "heads", "min density", "median density", "max density"});
  for (const auto& [key, heads] : densities)
    table.add({std::to_string(key.step), std::to_string(key.layer), std::to_string(heads.size()),
               format_fixed(*std::min_element(heads.begin(), heads.end()), 3), format_fixed(median_of(heads), 3),
               format_fixed(*std::max_element(heads.begin(), heads.end()), 3)});
  std::cout << table.render();
  return kExitOk;
}

}  // namespace

void add_profile_command(CLI::App& app, GlobalOptions& global) {
  auto options = std::make_shared<ProfileOptions>();
  CLI::App* command = app.add_subcommand(
      "profile",
      "SVOO's offline sparsity profile of a model: from Q/K dumps of a few prompts, per\n"
      "(diffusion step, layer, head) the least density whose best blocks (each query block's\n"
      "heaviest key blocks by exact softmax mass, computed on the GPU) keep recall tau (the mean\n"
      "over query rows of the kept share of each row's mass); the max over prompts and batch\n"
      "entries is written to the database under --model, in one transaction. A rerun replaces\n"
      "the model's rows of the (step, layer) pairs it profiles (all their heads) and keeps the\n"
      "others. The runtime uses them as per-head densities (HeadDensityProfile).\n"
      "Dumps: DIR/<prompt>/step<S>_layer<L>_q.npy and step<S>_layer<L>_k.npy, one folder per\n"
      "prompt, each with the same (step, layer) pairs (other files are ignored); 4-D arrays\n"
      "[B, H, N, D] (--layout bhnd) or [B, N, H, D] (bnhd), Q and K of one shape, head dim 64, 96\n"
      "or 128, dtype bfloat16 (ml_dtypes' '<V2'), float16, or float32 (rounded to --dtype).\n"
      "Needs a GPU (exit code 2 without one); the dumps are checked first.");
  command->add_option("--model", options->model, "the model's name in the database (e.g. wan2.1-14b)")->required();
  command->add_option("--dumps", options->dumps, "the dump folder DIR (see above)")->required();
  command
      ->add_option("--tau", options->tau, "the recall to keep, in (0, 1] (default 0.95)")
      ->check(CLI::Validator(
          [](const std::string& text) -> std::string {
            double value = 0;
            try {
              value = std::stod(text);
            } catch (const std::exception&) {
              return "--tau " + text + " is not a number";
            }
            return value > 0.0 && value <= 1.0 ? std::string() : "--tau " + text + " is outside (0, 1]";
          },
          "in (0, 1]"));
  command->add_option("--block-q", options->block_q, "query block size, 64 or 128 (default 128)")
      ->check(CLI::IsMember({64, 128}));
  command->add_option("--block-kv", options->block_kv, "key block size, 64 or 128 (default 128)")
      ->check(CLI::IsMember({64, 128}));
  command->add_option("--layout", options->layout, "dump layout: bhnd = [B, H, N, D] (default), bnhd = [B, N, H, D]")
      ->check(CLI::IsMember({"bhnd", "bnhd"}));
  command->add_option("--dtype", options->dtype, "what float32 dumps are rounded to: bf16 (default) or fp16")
      ->check(CLI::IsMember({"bf16", "fp16"}));
  command->add_option("--softmax-scale", options->softmax_scale, "the attention's scale (default 1 / sqrt(D))")
      ->check(CLI::PositiveNumber);
  command->add_flag("--json", options->json, "print JSON: per (step, layer) the per-head densities");
  command->callback([&global, options] { global.exit_code = run_profile(global, *options); });
}

}  // namespace sparsejit::tools
