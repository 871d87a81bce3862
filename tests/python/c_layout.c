/* Prints, as JSON, the size of each struct of runtime/sparsejit.h and the offset of each of
 * its fields (offset and size) as this C compiler lays them out, for test_capi.py to compare with the ctypes
 * declarations of python/sparsejit/_capi.py. */
#include <stddef.h>
#include <stdio.h>

#include "runtime/sparsejit.h"

static int first_struct = 1, first_field = 1;

static void begin(const char* name, size_t size) {
  printf("%s\"%s\": {\"size\": %zu, \"fields\": {", first_struct ? "" : ", ", name, size);
  first_struct = 0;
  first_field = 1;
}
static void field(const char* name, size_t offset, size_t size) {
  printf("%s\"%s\": [%zu, %zu]", first_field ? "" : ", ", name, offset, size);
  first_field = 0;
}
static void end(void) { printf("}}"); }

#define BEGIN(type) begin(#type, sizeof(type))
#define FIELD(type, member) field(#member, offsetof(type, member), sizeof(((type*)0)->member))

int main(void) {
  printf("{");
  BEGIN(sparsejit_tensor);
  FIELD(sparsejit_tensor, data); FIELD(sparsejit_tensor, batch); FIELD(sparsejit_tensor, heads);
  FIELD(sparsejit_tensor, tokens); FIELD(sparsejit_tensor, head_dim); FIELD(sparsejit_tensor, batch_stride);
  FIELD(sparsejit_tensor, head_stride); FIELD(sparsejit_tensor, token_stride);
  end();
  BEGIN(sparsejit_runtime_options);
  FIELD(sparsejit_runtime_options, device); FIELD(sparsejit_runtime_options, database_path);
  FIELD(sparsejit_runtime_options, use_database);
  end();
  BEGIN(sparsejit_permute_args);
  FIELD(sparsejit_permute_args, tensor_count); FIELD(sparsejit_permute_args, source);
  FIELD(sparsejit_permute_args, destination); FIELD(sparsejit_permute_args, permutation);
  FIELD(sparsejit_permute_args, direction);
  end();
  BEGIN(sparsejit_block_mask);
  FIELD(sparsejit_block_mask, form); FIELD(sparsejit_block_mask, block_q); FIELD(sparsejit_block_mask, block_kv);
  FIELD(sparsejit_block_mask, kv_block_count); FIELD(sparsejit_block_mask, kv_block_index);
  FIELD(sparsejit_block_mask, kv_block_bits); FIELD(sparsejit_block_mask, kv_block_words);
  FIELD(sparsejit_block_mask, max_kv_blocks); FIELD(sparsejit_block_mask, fine_n);
  FIELD(sparsejit_block_mask, fine_bits);
  end();
  BEGIN(sparsejit_mask_inputs);
  FIELD(sparsejit_mask_inputs, dtype); FIELD(sparsejit_mask_inputs, q); FIELD(sparsejit_mask_inputs, k);
  FIELD(sparsejit_mask_inputs, softmax_scale);
  end();
  BEGIN(sparsejit_mask_options);
  FIELD(sparsejit_mask_options, block_q); FIELD(sparsejit_mask_options, block_kv); FIELD(sparsejit_mask_options, tile);
  FIELD(sparsejit_mask_options, density); FIELD(sparsejit_mask_options, threshold);
  FIELD(sparsejit_mask_options, text_blocks); FIELD(sparsejit_mask_options, fine_n);
  FIELD(sparsejit_mask_options, fine_share);
  end();
  BEGIN(sparsejit_mask_layout);
  FIELD(sparsejit_mask_layout, q_blocks); FIELD(sparsejit_mask_layout, kv_blocks);
  FIELD(sparsejit_mask_layout, max_kv_blocks); FIELD(sparsejit_mask_layout, top_k);
  FIELD(sparsejit_mask_layout, kv_block_words); FIELD(sparsejit_mask_layout, rows);
  end();
  BEGIN(sparsejit_mask_schedule);
  FIELD(sparsejit_mask_schedule, steps); FIELD(sparsejit_mask_schedule, dense_steps);
  FIELD(sparsejit_mask_schedule, refresh_interval); FIELD(sparsejit_mask_schedule, densities);
  FIELD(sparsejit_mask_schedule, density_count); FIELD(sparsejit_mask_schedule, thresholds);
  FIELD(sparsejit_mask_schedule, threshold_count); FIELD(sparsejit_mask_schedule, dense_layers);
  FIELD(sparsejit_mask_schedule, dense_layer_count);
  end();
  BEGIN(sparsejit_mask_decision);
  FIELD(sparsejit_mask_decision, action); FIELD(sparsejit_mask_decision, window);
  FIELD(sparsejit_mask_decision, density); FIELD(sparsejit_mask_decision, threshold);
  end();
  BEGIN(sparsejit_attention_args);
  FIELD(sparsejit_attention_args, dtype); FIELD(sparsejit_attention_args, q); FIELD(sparsejit_attention_args, k);
  FIELD(sparsejit_attention_args, v); FIELD(sparsejit_attention_args, o); FIELD(sparsejit_attention_args, lse);
  FIELD(sparsejit_attention_args, mask); FIELD(sparsejit_attention_args, softmax_scale);
  FIELD(sparsejit_attention_args, checked);
  end();
  BEGIN(sparsejit_attention_choice);
  FIELD(sparsejit_attention_choice, level); FIELD(sparsejit_attention_choice, block_m);
  FIELD(sparsejit_attention_choice, block_n); FIELD(sparsejit_attention_choice, warps);
  FIELD(sparsejit_attention_choice, problem_key); FIELD(sparsejit_attention_choice, source_key);
  FIELD(sparsejit_attention_choice, source_gpu);
  end();
  printf("}\n");
  return 0;
}
