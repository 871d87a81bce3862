/*
 * One attention layer of a video diffusion transformer through sparsejit's C API, end to end:
 * random Q, K, V on the GPU in the model's [B, N, H, D] layout; the tokens gathered into
 * Hilbert order ([B, H, N, D]); a DFSAttn block mask built from Q and K; sparse attention;
 * the output scattered back to the original order and layout. Prints the time of each step
 * (CUDA events, after one warm-up layer that loads the kernels) and the configuration lookup
 * level. Device memory and timing come from the CUDA runtime API.
 *
 * usage: attention_layer [--db PATH] [--grid FxHxW] [--heads H] [--head-dim D] [--density P]
 * Defaults: Wan2.1-1.3B at 480p (21x30x52 latent grid: 32,760 tokens, 12 heads, D = 128),
 * density 0.3. Exit codes: 0 done, 1 error, 2 no GPU.
 */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/sparsejit.h"

enum { EXIT_NO_GPU = 2 };

/* Ends the program with the failed call and its message. */
#define CHECK_SPARSEJIT(call)                                                                             \
  do {                                                                                                    \
    const sparsejit_status status_ = (call);                                                              \
    if (status_ != SPARSEJIT_OK) {                                                                        \
      fprintf(stderr, "attention_layer: %s: %s: %s\n", #call, sparsejit_status_name(status_),             \
              sparsejit_last_error_message());                                                            \
      exit(status_ == SPARSEJIT_ERROR_NO_GPU ? EXIT_NO_GPU : EXIT_FAILURE);                               \
    }                                                                                                     \
  } while (0)

#define CHECK_CUDA(call)                                                                                  \
  do {                                                                                                    \
    const cudaError_t error_ = (call);                                                                    \
    if (error_ != cudaSuccess) {                                                                          \
      fprintf(stderr, "attention_layer: %s: %s\n", #call, cudaGetErrorString(error_));                    \
      exit(EXIT_FAILURE);                                                                                 \
    }                                                                                                     \
  } while (0)

typedef struct options {
  const char* database_path; /* NULL: sparsejit's default */
  int frames, height, width;
  int heads, head_dim;
  double density;
} options;

static void usage_and_exit(void) {
  fprintf(stderr, "usage: attention_layer [--db PATH] [--grid FxHxW] [--heads H] [--head-dim D] [--density P]\n");
  exit(EXIT_FAILURE);
}

static options parse_options(int argc, char** argv) {
  options parsed = {NULL, 21, 30, 52, 12, 128, 0.3};
  for (int i = 1; i < argc; ++i) {
    if (i + 1 >= argc) usage_and_exit();
    const char* value = argv[++i];
    if (strcmp(argv[i - 1], "--db") == 0) {
      parsed.database_path = value;
    } else if (strcmp(argv[i - 1], "--grid") == 0) {
      if (sscanf(value, "%dx%dx%d", &parsed.frames, &parsed.height, &parsed.width) != 3) usage_and_exit();
    } else if (strcmp(argv[i - 1], "--heads") == 0) {
      parsed.heads = atoi(value);
    } else if (strcmp(argv[i - 1], "--head-dim") == 0) {
      parsed.head_dim = atoi(value);
    } else if (strcmp(argv[i - 1], "--density") == 0) {
      parsed.density = atof(value);
    } else {
      usage_and_exit();
    }
  }
  return parsed;
}

/* A device buffer of `count` random bf16 values in [-1, 1) (xorshift64, rounded to bf16). */
static void* random_bf16_on_device(size_t count, uint64_t* state) {
  uint16_t* host = malloc(count * sizeof(uint16_t));
  if (host == NULL) {
    fprintf(stderr, "attention_layer: out of host memory\n");
    exit(EXIT_FAILURE);
  }
  for (size_t i = 0; i < count; ++i) {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    const float value = (float)(*state >> 40) / (float)(1 << 23) - 1.0f;
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    host[i] = (uint16_t)((bits + 0x7fff + ((bits >> 16) & 1)) >> 16); /* round to nearest even */
  }
  void* device = NULL;
  CHECK_CUDA(cudaMalloc(&device, count * sizeof(uint16_t)));
  CHECK_CUDA(cudaMemcpy(device, host, count * sizeof(uint16_t), cudaMemcpyHostToDevice));
  free(host);
  return device;
}

static void* device_buffer(size_t bytes) {
  void* device = NULL;
  CHECK_CUDA(cudaMalloc(&device, bytes));
  return device;
}

int main(int argc, char** argv) {
  const options opt = parse_options(argc, argv);

  sparsejit_runtime_options runtime_options;
  sparsejit_runtime_options_init(&runtime_options);
  runtime_options.database_path = opt.database_path;
  sparsejit_runtime* runtime = NULL;
  const sparsejit_status created = sparsejit_runtime_create(&runtime_options, &runtime);
  if (created == SPARSEJIT_ERROR_NO_GPU) {
    fprintf(stderr, "attention_layer: no GPU: %s\n", sparsejit_last_error_message());
    return EXIT_NO_GPU;
  }
  CHECK_SPARSEJIT(created);

  /* The token order of the latent grid (no text tokens), on the host, then on the device. */
  const int tokens = opt.frames * opt.height * opt.width;
  int32_t* order = malloc((size_t)tokens * sizeof(int32_t));
  if (order == NULL) {
    fprintf(stderr, "attention_layer: out of host memory\n");
    return EXIT_FAILURE;
  }
  CHECK_SPARSEJIT(sparsejit_token_order(SPARSEJIT_ORDER_HILBERT, opt.frames, opt.height, opt.width, 0, order, tokens));
  int32_t* device_order = device_buffer((size_t)tokens * sizeof(int32_t));
  CHECK_CUDA(cudaMemcpy(device_order, order, (size_t)tokens * sizeof(int32_t), cudaMemcpyHostToDevice));
  free(order);

  /* Q, K, V, O as the model holds them, [1, N, H, D]; their reordered copies [1, H, N, D]. */
  const size_t elements = (size_t)tokens * (size_t)opt.heads * (size_t)opt.head_dim;
  uint64_t random_state = 0x9e3779b97f4a7c15ull;
  void* model[4]; /* Q, K, V, O */
  void* reordered[4];
  for (int t = 0; t < 4; ++t) {
    model[t] = t < 3 ? random_bf16_on_device(elements, &random_state) : device_buffer(elements * 2);
    reordered[t] = device_buffer(elements * 2);
  }
  sparsejit_tensor model_tensor[4], reordered_tensor[4];
  for (int t = 0; t < 4; ++t) {
    model_tensor[t] = sparsejit_tensor_dense(model[t], SPARSEJIT_LAYOUT_BNHD, 1, opt.heads, tokens, opt.head_dim);
    reordered_tensor[t] = sparsejit_tensor_dense(reordered[t], SPARSEJIT_LAYOUT_BHND, 1, opt.heads, tokens, opt.head_dim);
  }

  sparsejit_permute_args gather = {0};
  gather.tensor_count = 3;
  gather.permutation = device_order;
  gather.direction = SPARSEJIT_PERMUTE_GATHER;
  sparsejit_permute_args scatter = gather;
  scatter.tensor_count = 1;
  scatter.direction = SPARSEJIT_PERMUTE_SCATTER;
  for (int t = 0; t < 3; ++t) {
    gather.source[t] = model_tensor[t];
    gather.destination[t] = reordered_tensor[t];
  }
  scatter.source[0] = reordered_tensor[3];
  scatter.destination[0] = model_tensor[3];

  sparsejit_mask_builder* builder = NULL;
  CHECK_SPARSEJIT(sparsejit_mask_builder_create(runtime, &builder));
  const sparsejit_mask_inputs mask_inputs = {SPARSEJIT_BF16, reordered_tensor[0], reordered_tensor[1], 0.0f};
  sparsejit_mask_options mask_options;
  sparsejit_mask_options_init(&mask_options);
  mask_options.density = opt.density;

  sparsejit_attention_args attention;
  sparsejit_attention_args_init(&attention);
  attention.dtype = SPARSEJIT_BF16;
  attention.q = reordered_tensor[0];
  attention.k = reordered_tensor[1];
  attention.v = reordered_tensor[2];
  attention.o = reordered_tensor[3];

  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaEvent_t events[5];
  for (int e = 0; e < 5; ++e) CHECK_CUDA(cudaEventCreate(&events[e]));

  /* Twice: the first layer loads (or compiles) the kernels, the second is timed. */
  sparsejit_mask_layout layout;
  for (int run = 0; run < 2; ++run) {
    sparsejit_block_mask mask = {0}; /* the builder's own buffers */
    CHECK_CUDA(cudaEventRecord(events[0], stream));
    CHECK_SPARSEJIT(sparsejit_permute_tokens(runtime, &gather, stream));
    CHECK_CUDA(cudaEventRecord(events[1], stream));
    CHECK_SPARSEJIT(sparsejit_mask_build(builder, &mask_inputs, &mask_options, stream, &mask, &layout));
    CHECK_CUDA(cudaEventRecord(events[2], stream));
    attention.mask = mask;
    CHECK_SPARSEJIT(sparsejit_attention(runtime, &attention, stream));
    CHECK_CUDA(cudaEventRecord(events[3], stream));
    CHECK_SPARSEJIT(sparsejit_permute_tokens(runtime, &scatter, stream));
    CHECK_CUDA(cudaEventRecord(events[4], stream));
    CHECK_CUDA(cudaStreamSynchronize(stream));
  }
  float step_ms[4], layer_ms;
  for (int e = 0; e < 4; ++e) CHECK_CUDA(cudaEventElapsedTime(&step_ms[e], events[e], events[e + 1]));
  CHECK_CUDA(cudaEventElapsedTime(&layer_ms, events[0], events[4]));

  sparsejit_attention_choice choice;
  CHECK_SPARSEJIT(sparsejit_attention_lookup(runtime, &attention, &choice));
  /* Effective work: the kept share of the key blocks (max_kv_blocks / KB) of dense attention. */
  const double kept = (double)layout.max_kv_blocks / layout.kv_blocks;
  const double flops = 4.0 * tokens * (double)tokens * opt.head_dim * opt.heads * kept;

  printf("layer     %d heads x %d tokens (grid %dx%dx%d) x D=%d, bf16, density %.2f (%d of %d key blocks)\n",
         opt.heads, tokens, opt.frames, opt.height, opt.width, opt.head_dim, opt.density, layout.max_kv_blocks,
         layout.kv_blocks);
  printf("reorder   %8.3f ms\n", step_ms[0]);
  printf("mask      %8.3f ms\n", step_ms[1]);
  printf("attention %8.3f ms  %.1f TFLOP/s effective\n", step_ms[2], flops / (step_ms[2] * 1e-3) / 1e12);
  printf("restore   %8.3f ms\n", step_ms[3]);
  printf("layer     %8.3f ms\n", layer_ms);
  printf("lookup    %s (tile %dx%d, %d warps; problem %s%s%s)\n", sparsejit_lookup_level_name(choice.level),
         choice.block_m, choice.block_n, choice.warps, choice.problem_key, choice.source_key[0] ? ", tuned for " : "",
         choice.source_key);

  for (int e = 0; e < 5; ++e) CHECK_CUDA(cudaEventDestroy(events[e]));
  CHECK_CUDA(cudaStreamDestroy(stream));
  sparsejit_mask_builder_destroy(builder);
  for (int t = 0; t < 4; ++t) {
    CHECK_CUDA(cudaFree(model[t]));
    CHECK_CUDA(cudaFree(reordered[t]));
  }
  CHECK_CUDA(cudaFree(device_order));
  sparsejit_runtime_destroy(runtime);
  return EXIT_SUCCESS;
}
