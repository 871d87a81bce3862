#include "db/database.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>

#include "db/schema.h"
#include "tests/db/sample_records.h"
#include "tests/support/test_support.h"

namespace sparsejit::db {
namespace {

using testing::cubin_key;
using testing::h100;
using testing::ok_trial;
using testing::sample_cubin;
using testing::TempDirectory;

class DatabaseTest : public ::testing::Test {
 protected:
  TempDirectory directory;
  std::filesystem::path file = directory / "tuning.db";
};

TEST_F(DatabaseTest, StoresCubinsAndGpusAcrossReopening) {
  const CubinRecord first = sample_cubin(0, 1);
  const CubinRecord second = sample_cubin(0, 2);
  {
    Database database = Database::open(file);
    EXPECT_EQ(database.path(), file);
    EXPECT_EQ(database.schema_version(), kCurrentSchemaVersion);
    database.put_cubin(first);
    database.put_cubin(second);
    database.upsert_gpu(h100());
  }

  Database database = Database::open(file);
  const std::optional<CubinRecord> found = database.find_cubin(first.key);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->key, first.key);
  EXPECT_EQ(found->family, first.family);
  EXPECT_EQ(found->target, first.target);
  EXPECT_EQ(found->nvrtc_version, first.nvrtc_version);
  EXPECT_EQ(found->specialization, first.specialization);
  EXPECT_EQ(found->lowered_names_json, first.lowered_names_json);
  EXPECT_EQ(found->binary, first.binary);
  EXPECT_EQ(found->compile_ms, first.compile_ms);
  EXPECT_EQ(found->created_at.size(), std::string("2025-01-31T12:00:00.123Z").size()) << found->created_at;
  EXPECT_FALSE(database.find_cubin(cubin_key(9, 9)).has_value());

  const std::vector<CubinSummary> cubins = database.list_cubins();
  ASSERT_EQ(cubins.size(), 2u);
  EXPECT_EQ(cubins[0].key, first.key);
  EXPECT_EQ(cubins[0].binary_bytes, static_cast<std::int64_t>(first.binary.size()));
  EXPECT_EQ(cubins[1].key, second.key);
  EXPECT_EQ(cubins[1].specialization, second.specialization);

  const std::vector<StoredGpu> gpus = database.list_gpus();
  ASSERT_EQ(gpus.size(), 1u);
  EXPECT_EQ(gpus[0].gpu.fingerprint(), h100().fingerprint());
  EXPECT_EQ(gpus[0].gpu.uuid, "GPU-1b2c");
  EXPECT_EQ(gpus[0].gpu.memory_clock_khz, 2619000);
  EXPECT_FALSE(gpus[0].first_seen.empty());

  const DatabaseStats stats = database.stats();
  EXPECT_EQ(stats.schema_version, kCurrentSchemaVersion);
  EXPECT_EQ(stats.gpus, 1);
  EXPECT_EQ(stats.cubins, 2);
  EXPECT_EQ(stats.cubin_bytes, static_cast<std::int64_t>(first.binary.size() + second.binary.size()));
  EXPECT_EQ(stats.trials, 0);
  EXPECT_EQ(stats.best_configs, 0);
  EXPECT_EQ(stats.sparsity_profiles, 0);
  EXPECT_GT(stats.file_bytes, 0);
}

TEST_F(DatabaseTest, PutCubinReplacesTheRowWithTheSameKey) {
  Database database = Database::open(file);
  CubinRecord cubin = sample_cubin(1, 1);
  cubin.created_at = "2025-01-01T00:00:00.000Z";
  database.put_cubin(cubin);
  cubin.binary = {1, 2, 3};
  cubin.compile_ms = 99;
  database.put_cubin(cubin);

  EXPECT_EQ(database.list_cubins().size(), 1u);
  const std::optional<CubinRecord> found = database.find_cubin(cubin.key);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->binary, (std::vector<std::uint8_t>{1, 2, 3}));
  EXPECT_EQ(found->compile_ms, 99);
  EXPECT_EQ(found->created_at, "2025-01-01T00:00:00.000Z");
}

// The source key: stored with the CUBIN, kept when a replacement does not carry one, the way
// find_cubin_by_source finds it (the newest of a source), and learned by a keyless row.
TEST_F(DatabaseTest, CubinsAreFoundByTheirSourceKey) {
  Database database = Database::open(file);
  const std::string source = cubin_key(7, 7);
  CubinRecord older = sample_cubin(1, 1);
  older.source_key = source;
  older.created_at = "2025-01-01T00:00:00.000Z";
  CubinRecord newer = sample_cubin(1, 2);
  newer.source_key = source;
  newer.created_at = "2025-02-01T00:00:00.000Z";
  CubinRecord keyless = sample_cubin(1, 3);
  keyless.created_at = "2025-03-01T00:00:00.000Z";
  for (const CubinRecord& cubin : {older, newer, keyless}) database.put_cubin(cubin);

  std::optional<CubinRecord> found = database.find_cubin_by_source(source);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->key, newer.key);
  EXPECT_EQ(found->source_key, source);
  EXPECT_EQ(found->binary, newer.binary);
  EXPECT_EQ(database.find_cubin(older.key)->source_key, source);
  EXPECT_EQ(database.find_cubin(keyless.key)->source_key, "");
  EXPECT_FALSE(database.find_cubin_by_source(cubin_key(8, 8)).has_value());

  CubinRecord replacement = newer;  // a put without a source key keeps the stored one
  replacement.source_key.clear();
  replacement.binary = {9, 9};
  database.put_cubin(replacement);
  EXPECT_EQ(database.find_cubin(newer.key)->source_key, source);
  EXPECT_EQ(database.find_cubin_by_source(source)->binary, (std::vector<std::uint8_t>{9, 9}));

  // A keyless row learns its source key once; a keyed row keeps its own.
  EXPECT_TRUE(database.record_cubin_source_key(keyless.key, source));
  EXPECT_FALSE(database.record_cubin_source_key(keyless.key, cubin_key(8, 8)));
  EXPECT_FALSE(database.record_cubin_source_key(older.key, cubin_key(8, 8)));
  EXPECT_EQ(database.find_cubin_by_source(source)->key, keyless.key) << "now the newest of the source";
  EXPECT_EQ(database.list_cubins()[2].source_key, source);
  EXPECT_THROW(database.record_cubin_source_key(keyless.key, "not hex"), std::invalid_argument);
}

TEST_F(DatabaseTest, PutCubinRejectsMalformedRecords) {
  Database database = Database::open(file);
  const auto expect_rejected = [&](CubinRecord cubin) {
    EXPECT_THROW(database.put_cubin(cubin), std::invalid_argument) << cubin.key;
  };
  CubinRecord cubin = sample_cubin(1, 1);
  cubin.key = "abc";
  expect_rejected(cubin);
  cubin.key = std::string(64, 'A');  // upper case is not the canonical form
  expect_rejected(cubin);
  cubin = sample_cubin(1, 1);
  cubin.lowered_names_json = "not json";
  expect_rejected(cubin);
  cubin.lowered_names_json = R"({"k": 1})";
  expect_rejected(cubin);
  cubin = sample_cubin(1, 1);
  cubin.binary.clear();
  expect_rejected(cubin);
  cubin = sample_cubin(1, 1);
  cubin.source_key = "abc";  // a source key, when given, is a SHA-256 too
  expect_rejected(cubin);
  EXPECT_TRUE(database.list_cubins().empty());
}

TEST_F(DatabaseTest, UpsertGpuKeepsOneRowPerFingerprint) {
  Database database = Database::open(file);
  const std::int64_t id = database.upsert_gpu(h100());

  GpuRecord new_driver = h100();
  new_driver.driver_version = "590.10";
  new_driver.uuid = "GPU-other-card";
  new_driver.sm_clock_khz = 1755000;
  EXPECT_EQ(new_driver.fingerprint(), h100().fingerprint()) << "driver, uuid and clocks are metadata";
  EXPECT_EQ(database.upsert_gpu(new_driver), id);

  std::vector<StoredGpu> gpus = database.list_gpus();
  ASSERT_EQ(gpus.size(), 1u);
  EXPECT_EQ(gpus[0].id, id);
  EXPECT_EQ(gpus[0].gpu.driver_version, "590.10");
  EXPECT_EQ(gpus[0].gpu.uuid, "GPU-other-card");
  EXPECT_EQ(gpus[0].gpu.sm_clock_khz, 1755000);
  EXPECT_GE(gpus[0].last_seen, gpus[0].first_seen);

  GpuRecord fewer_sms = h100();
  fewer_sms.sm_count = 114;  // the PCIe H100
  EXPECT_NE(fewer_sms.fingerprint(), h100().fingerprint());
  const std::int64_t other = database.upsert_gpu(fewer_sms);
  EXPECT_NE(other, id);
  gpus = database.list_gpus();
  ASSERT_EQ(gpus.size(), 2u);
  EXPECT_EQ(gpus[1].id, other);
  EXPECT_EQ(gpus[1].gpu.sm_count, 114);
}

TEST_F(DatabaseTest, RecordTrialKeepsEveryTrialAndTheFastestAsBest) {
  Database database = Database::open(file);
  const std::int64_t gpu = database.upsert_gpu(h100());
  const std::int64_t slow = database.record_trial(ok_trial(gpu, R"({"vec":8})", 2.0));
  const std::int64_t fast = database.record_trial(ok_trial(gpu, R"({"vec":16})", 1.0));
  database.record_trial(ok_trial(gpu, R"({"vec":4})", 3.0));  // slower: best stays
  TrialRecord failed = ok_trial(gpu, R"({"vec":2})", 0.0);
  failed.status = TrialStatus::failed;
  failed.median_ms.reset();
  failed.message = "CUDA_ERROR_ILLEGAL_ADDRESS";
  database.record_trial(failed);  // failed trials never become best, however "fast"

  const std::vector<StoredTrial> trials =
      database.list_trials(gpu, "permute_tokens", "permute_tokens|d128|gather");
  ASSERT_EQ(trials.size(), 4u);
  EXPECT_EQ(trials[0].id, slow);
  EXPECT_EQ(trials[3].trial.status, TrialStatus::failed);
  EXPECT_FALSE(trials[3].trial.median_ms.has_value());
  EXPECT_EQ(trials[3].trial.message, "CUDA_ERROR_ILLEGAL_ADDRESS");
  EXPECT_DOUBLE_EQ(*trials[1].trial.p80_ms, 1.01);

  const std::optional<BestConfig> best =
      database.find_best(gpu, "permute_tokens", "permute_tokens|d128|gather");
  ASSERT_TRUE(best.has_value());
  EXPECT_EQ(best->config_json, R"({"vec":16})");
  EXPECT_DOUBLE_EQ(best->median_ms, 1.0);
  EXPECT_EQ(best->trial_id, fast);
  EXPECT_FALSE(database.find_best(gpu, "permute_tokens", "permute_tokens|d64|gather").has_value());
  EXPECT_EQ(database.list_best_configs().size(), 1u);
  EXPECT_EQ(database.stats().trials, 4);
  EXPECT_EQ(database.stats().best_configs, 1);
}

// Two GPUs, three problems: one with a best, one whose only trial failed, one on the other GPU.
TEST_F(DatabaseTest, ListProblemsCountsTrialsByStatusAndShowsTheBest) {
  Database database = Database::open(file);
  const std::int64_t first = database.upsert_gpu(h100());
  GpuRecord pcie = h100();
  pcie.sm_count = 114;
  const std::int64_t second = database.upsert_gpu(pcie);
  database.record_trial(ok_trial(first, R"({"vec":8})", 2.0));
  const std::int64_t fast = database.record_trial(ok_trial(first, R"({"vec":16})", 1.0));
  TrialRecord incorrect = ok_trial(first, R"({"vec":4})", 0.5);
  incorrect.status = TrialStatus::incorrect;
  database.record_trial(incorrect);
  TrialRecord failed = ok_trial(first, R"({"vec":2})", 0);
  failed.problem_key = "permute_tokens|d64|gather";
  failed.status = TrialStatus::failed;
  failed.median_ms.reset();
  database.record_trial(failed);
  database.record_trial(ok_trial(second, R"({"vec":8})", 3.0));

  const std::vector<ProblemSummary> problems = database.list_problems();
  ASSERT_EQ(problems.size(), 3u);
  EXPECT_EQ(problems[0].gpu_id, first);
  EXPECT_EQ(problems[0].problem_key, "permute_tokens|d128|gather");
  EXPECT_EQ(problems[0].ok_trials, 2);
  EXPECT_EQ(problems[0].incorrect_trials, 1);
  EXPECT_EQ(problems[0].failed_trials, 0);
  ASSERT_TRUE(problems[0].best.has_value());
  EXPECT_EQ(problems[0].best->config_json, R"({"vec":16})");
  EXPECT_EQ(problems[0].best->trial_id, fast);
  EXPECT_EQ(problems[1].problem_key, "permute_tokens|d64|gather");
  EXPECT_EQ(problems[1].failed_trials, 1);
  EXPECT_FALSE(problems[1].best.has_value()) << "a problem whose trials all failed has no best";
  EXPECT_EQ(problems[2].gpu_id, second);
  ASSERT_TRUE(problems[2].best.has_value());
  EXPECT_DOUBLE_EQ(problems[2].best->median_ms, 3.0);

  EXPECT_EQ(database.list_trials(TrialFilter{}).size(), 5u);
  EXPECT_EQ(database.list_trials(TrialFilter{.gpu_id = second}).size(), 1u);
  EXPECT_EQ(database.list_trials(TrialFilter{.problem_key = "permute_tokens|d128|gather"}).size(), 4u);
  EXPECT_EQ(database.list_trials(TrialFilter{.gpu_id = first, .problem_key = "permute_tokens|d128|gather"}).size(),
            3u);
  EXPECT_TRUE(database.list_trials(TrialFilter{.family = "sparse_attention"}).empty());
}

TEST_F(DatabaseTest, ListSparsityProfilesInKeyOrder) {
  {
    Database database = Database::open(file);  // creates the schema; nothing writes profiles yet
  }
  Connection connection = Connection::open(file, OpenMode::read_write_create);
  connection.exec("INSERT INTO sparsity_profiles (model, step, layer, head, density, tau) VALUES "
                  "('wan2.1-14b', 12, 3, 0, 0.25, 0.95), ('wan2.1-14b', 12, 1, 7, 0.5, 0.95), "
                  "('cogvideox-5b', 0, 0, 0, 1.0, 0.9)");
  const std::vector<SparsityProfile> profiles = Database::open(file).list_sparsity_profiles();
  ASSERT_EQ(profiles.size(), 3u);
  EXPECT_EQ(profiles[0].model, "cogvideox-5b");
  EXPECT_EQ(profiles[1].layer, 1);
  EXPECT_EQ(profiles[1].head, 7);
  EXPECT_DOUBLE_EQ(profiles[1].density, 0.5);
  EXPECT_EQ(profiles[2].layer, 3);
  EXPECT_DOUBLE_EQ(profiles[2].tau, 0.95);
}

SparsityProfile profile_row(const std::string& model, int step, int layer, int head, double density) {
  return {.model = model, .step = step, .layer = layer, .head = head, .density = density, .tau = 0.95};
}

// A rerun replaces every head of the (model, step, layer) keys it writes (a head it no longer
// has goes too) and keeps the model's other keys and other models.
TEST_F(DatabaseTest, ReplaceSparsityProfilesReplacesTheKeysItWrites) {
  Database database = Database::open(file);
  database.replace_sparsity_profiles({profile_row("wan", 0, 0, 0, 0.5), profile_row("wan", 0, 0, 1, 0.25),
                                      profile_row("wan", 0, 0, 2, 0.125), profile_row("wan", 10, 0, 0, 0.75),
                                      profile_row("cog", 0, 0, 0, 1.0)});
  database.replace_sparsity_profiles({profile_row("wan", 0, 0, 0, 0.0625), profile_row("wan", 0, 0, 1, 1.0)});
  const std::vector<SparsityProfile> wan = database.list_sparsity_profiles("wan");
  ASSERT_EQ(wan.size(), 3u);
  EXPECT_EQ(wan[0].step, 0);
  EXPECT_DOUBLE_EQ(wan[0].density, 0.0625);
  EXPECT_EQ(wan[1].head, 1);
  EXPECT_DOUBLE_EQ(wan[1].density, 1.0);
  EXPECT_EQ(wan[2].step, 10);  // another step of the model: kept
  EXPECT_DOUBLE_EQ(wan[2].density, 0.75);
  EXPECT_EQ(database.list_sparsity_profiles("cog").size(), 1u);
  EXPECT_TRUE(database.list_sparsity_profiles("nope").empty());
}

TEST_F(DatabaseTest, ReplaceSparsityProfilesRefusesBadRowsBeforeWriting) {
  Database database = Database::open(file);
  database.replace_sparsity_profiles({profile_row("wan", 0, 0, 0, 0.5)});
  const struct {
    SparsityProfile bad;
    std::string words;
  } cases[] = {{profile_row("", 0, 0, 0, 0.5), "model name is empty"},
               {profile_row("wan", -1, 0, 0, 0.5), "must not be negative"},
               {profile_row("wan", 0, 0, 1, 0.0), "must lie in (0, 1]"},
               {profile_row("wan", 0, 0, 1, 1.5), "must lie in (0, 1]"},
               {profile_row("wan", 0, 0, 0, 0.25), "given twice"}};
  for (const auto& [bad, words] : cases) {
    try {
      database.replace_sparsity_profiles({profile_row("wan", 0, 0, 0, 0.25), bad});
      ADD_FAILURE() << "expected a refusal mentioning '" << words << "'";
    } catch (const std::invalid_argument& error) {
      EXPECT_NE(std::string(error.what()).find(words), std::string::npos) << error.what();
    }
    const std::vector<SparsityProfile> stored = database.list_sparsity_profiles("wan");
    ASSERT_EQ(stored.size(), 1u) << words;
    EXPECT_DOUBLE_EQ(stored[0].density, 0.5) << "nothing was written for: " << words;
  }
}

// One transaction: an insert that SQLite refuses half way (a trigger stands for any failure)
// leaves the stored rows as they were, the deleted ones included.
TEST_F(DatabaseTest, ReplaceSparsityProfilesIsOneTransaction) {
  Database database = Database::open(file);
  database.replace_sparsity_profiles({profile_row("wan", 0, 0, 0, 0.5), profile_row("wan", 0, 0, 1, 0.25)});
  {
    Connection connection = Connection::open(file, OpenMode::read_write_create);
    connection.exec("CREATE TRIGGER refuse_head_3 BEFORE INSERT ON sparsity_profiles WHEN NEW.head = 3 "
                    "BEGIN SELECT RAISE(ABORT, 'head 3 refused'); END");
  }
  EXPECT_THROW(database.replace_sparsity_profiles({profile_row("wan", 0, 0, 0, 1.0), profile_row("wan", 0, 0, 1, 1.0),
                                                   profile_row("wan", 0, 0, 3, 1.0)}),
               DatabaseError);
  const std::vector<SparsityProfile> stored = database.list_sparsity_profiles("wan");
  ASSERT_EQ(stored.size(), 2u);
  EXPECT_DOUBLE_EQ(stored[0].density, 0.5);
  EXPECT_DOUBLE_EQ(stored[1].density, 0.25);
}

TEST_F(DatabaseTest, RecordTrialRejectsAnOkTrialWithoutATime) {
  Database database = Database::open(file);
  TrialRecord trial = ok_trial(database.upsert_gpu(h100()), "{}", 1.0);
  trial.median_ms.reset();
  EXPECT_THROW(database.record_trial(trial), std::invalid_argument);
  EXPECT_EQ(database.stats().trials, 0);
}

TEST_F(DatabaseTest, CreatesMissingParentDirectories) {
  const std::filesystem::path nested = directory / "cache/sparsejit/tuning.db";
  EXPECT_EQ(Database::open(nested).schema_version(), kCurrentSchemaVersion);
  EXPECT_TRUE(std::filesystem::is_regular_file(nested));
}

TEST_F(DatabaseTest, ReadOnlyOpenOfAMissingFileSaysSoAndCreatesNothing) {
  try {
    Database::open(file, {.read_only = true});
    FAIL() << "a read-only open of a missing file must throw";
  } catch (const DatabaseError& error) {
    EXPECT_EQ(error.kind(), DatabaseError::Kind::io);
    EXPECT_NE(std::string(error.what()).find(file.string() + ": cannot open the database read-only: "
                                                             "the file does not exist"),
              std::string::npos)
        << error.what();
  }
  EXPECT_FALSE(std::filesystem::exists(file));
}

TEST_F(DatabaseTest, ReadOnlyOpenReadsButCannotWrite) {
  { Database::open(file).put_cubin(sample_cubin(0, 0)); }
  Database database = Database::open(file, {.read_only = true});
  EXPECT_EQ(database.list_cubins().size(), 1u);
  try {
    database.put_cubin(sample_cubin(0, 1));
    FAIL() << "a read-only database must refuse writes";
  } catch (const DatabaseError& error) {
    EXPECT_EQ(error.kind(), DatabaseError::Kind::io) << error.what();
  }
}

TEST_F(DatabaseTest, WriterFailsWithLockedWhileAnotherConnectionHoldsTheWriteLock) {
  { Database::open(file); }
  Database writer = Database::open(file, {.busy_timeout_ms = 100});

  Connection holder = Connection::open(file, OpenMode::read_write_create);
  holder.exec("BEGIN IMMEDIATE");
  try {
    writer.put_cubin(sample_cubin(0, 0));
    FAIL() << "put_cubin must give up while the write lock is held";
  } catch (const DatabaseError& error) {
    EXPECT_EQ(error.kind(), DatabaseError::Kind::locked);
    EXPECT_NE(std::string(error.what()).find("another process holds it"), std::string::npos) << error.what();
  }
  EXPECT_EQ(writer.list_cubins().size(), 0u) << "readers are not blocked by the writer";

  holder.exec("ROLLBACK");
  writer.put_cubin(sample_cubin(0, 0));
  EXPECT_EQ(writer.list_cubins().size(), 1u);
}

// Several processes open the same new file at once and each writes its own CUBINs.
TEST_F(DatabaseTest, ConcurrentWritingProcessesLoseNothing) {
  constexpr int kWriters = 4;
  constexpr int kCubinsPerWriter = 100;

  std::vector<pid_t> children;
  for (int writer = 0; writer < kWriters; ++writer) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0) << "fork failed";
    if (pid == 0) {
      // The child must leave through _exit: neither gtest nor the parent's state may run.
      try {
        Database database = Database::open(file, {.busy_timeout_ms = 60000});
        for (int index = 0; index < kCubinsPerWriter; ++index) database.put_cubin(sample_cubin(writer, index));
      } catch (const std::exception& error) {
        std::fprintf(stderr, "writer %d: %s\n", writer, error.what());
        _exit(1);
      }
      _exit(0);
    }
    children.push_back(pid);
  }
  for (const pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "writer process " << pid << " failed";
  }

  Database database = Database::open(file);
  EXPECT_EQ(database.list_cubins().size(), static_cast<std::size_t>(kWriters * kCubinsPerWriter));
  for (int writer = 0; writer < kWriters; ++writer) {
    for (int index = 0; index < kCubinsPerWriter; ++index) {
      const CubinRecord expected = sample_cubin(writer, index);
      const std::optional<CubinRecord> found = database.find_cubin(expected.key);
      ASSERT_TRUE(found.has_value()) << expected.key;
      EXPECT_EQ(found->binary, expected.binary) << expected.key;
      EXPECT_EQ(found->specialization, expected.specialization);
    }
  }
}

// CUBINs of every kind prune_cubins tells apart, 256 KiB each so that VACUUM visibly shrinks
// the file. "current" is the running NVRTC, "old" another one.
class PruneTest : public DatabaseTest {
 protected:
  static constexpr const char* kCurrentNvrtc = "13.0 (cuda_13.0.r13.0/compiler.36424714_0)";
  static constexpr const char* kOldNvrtc = "12.4 (cuda_12.4.r12.4/compiler.34097967_0)";
  enum Cubin { loser = 1, winner, old_unreferenced, precompiled, winner_on_other_gpu, old_winner };

  void SetUp() override {
    Database database = Database::open(file);
    const std::int64_t sxm = database.upsert_gpu(h100());
    const std::int64_t pcie = database.upsert_gpu(testing::h100_pcie());
    for (const Cubin cubin : {loser, winner, old_unreferenced, precompiled, winner_on_other_gpu, old_winner}) {
      CubinRecord record = sample_cubin(0, cubin);
      record.binary.assign(256 * 1024, static_cast<std::uint8_t>(cubin));
      record.nvrtc_version = cubin == old_unreferenced || cubin == old_winner ? kOldNvrtc : kCurrentNvrtc;
      database.put_cubin(record);
    }
    const auto measure = [&](std::int64_t gpu, const std::string& problem, const std::string& config, double ms,
                             Cubin cubin) {
      TrialRecord trial = ok_trial(gpu, config, ms);
      trial.problem_key = problem;
      trial.cubin_key = cubin_key(0, cubin);
      database.record_trial(trial);
    };
    measure(sxm, "p", R"({"vec":8})", 2.0, loser);
    measure(sxm, "p", R"({"vec":16})", 1.0, winner);
    measure(sxm, "q", R"({"vec":4})", 3.0, winner_on_other_gpu);  // loses on the SXM...
    measure(sxm, "q", R"({"vec":2})", 2.5, old_winner);
    measure(pcie, "q", R"({"vec":4})", 3.0, winner_on_other_gpu);  // ...wins on the PCIe
  }

  std::vector<std::string> keys(const std::vector<PrunedCubin>& pruned) const {
    std::vector<std::string> keys;
    for (const PrunedCubin& cubin : pruned) keys.push_back(cubin.cubin.key);
    return keys;
  }
};

TEST_F(PruneTest, ADryRunListsWhatWouldGoAndDeletesNothing) {
  Database database = Database::open(file);
  const PruneReport report = database.prune_cubins(kCurrentNvrtc, /*dry_run=*/true);
  ASSERT_EQ(keys(report.cubins),
            (std::vector<std::string>{cubin_key(0, loser), cubin_key(0, old_unreferenced), cubin_key(0, old_winner)}));
  EXPECT_EQ(report.cubins[0].reason, PruneReason::not_needed_by_best_configs);
  EXPECT_EQ(report.cubins[1].reason, PruneReason::other_nvrtc);
  EXPECT_EQ(report.cubins[2].reason, PruneReason::other_nvrtc) << "a best config's CUBIN of another NVRTC goes too";
  EXPECT_EQ(report.binary_bytes, 3 * 256 * 1024);
  EXPECT_EQ(database.stats().cubins, 6);
  EXPECT_EQ(database.list_trials(TrialFilter{})[0].trial.cubin_key, cubin_key(0, loser));
}

TEST_F(PruneTest, PruneDeletesLosersAndOtherNvrtcKeepsTrialsAndVacuumShrinksTheFile) {
  Database database = Database::open(file);
  const PruneReport report = database.prune_cubins(kCurrentNvrtc, /*dry_run=*/false);
  EXPECT_EQ(report.cubins.size(), 3u);
  std::vector<std::string> kept;
  for (const CubinSummary& cubin : database.list_cubins()) kept.push_back(cubin.key);
  EXPECT_EQ(kept, (std::vector<std::string>{cubin_key(0, winner), cubin_key(0, precompiled),
                                            cubin_key(0, winner_on_other_gpu)}));
  const std::vector<StoredTrial> trials = database.list_trials(TrialFilter{});
  ASSERT_EQ(trials.size(), 5u) << "trials stay";
  EXPECT_EQ(trials[0].trial.cubin_key, "") << "the loser's trial lost its link";
  EXPECT_EQ(trials[1].trial.cubin_key, cubin_key(0, winner));
  EXPECT_TRUE(database.prune_cubins(kCurrentNvrtc, false).cubins.empty()) << "a second prune finds nothing";

  const VacuumReport vacuum = database.vacuum();
  EXPECT_TRUE(vacuum.checkpointed);
  EXPECT_LE(vacuum.file_bytes_after, vacuum.file_bytes_before - 3 * 256 * 1024) << vacuum.file_bytes_before;
  EXPECT_EQ(static_cast<std::int64_t>(std::filesystem::file_size(file)), vacuum.file_bytes_after);
  EXPECT_EQ(database.list_cubins().size(), 3u);
}

// Four processes record trials of the same problems on the same GPU into one new file at
// once: every trial arrives, and each problem's best is the fastest of all writers' trials.
TEST_F(DatabaseTest, ConcurrentTrialWritersLoseNothingAndKeepTheFastest) {
  constexpr int kWriters = 4;
  constexpr int kProblems = 5;
  constexpr int kTrialsPerProblem = 25;
  const auto problem_key = [](int problem) { return "permute_tokens|d128|p" + std::to_string(problem); };
  // Distinct times per (writer, problem, trial); the fastest of a problem is writer 2's last trial.
  const auto median = [](int writer, int problem, int trial) {
    return writer == 2 && trial == kTrialsPerProblem - 1 ? 0.5 + problem : 1.0 + problem + writer * 0.1 + trial * 0.001;
  };

  std::vector<pid_t> children;
  for (int writer = 0; writer < kWriters; ++writer) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0) << "fork failed";
    if (pid == 0) {
      // As above: the child leaves through _exit only.
      try {
        Database database = Database::open(file, {.busy_timeout_ms = 60000});
        const std::int64_t gpu = database.upsert_gpu(h100());
        for (int trial = 0; trial < kTrialsPerProblem; ++trial) {
          for (int problem = 0; problem < kProblems; ++problem) {
            TrialRecord record = ok_trial(gpu, R"({"writer":)" + std::to_string(writer) + R"(,"trial":)" +
                                                   std::to_string(trial) + "}",
                                          median(writer, problem, trial));
            record.problem_key = problem_key(problem);
            database.record_trial(record);
          }
        }
      } catch (const std::exception& error) {
        std::fprintf(stderr, "writer %d: %s\n", writer, error.what());
        _exit(1);
      }
      _exit(0);
    }
    children.push_back(pid);
  }
  for (const pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "writer process " << pid << " failed";
  }

  Database database = Database::open(file);
  ASSERT_EQ(database.list_gpus().size(), 1u) << "the writers share one GPU row";
  const std::int64_t gpu = database.list_gpus()[0].id;
  EXPECT_EQ(database.stats().trials, kWriters * kProblems * kTrialsPerProblem);
  for (int problem = 0; problem < kProblems; ++problem) {
    const std::vector<StoredTrial> trials = database.list_trials(gpu, "permute_tokens", problem_key(problem));
    std::set<std::string> configs;
    for (const StoredTrial& stored : trials) configs.insert(stored.trial.config_json);
    EXPECT_EQ(configs.size(), static_cast<std::size_t>(kWriters * kTrialsPerProblem)) << problem_key(problem);
    const std::optional<BestConfig> best = database.find_best(gpu, "permute_tokens", problem_key(problem));
    ASSERT_TRUE(best.has_value()) << problem_key(problem);
    EXPECT_EQ(best->config_json, R"({"writer":2,"trial":)" + std::to_string(kTrialsPerProblem - 1) + "}");
    EXPECT_DOUBLE_EQ(best->median_ms, 0.5 + problem);
  }
}

// With source keys the runtime loads the newest CUBIN of a source whichever NVRTC compiled
// it: that one stays, the ones it supersedes go; keyless rows of another NVRTC go as before.
TEST_F(DatabaseTest, PruneKeepsTheNewestOfASourceWhicheverNvrtcAndDropsWhatItSupersedes) {
  const std::string current = "13.0 (cuda_13.0.r13.0/compiler.36424714_0)";
  const std::string old = "12.4 (cuda_12.4.r12.4/compiler.34097967_0)";
  Database database = Database::open(file);
  const auto put = [&](int index, const std::string& source, const std::string& nvrtc, const std::string& created) {
    CubinRecord cubin = sample_cubin(2, index);
    cubin.source_key = source;
    cubin.nvrtc_version = nvrtc;
    cubin.created_at = created;
    database.put_cubin(cubin);
    return cubin.key;
  };
  const std::string a = cubin_key(5, 1), b = cubin_key(5, 2);
  const std::string a_old = put(1, a, old, "2025-01-01T00:00:00.000Z");         // superseded by a_current
  const std::string a_current = put(2, a, current, "2025-02-01T00:00:00.000Z");  // kept
  const std::string b_old = put(3, b, old, "2025-01-01T00:00:00.000Z");          // kept: the newest of b
  const std::string keyless_old = put(4, "", old, "2025-01-01T00:00:00.000Z");   // found by key only: goes
  const std::string keyless_current = put(5, "", current, "2025-01-01T00:00:00.000Z");  // kept
  const std::string tie_low = put(6, cubin_key(5, 3), current, "2025-01-01T00:00:00.000Z");
  const std::string tie_high = put(7, cubin_key(5, 3), current, "2025-01-01T00:00:00.000Z");
  const auto [lower, higher] = std::minmax(tie_low, tie_high);

  const PruneReport report = database.prune_cubins(current, /*dry_run=*/false);
  std::map<std::string, PruneReason> reasons;
  for (const PrunedCubin& pruned : report.cubins) reasons[pruned.cubin.key] = pruned.reason;
  EXPECT_EQ(reasons, (std::map<std::string, PruneReason>{{a_old, PruneReason::superseded},
                                                         {keyless_old, PruneReason::other_nvrtc},
                                                         {lower, PruneReason::superseded}}));
  std::set<std::string> kept;
  for (const CubinSummary& cubin : database.list_cubins()) kept.insert(cubin.key);
  EXPECT_EQ(kept, (std::set<std::string>{a_current, b_old, keyless_current, higher}));
  EXPECT_EQ(database.find_cubin_by_source(b)->key, b_old);
}

}  // namespace
}  // namespace sparsejit::db
