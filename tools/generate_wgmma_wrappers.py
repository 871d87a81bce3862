#!/usr/bin/env python3
"""Prints the warpgroup_mma specializations of templates/common/hopper.cuh: wgmma with fp32
accumulators for bf16 (Dtype 0) and fp16 (Dtype 1) inputs, N = 64 and 128, in two forms
(A and B from shared memory, K-major; A from registers, B from shared memory MN-major).
Written out because an asm operand list cannot be built by the preprocessor. Run it and
paste the output between the markers in hopper.cuh when a shape is added."""


def operands(count):
    return ", ".join(f"%{i}" for i in range(count))


def accumulators(count):
    return ", ".join(f'"+f"(d[{i // 4}][{i % 4}])' for i in range(count))


def specialization(n, dtype, ptx_type):
    count = n // 2  # accumulator registers per thread
    return f"""template <>
struct warpgroup_mma<{dtype}, {n}> {{
  __device__ __forceinline__ static void shared_shared(float (&d)[{n // 8}][4], unsigned long long a,
                                                       unsigned long long b, int accumulate) {{
    asm volatile(
        "{{\\n.reg .pred p;\\nsetp.ne.b32 p, %{count + 2}, 0;\\n"
        "wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{ptx_type}.{ptx_type} "
        "{{{operands(count)}}}, "
        "%{count}, %{count + 1}, p, 1, 1, 0, 0;\\n}}\\n"
        : {accumulators(count)}
        : "l"(a), "l"(b), "r"(accumulate));
  }}
  __device__ __forceinline__ static void registers_shared_transposed(float (&d)[{n // 8}][4], const u32 (&a)[4],
                                                                     unsigned long long b, int accumulate) {{
    asm volatile(
        "{{\\n.reg .pred p;\\nsetp.ne.b32 p, %{count + 5}, 0;\\n"
        "wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{ptx_type}.{ptx_type} "
        "{{{operands(count)}}}, "
        "{{%{count}, %{count + 1}, %{count + 2}, %{count + 3}}}, %{count + 4}, p, 1, 1, 1;\\n}}\\n"
        : {accumulators(count)}
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate));
  }}
}};
"""


print("\n".join(specialization(n, dtype, ptx) for n in (64, 128) for dtype, ptx in ((0, "bf16"), (1, "f16"))))
