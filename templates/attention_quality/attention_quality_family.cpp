#include "templates/attention_quality/attention_quality_family.h"

#include <cmath>
#include <stdexcept>

#include "templates/common/ceil_div.h"
#include "templates/sparse_attention/attention_family.h"

namespace sparsejit::templates {
namespace {

const std::vector<std::string_view> kHeaders = {"attention_quality/attention_quality.cuh",
                                                "attention_quality/attention_quality_params.h",
                                                "common/mma_tiles.cuh", "common/ptx.cuh"};

jit::KernelSpec render(const std::string& label, const std::string& name_expression, const jit::Target& target) {
  jit::KernelSpec spec;
  spec.family = "attention_quality";
  spec.label = label;
  spec.name_expression = name_expression;
  spec.request = render_program("attention_quality.cu", "attention_quality/attention_quality.cuh", kHeaders,
                                name_expression, target);
  return spec;
}

std::string head_dim_problem(int head_dim) {
  return table_contains(kQualityHeadDims, head_dim)
             ? std::string()
             : "head dim " + std::to_string(head_dim) + " is not supported (64, 96 or 128)";
}

// The checks both kernels share: sizes, and 16-byte alignment of the 16-bit inputs' rows
// (read in 16-byte chunks).
struct Checked16Bit {
  const char* name;
  const void* pointer;
  long long token_stride, head_stride, batch_stride;
};
void check_common(const char* kernel, int batch, int heads, std::initializer_list<int> tokens,
                  std::initializer_list<Checked16Bit> inputs) {
  const auto fail = [kernel](const std::string& why) { throw std::invalid_argument(std::string(kernel) + ": " + why); };
  for (int count : tokens)
    if (count < 1) fail("tokens must be positive (got " + std::to_string(count) + ")");
  if (batch < 1 || heads < 1)
    fail("batch and heads must be positive (got " + std::to_string(batch) + ", " + std::to_string(heads) + ")");
  if (heads > 65535 || batch > 65535) fail("heads and batch must be at most 65535");
  for (const Checked16Bit& input : inputs) {
    if (input.pointer == nullptr) fail(std::string(input.name) + " is null");
    if (!aligned_16(input.pointer) || (input.token_stride * 2) % 16 != 0)
      fail(std::string(input.name) + ": the pointer and the token stride (in bytes) must be multiples of 16");
    if (const std::string problem =
            row_stride_problem(input.name, input.head_stride, heads, input.batch_stride, batch, 16);
        !problem.empty())
      fail(problem);
  }
}

}  // namespace

std::string BlockMassConfig::name_expression() const {
  return "sparsejit::block_mass<" + std::to_string(dtype_template_code(dtype)) + ", " + std::to_string(head_dim) +
         ", " + std::to_string(block_q) + ", " + std::to_string(block_kv) + ">";
}

std::string BlockMassConfig::label() const {
  return "block_mass<" + std::string(to_string(dtype)) + " D=" + std::to_string(head_dim) + " blocks " +
         std::to_string(block_q) + "x" + std::to_string(block_kv) + ">";
}

// Q [block_q][D + 8] and two stages of K [64][D + 8], 16-bit (mass_tile in the .cuh).
int BlockMassConfig::shared_bytes() const { return (block_q + 2 * 64) * (head_dim + 8) * 2; }

std::string OutputErrorConfig::name_expression() const {
  return "sparsejit::output_error<" + std::to_string(dtype_template_code(dtype)) + ", " + std::to_string(head_dim) +
         ">";
}

std::string OutputErrorConfig::label() const {
  return "output_error<" + std::string(to_string(dtype)) + " D=" + std::to_string(head_dim) + ">";
}

std::string block_mass_config_problem(const BlockMassConfig& c, int max_shared_bytes) {
  if (std::string problem = head_dim_problem(c.head_dim); !problem.empty()) return problem;
  if (!table_contains(kQualityBlockSizes, c.block_q) || !table_contains(kQualityBlockSizes, c.block_kv))
    return "sparse block sizes must be 64 or 128 (got " + std::to_string(c.block_q) + "x" +
           std::to_string(c.block_kv) + ")";
  if (c.shared_bytes() > max_shared_bytes)
    return "the CTA needs " + std::to_string(c.shared_bytes()) + " bytes of shared memory, more than " +
           std::to_string(max_shared_bytes);
  return {};
}

std::string output_error_config_problem(const OutputErrorConfig& c) { return head_dim_problem(c.head_dim); }

int output_error_chunks(int tokens) { return ceil_div(tokens, kOutputErrorRows); }

jit::KernelSpec AttentionQualityFamily::render_block_mass(const BlockMassConfig& config, const jit::Target& target) {
  return render(config.label(), config.name_expression(), target);
}

jit::KernelSpec AttentionQualityFamily::render_output_error(const OutputErrorConfig& config,
                                                            const jit::Target& target) {
  return render(config.label(), config.name_expression(), target);
}

std::vector<jit::KernelSpec> AttentionQualityFamily::enumerate(const jit::Target& target) const {
  const int max_shared = max_shared_bytes_for(target);
  std::vector<jit::KernelSpec> space;
  for (HalfDtype dtype : {HalfDtype::bf16, HalfDtype::fp16})
    for (int head_dim : kQualityHeadDims)
      for (int block_q : kQualityBlockSizes)
        for (int block_kv : kQualityBlockSizes) {
          const BlockMassConfig config{dtype, head_dim, block_q, block_kv};
          if (block_mass_config_problem(config, max_shared).empty()) space.push_back(render_block_mass(config, target));
        }
  for (HalfDtype dtype : {HalfDtype::bf16, HalfDtype::fp16})
    for (int head_dim : kQualityHeadDims) space.push_back(render_output_error({dtype, head_dim}, target));
  return space;
}

void AttentionQualityFamily::validate(const BlockMassConfig& config, const BlockMassParams& p, int max_shared_bytes) {
  const auto fail = [](const std::string& why) { throw std::invalid_argument("block_mass: " + why); };
  if (const std::string problem = block_mass_config_problem(config, max_shared_bytes); !problem.empty()) fail(problem);
  check_common("block_mass", p.batch, p.heads, {p.tokens_q, p.tokens_kv},
               {{"q", p.q, p.q_token_stride, p.q_head_stride, p.q_batch_stride},
                {"k", p.k, p.k_token_stride, p.k_head_stride, p.k_batch_stride}});
  if (!(p.softmax_scale > 0.f) || !std::isfinite(p.softmax_scale))
    fail("softmax_scale must be positive and finite (got " + std::to_string(p.softmax_scale) + ")");
  if (p.lse == nullptr) fail("lse is null");
  if (p.mass == nullptr) fail("mass is null");
}

void AttentionQualityFamily::validate(const OutputErrorConfig& config, const OutputErrorParams& p) {
  const auto fail = [](const std::string& why) { throw std::invalid_argument("output_error: " + why); };
  if (const std::string problem = output_error_config_problem(config); !problem.empty()) fail(problem);
  check_common("output_error", p.batch, p.heads, {p.tokens},
               {{"o", p.o, p.o_token_stride, p.o_head_stride, p.o_batch_stride},
                {"o_reference", p.o_reference, p.o_token_stride, p.o_head_stride, p.o_batch_stride}});
  if (p.lse == nullptr || p.lse_reference == nullptr) fail("lse and lse_reference must not be null");
  if (p.partials == nullptr) fail("partials is null");
}

jit::LaunchConfig AttentionQualityFamily::geometry(const BlockMassConfig& config, const BlockMassParams& p,
                                                   CUstream stream) {
  jit::LaunchConfig launch;
  launch.grid = {static_cast<unsigned>(ceil_div(p.tokens_q, config.block_q)), static_cast<unsigned>(p.heads),
                 static_cast<unsigned>(p.batch)};
  launch.block = {static_cast<unsigned>(config.threads()), 1, 1};
  launch.dynamic_shared_bytes = static_cast<unsigned>(config.shared_bytes());
  launch.stream = stream;
  return launch;
}

jit::LaunchConfig AttentionQualityFamily::geometry(const OutputErrorConfig&, const OutputErrorParams& p,
                                                   CUstream stream) {
  jit::LaunchConfig launch;
  launch.grid = {static_cast<unsigned>(output_error_chunks(p.tokens)), static_cast<unsigned>(p.heads),
                 static_cast<unsigned>(p.batch)};
  launch.block = {static_cast<unsigned>(kOutputErrorThreads), 1, 1};
  launch.stream = stream;
  return launch;
}

void AttentionQualityFamily::launch(const jit::Kernel& kernel, const BlockMassConfig& config,
                                    const BlockMassParams& params, int max_shared_bytes, CUstream stream) {
  validate(config, params, max_shared_bytes);
  kernel.allow_dynamic_shared_bytes(static_cast<unsigned>(config.shared_bytes()));
  BlockMassParams copy = params;
  void* args[] = {&copy};
  kernel.launch(geometry(config, params, stream), args);
}

void AttentionQualityFamily::launch(const jit::Kernel& kernel, const OutputErrorConfig& config,
                                    const OutputErrorParams& params, CUstream stream) {
  validate(config, params);
  OutputErrorParams copy = params;
  void* args[] = {&copy};
  kernel.launch(geometry(config, params, stream), args);
}

}  // namespace sparsejit::templates
