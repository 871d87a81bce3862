// Database::read_snapshot and import_snapshot: round trips, idempotence, the merge rules of
// db/snapshot.h (GPUs by fingerprint, the faster best wins, profiles by maximum density, CUBIN
// links), and that a failed import leaves the database as it was.
#include "db/snapshot.h"

#include <gtest/gtest.h>

#include "db/tuning_file.h"
#include "tests/db/sample_records.h"
#include "tests/support/test_support.h"

namespace sparsejit::db {
namespace {

using testing::build_sample_database;
using testing::cubin_key;
using testing::h100;
using testing::h100_pcie;
using testing::ok_trial;
using testing::TempDirectory;

// The whole content of a database as its tuning file.
std::string exported(const Database& database, bool with_cubins) {
  return write_tuning_file(database.read_snapshot(with_cubins));
}

TrialRecord trial_of(std::int64_t gpu_id, const std::string& problem, const std::string& config, double ms) {
  TrialRecord trial = ok_trial(gpu_id, config, ms);
  trial.problem_key = problem;
  return trial;
}

bool nothing_changed(const ApplyCounts& counts) { return counts.added == 0 && counts.updated == 0; }

bool nothing_changed(const ImportSummary& summary) {
  return nothing_changed(summary.gpus) && nothing_changed(summary.trials) && nothing_changed(summary.best_configs) &&
         nothing_changed(summary.sparsity_profiles) && nothing_changed(summary.cubins);
}

class SnapshotTest : public ::testing::Test {
 protected:
  TempDirectory directory;
  std::filesystem::path source_file = directory / "source.db";
  std::filesystem::path target_file = directory / "target.db";
};

TEST_F(SnapshotTest, ReadsEveryTableInItsFixedOrder) {
  build_sample_database(source_file);
  const TuningSnapshot snapshot = Database::open(source_file).read_snapshot(/*with_cubins=*/true);
  ASSERT_EQ(snapshot.gpus.size(), 2u);
  EXPECT_EQ(snapshot.gpus[0].gpu.name, "NVIDIA H100 80GB HBM3");  // fingerprint order
  EXPECT_EQ(snapshot.gpus[1].gpu.name, "NVIDIA H100 PCIe");
  ASSERT_EQ(snapshot.trials.size(), 5u);
  EXPECT_EQ(snapshot.trials[0].trial.problem_key, "permute_tokens|d128|gather");
  EXPECT_EQ(snapshot.trials[0].created_at, "2025-02-01T10:00:01.000Z");
  EXPECT_EQ(snapshot.trials[0].trial.cubin_key, cubin_key(0, 1));
  EXPECT_EQ(snapshot.trials[3].trial.problem_key, "permute_tokens|d64|gather");
  EXPECT_EQ(snapshot.trials[4].gpu_fingerprint, h100_pcie().fingerprint());
  ASSERT_EQ(snapshot.best_configs.size(), 2u);
  EXPECT_EQ(snapshot.best_configs[0].best.config_json, R"({"vec":16})");
  EXPECT_EQ(snapshot.sparsity_profiles.size(), 2u);
  ASSERT_EQ(snapshot.cubins.size(), 2u);
  EXPECT_EQ(snapshot.cubins[1].binary, testing::sample_cubin(0, 2).binary);
  EXPECT_TRUE(Database::open(source_file).read_snapshot(/*with_cubins=*/false).cubins.empty());
}

TEST_F(SnapshotTest, ExportThenImportIntoAFreshDatabaseGivesTheSameRows) {
  build_sample_database(source_file);
  const Database source = Database::open(source_file);
  Database target = Database::open(target_file);
  const ImportSummary summary = target.import_snapshot(source.read_snapshot(/*with_cubins=*/true));
  EXPECT_EQ(summary.gpus.added, 2);
  EXPECT_EQ(summary.trials.added, 5);
  EXPECT_EQ(summary.best_configs.added, 2);
  EXPECT_EQ(summary.sparsity_profiles.added, 2);
  EXPECT_EQ(summary.cubins.added, 2);

  EXPECT_EQ(exported(target, true), exported(source, true));
  // Row ids are not exported: check that the best configs point at the imported trials.
  for (const BestConfig& best : target.list_best_configs()) {
    bool linked = false;
    for (const StoredTrial& trial : target.list_trials(best.gpu_id, best.family, best.problem_key))
      linked = linked || (trial.id == best.trial_id && trial.trial.config_json == best.config_json);
    EXPECT_TRUE(linked) << best.problem_key << ": trial_id " << best.trial_id;
  }
  EXPECT_EQ(target.find_cubin(cubin_key(0, 2))->binary, testing::sample_cubin(0, 2).binary);
}

TEST_F(SnapshotTest, ImportingTheSameSnapshotAgainChangesNothing) {
  build_sample_database(source_file);
  const TuningSnapshot snapshot = Database::open(source_file).read_snapshot(/*with_cubins=*/true);
  Database target = Database::open(target_file);
  target.import_snapshot(snapshot);
  const std::string first = exported(target, true);
  const ImportSummary again = target.import_snapshot(snapshot);
  EXPECT_TRUE(nothing_changed(again));
  EXPECT_EQ(again.trials.unchanged, 5);
  EXPECT_EQ(again.best_configs.unchanged, 2);
  EXPECT_EQ(exported(target, true), first);
  EXPECT_EQ(target.stats().trials, 5);
}

// Without its CUBINs an import cannot keep the trials' links (a foreign key); they appear
// when an import brings the CUBINs later.
// Source keys travel with their CUBINs; a CUBIN stored without one (schema v2) takes the
// incoming one's (counted as updated), and a keyed one keeps its own.
TEST_F(SnapshotTest, CubinsCarryTheirSourceKeysAndAKeylessOneLearnsIt) {
  const std::string source(64, 'd');
  {
    Database database = Database::open(source_file);
    for (int index : {1, 2}) {
      CubinRecord cubin = testing::sample_cubin(4, index);
      cubin.source_key = source;
      cubin.created_at = "2025-01-0" + std::to_string(index) + "T00:00:00.000Z";
      database.put_cubin(cubin);
    }
  }
  Database target = Database::open(target_file);
  CubinRecord keyless = testing::sample_cubin(4, 1);
  keyless.created_at = "2025-01-01T00:00:00.000Z";
  target.put_cubin(keyless);
  const ImportSummary summary = target.import_snapshot(Database::open(source_file).read_snapshot(true));
  EXPECT_EQ(summary.cubins.added, 1);
  EXPECT_EQ(summary.cubins.updated, 1);
  EXPECT_EQ(target.find_cubin(keyless.key)->source_key, source);
  EXPECT_EQ(target.find_cubin_by_source(source)->key, testing::sample_cubin(4, 2).key);
  EXPECT_EQ(exported(target, true), exported(Database::open(source_file), true));
  EXPECT_TRUE(nothing_changed(target.import_snapshot(Database::open(source_file).read_snapshot(true))));
}

TEST_F(SnapshotTest, TrialsLinkToCubinsOnlyWhenTheDatabaseHoldsThem) {
  build_sample_database(source_file);
  const Database source = Database::open(source_file);
  Database target = Database::open(target_file);
  target.import_snapshot(source.read_snapshot(/*with_cubins=*/false));
  for (const StoredTrial& trial : target.list_trials(TrialFilter{}))
    EXPECT_TRUE(trial.trial.cubin_key.empty()) << trial.trial.config_json;
  EXPECT_EQ(target.stats().cubins, 0);

  const ImportSummary with_cubins = target.import_snapshot(source.read_snapshot(/*with_cubins=*/true));
  EXPECT_EQ(with_cubins.cubins.added, 2);
  EXPECT_EQ(with_cubins.trials.added, 0);
  EXPECT_EQ(with_cubins.trials.updated, 2) << "the two trials with a CUBIN gain their link";
  EXPECT_EQ(exported(target, true), exported(source, true));
}

TEST_F(SnapshotTest, MergeKeepsTheFasterBestPerProblemAndUnifiesGpusByFingerprint) {
  const std::string p = "permute_tokens|P", q = "permute_tokens|Q", r = "permute_tokens|R";
  Database a = Database::open(directory / "a.db");
  const std::int64_t a_sxm = a.upsert_gpu(h100());
  a.record_trial(trial_of(a_sxm, p, R"({"x":1})", 2.0));
  a.record_trial(trial_of(a_sxm, q, R"({"q":1})", 1.0));
  Connection(Connection::open(directory / "a.db", OpenMode::read_write_create))
      .exec("UPDATE gpus SET last_seen = '2025-01-01T00:00:00.000Z'");

  Database b = Database::open(directory / "b.db");
  const std::int64_t b_pcie = b.upsert_gpu(h100_pcie());  // B numbers its GPUs the other way round
  GpuRecord newer_driver = h100();
  newer_driver.driver_version = "590.10";
  newer_driver.uuid = "GPU-other-card";
  const std::int64_t b_sxm = b.upsert_gpu(newer_driver);
  ASSERT_NE(b_sxm, a_sxm);
  b.record_trial(trial_of(b_sxm, p, R"({"y":1})", 1.5));  // faster than A's
  b.record_trial(trial_of(b_sxm, q, R"({"q":2})", 3.0));  // slower than A's
  b.record_trial(trial_of(b_sxm, r, R"({"r":1})", 0.5));  // only in B
  b.record_trial(trial_of(b_pcie, p, R"({"x":1})", 4.0));

  const ImportSummary merged = a.import_snapshot(b.read_snapshot(/*with_cubins=*/true));
  EXPECT_EQ(merged.gpus.added, 1);
  EXPECT_EQ(merged.gpus.updated, 1) << "B saw the SXM later: its metadata wins";
  EXPECT_EQ(merged.trials.added, 4);
  EXPECT_EQ(merged.best_configs.added, 2);
  EXPECT_EQ(merged.best_configs.updated, 1);
  EXPECT_EQ(merged.best_configs.unchanged, 1);

  const std::vector<StoredGpu> gpus = a.list_gpus();
  ASSERT_EQ(gpus.size(), 2u);
  EXPECT_EQ(gpus[0].id, a_sxm);
  EXPECT_EQ(gpus[0].gpu.driver_version, "590.10");
  EXPECT_EQ(gpus[0].gpu.uuid, "GPU-other-card");
  EXPECT_EQ(a.list_trials(a_sxm, "permute_tokens", p).size(), 2u) << "both measurements of P are kept";

  const std::optional<BestConfig> best_p = a.find_best(a_sxm, "permute_tokens", p);
  ASSERT_TRUE(best_p.has_value());
  EXPECT_EQ(best_p->config_json, R"({"y":1})");
  EXPECT_DOUBLE_EQ(best_p->median_ms, 1.5);
  EXPECT_EQ(best_p->trial_id, a.list_trials(a_sxm, "permute_tokens", p).back().id) << "B's trial, now in A";
  EXPECT_EQ(a.find_best(a_sxm, "permute_tokens", q)->config_json, R"({"q":1})");
  EXPECT_DOUBLE_EQ(a.find_best(a_sxm, "permute_tokens", r)->median_ms, 0.5);
  EXPECT_DOUBLE_EQ(a.find_best(gpus[1].id, "permute_tokens", p)->median_ms, 4.0);

  const std::string after_first_merge = exported(a, true);
  EXPECT_TRUE(nothing_changed(a.import_snapshot(b.read_snapshot(true)))) << "merging again changes nothing";
  EXPECT_EQ(exported(a, true), after_first_merge);

  // The other way round ends with the same best configs.
  b.import_snapshot(a.read_snapshot(true));
  const TuningSnapshot from_a = a.read_snapshot(false), from_b = b.read_snapshot(false);
  ASSERT_EQ(from_a.best_configs.size(), from_b.best_configs.size());
  for (std::size_t i = 0; i < from_a.best_configs.size(); ++i) {
    EXPECT_EQ(from_a.best_configs[i].gpu_fingerprint, from_b.best_configs[i].gpu_fingerprint);
    EXPECT_EQ(from_a.best_configs[i].best.config_json, from_b.best_configs[i].best.config_json);
    EXPECT_EQ(from_a.best_configs[i].best.median_ms, from_b.best_configs[i].best.median_ms);
  }
}

TEST_F(SnapshotTest, SparsityProfilesMergeByTheHigherDensity) {
  Database target = Database::open(target_file);
  TuningSnapshot first;
  first.sparsity_profiles = {{"wan", 12, 0, 0, 0.3, 0.95}, {"wan", 12, 0, 1, 0.2, 0.95}};
  target.import_snapshot(first);
  TuningSnapshot second;
  second.sparsity_profiles = {{"wan", 12, 0, 0, 0.1, 0.9}, {"wan", 12, 0, 1, 0.4, 0.99}, {"wan", 24, 0, 0, 0.1, 0.95}};
  const ImportSummary summary = target.import_snapshot(second);
  EXPECT_EQ(summary.sparsity_profiles.added, 1);
  EXPECT_EQ(summary.sparsity_profiles.updated, 1);
  EXPECT_EQ(summary.sparsity_profiles.unchanged, 1);
  const std::vector<SparsityProfile> profiles = target.list_sparsity_profiles();
  ASSERT_EQ(profiles.size(), 3u);
  EXPECT_DOUBLE_EQ(profiles[0].density, 0.3);  // kept: the stored density is higher
  EXPECT_DOUBLE_EQ(profiles[0].tau, 0.95);
  EXPECT_DOUBLE_EQ(profiles[1].density, 0.4);  // replaced, with its tau
  EXPECT_DOUBLE_EQ(profiles[1].tau, 0.99);
  EXPECT_EQ(profiles[2].step, 24);
}

// The last table written refuses its row: everything written before it is rolled back.
TEST_F(SnapshotTest, AnImportThatFailsHalfWayLeavesTheDatabaseAsItWas) {
  build_sample_database(source_file);
  const TuningSnapshot snapshot = Database::open(source_file).read_snapshot(/*with_cubins=*/true);
  Database target = Database::open(target_file);
  target.upsert_gpu(h100());
  Connection(Connection::open(target_file, OpenMode::read_write_create))
      .exec("CREATE TRIGGER refuse_profiles BEFORE INSERT ON sparsity_profiles "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END");
  const std::string before = exported(target, true);
  try {
    target.import_snapshot(snapshot);
    FAIL() << "the trigger must make the import fail";
  } catch (const DatabaseError& error) {
    EXPECT_NE(std::string(error.what()).find("refused by the test"), std::string::npos) << error.what();
  }
  EXPECT_EQ(exported(target, true), before);
  EXPECT_EQ(target.stats().trials, 0);
  EXPECT_EQ(target.stats().cubins, 0);
}

TEST_F(SnapshotTest, ASnapshotWithADanglingGpuOrABadRowIsRefusedBeforeAnyWrite) {
  build_sample_database(source_file);
  const TuningSnapshot good = Database::open(source_file).read_snapshot(/*with_cubins=*/true);
  Database target = Database::open(target_file);
  const auto expect_refused = [&](const TuningSnapshot& snapshot, const std::string& message) {
    try {
      target.import_snapshot(snapshot);
      ADD_FAILURE() << "expected a refusal mentioning '" << message << "'";
    } catch (const std::invalid_argument& error) {
      EXPECT_NE(std::string(error.what()).find(message), std::string::npos) << error.what();
    }
    EXPECT_EQ(target.stats().gpus, 0);
  };
  TuningSnapshot dangling = good;
  dangling.gpus.pop_back();  // the PCIe, which trials[4] and best_configs[1] name
  expect_refused(dangling, "trials[4]: GPU 'NVIDIA H100 PCIe");
  TuningSnapshot no_time = good;
  no_time.trials[1].trial.median_ms.reset();
  expect_refused(no_time, "trials[1]: an ok trial needs its median time");
  TuningSnapshot empty_binary = good;
  empty_binary.cubins[0].binary.clear();
  expect_refused(empty_binary, "cubins[0]: cubin " + cubin_key(0, 1) + ": empty binary");
  TuningSnapshot dense = good;
  dense.sparsity_profiles[1].density = 1.5;
  expect_refused(dense, "sparsity_profiles[1]: sparsity profile (model '" + dense.sparsity_profiles[1].model +
                            "', step " + std::to_string(dense.sparsity_profiles[1].step) + ", layer " +
                            std::to_string(dense.sparsity_profiles[1].layer) + ", head " +
                            std::to_string(dense.sparsity_profiles[1].head) + "): density 1.500000");
}

}  // namespace
}  // namespace sparsejit::db
