// sparsejit report: the SVG's structure (a panel per head dim with both axes, a series per
// sequence length and source, one marker per point, the peers overlaid, values in the
// titles) from a database of tuned sparse_attention problems built in-process and a peers
// file in compare_peers.py's format; the errors that say what to give.
#include <fstream>
#include <map>
#include <regex>

#include "templates/sparse_attention/attention_tuning.h"
#include "tests/tools/cli_fixture.h"

namespace sparsejit::testing {
namespace {

std::string text_of(const fs::path& path) {
  const std::vector<char> bytes = read_bytes(path);
  return std::string(bytes.begin(), bytes.end());
}

int count_of(const std::string& text, const std::string& part) {
  int count = 0;
  for (std::size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + part.size())) ++count;
  return count;
}

// The elements <g class="series" ...> ... </g> of `svg` (series hold no nested groups), by label.
std::map<std::string, std::string> series_of(const std::string& svg) {
  std::map<std::string, std::string> series;
  const std::regex pattern("<g class=\"series\"[^>]* data-label=\"([^\"]*)\"[^>]*>([\\s\\S]*?)</g>");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), pattern); it != std::sregex_iterator(); ++it)
    series[(*it)[1]] = (*it)[0];
  return series;
}

db::GpuRecord gpu_named(const std::string& name, int sm_count) {
  db::GpuRecord gpu;
  gpu.name = name;
  gpu.cc_major = 9;
  gpu.sm_count = sm_count;
  gpu.memory_bytes = 85029158912;
  return gpu;
}

class ReportCliTest : public CliTest {
 protected:
  // Every problem of the default grid tuned on one H100, each at 2 ms.
  ReportCliTest() {
    db::Database database = db::Database::open(database_);
    const std::int64_t gpu = database.upsert_gpu(gpu_named("NVIDIA H100 80GB HBM3", 132));
    for (const templates::AttentionProblemKey& key : templates::default_attention_tuning_grid())
      record(database, gpu, key.to_string(), 2.0);
  }
  static void record(db::Database& database, std::int64_t gpu, const std::string& key, double ms) {
    db::TrialRecord trial;
    trial.gpu_id = gpu;
    trial.family = "sparse_attention";
    trial.problem_key = key;
    trial.config_json = R"({"block_m":128,"block_n":32,"warps":4})";
    trial.median_ms = trial.p20_ms = trial.p80_ms = ms;
    trial.rel_error = 0.001;
    database.record_trial(trial);
  }
  CliResult report(std::vector<std::string> args) const {
    args.insert(args.begin(), {"--db", database_.string(), "report", "--out", svg_.string()});
    return run(args);
  }

  fs::path database_ = temp_ / "tuned.db";
  fs::path svg_ = temp_ / "report.svg";
};

TEST_F(ReportCliTest, PanelsPerHeadDimWithAxesSeriesAndPoints) {
  const CliResult result = report({});
  ASSERT_EQ(result.exit_code, 0) << result.describe();
  EXPECT_TRUE(has(result.out, "2 panel(s) (D=64, D=128), 8 series, 48 points")) << result.describe();
  const std::string svg = text_of(svg_);
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u) << svg.substr(0, 200);
  EXPECT_TRUE(svg.ends_with("</svg>\n"));
  EXPECT_EQ(count_of(svg, "<g class=\"panel\""), 2);
  EXPECT_TRUE(has(svg, "data-head-dim=\"64\"") && has(svg, "data-head-dim=\"128\""));
  EXPECT_EQ(count_of(svg, "<g class=\"axis x\">"), 2);
  EXPECT_EQ(count_of(svg, "<g class=\"axis y\">"), 2);
  EXPECT_TRUE(has(svg, "density (kept share of key blocks, log scale)"));
  EXPECT_TRUE(has(svg, "effective TFLOP/s"));
  EXPECT_TRUE(has(svg, "NVIDIA H100 80GB HBM3"));
  // Per panel: 4 sequence lengths, 6 densities each (blocks of 128, no fine bits); the legend
  // adds one marker per series.
  const std::map<std::string, std::string> series = series_of(svg);
  ASSERT_EQ(series.size(), 4u) << "labels repeat across panels: 4 distinct, 8 groups";
  EXPECT_EQ(count_of(svg, "<g class=\"series\""), 8);
  const std::string& longest = series.at("sparsejit tuned, N=119,056 H=12");
  EXPECT_TRUE(has(longest, "data-points=\"6\""));
  EXPECT_EQ(count_of(longest, "class=\"point\""), 6 + 1);
  // n33k at density 1.0, D = 64 (the first panel): 4 * 32760^2 * 64 * 12 / 2 ms = 1648.5 TFLOP/s.
  EXPECT_TRUE(has(svg, "sparsejit tuned, N=32,760 H=12: density 1.000, 1648 TFLOP/s")) << svg;
}

TEST_F(ReportCliTest, PeersAreOverlaidAndTheirDenseKernelIsALine) {
  const fs::path peers = temp_ / "peers.json";
  const json rows = {
      {"meta", {{"device", "NVIDIA H100 80GB HBM3"}, {"block", 128}}},
      {"rows",
       {{{"heads", 12}, {"tokens", 32768}, {"head_dim", 128}, {"block", 128}, {"density", 0.5}, {"kept_fraction", 0.5},
         {"dense_tflops", 618.0}, {"flex_tflops", 410.0}, {"sparsejit_tflops", 290.0}},
        {{"heads", 12}, {"tokens", 32768}, {"head_dim", 128}, {"block", 128}, {"density", 0.1}, {"kept_fraction", 0.1},
         {"dense_tflops", 618.0}, {"flex_tflops", 362.0}, {"sparsejit_tflops", nullptr}},
        {{"heads", 12}, {"tokens", 32768}, {"head_dim", 64}, {"block", 64}, {"density", 0.1}, {"kept_fraction", 0.1},
         {"dense_tflops", 461.0}, {"flex_tflops", 356.0}, {"sparsejit_tflops", 250.0}}}}};
  std::ofstream(peers) << rows.dump();
  const CliResult result = report({"--peers", peers.string()});
  ASSERT_EQ(result.exit_code, 0) << result.describe();
  EXPECT_TRUE(has(result.out, "11 series, 52 points")) << result.describe();  // the block-64 row is left out
  const std::map<std::string, std::string> series = series_of(text_of(svg_));
  const std::string& flex = series.at("FlexAttention, N=32,768 H=12");
  EXPECT_TRUE(has(flex, "data-points=\"2\""));
  EXPECT_TRUE(has(flex, "stroke-dasharray=\"6 3\""));
  EXPECT_TRUE(has(flex, "density 0.500, 410 TFLOP/s"));
  EXPECT_TRUE(has(series.at("sparsejit (peers run), N=32,768 H=12"), "data-points=\"1\""));
  const std::string& dense = series.at("cuDNN dense, N=32,768 H=12");
  EXPECT_EQ(count_of(dense, "class=\"point\""), 0) << "a line, no markers";
  EXPECT_EQ(count_of(dense, "<line "), 2) << "the line and its legend entry";
}

TEST_F(ReportCliTest, ErrorsSayWhatToGive) {
  db::Database database = db::Database::open(database_);
  const std::int64_t other = database.upsert_gpu(gpu_named("NVIDIA H100 PCIe", 114));
  record(database, other, templates::default_attention_tuning_grid().front().to_string(), 1.0);
  CliResult result = report({});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_TRUE(has(result.err, "sparse_attention results of 2 GPUs: choose one with --gpu: 1 (NVIDIA H100 80GB HBM3) "
                              "2 (NVIDIA H100 PCIe)"))
      << result.describe();
  result = report({"--gpu", "2"});  // its one problem: D = 128, blocks of 128, density 1
  EXPECT_EQ(result.exit_code, 0) << result.describe();
  EXPECT_TRUE(has(result.out, "1 panel(s) (D=128), 1 series, 1 points")) << result.describe();
  result = report({"--gpu", "1", "--fine-n", "8"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_TRUE(has(result.err, "nothing to draw for blocks of 128 and fine_n 8")) << result.describe();
  result = run({"--db", (temp_ / "missing.db").string(), "report"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_TRUE(has(result.err, "missing.db")) << result.describe();
  result = run({"report", "--help"});
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_TRUE(has(result.out, "SVG") && has(result.out, "--peers") && has(result.out, "--bench")) << result.describe();
}

}  // namespace
}  // namespace sparsejit::testing
