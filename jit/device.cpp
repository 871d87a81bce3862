#include "jit/device.h"

#include <array>
#include <cstdio>

#include "jit/driver_api.h"
#include "jit/error.h"

namespace sparsejit::jit {
namespace {

CUdevice device_handle(int ordinal) {
  const int count = device_count();
  if (ordinal < 0 || ordinal >= count)
    throw JitError("GPU " + std::to_string(ordinal) + " does not exist: this machine has " +
                   std::to_string(count) + " GPU(s), numbered from 0");
  CUdevice device = 0;
  SJ_CU(cuDeviceGet(&device, ordinal));
  return device;
}

int attribute(CUdevice device, CUdevice_attribute which) {
  int value = 0;
  SJ_CU(cuDeviceGetAttribute(&value, which, device));
  return value;
}

std::string format_uuid(const CUuuid& uuid) {
  // Groups of 4-2-2-2-6 bytes, as nvidia-smi prints them.
  std::string out = "GPU-";
  std::array<char, 3> hex{};
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    std::snprintf(hex.data(), hex.size(), "%02x", static_cast<unsigned char>(uuid.bytes[i]));
    out += hex.data();
  }
  return out;
}

}  // namespace

int device_count() {
  int count = 0;
  SJ_CU(cuDeviceGetCount(&count));
  return count;
}

DeviceInfo query_device(int ordinal) {
  const CUdevice device = device_handle(ordinal);
  DeviceInfo info;
  info.ordinal = ordinal;
  std::array<char, 256> name{};
  SJ_CU(cuDeviceGetName(name.data(), static_cast<int>(name.size()), device));
  info.name = name.data();
  info.cc_major = attribute(device, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
  info.cc_minor = attribute(device, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
  info.sm_count = attribute(device, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
  std::size_t bytes = 0;
  SJ_CU(cuDeviceTotalMem(&bytes, device));
  info.memory_bytes = static_cast<std::int64_t>(bytes);
  SJ_CU(cuDriverGetVersion(&info.driver_version));
  CUuuid uuid{};
  SJ_CU(cuDeviceGetUuid(&uuid, device));
  info.uuid = format_uuid(uuid);
  info.sm_clock_khz = attribute(device, CU_DEVICE_ATTRIBUTE_CLOCK_RATE);
  info.memory_clock_khz = attribute(device, CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE);
  info.max_shared_bytes_per_block =
      attribute(device, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
  info.l2_bytes = attribute(device, CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE);
  return info;
}

DeviceContext::DeviceContext(int ordinal) : ordinal_(ordinal), device_(device_handle(ordinal)) {
  SJ_CU(cuDevicePrimaryCtxRetain(&context_, device_));
}

DeviceContext::~DeviceContext() {
  // A destructor must not throw; a failed release leaves the context to process exit.
  driver().cuDevicePrimaryCtxRelease(device_);
}

void DeviceContext::make_current() const { SJ_CU(cuCtxSetCurrent(context_)); }

ScopedCurrentContext::ScopedCurrentContext(CUcontext context) {
  SJ_CU(cuCtxGetCurrent(&previous_));
  if (previous_ == context) return;
  SJ_CU(cuCtxSetCurrent(context));
  switched_ = true;
}

ScopedCurrentContext::~ScopedCurrentContext() {
  if (switched_) driver().cuCtxSetCurrent(previous_);  // a failure leaves the thread's context as it is
}

}  // namespace sparsejit::jit
