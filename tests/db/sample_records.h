// Records the database tests build their rows from (GPUs, CUBINs and trials with fixed,
// recognizable values) and a small database with every kind of row.
#pragma once

#include <filesystem>
#include <iomanip>
#include <sstream>
#include <string>

#include "db/database.h"
#include "db/sqlite.h"

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

inline GpuRecord h100_pcie() {
  GpuRecord gpu = h100();
  gpu.name = "NVIDIA H100 PCIe";
  gpu.sm_count = 114;
  gpu.memory_bytes = 85520809984;
  gpu.uuid = "GPU-77aa";
  return gpu;
}

// Fills a new database at `path` with a few rows of every table and fixed timestamps, so
// that its export is always the same text (tests/db/data/sample_v1.json):
//   GPUs: the H100 SXM and the H100 PCIe;
//   CUBINs: sample_cubin(0, 1) and (0, 2);
//   trials on the SXM, problem d128: {"vec":8} 2 ms (CUBIN 1), {"vec":16} 1.25 ms (CUBIN 2,
//     the best), {"vec":2} failed with a two-line message; problem d64: {"vec":4} incorrect;
//   trials on the PCIe, problem d128: {"vec":8} 3 ms (the best);
//   sparsity profiles: two heads of wan2.1-14b step 12 layer 0.
inline void build_sample_database(const std::filesystem::path& path) {
  db::Database database = db::Database::open(path);
  const std::int64_t sxm = database.upsert_gpu(h100());
  const std::int64_t pcie = database.upsert_gpu(h100_pcie());
  for (int index : {1, 2}) {
    CubinRecord cubin = sample_cubin(0, index);
    cubin.created_at = "2025-01-30T07:00:0" + std::to_string(index) + ".000Z";
    database.put_cubin(cubin);
  }
  TrialRecord slow = ok_trial(sxm, R"({"vec":8})", 2.0);
  slow.cubin_key = cubin_key(0, 1);
  database.record_trial(slow);
  TrialRecord fast = ok_trial(sxm, R"({"vec":16})", 1.25);
  fast.cubin_key = cubin_key(0, 2);
  database.record_trial(fast);
  TrialRecord failed = ok_trial(sxm, R"({"vec":2})", 0);
  failed.status = TrialStatus::failed;
  failed.median_ms = failed.p20_ms = failed.p80_ms = failed.rel_error = std::nullopt;
  failed.message = "CUDA_ERROR_ILLEGAL_ADDRESS\nin permute_tokens<bf16,128>";
  database.record_trial(failed);
  TrialRecord incorrect = ok_trial(sxm, R"({"vec":4})", 0.75);
  incorrect.problem_key = "permute_tokens|d64|gather";
  incorrect.status = TrialStatus::incorrect;
  incorrect.rel_error = 0.5;
  incorrect.message = "relative error 0.5 above the bound 0.001";
  database.record_trial(incorrect);
  database.record_trial(ok_trial(pcie, R"({"vec":8})", 3.0));

  db::Connection connection = db::Connection::open(path, db::OpenMode::read_write_create);
  connection.exec(R"sql(
    UPDATE gpus SET first_seen = printf('2025-01-%02dT08:00:00.000Z', id),
                    last_seen = printf('2025-02-%02dT09:30:00.500Z', id);
    UPDATE trials SET created_at = printf('2025-02-01T10:00:%02d.000Z', id);
    UPDATE best_configs SET updated_at = printf('2025-02-01T11:00:%02d.000Z', id);
    INSERT INTO sparsity_profiles (model, step, layer, head, density, tau) VALUES
      ('wan2.1-14b', 12, 0, 0, 0.3, 0.95), ('wan2.1-14b', 12, 0, 1, 0.125, 0.95);
  )sql");
}

}  // namespace sparsejit::testing
