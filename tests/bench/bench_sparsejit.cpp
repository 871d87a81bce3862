// Microbenchmarks of sparsejit's host-side paths (Google Benchmark). Not a CTest test.
//   CPU: NVRTC compile time per specialization, the SHA-256 cache key, rendering a
//        specialization, a CUBIN lookup in the database, the warm attention config lookup.
//   GPU: warm database to first launch, the in-memory kernel lookup, and the host's share of
//        a sparse_attention call (skipped with "no GPU: ..." when there is none).
// Run: build/tests/bench/bench_sparsejit [--benchmark_min_time=0.05] [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "db/database.h"
#include "jit/device.h"
#include "jit/device_memory.h"
#include "jit/driver_api.h"
#include "jit/nvrtc_compiler.h"
#include "jit/target.h"
#include "jit/kernel_provider.h"
#include "runtime/attention_lookup.h"
#include "runtime/database_cubin_store.h"
#include "runtime/runtime.h"
#include "templates/permute/permute_family.h"
#include "templates/registry.h"
#include "templates/sparse_attention/attention_tuning.h"
#include "tests/bench/attention_call.h"
#include "tests/db/sample_records.h"
#include "tests/support/test_support.h"

namespace sparsejit::bench {
namespace {

using templates::PermuteConfig;
using templates::PermuteDirection;
using templates::PermuteFamily;

jit::KernelSpec permute_specialization(int head_dim, const jit::Target& target) {
  return PermuteFamily::render(templates::default_permute_config(head_dim, PermuteDirection::gather), target);
}

const jit::Target& sm90() {
  static const jit::Target target = jit::Target::parse("sm_90");
  return target;
}

// ------------------------------------------------------------------------------------ CPU

// Figure: "NVRTC compile, one permute_tokens specialization (sm_90), ms per specialization"
// for D = 64, 96, 128: what a cold cache costs per kernel, and what `sparsejit precompile`
// spends per entry of a family's space.
void BM_NvrtcCompilePermute(benchmark::State& state) {
  const jit::KernelSpec specialization = permute_specialization(static_cast<int>(state.range(0)), sm90());
  std::size_t cubin_bytes = 0;
  for (auto _ : state) {
    jit::CompiledBinary binary = jit::compile(specialization.request);
    cubin_bytes = binary.cubin.size();
    benchmark::DoNotOptimize(binary.cubin.data());
  }
  state.counters["cubin_bytes"] = static_cast<double>(cubin_bytes);
  state.SetLabel(specialization.label);
}
BENCHMARK(BM_NvrtcCompilePermute)->Arg(64)->Arg(96)->Arg(128)->Unit(benchmark::kMillisecond);

// Figures: "source key (SHA-256 over source, headers, options, target), us per key" and
// "cache key (the same plus the NVRTC version and build), us per key", with the bytes hashed
// per second. KernelProvider::kernel() computes the source key on every call (its module
// cache is keyed by it); the cache key only where it compiles, which opens NVRTC.
void BM_Key(benchmark::State& state, std::string (jit::CompileRequest::*key_of)() const) {
  const jit::KernelSpec specialization = permute_specialization(128, sm90());
  std::size_t hashed = specialization.request.source.size();
  for (const jit::SourceFile& header : specialization.request.headers)
    hashed += header.name.size() + header.content.size();
  for (auto _ : state) {
    std::string key = (specialization.request.*key_of)();
    benchmark::DoNotOptimize(key.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * hashed));
  state.counters["source_bytes"] = static_cast<double>(hashed);
}
BENCHMARK_CAPTURE(BM_Key, source_key, &jit::CompileRequest::source_key)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Key, cache_key, &jit::CompileRequest::cache_key)->Unit(benchmark::kMicrosecond);

// Figure: "render one permute_tokens specialization (CompileRequest with its embedded
// headers), us": Runtime::permute_tokens renders the specialization on every call.
void BM_RenderPermuteSpecialization(benchmark::State& state) {
  for (auto _ : state) {
    jit::KernelSpec specialization = permute_specialization(128, sm90());
    benchmark::DoNotOptimize(specialization.request.source.data());
  }
}
BENCHMARK(BM_RenderPermuteSpecialization)->Unit(benchmark::kMicrosecond);

// A database holding the 108 sm_90 specializations of permute_tokens, compiled once per
// process (a few seconds, in parallel) into a temporary directory.
struct PrecompiledDatabase {
  testing::TempDirectory directory;
  std::filesystem::path path = directory / "bench.db";
  std::vector<std::string> keys;

  PrecompiledDatabase() {
    db::Database database = db::Database::open(path);
    runtime::DatabaseCubinStore store(database);
    jit::KernelProvider provider(&store);
    const std::vector<jit::KernelSpec> space = templates::find_family("permute_tokens").enumerate(sm90());
    std::atomic<std::size_t> next{0};
    std::mutex failure_mutex;
    std::string failure;
    {
      std::vector<std::jthread> workers;
      for (unsigned j = 0; j < std::max(2u, std::thread::hardware_concurrency()); ++j)
        workers.emplace_back([&] {
          for (std::size_t i = next++; i < space.size(); i = next++) {
            try {
              provider.binary(space[i]);
            } catch (const std::exception& error) {
              std::lock_guard lock(failure_mutex);
              failure = error.what();
            }
          }
        });
    }
    if (!failure.empty()) throw std::runtime_error("precompiling the bench database: " + failure);
    for (const jit::KernelSpec& specialization : space) keys.push_back(specialization.request.cache_key());
  }

  static const PrecompiledDatabase& get() {
    static const PrecompiledDatabase database;
    return database;
  }
};

// Figure: "Database::find_cubin, hit, in a database of 108 CUBINs (sm_90), us per lookup":
// the cost of a warm-cache kernel fetch before the module load.
void BM_DatabaseFindCubin(benchmark::State& state) {
  const PrecompiledDatabase& precompiled = PrecompiledDatabase::get();
  const db::Database database = db::Database::open(precompiled.path, {.read_only = true});
  std::size_t i = 0;
  std::size_t bytes = 0;
  for (auto _ : state) {
    std::optional<db::CubinRecord> record = database.find_cubin(precompiled.keys[i++ % precompiled.keys.size()]);
    if (!record) {
      state.SkipWithError("a stored key was not found");
      break;
    }
    bytes += record->binary.size();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
  state.counters["cubins"] = static_cast<double>(database.stats().cubins);
}
BENCHMARK(BM_DatabaseFindCubin)->Unit(benchmark::kMicrosecond);

// Figure: "Database::find_cubin, miss (key not stored), us per lookup": what a cold cache
// pays before it compiles.
void BM_DatabaseFindCubinMiss(benchmark::State& state) {
  const PrecompiledDatabase& precompiled = PrecompiledDatabase::get();
  const db::Database database = db::Database::open(precompiled.path, {.read_only = true});
  const std::string absent(64, 'f');
  for (auto _ : state) {
    if (database.find_cubin(absent)) {
      state.SkipWithError("an absent key was found");
      break;
    }
  }
}
BENCHMARK(BM_DatabaseFindCubinMiss)->Unit(benchmark::kMicrosecond);

// Figure: "warm attention config lookup, us" (issue 5's target: 2 us): what
// Runtime::sparse_attention asks before every launch once the call's problem key has been
// looked up: the call's buckets from its params, then the memoized answer, here a tuned best
// config ("exact"). The database is not read again after the first call.
void BM_AttentionConfigLookupWarm(benchmark::State& state) {
  testing::TempDirectory directory;
  db::Database database = db::Database::open(directory / "lookup.db");
  const std::int64_t gpu_id = database.upsert_gpu(testing::h100());
  // Wan2.1-1.3B 480p: 12 heads x 32,760 tokens, 77 of 256 key blocks kept per query block.
  const runtime::AttentionProblem problem{templates::HalfDtype::bf16, 128, 128, 128, 0};
  SparseAttentionParams params{};
  params.batch = 1;
  params.heads = 12;
  params.tokens_q = params.tokens_kv = 32760;
  params.max_kv_blocks = 77;
  const templates::AttentionProblemKey key{
      {problem.dtype, problem.head_dim, problem.block_q, problem.block_kv, problem.fine_n},
      templates::attention_buckets_of(templates::attention_call_shape(params, problem.block_kv))};
  db::TrialRecord best = testing::ok_trial(gpu_id, templates::default_attention_config(
      problem.dtype, 128, 128, 128, 0, sm90()).tuning_json(), 1.0);
  best.family = "sparse_attention";
  best.problem_key = key.to_string();
  database.record_trial(best);
  runtime::AttentionConfigLookup lookup(&database, gpu_id, testing::h100(), 227 * 1024);
  if (lookup.find(problem, templates::attention_call_shape(params, problem.block_kv)).level !=
      runtime::LookupLevel::exact) {
    state.SkipWithError("the stored best config was not found");
    return;
  }
  for (auto _ : state) {
    const runtime::AttentionChoice& choice =
        lookup.find(problem, templates::attention_call_shape(params, problem.block_kv));
    benchmark::DoNotOptimize(&choice);
  }
}
BENCHMARK(BM_AttentionConfigLookupWarm)->Unit(benchmark::kMicrosecond);

// ------------------------------------------------------------------------------------ GPU

// The GPU pieces every GPU benchmark shares: a primary context, a stream and small permute
// buffers (B=1, H=2, N=1024, D=128, one tensor, [B,N,H,D] -> [B,H,N,D]).
struct GpuSetup {
  std::unique_ptr<jit::DeviceContext> context;
  jit::Target target = sm90();
  std::unique_ptr<jit::Stream> stream;
  jit::DeviceBuffer source, destination, permutation;
  PermuteParams params{};
  PermuteConfig config;

  explicit GpuSetup(int head_dim = 128, int heads = 2, int tokens = 1024) {
    const jit::DeviceInfo device = jit::query_device(0);
    target = jit::Target::for_compute_capability(device.cc_major, device.cc_minor);
    context = std::make_unique<jit::DeviceContext>(0);
    context->make_current();
    stream = std::make_unique<jit::Stream>();
    const std::size_t bytes = static_cast<std::size_t>(heads) * tokens * head_dim * 2;
    source = jit::DeviceBuffer(bytes);
    destination = jit::DeviceBuffer(bytes);
    source.fill(0x3c);
    std::vector<int> order(static_cast<std::size_t>(tokens));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937(42));
    permutation = jit::DeviceBuffer::from_host(order);
    const long long d = head_dim, h = heads, n = tokens;
    params.tensors[0] = {source.pointer(), destination.pointer(), n * h * d, d, h * d, h * n * d, n * d, d};
    params.permutation = static_cast<const int*>(permutation.pointer());
    params.tensor_count = 1;
    params.batch = 1;
    params.heads = heads;
    params.tokens = tokens;
    config = templates::default_permute_config(head_dim, PermuteDirection::gather,
                                               PermuteFamily::max_vector_bytes(params));
  }
  jit::KernelSpec specialization() const { return PermuteFamily::render(config, target); }
};

// Skips the benchmark, visibly, when there is no GPU; true when it may run.
bool require_gpu(benchmark::State& state) {
  std::string why;
  if (jit::driver_available(&why)) return true;
  state.SkipWithError(("no GPU: " + why).c_str());
  return false;
}

// Figure: "warm database to first launch, ms": a process that finds its kernel in the
// database: open the database, new KernelProvider, fetch the CUBIN (hit), cuModuleLoadData,
// launch one small permute and synchronize (the context already exists; the provider's module
// is unloaded at the end of each iteration, inside the timing).
void BM_WarmDatabaseToFirstLaunch(benchmark::State& state) {
  if (!require_gpu(state)) return;
  GpuSetup gpu;
  testing::TempDirectory directory;
  const std::filesystem::path path = directory / "warm.db";
  const jit::KernelSpec specialization = gpu.specialization();
  {
    db::Database database = db::Database::open(path);
    runtime::DatabaseCubinStore store(database);
    jit::KernelProvider(&store).binary(specialization);  // warm the database
  }
  for (auto _ : state) {
    db::Database database = db::Database::open(path);
    runtime::DatabaseCubinStore store(database);
    jit::KernelProvider provider(&store);
    const jit::Kernel kernel = provider.kernel(*gpu.context, specialization);
    PermuteFamily::launch(kernel, gpu.config, gpu.params, gpu.stream->handle());
    gpu.stream->synchronize();
    if (provider.store_hits() != 1 || provider.compiled() != 0) {
      state.SkipWithError("the kernel did not come from the database");
      break;
    }
  }
  state.SetLabel(specialization.label + " " + gpu.target.name());
}
BENCHMARK(BM_WarmDatabaseToFirstLaunch)->Unit(benchmark::kMillisecond);

// Figure: "loaded kernel lookup, us": KernelProvider::kernel() for a specialization already
// loaded in this process, i.e. the in-memory hot path before every launch (it includes the
// source key of the specialization, see BM_Key/source_key).
void BM_LoadedKernelLookup(benchmark::State& state) {
  if (!require_gpu(state)) return;
  GpuSetup gpu;
  jit::KernelProvider provider(nullptr);
  const jit::KernelSpec specialization = gpu.specialization();
  provider.kernel(*gpu.context, specialization);  // compile and load once
  for (auto _ : state) {
    jit::Kernel kernel = provider.kernel(*gpu.context, specialization);
    benchmark::DoNotOptimize(kernel.handle());
  }
  if (provider.compiled() != 1) state.SkipWithError("the kernel was compiled more than once");
}
BENCHMARK(BM_LoadedKernelLookup)->Unit(benchmark::kMicrosecond);

// Figure: "host time of one sparse_attention call, us": Runtime::sparse_attention with its
// kernel loaded (config lookup, validation, the loaded-kernel map, the launch with its tensor
// maps), timed on the host, one small call (1 x 2 heads x 1,024 tokens, D = 128, blocks of
// 128, every block kept) per iteration; the stream is drained every 64 calls, outside the
// timing, so the launch queue never fills.
void BM_SparseAttentionHostCall(benchmark::State& state) {
  if (!require_gpu(state)) return;
  runtime::Runtime runtime(runtime::RuntimeOptions{.device = 0, .database_path = std::nullopt, .use_database = false});
  runtime.context().make_current();
  jit::Stream stream;
  constexpr int kHeads = 2, kTokens = 1024, kHeadDim = 128, kBlock = 128;
  const AttentionCall call(kHeads, kTokens, kHeadDim, kBlock, 1.0, 7);
  const SparseAttentionParams& params = call.params;
  const runtime::AttentionProblem problem{templates::HalfDtype::bf16, kHeadDim, kBlock, kBlock, 0};
  runtime.sparse_attention(params, problem, stream.handle());  // compiles and loads the kernel
  stream.synchronize();
  std::int64_t calls = 0;
  for (auto _ : state) {
    runtime.sparse_attention(params, problem, stream.handle());
    if (++calls % 64 == 0) {
      state.PauseTiming();
      stream.synchronize();
      state.ResumeTiming();
    }
  }
  stream.synchronize();
  const runtime::AttentionChoice& choice =
      runtime.attention_config(problem, templates::attention_call_shape(params, kBlock));
  state.SetLabel(choice.config.tuning_json());
}
BENCHMARK(BM_SparseAttentionHostCall)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace sparsejit::bench
