#pragma once
// The database's record of a GPU, from what the driver reports.
#include "db/database.h"
#include "jit/device.h"

namespace sparsejit::runtime {

db::GpuRecord to_gpu_record(const jit::DeviceInfo& device);

// "13.0" from the driver's 13000.
std::string format_driver_version(int version);

}  // namespace sparsejit::runtime
