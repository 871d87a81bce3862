// sparse_attention's tuning problems without a GPU: problem keys and their parsing, the
// mapping of real calls to buckets, the default grid, and the candidates of each problem.
#include <gtest/gtest.h>

#include <set>

#include "templates/sparse_attention/attention_family.h"
#include "templates/sparse_attention/attention_tuning.h"

namespace sparsejit::templates {
namespace {

constexpr int kWide = 1;  // index of the bh4+ bucket

int density_index(double density) {
  for (std::size_t i = 0; i < kAttentionDensityBuckets.size(); ++i)
    if (kAttentionDensityBuckets[i] == density) return static_cast<int>(i);
  ADD_FAILURE() << density << " is no density bucket";
  return 0;
}

TEST(AttentionProblemKeys, ReadWellAndParseBack) {
  const AttentionProblemKey key{{HalfDtype::bf16, 128, 128, 128, 16}, {density_index(0.3), 1, kWide}};
  EXPECT_EQ(key.to_string(), "sparse_attention|bf16|d128|b128x128|fine16|p0.3|n33k|bh4+");
  EXPECT_EQ((AttentionProblemKey{{HalfDtype::fp16, 64, 64, 128, 0}, {density_index(0.05), 3, 0}}.to_string()),
            "sparse_attention|fp16|d64|b64x128|fine0|p0.05|n119k|bh1-3");
  int keys = 0;
  for (HalfDtype dtype : {HalfDtype::bf16, HalfDtype::fp16})
    for (int head_dim : kAttentionHeadDims)
      for (int block_q : kAttentionBlockSizes)
        for (int block_kv : kAttentionBlockSizes)
          for (int fine_n : kAttentionFineN)
            for (int density = 0; density < static_cast<int>(kAttentionDensityBuckets.size()); ++density)
              for (int tokens = 0; tokens < static_cast<int>(kAttentionTokenBuckets.size()); ++tokens)
                for (int batch_heads = 0; batch_heads < static_cast<int>(kAttentionBatchHeadsBuckets.size());
                     ++batch_heads) {
                  const AttentionProblemKey k{{dtype, head_dim, block_q, block_kv, fine_n},
                                              {density, tokens, batch_heads}};
                  const std::optional<AttentionProblemKey> parsed = AttentionProblemKey::parse(k.to_string());
                  ASSERT_TRUE(parsed.has_value()) << k.to_string();
                  EXPECT_EQ(*parsed, k) << k.to_string();
                  ++keys;
                }
  EXPECT_EQ(keys, 2 * 3 * 2 * 2 * 4 * 6 * 4 * 2);
}

TEST(AttentionProblemKeys, ParseRefusesOtherText) {
  for (const char* text : {"permute_tokens|d128|gather", "", "sparse_attention",
                           "sparse_attention|bf16|d128|b128x128|fine16|p0.4|n33k|bh4+",    // no such bucket
                           "sparse_attention|bf16|d0128|b128x128|fine16|p0.3|n33k|bh4+",   // not as written
                           "sparse_attention|bf32|d128|b128x128|fine16|p0.3|n33k|bh4+",
                           "sparse_attention|bf16|d128|b128|fine16|p0.3|n33k|bh4+",
                           "sparse_attention|bf16|d128|b128x128|fine16|p0.3|n33k|bh4+|extra",
                           "sparse_attention|bf16|d128|b128x128|fine16|p0.3|n33k|bh5+"})
    EXPECT_FALSE(AttentionProblemKey::parse(text).has_value()) << text;
}

TEST(AttentionBuckets, TheModelShapesFallIntoTheirOwnBuckets) {
  const struct {
    long long batch_heads;
    int tokens;
    const char* bucket;
  } models[] = {{48, 17776, "n18k"},    // CogVideoX-5B 480p
                {12, 32760, "n33k"},    // Wan2.1-1.3B 480p
                {40, 32760, "n33k"},    // Wan2.1-14B 480p
                {80, 75600, "n76k"},    // Wan2.1-14B 720p, both guidance passes in one batch
                {24, 119056, "n119k"}};  // HunyuanVideo 720p
  for (const auto& m : models) {
    const AttentionBuckets buckets = attention_buckets_of({m.batch_heads, m.tokens, m.tokens, 0.3});
    EXPECT_EQ(kAttentionTokenBuckets[buckets.tokens].name, m.bucket) << m.tokens;
    EXPECT_EQ(buckets.batch_heads, kWide) << m.batch_heads;
    EXPECT_EQ(kAttentionDensityBuckets[buckets.density], 0.3);
  }
}

TEST(AttentionBuckets, BoundariesAreTheGeometricMeansOfNeighbours) {
  const auto tokens = [](int q, int kv) { return attention_buckets_of({12, q, kv, 1.0}).tokens; };
  EXPECT_EQ(tokens(1000, 1000), 0);  // shorter than every model: the shortest bucket
  EXPECT_EQ(tokens(24131, 24131), 0);
  EXPECT_EQ(tokens(24132, 24132), 1);
  EXPECT_EQ(tokens(49766, 49766), 1);
  EXPECT_EQ(tokens(49767, 49767), 2);
  EXPECT_EQ(tokens(94871, 94871), 3);
  EXPECT_EQ(tokens(500000, 500000), 3);
  EXPECT_EQ(tokens(10000, 40000), 0);  // cross attention: sqrt(10,000 x 40,000) = 20,000 tokens
  EXPECT_EQ(tokens(40000, 40000), 1);

  const auto density = [](double d) { return kAttentionDensityBuckets[attention_buckets_of({12, 32760, 32760, d}).density]; };
  EXPECT_EQ(density(1.0), 1.0);
  EXPECT_EQ(density(0.75), 1.0);
  EXPECT_EQ(density(0.4), 0.5);
  EXPECT_EQ(density(0.25), 0.3);  // sqrt(0.3 x 0.2) = 0.245
  EXPECT_EQ(density(0.24), 0.2);
  EXPECT_EQ(density(0.07), 0.05);
  EXPECT_EQ(density(0.02), 0.05);
  EXPECT_EQ(density(0.0), 0.05);  // an empty mask: the sparsest bucket

  const auto batch_heads = [](long long bh) { return attention_buckets_of({bh, 32760, 32760, 1.0}).batch_heads; };
  EXPECT_EQ(batch_heads(1), 0);
  EXPECT_EQ(batch_heads(3), 0);
  EXPECT_EQ(batch_heads(4), 1);
  EXPECT_EQ(batch_heads(65535LL * 65535), 1);
}

TEST(AttentionBuckets, ACallsDensityIsTheWidthOfItsMaskRows) {
  SparseAttentionParams params{};
  params.batch = 2;
  params.heads = 12;
  params.tokens_q = 30000;
  params.tokens_kv = 32760;  // 256 key blocks of 128
  params.max_kv_blocks = 26;
  const AttentionCallShape shape = attention_call_shape(params, 128);
  EXPECT_EQ(shape.batch_heads, 24);
  EXPECT_EQ(shape.tokens_q, 30000);
  EXPECT_EQ(shape.tokens_kv, 32760);
  EXPECT_DOUBLE_EQ(shape.density, 26.0 / 256);
  EXPECT_DOUBLE_EQ(attention_call_shape(params, 64).density, 26.0 / 512);
}

TEST(AttentionBuckets, BucketDistanceOrdersDensityFirst) {
  const AttentionProblemKey call{{}, {density_index(0.3), 1, kWide}};
  const AttentionProblemKey same_density_other_length{{}, {density_index(0.3), 3, kWide}};
  const AttentionProblemKey near_density_same_length{{}, {density_index(0.2), 1, kWide}};
  EXPECT_EQ(call.bucket_distance(call), (std::array<double, 3>{0, 0, 0}));
  EXPECT_LT(call.bucket_distance(same_density_other_length), call.bucket_distance(near_density_same_length));
  EXPECT_LT(call.bucket_distance(near_density_same_length),
            call.bucket_distance({{}, {density_index(0.5), 1, kWide}}));
}

TEST(AttentionTuningGrid, CoversTheDefaultGridOnce) {
  const std::vector<AttentionProblemKey> grid = default_attention_tuning_grid();
  EXPECT_EQ(grid.size(), 192u);
  std::set<std::string> keys;
  std::set<int> head_dims, blocks, fine, densities, tokens;
  for (const AttentionProblemKey& key : grid) {
    keys.insert(key.to_string());
    EXPECT_EQ(key.kind.dtype, HalfDtype::bf16);
    EXPECT_EQ(key.kind.block_q, key.kind.block_kv);
    EXPECT_EQ(key.buckets.batch_heads, kWide);
    head_dims.insert(key.kind.head_dim);
    blocks.insert(key.kind.block_q);
    fine.insert(key.kind.fine_n);
    densities.insert(key.buckets.density);
    tokens.insert(key.buckets.tokens);
  }
  EXPECT_EQ(keys.size(), grid.size());
  EXPECT_EQ(head_dims, (std::set<int>{64, 128}));
  EXPECT_EQ(blocks, (std::set<int>{64, 128}));
  EXPECT_EQ(fine, (std::set<int>{0, 16}));
  EXPECT_EQ(densities.size(), kAttentionDensityBuckets.size());
  EXPECT_EQ(tokens.size(), kAttentionTokenBuckets.size());
  EXPECT_EQ(SparseAttentionFamily().tuning_problems().size(), grid.size());
}

// Every candidate is a valid tile of the problem's kind, each tile once, every valid tile of
// the family's space is there, and on the H100 the built-in default is among them.
TEST(AttentionTuningGrid, CandidatesAreEveryValidTile) {
  for (const char* arch : {"sm_90", "sm_86"}) {
    const jit::Target target = jit::Target::parse(arch);
    const std::vector<jit::KernelSpec> space = SparseAttentionFamily().enumerate(target);
    std::set<std::string> space_keys;
    for (const jit::KernelSpec& spec : space) space_keys.insert(spec.request.cache_key());
    for (const AttentionProblemKey& key : default_attention_tuning_grid()) {
      SCOPED_TRACE(std::string(arch) + " " + key.to_string());
      const SparseAttentionTuningProblem problem(key);
      const std::vector<TuningCandidate> candidates = problem.candidates(target);
      ASSERT_FALSE(candidates.empty());
      std::set<std::string> tiles;
      for (const TuningCandidate& candidate : candidates) {
        const AttentionConfig config = key.kind.with_tile(candidate.config_json);
        EXPECT_EQ(attention_config_problem(config, max_shared_bytes_for(target)), "");
        EXPECT_EQ(candidate.config_json, config.tuning_json());
        EXPECT_EQ(candidate.specialization.name_expression, config.name_expression());
        EXPECT_EQ(space_keys.count(candidate.specialization.request.cache_key()), 1u);
        tiles.insert(candidate.config_json);
      }
      EXPECT_EQ(tiles.size(), candidates.size());
      int valid = 0;
      for (int block_m : kAttentionBlockM)
        for (int block_n : kAttentionBlockN)
          for (int warps : kAttentionWarps)
            valid += attention_config_problem(AttentionConfig{key.kind.dtype, key.kind.head_dim, key.kind.block_q,
                                                              key.kind.block_kv, block_m, block_n, warps,
                                                              key.kind.fine_n},
                                              max_shared_bytes_for(target))
                         .empty();
      if (wgmma_target(target))  // the sm_90a kernel's tiles too, on compute capability 9.0 only
        for (int block_m : kWgmmaBlockM)
          for (int block_n : kWgmmaBlockN)
            for (int stages : kWgmmaStages)  // each with both grids
              valid += 2 * attention_config_problem(AttentionConfig{key.kind.dtype, key.kind.head_dim,
                                                                    key.kind.block_q, key.kind.block_kv, block_m,
                                                                    block_n, wgmma_warps(block_m), key.kind.fine_n,
                                                                    false, true, stages},
                                                    max_shared_bytes_for(target))
                               .empty();
      EXPECT_EQ(static_cast<int>(candidates.size()), valid);
      if (target.major() == 9) {
        EXPECT_EQ(tiles.count(problem.default_config_json()), 1u);
      }
    }
  }
}

TEST(AttentionTuningGrid, ProblemsDescribeTheirTimedShapeAndCost) {
  const SparseAttentionTuningProblem dense_long({{HalfDtype::bf16, 128, 128, 128, 0}, {0, 3, kWide}});
  const SparseAttentionTuningProblem sparse_short({{HalfDtype::bf16, 128, 128, 128, 0}, {5, 1, kWide}});
  EXPECT_EQ(dense_long.description(), "bf16 B=1 H=12 N=119056 D=128 blocks 128x128 density 1");
  EXPECT_EQ(sparse_short.key(), "sparse_attention|bf16|d128|b128x128|fine0|p0.05|n33k|bh4+");
  EXPECT_EQ(dense_long.head_dim(), 128);
  EXPECT_EQ(sparse_short.density(), 0.05);
  EXPECT_GT(dense_long.relative_cost(), 10 * sparse_short.relative_cost());
  EXPECT_NE(SparseAttentionTuningProblem({{HalfDtype::bf16, 64, 64, 64, 16}, {2, 0, 0}}).description().find("fine 16"),
            std::string::npos);
}

TEST(AttentionTuningGrid, RefusesKindsTheFamilyDoesNotHaveAndBadTiles) {
  EXPECT_THROW(SparseAttentionTuningProblem({{HalfDtype::bf16, 80, 128, 128, 0}, {}}), std::invalid_argument);
  EXPECT_THROW(SparseAttentionTuningProblem({{HalfDtype::bf16, 128, 96, 128, 0}, {}}), std::invalid_argument);
  const AttentionKernelKind kind;
  EXPECT_THROW(kind.with_tile("not json"), std::invalid_argument);
  EXPECT_THROW(kind.with_tile(R"({"block_m":128,"block_n":64})"), std::invalid_argument);
  EXPECT_THROW(kind.with_tile(R"({"block_m":128,"block_n":"64","warps":8})"), std::invalid_argument);
  EXPECT_EQ(kind.with_tile(R"({"block_m":64,"block_n":32,"warps":4})"),
            (AttentionConfig{HalfDtype::bf16, 128, 128, 128, 64, 32, 4, 0}));
}

}  // namespace
}  // namespace sparsejit::templates
