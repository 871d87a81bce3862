#pragma once
// Thin wrappers over the PTX instructions the kernels use (sm_80 and newer): asynchronous
// copies, ldmatrix, mma.sync for 16-bit inputs with fp32 accumulation, packing, exp2.
// No toolkit headers: NVRTC compiles this on a machine with only the driver and libnvrtc.

namespace sparsejit {

typedef unsigned int u32;

// Shared-memory address of a generic pointer, as the PTX instructions below want it.
__device__ __forceinline__ u32 shared_address(const void* pointer) {
  u32 address;
  asm("{ .reg .u64 wide; cvta.to.shared.u64 wide, %1; cvt.u32.u64 %0, wide; }\n"
      : "=r"(address)
      : "l"(pointer));
  return address;
}

// 16-byte global -> shared copy; copies `source_bytes` (0 or 16) and zero-fills the rest,
// so out-of-range rows read as zeros without touching memory.
__device__ __forceinline__ void copy_async_16(void* shared, const void* global, int source_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(shared)),
               "l"(global), "r"(source_bytes));
}
__device__ __forceinline__ void copy_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int Pending>
__device__ __forceinline__ void copy_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending));
}

// Four 8x8 matrices of 16-bit elements; lane l supplies the address of row l % 8 of matrix l / 8,
// as a shared-memory address (shared_address) or a generic pointer. Hot loops pass 32-bit
// addresses, a lane's base plus constants: ptxas folds the constants into the instruction,
// where 64-bit pointer arithmetic cost two IMADs an ldmatrix.
__device__ __forceinline__ void load_matrix_x4(u32 (&r)[4], u32 shared) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared));
}
__device__ __forceinline__ void load_matrix_x4(u32 (&r)[4], const void* shared) {
  load_matrix_x4(r, shared_address(shared));
}
__device__ __forceinline__ void load_matrix_x4_transposed(u32 (&r)[4], u32 shared) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared));
}

// D(16x8, fp32) += A(16x16, row) * B(16x8, col); Dtype 0 = bf16 inputs, 1 = fp16. Not
// volatile: a pure function of its registers, which the compiler may schedule and predicate.
template <int Dtype>
__device__ __forceinline__ void mma_16816(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1);
template <>
__device__ __forceinline__ void mma_16816<0>(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16816<1>(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats rounded to one 32-bit pair: `low` in bits 0..15, `high` in bits 16..31.
template <int Dtype>
__device__ __forceinline__ u32 pack_pair(float low, float high);
template <>
__device__ __forceinline__ u32 pack_pair<0>(float low, float high) {
  u32 packed;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(packed) : "f"(high), "f"(low));
  return packed;
}
template <>
__device__ __forceinline__ u32 pack_pair<1>(float low, float high) {
  u32 packed;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(packed) : "f"(high), "f"(low));
  return packed;
}

// The two 16-bit values of a packed pair as floats: `low` from bits 0..15, `high` from 16..31.
template <int Dtype>
__device__ __forceinline__ void unpack_pair(u32 packed, float& low, float& high);
template <>
__device__ __forceinline__ void unpack_pair<0>(u32 packed, float& low, float& high) {
  low = __int_as_float(packed << 16);
  high = __int_as_float(packed & 0xffff0000u);
}
template <>
__device__ __forceinline__ void unpack_pair<1>(u32 packed, float& low, float& high) {
  asm("{ .reg .f16 l, h; mov.b32 {l, h}, %2; cvt.f32.f16 %0, l; cvt.f32.f16 %1, h; }\n"
      : "=f"(low), "=f"(high)
      : "r"(packed));
}

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float fast_log2(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// The dynamic shared memory the launch gave this CTA, in bytes.
__device__ __forceinline__ u32 dynamic_shared_bytes() {
  u32 bytes;
  asm("mov.u32 %0, %%dynamic_smem_size;\n" : "=r"(bytes));
  return bytes;
}

__device__ __forceinline__ float negative_infinity() { return __int_as_float(0xff800000u); }

}  // namespace sparsejit
