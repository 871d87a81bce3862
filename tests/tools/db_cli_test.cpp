// sparsejit db problems|best|trials|export|import|merge|diff|prune, run as a child process on
// databases built in-process (tests/db/sample_records.h): their tables and JSON, the tuning
// file round trip, idempotent import and merge, diff categories, prune with and without
// --dry-run, and refusals (newer schema, newer tuning file, garbage, a locked database) that
// leave the database as it was.
#include <gtest/gtest.h>

#include <set>

#include "db/database.h"
#include "db/sqlite.h"
#include "jit/nvrtc_compiler.h"
#include "tests/db/sample_records.h"
#include "tests/tools/cli_fixture.h"

namespace sparsejit::testing {
namespace {

const fs::path kGoldenFile = fs::path(SPARSEJIT_DB_TEST_DATA) / "sample_v1.json";
const std::string kSxm = "NVIDIA H100 80GB HBM3|cc9.0|132 SMs|85029158912 bytes";
const std::string kPcie = "NVIDIA H100 PCIe|cc9.0|114 SMs|85520809984 bytes";
const std::string kD128 = "permute_tokens|d128|gather";

std::string text_of(const fs::path& path) {
  const std::vector<char> bytes = read_bytes(path);
  return std::string(bytes.begin(), bytes.end());
}

// The counts of one table in the JSON summary of import or merge.
std::vector<std::int64_t> counts(const json& summary, const std::string& table) {
  return {summary[table].value("added", -1), summary[table].value("updated", -1),
          summary[table].value("unchanged", -1)};
}

using Counts = std::vector<std::int64_t>;

class DbCliTest : public CliTest {
 protected:
  DbCliTest() { build_sample_database(sample_); }

  // Runs `sparsejit --db <database> db <args...>`.
  CliResult db(const fs::path& database, const std::vector<std::string>& args) const {
    std::vector<std::string> all = {"--db", database.string(), "db"};
    all.insert(all.end(), args.begin(), args.end());
    return run(all);
  }

  fs::path sample_ = temp_ / "sample.db";
};

TEST_F(DbCliTest, ProblemsListsTrialCountsAndTheBestPerGpu) {
  const CliResult table = db(sample_, {"problems"});
  ASSERT_EQ(table.exit_code, 0) << table.describe();
  const std::vector<std::string> lines = lines_of(table.out);
  ASSERT_EQ(lines.size(), 5u) << table.describe();  // header, rule, three problems
  EXPECT_TRUE(has(lines[2], "1 NVIDIA H100 80GB HBM3") && has(lines[2], kD128) && has(lines[2], "1.2500") &&
              has(lines[2], R"({"vec":16})"))
      << table.describe();
  EXPECT_TRUE(has(lines[3], "(none: no trial was ok)")) << table.describe();

  const CliResult result = db(sample_, {"problems", "--json"});
  ASSERT_EQ(result.exit_code, 0) << result.describe();
  const json problems = parse_json(result);
  ASSERT_EQ(problems.size(), 3u) << result.describe();
  EXPECT_EQ(problems[0]["gpu_fingerprint"], kSxm);
  EXPECT_EQ(problems[0]["trials"], json({{"ok", 2}, {"failed", 1}, {"incorrect", 0}}));
  EXPECT_EQ(problems[0]["best"]["config_json"], R"({"vec":16})");
  EXPECT_EQ(problems[0]["best"]["median_ms"], 1.25);
  EXPECT_TRUE(problems[1]["best"].is_null());
  EXPECT_EQ(problems[1]["trials"]["incorrect"], 1);

  // --gpu takes an id or a fingerprint; --family filters.
  EXPECT_EQ(parse_json(db(sample_, {"problems", "--json", "--gpu", "2"})).size(), 1u);
  EXPECT_EQ(parse_json(db(sample_, {"problems", "--json", "--gpu", kPcie})).size(), 1u);
  EXPECT_EQ(parse_json(db(sample_, {"problems", "--json", "--family", "sparse_attention"})).size(), 0u);
  const CliResult unknown = db(sample_, {"problems", "--gpu", "7"});
  EXPECT_EQ(unknown.exit_code, 1) << unknown.describe();
  EXPECT_TRUE(has(unknown.err, "no GPU '7'") && has(unknown.err, "db gpus")) << unknown.describe();
}

TEST_F(DbCliTest, BestListsTheBestConfigsWithFilters) {
  const CliResult table = db(sample_, {"best"});
  ASSERT_EQ(table.exit_code, 0) << table.describe();
  EXPECT_EQ(lines_of(table.out).size(), 4u) << table.describe();
  EXPECT_TRUE(has(table.out, "2 NVIDIA H100 PCIe") && has(table.out, "3.0000")) << table.describe();

  const json all = parse_json(db(sample_, {"best", "--json"}));
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[1]["gpu_fingerprint"], kPcie);
  EXPECT_EQ(all[1]["config_json"], R"({"vec":8})");
  EXPECT_EQ(all[1]["updated_at"], "2025-02-01T11:00:02.000Z");
  const json sxm = parse_json(db(sample_, {"best", "--json", "--gpu", kSxm, "--family", "permute_tokens"}));
  ASSERT_EQ(sxm.size(), 1u);
  EXPECT_EQ(sxm[0]["median_ms"], 1.25);
}

TEST_F(DbCliTest, ProfilesListsEachLayerAndEveryHeadInJson) {
  const CliResult table = db(sample_, {"profiles"});
  ASSERT_EQ(table.exit_code, 0) << table.describe();
  const std::vector<std::string> lines = lines_of(table.out);
  ASSERT_EQ(lines.size(), 3u) << table.describe();  // header, rule, one (model, step, layer)
  EXPECT_TRUE(has(lines[2], "wan2.1-14b") && has(lines[2], "0.125") && has(lines[2], "0.212") &&
              has(lines[2], "0.300") && has(lines[2], "0.950"))
      << table.describe();

  const json all = parse_json(db(sample_, {"profiles", "--json"}));
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0]["model"], "wan2.1-14b");
  EXPECT_EQ(all[0]["step"], 12);
  EXPECT_EQ(all[0]["layer"], 0);
  EXPECT_EQ(all[0]["densities"], json::array({0.3, 0.125}));  // head 0, head 1

  const CliResult other = db(sample_, {"profiles", "--model", "hunyuan"});
  ASSERT_EQ(other.exit_code, 0) << other.describe();
  EXPECT_TRUE(has(other.out, "no sparsity profiles of model 'hunyuan'")) << other.describe();
  EXPECT_EQ(parse_json(db(sample_, {"profiles", "--json", "--model", "hunyuan"})).size(), 0u);
}

TEST_F(DbCliTest, TrialsListsOkAndFailedTrialsWithTheirMessages) {
  const CliResult table = db(sample_, {"trials", "--problem", kD128});
  ASSERT_EQ(table.exit_code, 0) << table.describe();
  const std::vector<std::string> lines = lines_of(table.out);
  ASSERT_EQ(lines.size(), 6u) << table.describe();  // both GPUs' four trials
  EXPECT_TRUE(has(lines[3], "*")) << "the best is marked\n" << table.describe();
  EXPECT_TRUE(has(lines[4], "failed") && has(lines[4], "CUDA_ERROR_ILLEGAL_ADDRESS...")) << table.describe();

  const json trials = parse_json(db(sample_, {"trials", "--problem", kD128, "--gpu", "1", "--json"}));
  ASSERT_EQ(trials.size(), 3u);
  EXPECT_EQ(trials[1]["best"], true);
  EXPECT_EQ(trials[1]["cubin_key"], cubin_key(0, 2));
  EXPECT_EQ(trials[2]["status"], "failed");
  EXPECT_TRUE(trials[2]["median_ms"].is_null());
  EXPECT_EQ(trials[2]["message"], "CUDA_ERROR_ILLEGAL_ADDRESS\nin permute_tokens<bf16,128>");

  const CliResult none = db(sample_, {"trials", "--problem", "nope"});
  EXPECT_EQ(none.exit_code, 0) << none.describe();
  EXPECT_TRUE(has(none.out, "no trials of problem 'nope'")) << none.describe();
  EXPECT_EQ(parse_json(db(sample_, {"trials", "--problem", "nope", "--json"})), json::array());
}

TEST_F(DbCliTest, ExportThenImportIntoANewDatabaseRoundTripsAndImportingAgainAddsNothing) {
  const fs::path file = temp_ / "export.json";
  const CliResult exported = db(sample_, {"export", "--with-cubins", "--out", file.string()});
  ASSERT_EQ(exported.exit_code, 0) << exported.describe();
  EXPECT_TRUE(has(exported.out, "wrote " + file.string()) && has(exported.out, "5 trials") &&
              has(exported.out, "2 CUBINs"))
      << exported.describe();
  EXPECT_EQ(text_of(file), text_of(kGoldenFile));

  // Without --with-cubins, on stdout: the same file less its "cubins".
  const CliResult to_stdout = db(sample_, {"export"});
  ASSERT_EQ(to_stdout.exit_code, 0) << to_stdout.describe();
  json golden = json::parse(text_of(kGoldenFile));
  golden.erase("cubins");
  EXPECT_EQ(parse_json(to_stdout), golden);

  const fs::path fresh = temp_ / "new" / "fresh.db";  // neither the file nor its directory exists
  const CliResult imported = db(fresh, {"import", file.string(), "--json"});
  ASSERT_EQ(imported.exit_code, 0) << imported.describe();
  const json summary = parse_json(imported);
  EXPECT_EQ(counts(summary, "gpus"), (Counts{2, 0, 0}));
  EXPECT_EQ(counts(summary, "trials"), (Counts{5, 0, 0}));
  EXPECT_EQ(counts(summary, "best_configs"), (Counts{2, 0, 0}));
  EXPECT_EQ(counts(summary, "sparsity_profiles"), (Counts{2, 0, 0}));
  EXPECT_EQ(counts(summary, "cubins"), (Counts{2, 0, 0}));
  const fs::path again_file = temp_ / "again.json";
  ASSERT_EQ(db(fresh, {"export", "--with-cubins", "--out", again_file.string()}).exit_code, 0);
  EXPECT_EQ(text_of(again_file), text_of(kGoldenFile));

  const CliResult again = db(fresh, {"import", file.string()});
  ASSERT_EQ(again.exit_code, 0) << again.describe();
  EXPECT_TRUE(has(again.out, "imported " + file.string() + " into " + fresh.string())) << again.describe();
  const json second = parse_json(db(fresh, {"import", file.string(), "--json"}));
  for (const char* table : {"gpus", "trials", "best_configs", "sparsity_profiles", "cubins"})
    EXPECT_EQ(counts(second, table)[0] + counts(second, table)[1], 0) << table;
  EXPECT_EQ(parse_json(db(fresh, {"stats", "--json"})).value("trials", -1), 5);
}

// A refused file leaves an existing database byte for byte as it was, and creates no new one.
TEST_F(DbCliTest, ImportRefusesANewerFormatVersionAndGarbageAndTouchesNothing) {
  json newer = json::parse(text_of(kGoldenFile));
  newer["version"] = 2;
  const fs::path newer_file = temp_ / "newer.json";
  write_bytes(newer_file, [&] {
    const std::string text = newer.dump();
    return std::vector<char>(text.begin(), text.end());
  }());
  const fs::path garbage_file = temp_ / "garbage.json";
  write_bytes(garbage_file, {'\x7f', 'E', 'L', 'F', 0, 1});
  json dangling = json::parse(text_of(kGoldenFile));
  dangling["gpus"].erase(1);  // trials[4] names the PCIe
  const fs::path dangling_file = temp_ / "dangling.json";
  write_bytes(dangling_file, [&] {
    const std::string text = dangling.dump();
    return std::vector<char>(text.begin(), text.end());
  }());

  const fs::path target = temp_ / "target.db";
  ASSERT_EQ(db(target, {"import", kGoldenFile.string()}).exit_code, 0);  // a database with rows
  const std::vector<char> before = read_bytes(target);
  const fs::path never_created = temp_ / "never.db";
  const std::vector<std::pair<fs::path, std::string>> cases = {
      {newer_file, "tuning file format version 2 is newer than this sparsejit reads (1); upgrade sparsejit"},
      {garbage_file, "not a sparsejit tuning file: the text is not JSON"},
      {dangling_file, "trials[4]: GPU '" + kPcie + "' is not among the GPUs"},
      {temp_ / "missing.json", "cannot read " + (temp_ / "missing.json").string()}};
  for (const auto& [file, message] : cases) {
    SCOPED_TRACE(file.string());
    for (const fs::path& database : {target, never_created}) {
      const CliResult result = db(database, {"import", file.string()});
      EXPECT_EQ(result.exit_code, 1) << result.describe();
      EXPECT_TRUE(result.out.empty()) << result.describe();
      EXPECT_TRUE(has(result.err, message)) << "expected '" << message << "'\n" << result.describe();
      EXPECT_EQ(lines_of(result.err).size(), 1u) << result.describe();
    }
    EXPECT_EQ(read_bytes(target), before);
    EXPECT_FALSE(fs::exists(never_created));
  }
}

TEST_F(DbCliTest, MergeKeepsTheFasterBestUnifiesGpusAndIsIdempotent) {
  // Another machine's database: the SXM (recorded first there, so its id is 1 of 1) with a
  // faster d128 config, and a problem the sample lacks.
  const fs::path other = temp_ / "other.db";
  {
    db::Database database = db::Database::open(other);
    GpuRecord sxm = h100();
    sxm.driver_version = "590.10";
    const std::int64_t gpu = database.upsert_gpu(sxm);
    database.record_trial(ok_trial(gpu, R"({"vec":32})", 1.0));
    TrialRecord d64 = ok_trial(gpu, R"({"vec":4})", 0.5);
    d64.problem_key = "permute_tokens|d64|gather";
    database.record_trial(d64);
  }
  const CliResult merged = db(sample_, {"merge", other.string(), "--json"});
  ASSERT_EQ(merged.exit_code, 0) << merged.describe();
  const json summary = parse_json(merged);
  EXPECT_EQ(counts(summary, "gpus"), (Counts{0, 1, 0})) << "the SXM is one GPU, seen later in OTHER";
  EXPECT_EQ(counts(summary, "trials"), (Counts{2, 0, 0}));
  EXPECT_EQ(counts(summary, "best_configs"), (Counts{1, 1, 0}));

  const json gpus = parse_json(db(sample_, {"gpus", "--json"}));
  ASSERT_EQ(gpus.size(), 2u);
  EXPECT_EQ(gpus[0]["driver_version"], "590.10");
  const json best = parse_json(db(sample_, {"best", "--json", "--gpu", kSxm}));
  ASSERT_EQ(best.size(), 2u);
  EXPECT_EQ(best[0]["problem_key"], kD128);
  EXPECT_EQ(best[0]["config_json"], R"({"vec":32})");
  EXPECT_EQ(best[0]["median_ms"], 1.0);
  EXPECT_EQ(best[1]["config_json"], R"({"vec":4})");

  const CliResult again = db(sample_, {"merge", other.string()});
  ASSERT_EQ(again.exit_code, 0) << again.describe();
  EXPECT_TRUE(has(again.out, "merged " + other.string() + " into " + sample_.string())) << again.describe();
  EXPECT_TRUE(has(again.out, "trials             0      0        2")) << again.describe();
  EXPECT_EQ(parse_json(db(sample_, {"stats", "--json"})).value("trials", -1), 7);

  const CliResult itself = db(sample_, {"merge", sample_.string()});
  EXPECT_EQ(itself.exit_code, 1) << itself.describe();
  EXPECT_TRUE(has(itself.err, "is the database itself")) << itself.describe();

  // Merging into a database that does not exist yet creates it as a copy.
  const fs::path copy = temp_ / "copy.db";
  ASSERT_EQ(db(copy, {"merge", sample_.string()}).exit_code, 0);
  const json same = parse_json(run({"db", "diff", sample_.string(), copy.string(), "--json"}));
  EXPECT_EQ(same["summary"]["same"], 3) << same.dump(2);
}

TEST_F(DbCliTest, DiffReportsEachCategoryWithTimesAndRatiosAndExitsZero) {
  // B: the sample with the SXM's d128 best made slower by another config, the PCIe's removed,
  // and a new problem.
  const fs::path b = temp_ / "b.db";
  {
    db::Database database = db::Database::open(b);
    const std::int64_t gpu = database.upsert_gpu(h100());
    database.record_trial(ok_trial(gpu, R"({"vec":64})", 2.5));
    TrialRecord d256 = ok_trial(gpu, R"({"vec":8})", 4.0);
    d256.problem_key = "permute_tokens|d256|gather";
    database.record_trial(d256);
  }
  const CliResult result = run({"db", "diff", sample_.string(), b.string(), "--json"});
  ASSERT_EQ(result.exit_code, 0) << "diff is a report: it exits 0 when the databases differ\n" << result.describe();
  const json report = parse_json(result);
  EXPECT_EQ(report["a"], sample_.string());
  EXPECT_EQ(report["b"], b.string());
  EXPECT_EQ(report["summary"], json({{"only_in_a", 1}, {"only_in_b", 1}, {"different", 1}, {"same", 0}}));
  const json& problems = report["problems"];
  ASSERT_EQ(problems.size(), 3u) << result.describe();
  EXPECT_EQ(problems[0]["comparison"], "different");
  EXPECT_EQ(problems[0]["gpu_fingerprint"], kSxm);
  EXPECT_EQ(problems[0]["a"], json({{"config_json", R"({"vec":16})"}, {"median_ms", 1.25}}));
  EXPECT_EQ(problems[0]["b"], json({{"config_json", R"({"vec":64})"}, {"median_ms", 2.5}}));
  EXPECT_EQ(problems[0]["b_over_a"], 2.0);
  EXPECT_EQ(problems[1]["comparison"], "only_in_b");
  EXPECT_EQ(problems[1]["problem_key"], "permute_tokens|d256|gather");
  EXPECT_TRUE(problems[1]["a"].is_null() && problems[1]["b_over_a"].is_null());
  EXPECT_EQ(problems[2]["comparison"], "only_in_a");
  EXPECT_EQ(problems[2]["gpu_fingerprint"], kPcie);

  // With one database, A is --db; the table ends with the counts.
  const CliResult table = db(b, {"diff", sample_.string()});
  ASSERT_EQ(table.exit_code, 0) << table.describe();
  const std::vector<std::string> lines = lines_of(table.out);
  ASSERT_EQ(lines.size(), 8u) << table.describe();
  EXPECT_EQ(lines[0], "A  " + b.string());
  EXPECT_EQ(lines[1], "B  " + sample_.string());
  EXPECT_TRUE(has(lines[4], "different") && has(lines[4], "2.5000") && has(lines[4], "1.2500") &&
              has(lines[4], "0.500"))
      << table.describe();
  EXPECT_EQ(lines[7], "3 problems with a best config: 1 only in A, 1 only in B, 1 with different configs, 0 the same");
}

TEST_F(DbCliTest, PruneDryRunShowsWhatWouldGoThenPruneRemovesItAndKeepsTrials) {
  // The sample's CUBINs carry another NVRTC's version; add this NVRTC's binaries of the
  // SXM's d128 trials: the best's (kept) and the loser's (pruned), 1 MiB each.
  const std::string nvrtc = jit::nvrtc_version().to_string();
  {
    db::Database database = db::Database::open(sample_);
    const std::int64_t gpu = database.list_gpus()[0].id;
    for (const auto& [index, config, ms] : {std::tuple{11, R"({"vec":8})", 2.0}, {12, R"({"vec":16})", 1.25}}) {
      CubinRecord cubin = sample_cubin(1, index);
      cubin.nvrtc_version = nvrtc;
      cubin.binary.assign(1 << 20, static_cast<std::uint8_t>(index));
      database.put_cubin(cubin);
      TrialRecord trial = ok_trial(gpu, config, ms);
      trial.cubin_key = cubin.key;
      database.record_trial(trial);  // the same times: the best stays {"vec":16}
    }
  }
  const std::vector<char> before = read_bytes(sample_);
  const CliResult dry = db(sample_, {"prune", "--dry-run", "--json"});
  ASSERT_EQ(dry.exit_code, 0) << dry.describe();
  const json plan = parse_json(dry);
  EXPECT_EQ(plan["dry_run"], true);
  EXPECT_EQ(plan["nvrtc_version"], nvrtc);
  ASSERT_EQ(plan["cubins"].size(), 3u) << dry.describe();
  std::set<std::pair<std::string, std::string>> planned;
  for (const json& cubin : plan["cubins"])
    planned.emplace(cubin["key"].get<std::string>(), cubin["reason"].get<std::string>());
  EXPECT_EQ(planned, (std::set<std::pair<std::string, std::string>>{
                         {cubin_key(0, 1), "other_nvrtc"},
                         {cubin_key(0, 2), "other_nvrtc"},
                         {cubin_key(1, 11), "not_needed_by_best_configs"}}));
  EXPECT_EQ(plan["binary_bytes"], 17 + 18 + (1 << 20));
  EXPECT_EQ(read_bytes(sample_), before) << "a dry run changes nothing";
  const CliResult dry_table = db(sample_, {"prune", "--dry-run"});
  EXPECT_TRUE(has(dry_table.out, "dry run: would remove 3 CUBINs (1.0 MiB)")) << dry_table.describe();
  EXPECT_TRUE(has(dry_table.out, "no best config uses it") && has(dry_table.out, "other NVRTC"))
      << dry_table.describe();

  const CliResult pruned = db(sample_, {"prune"});
  ASSERT_EQ(pruned.exit_code, 0) << pruned.describe();
  EXPECT_TRUE(has(pruned.out, "removed 3 CUBINs (1.0 MiB)") && has(pruned.out, "trials stay")) << pruned.describe();
  const json cubins = parse_json(db(sample_, {"cubins", "--json"}));
  ASSERT_EQ(cubins.size(), 1u);
  EXPECT_EQ(cubins[0]["key"], cubin_key(1, 12));
  EXPECT_EQ(parse_json(db(sample_, {"stats", "--json"})).value("trials", -1), 7);
  EXPECT_LT(fs::file_size(sample_), before.size() - (1 << 20) / 2) << "VACUUM gave the space back";
  const json nothing_left = parse_json(db(sample_, {"prune", "--json"}));
  EXPECT_EQ(nothing_left["cubins"].size(), 0u);
}

// A database written by a newer sparsejit is refused by every command, and left as it was.
TEST_F(DbCliTest, EveryCommandRefusesANewerSchemaAndLeavesItUntouched) {
  db::Connection(db::Connection::open(sample_, db::OpenMode::read_write_create))
      .exec("UPDATE meta SET value = '99' WHERE key = 'schema_version'");
  const std::vector<char> before = read_bytes(sample_);
  const fs::path other = temp_ / "other.db";
  create_database(other);
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--db", sample_.string(), "db", "problems"},
        {"--db", sample_.string(), "db", "best"},
        {"--db", sample_.string(), "db", "trials", "--problem", kD128},
        {"--db", sample_.string(), "db", "export"},
        {"--db", sample_.string(), "db", "import", kGoldenFile.string()},
        {"--db", sample_.string(), "db", "merge", other.string()},
        {"--db", other.string(), "db", "merge", sample_.string()},
        {"db", "diff", other.string(), sample_.string()},
        {"--db", sample_.string(), "db", "prune"}}) {
    const CliResult result = run(args);
    SCOPED_TRACE(args.back());
    EXPECT_EQ(result.exit_code, 1) << result.describe();
    EXPECT_TRUE(has(result.err, sample_.string() + ": schema version 99 is newer than this sparsejit understands"))
        << result.describe();
    EXPECT_EQ(read_bytes(sample_), before);
  }
}

// A SQLite file whose pages are damaged (the header intact): every command says so and
// what to do, without crashing.
TEST_F(DbCliTest, EveryCommandNamesADamagedDatabase) {
  std::vector<char> bytes = read_bytes(sample_);
  ASSERT_GT(bytes.size(), 8192u);
  for (std::size_t i = 4096; i < 8192; ++i) bytes[i] = static_cast<char>(0xA5 ^ i);  // page 2 onwards
  write_bytes(sample_, bytes);
  for (const std::vector<std::string>& command :
       {std::vector<std::string>{"problems"}, {"best"}, {"trials", "--problem", kD128}, {"export"},
        {"import", kGoldenFile.string()}, {"prune"}, {"diff", sample_.string()}}) {
    const CliResult result = db(sample_, command);
    SCOPED_TRACE(command.front());
    EXPECT_EQ(result.exit_code, 1) << result.describe();
    EXPECT_TRUE(has(result.err, sample_.string() + ": ") && has(result.err, "malformed") &&
                has(result.err, "the file is damaged: restore it from a backup"))
        << result.describe();
  }
}

// Another process holds the write lock past the busy timeout (5 s): the write fails, says why,
// and writes nothing.
TEST_F(DbCliTest, AnImportIntoALockedDatabaseSaysSoAndChangesNothing) {
  const fs::path target = temp_ / "locked.db";
  create_database(target);
  db::Connection holder = db::Connection::open(target, db::OpenMode::read_write_create);
  holder.exec("BEGIN IMMEDIATE");
  const CliResult result = db(target, {"import", kGoldenFile.string()});
  EXPECT_EQ(result.exit_code, 1) << result.describe();
  EXPECT_TRUE(has(result.err, "the database is locked") && has(result.err, "another process holds it"))
      << result.describe();
  holder.exec("ROLLBACK");
  EXPECT_EQ(parse_json(db(target, {"stats", "--json"})).value("gpus", -1), 0);
}

}  // namespace
}  // namespace sparsejit::testing
