#pragma once
// A kernel family: a templated kernel source and the descriptor of its parameter space.
//
// Each family lives in templates/<family>/: the device code (.cuh), a params header shared
// with the host, a descriptor (its space, constraints, rendering and launch) and a CPU
// reference. The registry (registry.cpp) lists the families; adding one touches its folder
// and one line there.
#include <algorithm>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "jit/kernel_provider.h"
#include "jit/target.h"
#include "templates/common/half_precision.h"
#include "templates/tuning.h"

namespace sparsejit::templates {

class KernelFamily {
 public:
  virtual ~KernelFamily() = default;
  virtual std::string_view name() const = 0;
  virtual std::string_view summary() const = 0;
  // Every valid specialization of the family for `target`: the space a tuner searches and
  // `sparsejit precompile` compiles. Never contains a specialization that cannot compile.
  virtual std::vector<jit::KernelSpec> enumerate(const jit::Target& target) const = 0;
  // The problems `sparsejit tune` measures by default (DESIGN.md's model shapes).
  virtual std::vector<std::unique_ptr<TuningProblem>> tuning_problems() const = 0;
};

// Helpers of the descriptors.
// Whether a constexpr table of the space holds `value`.
template <class Table>
bool table_contains(const Table& table, int value) {
  return std::find(table.begin(), table.end(), value) != table.end();
}
// The Dtype template argument of the kernels: 0 for bf16, 1 for fp16 (common/ptx.cuh).
int dtype_template_code(HalfDtype dtype);
// Whether a pointer is 16-byte aligned, as cp.async and 16-byte loads need.
bool aligned_16(const void* pointer);
// Why a [batch, heads, tokens, D] tensor of 16-bit elements would have a row off the `bytes`
// alignment a kernel reads or writes its rows with, by its head or batch stride (in elements;
// a stride over a dimension of one index is never applied); empty where none would. The
// pointer and the token stride are checked apart.
std::string row_stride_problem(const std::string& name, long long head_stride, int heads, long long batch_stride,
                               int batch, int bytes);

// Options every specialization is compiled with. Kernel sources include only embedded
// headers (no toolkit headers), so no --include-path is needed on a user's machine.
std::vector<std::string> common_nvrtc_options();

// A CompileRequest whose source includes `entry_header` and instantiates `name_expression`;
// `headers` are the embedded files the entry header may include (itself among them).
jit::CompileRequest render_program(std::string_view program_name, std::string_view entry_header,
                                   const std::vector<std::string_view>& headers,
                                   const std::string& name_expression, const jit::Target& target);

}  // namespace sparsejit::templates
