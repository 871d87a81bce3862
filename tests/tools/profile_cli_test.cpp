// sparsejit profile, run as a child process: its help, usage errors, the dump checks that
// come before the GPU is asked for (missing folders and files, shapes, head dims), the
// one-line refusal without a GPU, and with a GPU the end-to-end run on small synthetic dumps
// of two prompts: per head the density against a float64 CPU computation of the same
// quantity (the oracle's least k reaching tau, the max over prompts), the rows in the
// database, and a rerun replacing them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "db/database.h"
#include "jit/driver_api.h"
#include "templates/attention_quality/attention_quality_reference.h"
#include "templates/common/half_precision.h"
#include "tests/support/gpu_test.h"
#include "tests/support/npy_writer.h"
#include "tests/tools/cli_fixture.h"

namespace sparsejit::testing {
namespace {

using templates::HalfDtype;

// Q or K of one prompt, [B = 1, N, H, D] bf16 (the dumps are written as bnhd): head h's
// tokens carry positional features of amplitude amplitudes[h] (a large amplitude makes the
// head local, a small one diffuse) plus noise.
std::vector<std::uint16_t> positional_tokens(int tokens, const std::vector<double>& amplitudes, int head_dim,
                                             std::mt19937_64& generator) {
  const int heads = static_cast<int>(amplitudes.size());
  std::normal_distribution<double> noise(0.0, 0.3);
  std::vector<std::uint16_t> values(static_cast<std::size_t>(tokens) * heads * head_dim);
  for (int n = 0; n < tokens; ++n)
    for (int h = 0; h < heads; ++h)
      for (int d = 0; d < head_dim; d += 2) {
        const double frequency = std::pow(0.5, d / 8.0) * 0.2;
        const std::size_t at = (static_cast<std::size_t>(n) * heads + h) * head_dim + d;
        values[at] = templates::float_to_half_bits(
            static_cast<float>(amplitudes[h] * std::cos(frequency * n) + noise(generator)), HalfDtype::bf16);
        values[at + 1] = templates::float_to_half_bits(
            static_cast<float>(amplitudes[h] * std::sin(frequency * n) + noise(generator)), HalfDtype::bf16);
      }
  return values;
}

// The float64 reference of a profiled density: exact block masses, then per head the recall
// curve of the oracle (k = 0..KB: each query block keeps its k heaviest blocks; the kept
// share of the rows' mass, averaged over the rows), whose crossing of tau is the density.
struct ReferenceProfile {
  std::vector<std::vector<double>> curves;  // per head, recall at k = 0..KB
};
ReferenceProfile reference_profile(const std::vector<std::uint16_t>& q, const std::vector<std::uint16_t>& k,
                                   int tokens, int heads, int head_dim, int block) {
  BlockMassParams p{};
  p.q = q.data();
  p.k = k.data();
  p.q_batch_stride = p.k_batch_stride = static_cast<long long>(tokens) * heads * head_dim;
  p.q_head_stride = p.k_head_stride = head_dim;
  p.q_token_stride = p.k_token_stride = static_cast<long long>(heads) * head_dim;
  p.batch = 1;
  p.heads = heads;
  p.tokens_q = p.tokens_kv = tokens;
  p.softmax_scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const templates::BlockMassReference masses = templates::block_mass_reference(p, HalfDtype::bf16, head_dim, block, block);
  const int blocks = (tokens + block - 1) / block;
  ReferenceProfile result;
  for (int h = 0; h < heads; ++h) {
    std::vector<double> curve(static_cast<std::size_t>(blocks) + 1, 0.0);
    for (int qb = 0; qb < blocks; ++qb) {
      std::vector<double> row(masses.mass.begin() + (static_cast<long long>(h) * blocks + qb) * blocks,
                              masses.mass.begin() + (static_cast<long long>(h) * blocks + qb + 1) * blocks);
      std::sort(row.begin(), row.end(), std::greater<>());
      double kept = 0.0;
      for (int kb = 0; kb < blocks; ++kb) curve[static_cast<std::size_t>(kb) + 1] += (kept += row[kb]) / tokens;
    }
    result.curves.push_back(curve);
  }
  return result;
}

class ProfileCliTest : public CliTest {
 protected:
  // DIR/<prompt>/<name>, an .npy of `descr` and `shape`.
  void write_dump(const std::string& prompt, const std::string& name, const std::string& descr,
                  const std::string& shape, const std::vector<char>& data) {
    fs::create_directories(dumps() / prompt);
    write_bytes(dumps() / prompt / name, npy_bytes(descr, shape, data));
  }
  // The Q and K of `key` ("step0_layer1"), float32 of the given shapes.
  void write_float_pair(const std::string& prompt, const std::string& key, const std::string& q_shape,
                        const std::string& k_shape, std::size_t elements) {
    write_dump(prompt, key + "_q.npy", "<f4", q_shape, raw_bytes(std::vector<float>(elements, 0.5f)));
    write_dump(prompt, key + "_k.npy", "<f4", k_shape, raw_bytes(std::vector<float>(elements, 0.5f)));
  }
  fs::path dumps() const { return temp_.path() / "dumps"; }
  std::vector<std::string> profile_args(std::vector<std::string> extra = {}) const {
    std::vector<std::string> args = {"--db", (temp_.path() / "profile.db").string(), "profile", "--model", "wan",
                                     "--dumps", dumps().string()};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }
  // A failure before any GPU work: exit 1, stderr names `what`, no database written.
  void expect_input_error(const std::vector<std::string>& args, const std::string& what) {
    const CliResult result = run(args);
    EXPECT_EQ(result.exit_code, 1) << result.describe();
    EXPECT_TRUE(has(result.err, what)) << "expected '" << what << "'\n" << result.describe();
    EXPECT_TRUE(result.out.empty()) << result.describe();
    EXPECT_FALSE(fs::exists(temp_.path() / "profile.db")) << result.describe();
  }
};

TEST_F(ProfileCliTest, HelpDescribesTheDumpConventionAndOptions) {
  const CliResult result = run({"profile", "--help"});
  ASSERT_EQ(result.exit_code, 0) << result.describe();
  for (const char* word : {"Usage: sparsejit profile", "--model", "--dumps", "--tau", "--block-q", "--block-kv",
                           "--layout", "--dtype", "--softmax-scale", "--json", "step<S>_layer<L>_q.npy",
                           "one transaction", "replaces"})
    EXPECT_TRUE(has(result.out, word)) << "help should mention '" << word << "'\n" << result.describe();
  EXPECT_TRUE(has(run({"--help"}).out, "profile"));
}

TEST_F(ProfileCliTest, UsageErrorsNameTheValue) {
  const struct {
    std::vector<std::string> args;
    std::string words;
  } cases[] = {{profile_args({"--tau", "0"}), "--tau 0 is outside (0, 1]"},
               {profile_args({"--tau", "1.5"}), "--tau 1.5 is outside (0, 1]"},
               {profile_args({"--tau", "high"}), "--tau high is not a number"},
               {profile_args({"--block-q", "96"}), "96"},
               {profile_args({"--layout", "nhd"}), "nhd"},
               {{"profile", "--dumps", "x"}, "--model is required"},
               {{"profile", "--model", "wan"}, "--dumps is required"}};
  for (const auto& [args, words] : cases) {
    const CliResult result = run(args);
    EXPECT_EQ(result.exit_code, 1) << result.describe();
    EXPECT_TRUE(has(result.err, words)) << "expected '" << words << "'\n" << result.describe();
    EXPECT_TRUE(has(result.err, "--help")) << result.describe();
  }
}

// The dumps are checked before the GPU is asked for: these fail the same on any machine.
TEST_F(ProfileCliTest, BadDumpsAreNamedBeforeAnyGpuWork) {
  expect_input_error(profile_args(), "--dumps " + dumps().string() + " is not a directory");
  fs::create_directories(dumps());
  expect_input_error(profile_args(), "has no prompt folders");
  fs::create_directories(dumps() / "cat");
  expect_input_error(profile_args(), "no step<S>_layer<L>_q.npy");

  // A prompt without the (step, layer) another one has.
  write_float_pair("cat", "step0_layer1", "(1, 2, 8, 64)", "(1, 2, 8, 64)", 2 * 8 * 64);
  fs::create_directories(dumps() / "dog");
  expect_input_error(profile_args(), (dumps() / "dog" / "step0_layer1_q.npy").string() + " is missing");
  write_dump("dog", "step0_layer1_q.npy", "<f4", "(1, 2, 8, 64)", raw_bytes(std::vector<float>(2 * 8 * 64)));
  expect_input_error(profile_args(), (dumps() / "dog" / "step0_layer1_k.npy").string() + " is missing");

  // K of another shape than Q.
  write_dump("dog", "step0_layer1_k.npy", "<f4", "(1, 2, 9, 64)", raw_bytes(std::vector<float>(2 * 9 * 64)));
  expect_input_error(profile_args(), (dumps() / "dog" / "step0_layer1_k.npy").string() +
                                         ": shape [1, 2, 9, 64] differs from Q's [1, 2, 8, 64]");
  // Another head count than the other prompt's for the same layer.
  write_float_pair("dog", "step0_layer1", "(1, 4, 8, 64)", "(1, 4, 8, 64)", 4 * 8 * 64);
  expect_input_error(profile_args(), "4 heads, but");
  // Not 4-D; an unsupported head dim; a truncated file.
  write_float_pair("dog", "step0_layer1", "(2, 8, 64)", "(2, 8, 64)", 2 * 8 * 64);
  expect_input_error(profile_args(), "step0_layer1_q.npy: shape [2, 8, 64] is not 4-D; expected [B, H, N, D]");
  write_float_pair("dog", "step0_layer1", "(1, 8, 2, 80)", "(1, 8, 2, 80)", 8 * 2 * 80);
  expect_input_error(profile_args({"--layout", "bnhd"}), "head dim 80 is not supported (64, 96 or 128");
  write_dump("dog", "step0_layer1_q.npy", "<f4", "(1, 2, 8, 64)", raw_bytes(std::vector<float>(10)));
  expect_input_error(profile_args(), "truncated");
  write_dump("dog", "step0_layer1_q.npy", "<i4", "(1, 2, 8, 64)", raw_bytes(std::vector<int>(2 * 8 * 64)));
  expect_input_error(profile_args(), "dtype '<i4' is not supported");
  // A step number no int holds.
  write_float_pair("dog", "step12345678901_layer1", "(1, 2, 8, 64)", "(1, 2, 8, 64)", 2 * 8 * 64);
  expect_input_error(profile_args(), "step12345678901_layer1_q.npy: the step or layer number has more than 9 digits");
}

// Two prompts x (step 0, layer 2) and (step 10, layer 2), [1, N, H, D] bf16 dumps (bnhd): each
// prompt has one local and one diffuse head, swapped between the prompts, so the max over
// prompts differs from either prompt's densities. Without a GPU: one line of reason, exit 2.
TEST_F(ProfileCliTest, ProfilesSyntheticDumpsLikeTheFloat64Reference) {
  const int tokens = 1000, heads = 2, head_dim = 64, block = 128;
  std::mt19937_64 generator = fresh_generator();
  struct Prompt {
    std::string name;
    std::vector<double> amplitudes;
    std::vector<std::uint16_t> q, k;
  };
  std::vector<Prompt> prompts = {{"cat", {2.2, 0.4}, {}, {}}, {"dog", {0.4, 2.2}, {}, {}}};
  const std::string shape = "(1, " + std::to_string(tokens) + ", " + std::to_string(heads) + ", " +
                            std::to_string(head_dim) + ")";
  for (Prompt& prompt : prompts) {
    prompt.q = positional_tokens(tokens, prompt.amplitudes, head_dim, generator);
    prompt.k = positional_tokens(tokens, prompt.amplitudes, head_dim, generator);
    for (const char* key : {"step0_layer2", "step10_layer2"}) {
      write_dump(prompt.name, std::string(key) + "_q.npy", "<V2", shape, raw_bytes(prompt.q));
      write_dump(prompt.name, std::string(key) + "_k.npy", "<V2", shape, raw_bytes(prompt.k));
    }
  }
  write_bytes(dumps() / "dog" / "notes.txt", {'h', 'i'});  // other files are ignored
  const std::vector<std::string> args = profile_args({"--layout", "bnhd", "--tau", "0.85", "--json"});

  std::string why;
  if (!jit::driver_available(&why)) {
    const CliResult result = run(args);
    EXPECT_EQ(result.exit_code, 2) << result.describe();
    ASSERT_EQ(lines_of(result.err).size(), 1u) << result.describe();
    EXPECT_TRUE(has(result.err, why) && has(result.err, "profile needs a GPU")) << result.describe();
    EXPECT_FALSE(fs::exists(temp_.path() / "profile.db")) << result.describe();
    SPARSEJIT_SKIP_WITHOUT_GPU("profile needs a GPU", why);
  }

  const CliResult result = run(args);
  ASSERT_EQ(result.exit_code, 0) << result.describe();
  const json report = parse_json(result);
  ASSERT_EQ(report["profiles"].size(), 2u) << result.describe();
  EXPECT_EQ(report["prompts"], json({"cat", "dog"}));

  // The float64 reference, per head the max over prompts; the GPU's density k / KB must sit
  // where the reference's curve crosses tau (within float32 rounding of the masses). The
  // diffuse heads' curves pass 0.85 between k = 6 (about 0.79) and 7 (about 0.90), the local
  // heads' at k = 1 (about 0.98): far from the cut either way.
  const double tau = 0.85, slack = 2e-3;
  const int blocks = (tokens + block - 1) / block;
  std::vector<ReferenceProfile> references;
  for (const Prompt& prompt : prompts)
    references.push_back(reference_profile(prompt.q, prompt.k, tokens, heads, head_dim, block));
  std::vector<int> profiled_k;
  for (const json& profile : report["profiles"]) {
    EXPECT_EQ(profile["layer"], 2);
    const std::vector<double> densities = profile["densities"];
    ASSERT_EQ(densities.size(), static_cast<std::size_t>(heads));
    for (int h = 0; h < heads; ++h) {
      const int k = static_cast<int>(std::lround(densities[h] * blocks));
      EXPECT_NEAR(densities[h], static_cast<double>(k) / blocks, 1e-12) << "a density is k / KB";
      // The max over prompts: k reaches tau for every prompt, and k - 1 misses it for one.
      bool one_needs_k = false;
      for (const ReferenceProfile& reference : references) {
        const std::vector<double>& curve = reference.curves[static_cast<std::size_t>(h)];
        EXPECT_GE(curve[static_cast<std::size_t>(k)], tau - slack) << "head " << h << " k " << k;
        one_needs_k = one_needs_k || k == 1 || curve[static_cast<std::size_t>(k) - 1] < tau + slack;
      }
      EXPECT_TRUE(one_needs_k) << "head " << h << ": k " << k << " is more than any prompt needs";
      profiled_k.push_back(k);
    }
  }
  // The local heads need fewer blocks than the diffuse ones: the max over prompts picked the
  // diffuse prompt for both heads, so a first-prompt-only or min aggregation would differ.
  for (int h = 0; h < heads; ++h) {
    const int local_k = [&] {
      const std::vector<double>& curve = references[static_cast<std::size_t>(h)].curves[static_cast<std::size_t>(h)];
      int k = 1;
      while (k < blocks && curve[static_cast<std::size_t>(k)] < tau) ++k;
      return k;
    }();
    EXPECT_LT(local_k, profiled_k[static_cast<std::size_t>(h)]) << "head " << h;
  }

  // The rows in the database, and a rerun on one prompt replacing them.
  std::vector<db::SparsityProfile> rows = db::Database::open(temp_.path() / "profile.db").list_sparsity_profiles("wan");
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0].step, 0);
  EXPECT_EQ(rows[3].step, 10);
  EXPECT_DOUBLE_EQ(rows[1].tau, 0.85);
  fs::remove_all(dumps() / "dog");
  const CliResult rerun = run(profile_args({"--layout", "bnhd", "--tau", "0.85"}));
  ASSERT_EQ(rerun.exit_code, 0) << rerun.describe();
  EXPECT_TRUE(has(rerun.out, "min density") && has(rerun.out, "median density")) << rerun.describe();
  rows = db::Database::open(temp_.path() / "profile.db").list_sparsity_profiles("wan");
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_LT(rows[0].density, static_cast<double>(profiled_k[0]) / blocks)
      << "the rerun on the local prompt replaced head 0's density";
}

}  // namespace
}  // namespace sparsejit::testing
