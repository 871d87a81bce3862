// sparsejit info: the GPUs, the driver, NVRTC (its version and library, or why it cannot be
// opened) and the database this machine would use.
#include <cstdio>
#include <iostream>

#include "db/paths.h"
#include "jit/device.h"
#include "jit/driver_api.h"
#include "jit/error.h"
#include "jit/nvrtc_api.h"
#include "jit/nvrtc_compiler.h"
#include "jit/target.h"
#include "runtime/gpu_record.h"
#include "tools/cli_common.h"

namespace sparsejit::tools {
namespace {

struct InfoOptions {
  bool json = false;
};

int run_info(const GlobalOptions& global, const InfoOptions& options) {
  nlohmann::json report;
  try {
    report["nvrtc"] = jit::nvrtc_version().to_string();
    report["nvrtc_library"] = jit::nvrtc("sparsejit info").library;
  } catch (const jit::NvrtcUnavailableError& error) {  // info still shows the rest
    report["nvrtc"] = std::string("unavailable: ") + error.what();
    report["nvrtc_library"] = nullptr;
  }
  std::string database;
  try {
    database = database_path(global).string();
  } catch (const std::exception& error) {
    database = std::string("(none: ") + error.what() + ")";
  }
  report["database"] = database;

  std::string no_gpu_reason;
  if (!jit::driver_available(&no_gpu_reason)) {
    report["gpus"] = nlohmann::json::array();
    report["no_gpu"] = no_gpu_reason;
    if (options.json) {
      std::cout << report.dump(2) << "\n";
    } else {
      std::cout << "NVRTC     " << report["nvrtc"].get<std::string>() << "\n"
                << "database  " << database << "\n";
    }
    std::fprintf(stderr, "sparsejit: %s\n", no_gpu_reason.c_str());
    return kExitNoGpu;
  }

  int driver_version = 0;
  SJ_CU(cuDriverGetVersion(&driver_version));
  report["driver"] = runtime::format_driver_version(driver_version);
  Table table({"GPU", "name", "target", "SMs", "memory", "L2", "smem/block", "uuid"});
  for (int ordinal = 0; ordinal < jit::device_count(); ++ordinal) {
    const jit::DeviceInfo device = jit::query_device(ordinal);
    const db::GpuRecord record = runtime::to_gpu_record(device);
    const std::string target =
        jit::Target::for_compute_capability(device.cc_major, device.cc_minor).name();
    report["gpus"].push_back({{"ordinal", ordinal},
                              {"name", device.name},
                              {"compute_capability", std::to_string(device.cc_major) + "." +
                                                         std::to_string(device.cc_minor)},
                              {"target", target},
                              {"sm_count", device.sm_count},
                              {"memory_bytes", device.memory_bytes},
                              {"l2_bytes", device.l2_bytes},
                              {"max_shared_bytes_per_block", device.max_shared_bytes_per_block},
                              {"sm_clock_khz", device.sm_clock_khz},
                              {"uuid", device.uuid},
                              {"fingerprint", record.fingerprint()}});
    table.add({std::to_string(ordinal), device.name, target, std::to_string(device.sm_count),
               format_bytes(device.memory_bytes), format_bytes(device.l2_bytes),
               format_bytes(device.max_shared_bytes_per_block), device.uuid});
  }
  if (options.json) {
    std::cout << report.dump(2) << "\n";
  } else {
    std::cout << "driver    CUDA " << report["driver"].get<std::string>() << "\n"
              << "NVRTC     " << report["nvrtc"].get<std::string>() << "\n"
              << "database  " << database << "\n\n"
              << table.render();
  }
  return kExitOk;
}

}  // namespace

void add_info_command(CLI::App& app, GlobalOptions& global) {
  auto options = std::make_shared<InfoOptions>();
  CLI::App* command = app.add_subcommand(
      "info", "Show the GPUs, driver, NVRTC and database path. Exits 2 when there is no GPU.");
  command->add_flag("--json", options->json, "print JSON");
  command->callback([&global, options] { global.exit_code = run_info(global, *options); });
}

}  // namespace sparsejit::tools
