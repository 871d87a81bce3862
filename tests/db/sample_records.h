// Records the database tests build their rows from: GPUs, CUBINs and trials with fixed,
// recognizable values.
#pragma once

#include <iomanip>
#include <sstream>
#include <string>

#include "db/database.h"

namespace sparsejit::testing {

using db::CubinRecord;
using db::GpuRecord;
using db::TrialRecord;
using db::TrialStatus;

// A valid 64-hex-digit key unique per (writer, index).
inline std::string cubin_key(int writer, int index) {
  std::ostringstream key;
  key << std::hex << std::setfill('0') << std::setw(8) << writer << std::setw(56) << index;
  return key.str();
}

// A small CUBIN stand-in whose size and bytes depend on (writer, index).
inline CubinRecord sample_cubin(int writer, int index) {
  CubinRecord cubin;
  cubin.key = cubin_key(writer, index);
  cubin.family = "permute";
  cubin.target = "sm_90a";
  cubin.nvrtc_version = "13.0 (build cuda_13.0.r13.0/compiler.36424714_0)";
  cubin.specialization = "permute<bf16,128,gather,bnhd>#" + std::to_string(writer) + "." + std::to_string(index);
  cubin.lowered_names_json = R"({"permute<__nv_bfloat16,128>": "_Z7permuteI13__nv_bfloat16Li128EEvv"})";
  cubin.binary.resize(static_cast<std::size_t>(16 + (writer * 131 + index) % 512));
  for (std::size_t i = 0; i < cubin.binary.size(); ++i) {
    cubin.binary[i] = static_cast<std::uint8_t>(writer * 31 + index * 7 + static_cast<int>(i));
  }
  cubin.compile_ms = 30.0 + index;
  return cubin;
}

inline GpuRecord h100() {
  return GpuRecord{
      .name = "NVIDIA H100 80GB HBM3",
      .cc_major = 9,
      .cc_minor = 0,
      .sm_count = 132,
      .memory_bytes = 85029158912,
      .driver_version = "580.65.06",
      .uuid = "GPU-1b2c",
      .sm_clock_khz = 1980000,
      .memory_clock_khz = 2619000,
  };
}

inline TrialRecord ok_trial(std::int64_t gpu_id, const std::string& config, double median_ms) {
  return TrialRecord{.gpu_id = gpu_id,
                     .family = "permute_tokens",
                     .problem_key = "permute_tokens|d128|gather",
                     .config_json = config,
                     .status = TrialStatus::ok,
                     .median_ms = median_ms,
                     .p20_ms = median_ms * 0.99,
                     .p80_ms = median_ms * 1.01,
                     .rel_error = 0.0,
                     .sm_clock_khz = 1755000,
                     .cubin_key = {},
                     .message = {}};
}

}  // namespace sparsejit::testing
