// The lookup of sparse_attention configs without a GPU, over handcrafted databases: each
// level (exact, nearest bucket, same compute capability, built-in default), configs that do
// not fit passed over, and memoization (no database read after the first call for a key).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <thread>
#include <vector>

#include "db/database.h"
#include "db/sqlite.h"
#include "runtime/attention_lookup.h"
#include "runtime/database_cubin_store.h"
#include "tests/db/sample_records.h"
#include "tests/support/test_support.h"

namespace sparsejit::runtime {
namespace {

using templates::AttentionCallShape;
using templates::AttentionProblemKey;
using templates::HalfDtype;

constexpr int kHopperShared = 227 * 1024;

// Wan2.1-1.3B 480p: 12 heads x 32,760 tokens, 0.3 of the 256 key blocks of 128: bucket
// p0.3|n33k|bh4+.
constexpr AttentionProblem kProblem{HalfDtype::bf16, 128, 128, 128, 0};
constexpr AttentionCallShape kCall{12, 32760, 32760, 77.0 / 256};

db::GpuRecord gpu(std::string name, int cc_major, int sm_count) {
  db::GpuRecord record = testing::h100();
  record.name = std::move(name);
  record.cc_major = cc_major;
  record.sm_count = sm_count;
  return record;
}

// A tile that is valid for 128x128 blocks at D = 128, as stored.
std::string tile(int block_m, int block_n, int warps) {
  return templates::AttentionConfig{HalfDtype::bf16, 128, 128, 128, block_m, block_n, warps, 0}.tuning_json();
}

class AttentionLookupTest : public ::testing::Test {
 protected:
  AttentionLookupTest()
      : database_(db::Database::open(directory_ / "tuning.db")),
        this_gpu_(database_.upsert_gpu(testing::h100())),
        pcie_(database_.upsert_gpu(gpu("NVIDIA H100 PCIe", 9, 114))),
        h800_(database_.upsert_gpu(gpu("NVIDIA H800", 9, 132))),
        a100_(database_.upsert_gpu(gpu("NVIDIA A100-SXM4-80GB", 8, 108))) {}

  // Stores `config` as the best of `key` on `gpu_id` (one ok trial).
  void store_best(std::int64_t gpu_id, const std::string& key, const std::string& config) {
    db::TrialRecord trial = testing::ok_trial(gpu_id, config, 1.0);
    trial.family = "sparse_attention";
    trial.problem_key = key;
    database_.record_trial(trial);
  }
  // The call's key with other buckets: density, token bucket index.
  static std::string key_at(double density, int tokens, const AttentionProblem& problem = kProblem) {
    AttentionCallShape shape = kCall;
    shape.density = density;
    shape.tokens_q = shape.tokens_kv = templates::kAttentionTokenBuckets[tokens].representative;
    return AttentionProblemKey{{problem.dtype, problem.head_dim, problem.block_q, problem.block_kv, problem.fine_n},
                               templates::attention_buckets_of(shape)}
        .to_string();
  }
  AttentionConfigLookup lookup() { return AttentionConfigLookup(&database_, this_gpu_, testing::h100(), kHopperShared); }

  testing::TempDirectory directory_;
  db::Database database_;
  std::int64_t this_gpu_, pcie_, h800_, a100_;
};

TEST_F(AttentionLookupTest, WithoutADatabaseEveryCallGetsTheBuiltInDefault) {
  AttentionConfigLookup no_database(nullptr, 0, testing::h100(), kHopperShared);
  const AttentionChoice& choice = no_database.find(kProblem, kCall);
  EXPECT_EQ(choice.level, LookupLevel::built_in_default);
  // An H100's default is the wgmma kernel's.
  EXPECT_EQ(choice.config, templates::default_attention_config(HalfDtype::bf16, 128, 128, 128, 0,
                                                               jit::Target::for_compute_capability(9, 0)));
  EXPECT_TRUE(choice.config.wgmma);
  EXPECT_EQ(choice.problem_key, "sparse_attention|bf16|d128|b128x128|fine0|p0.3|n33k|bh4+");
  EXPECT_TRUE(choice.source_key.empty());
  EXPECT_EQ(to_string(choice.level), "built-in default");
}

TEST_F(AttentionLookupTest, ExactKeyOnThisGpu) {
  store_best(this_gpu_, key_at(0.3, 1), tile(64, 64, 4));
  store_best(this_gpu_, key_at(0.5, 1), tile(128, 64, 8));  // a neighbour: not used
  store_best(pcie_, key_at(0.3, 1), tile(128, 32, 8));      // another GPU: not used
  AttentionConfigLookup lookup = this->lookup();
  const AttentionChoice& choice = lookup.find(kProblem, kCall);
  EXPECT_EQ(choice.level, LookupLevel::exact);
  EXPECT_EQ(choice.config.tuning_json(), tile(64, 64, 4));
  EXPECT_EQ(choice.source_key, choice.problem_key);
  EXPECT_EQ(choice.source_gpu, testing::h100().fingerprint());
  EXPECT_EQ(to_string(choice.level), "exact");
}

// Nearest density first: the same density at another length beats a neighbouring density at
// this length; the sequence length decides between equal densities. Other kernel kinds (fine
// bits, another head dim) never count, whatever their buckets.
TEST_F(AttentionLookupTest, NearestBucketOnThisGpu) {
  store_best(this_gpu_, key_at(0.2, 1), tile(128, 64, 8));
  store_best(this_gpu_, key_at(0.3, 3), tile(64, 32, 4));
  store_best(this_gpu_, key_at(0.3, 2), tile(64, 64, 4));
  store_best(this_gpu_, key_at(0.3, 1, {HalfDtype::bf16, 128, 128, 128, 16}), tile(128, 32, 4));
  store_best(this_gpu_, key_at(0.3, 1, {HalfDtype::bf16, 64, 128, 128, 0}), tile(128, 32, 4));
  store_best(pcie_, key_at(0.3, 1), tile(128, 32, 8));  // exact, but on another GPU: a lower level
  AttentionConfigLookup lookup = this->lookup();
  const AttentionChoice& choice = lookup.find(kProblem, kCall);
  EXPECT_EQ(choice.level, LookupLevel::nearest_bucket);
  EXPECT_EQ(choice.config.tuning_json(), tile(64, 64, 4));
  EXPECT_EQ(choice.source_key, key_at(0.3, 2));
  EXPECT_EQ(to_string(choice.level), "nearest bucket");
}

// Nothing for this GPU: another GPU of compute capability 9.0, the nearest bucket first, then
// the nearest SM count; an A100's exact key does not count.
TEST_F(AttentionLookupTest, SameComputeCapabilityOnAnotherGpu) {
  store_best(a100_, key_at(0.3, 1), tile(64, 32, 4));
  store_best(pcie_, key_at(0.3, 1), tile(128, 64, 8));
  store_best(h800_, key_at(0.3, 1), tile(64, 64, 4));   // same bucket, nearer SM count (132)
  store_best(h800_, key_at(0.05, 1), tile(128, 32, 4));  // farther bucket
  AttentionConfigLookup lookup = this->lookup();
  const AttentionChoice& choice = lookup.find(kProblem, kCall);
  EXPECT_EQ(choice.level, LookupLevel::same_compute_capability);
  EXPECT_EQ(choice.config.tuning_json(), tile(64, 64, 4));
  EXPECT_EQ(choice.source_gpu, gpu("NVIDIA H800", 9, 132).fingerprint());
  EXPECT_EQ(to_string(choice.level), "same compute capability");

  // A call in the 0.05 bucket takes the H800's 0.05 row, nearer than the PCIe's 0.3.
  AttentionCallShape sparse = kCall;
  sparse.density = 0.05;
  EXPECT_EQ(lookup.find(kProblem, sparse).config.tuning_json(), tile(128, 32, 4));
}

TEST_F(AttentionLookupTest, BuiltInDefaultWhenOnlyOtherArchitecturesWereTuned) {
  store_best(a100_, key_at(0.3, 1), tile(64, 32, 4));
  AttentionConfigLookup lookup = this->lookup();
  const AttentionChoice& choice = lookup.find(kProblem, kCall);
  EXPECT_EQ(choice.level, LookupLevel::built_in_default);
  EXPECT_EQ(choice.config, templates::default_attention_config(HalfDtype::bf16, 128, 128, 128, 0,
                                                               jit::Target::for_compute_capability(9, 0)));
}

// Where the device has less shared memory than its target's default needs, the default is
// the mma.sync one that fits; a stored wgmma tile never reaches a GPU without wgmma.
TEST_F(AttentionLookupTest, DefaultsAndWgmmaTilesFollowTheDevice) {
  AttentionConfigLookup small(nullptr, 0, testing::h100(), 99 * 1024);
  const AttentionChoice& fitted = small.find(kProblem, kCall);
  EXPECT_FALSE(fitted.config.wgmma);
  EXPECT_EQ(fitted.config, templates::default_attention_config(HalfDtype::bf16, 128, 128, 128, 0, 99 * 1024));

  const templates::AttentionConfig wgmma_tile = templates::default_attention_config(
      HalfDtype::bf16, 128, 128, 128, 0, jit::Target::for_compute_capability(9, 0));
  store_best(a100_, key_at(0.3, 1), wgmma_tile.tuning_json());  // a corrupt row: an A100 has no wgmma
  AttentionConfigLookup a100(&database_, a100_, gpu("NVIDIA A100-SXM4-80GB", 8, 108), 163 * 1024);
  const AttentionChoice& choice = a100.find(kProblem, kCall);
  EXPECT_EQ(choice.level, LookupLevel::built_in_default);
  EXPECT_FALSE(choice.config.wgmma);
}

// A stored tile that does not fit this device (here: one that needs more shared memory than a
// 99 KB device has) or cannot be read is passed over, level by level.
TEST_F(AttentionLookupTest, ConfigsThatDoNotFitArePassedOver) {
  ASSERT_NE(templates::attention_config_problem(templates::AttentionConfig{HalfDtype::bf16, 128, 128, 128, 128, 64, 8, 0}, 99 * 1024), "")
      << "the test needs a tile that does not fit 99 KB";
  store_best(this_gpu_, key_at(0.3, 1), tile(128, 64, 8));  // 104 KB of shared memory
  store_best(this_gpu_, key_at(0.5, 1), R"({"unknown":1})");
  store_best(this_gpu_, key_at(0.2, 1), tile(64, 32, 4));
  AttentionConfigLookup small(&database_, this_gpu_, testing::h100(), 99 * 1024);
  const AttentionChoice& choice = small.find(kProblem, kCall);
  EXPECT_EQ(choice.level, LookupLevel::nearest_bucket);
  EXPECT_EQ(choice.config.tuning_json(), tile(64, 32, 4));
}

// After the first call for a key the answer comes from memory: with every best config deleted
// behind its back, the lookup still answers the same, while a fresh lookup sees the change.
TEST_F(AttentionLookupTest, RemembersItsAnswerPerProblemKey) {
  store_best(this_gpu_, key_at(0.3, 1), tile(64, 64, 4));
  AttentionConfigLookup lookup = this->lookup();
  const AttentionChoice& first = lookup.find(kProblem, kCall);
  ASSERT_EQ(first.level, LookupLevel::exact);

  db::Connection::open(database_.path(), db::OpenMode::read_write_create).exec("DELETE FROM best_configs");
  ASSERT_EQ(database_.list_best_configs().size(), 0u);
  AttentionCallShape same_bucket = kCall;
  same_bucket.tokens_q = same_bucket.tokens_kv = 30000;  // another call in the same buckets
  same_bucket.batch_heads = 40;
  const AttentionChoice& again = lookup.find(kProblem, same_bucket);
  EXPECT_EQ(&again, &first);
  EXPECT_EQ(again.level, LookupLevel::exact);
  EXPECT_EQ(again.config.tuning_json(), tile(64, 64, 4));
  EXPECT_EQ(this->lookup().find(kProblem, kCall).level, LookupLevel::built_in_default);
}

TEST_F(AttentionLookupTest, AnInvalidProblemIsRefused) {
  AttentionConfigLookup lookup = this->lookup();
  EXPECT_THROW(lookup.find({HalfDtype::bf16, 80, 128, 128, 0}, kCall), std::invalid_argument);
  EXPECT_THROW(lookup.find({HalfDtype::bf16, 128, 128, 128, 64}, kCall), std::invalid_argument);
}

// The runtime's uses of its one connection from many threads at once: lookups that read the
// database (fresh lookups, nothing memoized) while a CUBIN store writes into the same Database.
// Every answer is the stored best, every CUBIN is there afterwards.
TEST_F(AttentionLookupTest, ConcurrentLookupsAndCubinWritesShareTheConnection) {
  for (std::size_t density = 0; density < templates::kAttentionDensityBuckets.size(); ++density)
    for (int tokens = 0; tokens < static_cast<int>(templates::kAttentionTokenBuckets.size()); ++tokens)
      store_best(this_gpu_, key_at(templates::kAttentionDensityBuckets[density], tokens), tile(64, 64, 4));
  DatabaseCubinStore store(database_);
  constexpr int kThreads = 8, kCubinsPerThread = 100;
  std::atomic<int> wrong{0};
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kThreads; ++t)
      threads.emplace_back([&, t] {
        for (int i = 0; i < kCubinsPerThread; ++i) {
          jit::KernelSpec spec;
          spec.family = "sparse_attention";
          spec.label = "thread " + std::to_string(t) + " cubin " + std::to_string(i);
          spec.request.target = jit::Target::parse("sm_90");
          jit::CompiledBinary binary;
          binary.cubin.assign(64, static_cast<std::uint8_t>(t + 1));
          binary.lowered_names = {{"kernel", "_Z6kernelv"}};
          char key[65];
          std::snprintf(key, sizeof key, "%032x%032x", t + 1, i + 1);
          store.put(key, spec, binary);
          // Each thread walks the keys in its own order, so the first lookups of a key race.
          const std::size_t density = static_cast<std::size_t>(t + i) % templates::kAttentionDensityBuckets.size();
          AttentionCallShape shape = kCall;
          shape.density = templates::kAttentionDensityBuckets[density];
          shape.tokens_q = shape.tokens_kv = templates::kAttentionTokenBuckets[(t + 3 * i) % 4].representative;
          AttentionConfigLookup fresh = lookup();  // not memoized: every find reads the database
          const AttentionChoice& choice = fresh.find(kProblem, shape);
          if (choice.level != LookupLevel::exact || choice.config.tuning_json() != tile(64, 64, 4)) ++wrong;
        }
      });
  }
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(database_.stats().cubins, kThreads * kCubinsPerThread);
  char first[65];
  std::snprintf(first, sizeof first, "%032x%032x", 1, 1);
  jit::CompileRequest request;  // what every thread's specs request
  request.target = jit::Target::parse("sm_90");
  ASSERT_TRUE(store.find(first, request.source_key()).has_value());
  EXPECT_EQ(store.find(first, request.source_key())->cubin, std::vector<std::uint8_t>(64, 1));
}

}  // namespace
}  // namespace sparsejit::runtime
