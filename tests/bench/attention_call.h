#pragma once
// One sparse_attention call for the host-side benchmarks: bf16 Q, K, V, O of 1 x heads x
// tokens x head_dim, [B, H, N, D] contiguous, filled with 1.16 (finite; the figures time the
// host, not the values), and a random block-CSR mask (blocks of `block`, diagonal kept) on
// the device. Needs a current context.
#include <random>

#include "jit/device_memory.h"
#include "templates/sparse_attention/attention_params.h"
#include "templates/sparse_attention/block_mask.h"

namespace sparsejit::bench {

struct AttentionCall {
  jit::DeviceBuffer q, k, v, o, count, index;
  SparseAttentionParams params{};

  AttentionCall(int heads, int tokens, int head_dim, int block, double density, std::uint64_t seed) {
    std::mt19937_64 generator(seed);
    const templates::BlockMask mask =
        templates::random_block_mask(1, heads, tokens, tokens, block, block, density, generator);
    const std::size_t bytes = static_cast<std::size_t>(heads) * tokens * head_dim * 2;
    for (jit::DeviceBuffer* buffer : {&q, &k, &v, &o}) *buffer = jit::DeviceBuffer(bytes);
    for (jit::DeviceBuffer* buffer : {&q, &k, &v}) buffer->fill(0x3c);  // bf16 0x3c3c = 1.16
    count = jit::DeviceBuffer::from_host(mask.count);
    index = jit::DeviceBuffer::from_host(mask.index);
    params.q = q.pointer();
    params.k = k.pointer();
    params.v = v.pointer();
    params.o = o.pointer();
    const long long head = static_cast<long long>(tokens) * head_dim;
    params.q_batch_stride = params.k_batch_stride = params.v_batch_stride = params.o_batch_stride = heads * head;
    params.q_head_stride = params.k_head_stride = params.v_head_stride = params.o_head_stride = head;
    params.q_token_stride = params.k_token_stride = params.v_token_stride = params.o_token_stride = head_dim;
    params.kv_block_count = static_cast<const int*>(count.pointer());
    params.kv_block_index = static_cast<const int*>(index.pointer());
    params.max_kv_blocks = mask.max_kv_blocks;
    params.batch = 1;
    params.heads = heads;
    params.tokens_q = params.tokens_kv = tokens;
    params.softmax_scale = 0.088f;
  }
};

}  // namespace sparsejit::bench
