#pragma once
// Owning wrappers for device memory and streams (plain cuMemAlloc, never managed memory).
#include <cuda.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace sparsejit::jit {

// Device memory of the context current where it was allocated. Its methods and its destructor
// work in that context whatever the calling thread has current, and leave the thread's
// current context as they found it. The buffer remembers that context instance (cuCtxGetId),
// not only its handle: once the context is destroyed (its memory with it), the destructor
// frees nothing, even where the driver hands a new context the same handle and the same
// addresses (a primary context released and retained again), and the methods throw CudaError.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t bytes);  // allocates in the current context (one must be current)
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  CUdeviceptr address() const { return address_; }
  void* pointer() const { return reinterpret_cast<void*>(address_); }
  std::size_t bytes() const { return bytes_; }

  // All three are synchronous: the data is in place when they return, for any stream.
  void upload(std::span<const std::uint8_t> host);   // host.size() must equal bytes()
  std::vector<std::uint8_t> download() const;
  void fill(std::uint8_t byte);                      // e.g. poison before a test launch

  template <class T>
  static DeviceBuffer from_host(const std::vector<T>& values) {
    DeviceBuffer buffer(values.size() * sizeof(T));
    buffer.upload({reinterpret_cast<const std::uint8_t*>(values.data()), buffer.bytes()});
    return buffer;
  }
  template <class T>
  std::vector<T> download_as() const {
    const std::vector<std::uint8_t> raw = download();
    std::vector<T> values(raw.size() / sizeof(T));
    std::copy_n(raw.data(), values.size() * sizeof(T), reinterpret_cast<std::uint8_t*>(values.data()));
    return values;
  }

 private:
  CUdeviceptr address_ = 0;
  std::size_t bytes_ = 0;
  CUcontext context_ = nullptr;        // where address_ was allocated
  unsigned long long context_id_ = 0;  // that context's cuCtxGetId

  bool context_alive() const noexcept;           // context_ is still the instance context_id_ names
  void require_context(const char* what) const;  // throws CudaError where it is not
  void release() noexcept;                       // frees address_ (in context_), if any
};

// Copies `bytes` from device memory the caller owns (synchronous).
std::vector<std::uint8_t> copy_device_to_host(const void* device_pointer, std::size_t bytes);

// The same for `count` elements of a trivially copyable T.
template <class T>
std::vector<T> copy_device_to_host_as(const void* device_pointer, std::size_t count) {
  const std::vector<std::uint8_t> bytes = copy_device_to_host(device_pointer, count * sizeof(T));
  std::vector<T> values(count);
  std::copy_n(bytes.data(), bytes.size(), reinterpret_cast<std::uint8_t*>(values.data()));
  return values;
}

// A non-blocking stream of the current context.
class Stream {
 public:
  Stream();
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  CUstream handle() const { return stream_; }
  // Waits for the stream; surfaces any error of the kernels run on it.
  void synchronize() const;

 private:
  CUstream stream_ = nullptr;
};

}  // namespace sparsejit::jit
