#include "jit/device_memory.h"

#include <algorithm>
#include <string>
#include <utility>

#include "jit/device.h"
#include "jit/driver_api.h"
#include "jit/error.h"

namespace sparsejit::jit {

DeviceBuffer::DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
  if (bytes == 0) return;
  SJ_CU(cuCtxGetCurrent(&context_));
  if (context_ == nullptr)  // what the driver would refuse, said plainly
    throw CudaError(CUDA_ERROR_INVALID_CONTEXT, "cuMemAlloc(" + std::to_string(bytes) + " bytes)",
                    "no context is current on this thread");
  SJ_CU(cuCtxGetId(context_, &context_id_));
  check_driver_result(driver().cuMemAlloc(&address_, bytes),
                      ("cuMemAlloc(" + std::to_string(bytes) + " bytes)").c_str());
}

bool DeviceBuffer::context_alive() const noexcept {
  unsigned long long id = 0;
  return driver().cuCtxGetId(context_, &id) == CUDA_SUCCESS && id == context_id_;
}

void DeviceBuffer::require_context(const char* what) const {
  if (!context_alive())
    throw CudaError(CUDA_ERROR_CONTEXT_IS_DESTROYED, what,
                    "the context this buffer was allocated in has been destroyed, and its memory with it");
}

void DeviceBuffer::release() noexcept {
  if (address_ == 0) return;
  // No throw from a destructor: where its context cannot be made current, the memory is
  // left to that context's teardown; where the context is gone, so is the memory, and the
  // address may belong to a newer allocation.
  try {
    if (!context_alive()) {
      address_ = 0;
      return;
    }
    const ScopedCurrentContext current(context_);
    driver().cuMemFree(address_);
  } catch (...) {
  }
  address_ = 0;
}

DeviceBuffer::~DeviceBuffer() { release(); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : address_(std::exchange(other.address_, 0)),
      bytes_(std::exchange(other.bytes_, 0)),
      context_(std::exchange(other.context_, nullptr)),
      context_id_(std::exchange(other.context_id_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    release();
    address_ = std::exchange(other.address_, 0);
    bytes_ = std::exchange(other.bytes_, 0);
    context_ = std::exchange(other.context_, nullptr);
    context_id_ = std::exchange(other.context_id_, 0);
  }
  return *this;
}

void DeviceBuffer::upload(std::span<const std::uint8_t> host) {
  if (host.size() != bytes_)
    throw JitError("upload of " + std::to_string(host.size()) + " bytes into a buffer of " +
                   std::to_string(bytes_));
  if (bytes_ == 0) return;
  require_context("DeviceBuffer::upload");
  const ScopedCurrentContext current(context_);
  SJ_CU(cuMemcpyHtoD(address_, host.data(), bytes_));
  // From pageable memory the copy may still be in flight on the legacy stream, which
  // sparsejit's non-blocking streams do not wait for: finish it here.
  SJ_CU(cuStreamSynchronize(CU_STREAM_LEGACY));
}

std::vector<std::uint8_t> DeviceBuffer::download() const {
  std::vector<std::uint8_t> host(bytes_);
  if (bytes_ == 0) return host;
  require_context("DeviceBuffer::download");
  const ScopedCurrentContext current(context_);
  SJ_CU(cuMemcpyDtoH(host.data(), address_, bytes_));
  return host;
}

void DeviceBuffer::fill(std::uint8_t byte) {
  if (bytes_ == 0) return;
  require_context("DeviceBuffer::fill");
  const ScopedCurrentContext current(context_);
  SJ_CU(cuMemsetD8(address_, byte, bytes_));
  SJ_CU(cuStreamSynchronize(CU_STREAM_LEGACY));  // as in upload(): done before any stream reads
}

std::vector<std::uint8_t> copy_device_to_host(const void* device_pointer, std::size_t bytes) {
  std::vector<std::uint8_t> host(bytes);
  if (bytes != 0)
    SJ_CU(cuMemcpyDtoH(host.data(), reinterpret_cast<CUdeviceptr>(device_pointer), bytes));
  return host;
}

Stream::Stream() { SJ_CU(cuStreamCreate(&stream_, CU_STREAM_NON_BLOCKING)); }

Stream::~Stream() {
  if (stream_ != nullptr) driver().cuStreamDestroy(stream_);
}

void Stream::synchronize() const { SJ_CU(cuStreamSynchronize(stream_)); }

}  // namespace sparsejit::jit
