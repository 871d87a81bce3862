#include "runtime/gpu_record.h"

namespace sparsejit::runtime {

std::string format_driver_version(int version) {
  return std::to_string(version / 1000) + "." + std::to_string(version % 1000 / 10);
}

db::GpuRecord to_gpu_record(const jit::DeviceInfo& device) {
  db::GpuRecord record;
  record.name = device.name;
  record.cc_major = device.cc_major;
  record.cc_minor = device.cc_minor;
  record.sm_count = device.sm_count;
  record.memory_bytes = device.memory_bytes;
  record.driver_version = format_driver_version(device.driver_version);
  record.uuid = device.uuid;
  record.sm_clock_khz = device.sm_clock_khz;
  record.memory_clock_khz = device.memory_clock_khz;
  return record;
}

}  // namespace sparsejit::runtime
