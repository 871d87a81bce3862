#include "templates/kernel_family.h"

#include <cstdint>

#include "templates/embedded_sources.h"

namespace sparsejit::templates {

int dtype_template_code(HalfDtype dtype) { return dtype == HalfDtype::bf16 ? 0 : 1; }

bool aligned_16(const void* pointer) { return reinterpret_cast<std::uintptr_t>(pointer) % 16 == 0; }

std::string row_stride_problem(const std::string& name, long long head_stride, int heads, long long batch_stride,
                               int batch, int bytes) {
  const struct {
    const char* what;
    long long stride;
    int extent;
  } offsets[] = {{"head", head_stride, heads}, {"batch", batch_stride, batch}};
  for (const auto& offset : offsets)
    if (offset.extent > 1 && (offset.stride * 2) % bytes != 0)
      return name + ": the " + offset.what + " stride (" + std::to_string(offset.stride) +
             " elements) must be a multiple of " + std::to_string(bytes) +
             " bytes, so that every row keeps the pointer's alignment";
  return {};
}

std::vector<std::string> common_nvrtc_options() {
  // -std=c++17: the newest dialect NVRTC 12 and 13 both accept.
  // -default-device: helpers in the headers need no __device__ annotation.
  return {"-std=c++17", "-default-device"};
}

jit::CompileRequest render_program(std::string_view program_name, std::string_view entry_header,
                                   const std::vector<std::string_view>& headers,
                                   const std::string& name_expression, const jit::Target& target) {
  jit::CompileRequest request;
  request.program_name = std::string(program_name);
  request.source = "#include \"" + std::string(entry_header) + "\"\n";
  for (std::string_view header : headers)
    request.headers.push_back({std::string(header), std::string(embedded_source(header))});
  request.name_expressions = {name_expression};
  request.options = common_nvrtc_options();
  request.target = target;
  return request;
}

}  // namespace sparsejit::templates
