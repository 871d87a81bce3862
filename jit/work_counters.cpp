#include "jit/work_counters.h"

#include <map>
#include <mutex>
#include <utility>

#include "jit/driver_api.h"

namespace sparsejit::jit {
namespace {

constexpr std::size_t kChunkBytes = 4096;

struct ContextSlots {
  CUdeviceptr chunk = 0;    // the chunk slots are taken from
  std::size_t next = 0;     // its first unused byte
  std::map<unsigned long long, CUdeviceptr> by_stream;  // cuStreamGetId -> slot
};

// A zeroed slot of `slots`' current chunk, or of a new one.
CUdeviceptr take_slot(ContextSlots& slots) {
  if (slots.chunk == 0 || slots.next + kWorkCounterBytes > kChunkBytes) {
    CUdeviceptr chunk = 0;
    SJ_CU(cuMemAlloc(&chunk, kChunkBytes));
    // Synchronous on the legacy stream, which every blocking stream waits for; finished
    // here so that a non-blocking stream cannot run ahead of it.
    SJ_CU(cuMemsetD8(chunk, 0, kChunkBytes));
    SJ_CU(cuStreamSynchronize(CU_STREAM_LEGACY));
    slots.chunk = chunk;
    slots.next = 0;
  }
  const CUdeviceptr slot = slots.chunk + slots.next;
  slots.next += kWorkCounterBytes;
  return slot;
}

}  // namespace

CUdeviceptr work_counter(CUstream stream) {
  static std::mutex mutex;
  static std::map<unsigned long long, ContextSlots> contexts;  // cuCtxGetId -> its slots

  CUcontext context = nullptr;
  SJ_CU(cuCtxGetCurrent(&context));
  unsigned long long context_id = 0, stream_id = 0;
  SJ_CU(cuCtxGetId(context, &context_id));
  CUstreamCaptureStatus capture = CU_STREAM_CAPTURE_STATUS_NONE;
  SJ_CU(cuStreamIsCapturing(stream, &capture));
  if (capture == CU_STREAM_CAPTURE_STATUS_NONE)  // (the driver refuses cuStreamGetId while capturing)
    SJ_CU(cuStreamGetId(stream, &stream_id));

  const std::lock_guard lock(mutex);
  ContextSlots& slots = contexts[context_id];
  if (capture != CU_STREAM_CAPTURE_STATUS_NONE)
    return slots.chunk != 0 && slots.next + kWorkCounterBytes <= kChunkBytes ? take_slot(slots) : 0;
  const auto found = slots.by_stream.find(stream_id);
  if (found != slots.by_stream.end()) return found->second;
  const CUdeviceptr slot = take_slot(slots);
  slots.by_stream.emplace(stream_id, slot);
  return slot;
}

}  // namespace sparsejit::jit
