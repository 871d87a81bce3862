#pragma once
// Zeroed device counters for persistent kernels that hand out their work items with atomics
// (the wgmma attention kernel's dynamic tile scheduler).
//
// A counter is one slot of kWorkCounterBytes: the kernel counts the items it hands out in
// the first 4 bytes and its finished CTAs in the next 4, and its last CTA sets both back to
// zero, so a slot is zeroed once, when allocated, and stays zero between launches. Two
// launches must never share a slot while either runs; launches on one stream run in order,
// so each (context, stream) owns one slot for the process's lifetime.
//
// A launch being captured into a CUDA graph gets a slot of its own, which the graph's node
// keeps: an instantiated graph never runs concurrently with itself (instantiating one
// captured graph twice and running both at once would share it). Nothing may be allocated
// during a capture, so that slot comes from the context's current chunk; when it has none
// left (or the context was never seen outside a capture) there is no slot, and the caller
// launches without a counter (the attention kernel then takes a CTA per work item).
//
// Slots come from 4 KiB chunks of plain device memory (cuMemAlloc, zeroed), 256 per chunk,
// kept until the process ends: a few KiB per context. Contexts are told apart by
// cuCtxGetId, so a context destroyed and created again at the same address gets fresh
// slots.
#include <cuda.h>

#include <cstddef>

namespace sparsejit::jit {

inline constexpr std::size_t kWorkCounterBytes = 16;

// The current context's counter slot for launches on `stream` (any stream of the current
// context, the legacy and per-thread default streams included), or 0 while `stream` is
// capturing and no slot is left (above). Thread-safe; allocates only for a (context, stream)
// it has not seen, never during a capture.
CUdeviceptr work_counter(CUstream stream);

}  // namespace sparsejit::jit
