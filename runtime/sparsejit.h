/*
 * sparsejit's stable C API (C99 and C++), exported by libsparsejit.so.
 *
 * What it covers: a runtime for one GPU and a tuning database; the DFSAttn mask pipeline
 * (token reordering, block scoring and selection into a block mask, the schedule of mask
 * refreshes across diffusion steps); block-sparse attention with the tuned kernel for the call,
 * and which lookup level chose it. It wraps the C++ API (runtime/runtime.h,
 * runtime/mask_builder.h, runtime/mask_schedule.h, runtime/token_order.h): the same rules hold,
 * and those headers say more about each step.
 *
 * Conventions
 *  - Every function that can fail returns a sparsejit_status; SPARSEJIT_OK is 0. On failure
 *    sparsejit_last_error_message() says what is wrong (which argument, which value, why) and
 *    no output argument has been written. No C++ exception crosses this API.
 *  - Tensors are logical [batch, heads, tokens, head_dim] of 16-bit elements (bf16 or fp16) in
 *    device memory, with free batch/head/token strides in elements and the last dim
 *    contiguous: [B,H,N,D] and [B,N,H,D] storage both work without copies.
 *  - Device work is asynchronous on the stream given (a CUstream or cudaStream_t of the
 *    runtime's device; NULL is the legacy default stream), except where a function says it
 *    synchronizes. Device pointers must stay valid until that work has finished.
 *  - A call that works on the GPU makes the runtime's device context (its primary context)
 *    current while it runs and makes the caller's current context (or none) current again
 *    before it returns: the thread's current device is as the caller left it.
 *  - Structs are plain values that the caller owns. Their layout is frozen for API version 1:
 *    a later version adds functions and structs, never changes these. Fill the ones that
 *    have defaults with their *_init function first, then set what differs.
 *  - Validation that needs no GPU (sparsejit_attention_validate, sparsejit_mask_layout_of,
 *    sparsejit_token_order) works on machines without a GPU or driver.
 *
 * Thread safety: a sparsejit_runtime may be used from several threads at once (its kernel
 * and configuration caches are locked). A sparsejit_mask_builder may be used by one thread
 * at a time, and its builds on different streams must be ordered by the caller (they share
 * one workspace). The error message is per thread.
 */
#ifndef SPARSEJIT_SPARSEJIT_H
#define SPARSEJIT_SPARSEJIT_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define SPARSEJIT_API
#else
#define SPARSEJIT_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this API; sparsejit_api_version() returns the library's. */
#define SPARSEJIT_API_VERSION 1

/* A CUDA stream: the same type as CUstream (cuda.h) and cudaStream_t (cuda_runtime.h), so
 * either converts without a cast and this header needs neither. */
typedef struct CUstream_st* sparsejit_stream;

/* ---------------------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------------------- */

typedef enum sparsejit_status {
  SPARSEJIT_OK = 0,
  SPARSEJIT_ERROR_NULL_POINTER = 1,     /* a required pointer (argument, tensor, mask) is NULL */
  SPARSEJIT_ERROR_MISALIGNED = 2,       /* a pointer or stride breaks its alignment rule */
  SPARSEJIT_ERROR_UNSUPPORTED = 3,      /* a head dim, dtype, block size, tile or fine width
                                           the kernels do not have */
  SPARSEJIT_ERROR_SHAPE_MISMATCH = 4,   /* tensors whose shapes disagree (Q and K batch, ...) */
  SPARSEJIT_ERROR_BAD_MASK = 5,         /* a block mask inconsistent with the shapes, or (checked
                                           mode) an entry out of range */
  SPARSEJIT_ERROR_INVALID_ARGUMENT = 6, /* any other bad value: non-positive sizes, a softmax
                                           scale, mask options, an enum out of range */
  SPARSEJIT_ERROR_NO_GPU = 7,           /* no CUDA driver, no GPU, or no GPU of that index */
  SPARSEJIT_ERROR_DATABASE = 8,         /* the tuning database cannot be opened or read */
  SPARSEJIT_ERROR_COMPILE = 9,          /* NVRTC failed to compile a kernel */
  SPARSEJIT_ERROR_CUDA = 10,            /* a CUDA driver call failed (the message names it) */
  SPARSEJIT_ERROR_OUT_OF_MEMORY = 11,   /* host or device memory ran out */
  SPARSEJIT_ERROR_INTERNAL = 12         /* anything else: a bug in sparsejit, please report it */
} sparsejit_status;

/* The message of the last call on this thread that returned an error: what was wrong, with
 * the values. "" when the last call succeeded. The string belongs to the library and stays
 * valid until the next sparsejit call on this thread. Never NULL. */
SPARSEJIT_API const char* sparsejit_last_error_message(void);

/* "SPARSEJIT_OK", "SPARSEJIT_ERROR_NULL_POINTER", ...; "unknown status" for other values.
 * A static string. */
SPARSEJIT_API const char* sparsejit_status_name(sparsejit_status status);

/* SPARSEJIT_API_VERSION as the library was built. */
SPARSEJIT_API int sparsejit_api_version(void);

/* ---------------------------------------------------------------------------------------
 * Tensors
 * ------------------------------------------------------------------------------------- */

typedef enum sparsejit_dtype { SPARSEJIT_BF16 = 0, SPARSEJIT_FP16 = 1 } sparsejit_dtype;

/* How a dense tensor is stored: [B,H,N,D] (heads outer) or [B,N,H,D] (tokens outer, the
 * layout of most model code). */
typedef enum sparsejit_layout { SPARSEJIT_LAYOUT_BHND = 0, SPARSEJIT_LAYOUT_BNHD = 1 } sparsejit_layout;

/* A device tensor, logical [batch, heads, tokens, head_dim]. Strides are in elements; the last
 * dim is contiguous. Attention and the mask build need data and token_stride * 2 bytes to be
 * multiples of 16; attention also needs Q's, K's and V's head and batch strides * 2 to be
 * multiples of 16 (O's of 4) where there is more than one head or batch. Q, K and V are only
 * read; `data` is non-const so that one type serves outputs too. */
typedef struct sparsejit_tensor {
  void* data;
  int32_t batch;
  int32_t heads;
  int32_t tokens;
  int32_t head_dim;
  int64_t batch_stride;
  int64_t head_stride;
  int64_t token_stride;
} sparsejit_tensor;

/* A dense tensor of that shape stored in `layout`, its strides filled in. */
SPARSEJIT_API sparsejit_tensor sparsejit_tensor_dense(void* data, sparsejit_layout layout, int32_t batch,
                                                      int32_t heads, int32_t tokens, int32_t head_dim);

/* ---------------------------------------------------------------------------------------
 * Runtime
 * ------------------------------------------------------------------------------------- */

typedef struct sparsejit_runtime sparsejit_runtime;

typedef struct sparsejit_runtime_options {
  int32_t device; /* CUDA device index; 0 by default */
  /* The tuning database (UTF-8 path). NULL: the default, the first of $SPARSEJIT_DB,
   * $XDG_CACHE_HOME/sparsejit/tuning.db, ~/.cache/sparsejit/tuning.db. Created when missing.
   * The runtime only looks configurations up: it never tunes (that is `sparsejit tune`). It
   * does store the kernels it had to compile, so that the next process loads them. */
  const char* database_path;
  /* 0: no database at all; every kernel is compiled in this process with the built-in
   * default configurations. 1 by default. */
  int32_t use_database;
} sparsejit_runtime_options;

/* Fills the defaults: device 0, the default database, use_database 1. */
SPARSEJIT_API void sparsejit_runtime_options_init(sparsejit_runtime_options* options);

/* Creates a runtime on options->device (NULL options: the defaults) and stores it in
 * *runtime, which the caller destroys with sparsejit_runtime_destroy. Retains the device's
 * primary context (the one the CUDA runtime API uses too).
 * Errors: NULL_POINTER (runtime), NO_GPU, DATABASE (the file is not a sparsejit database, or
 * is of a newer version; no default path applies), CUDA. */
SPARSEJIT_API sparsejit_status sparsejit_runtime_create(const sparsejit_runtime_options* options,
                                                        sparsejit_runtime** runtime);

/* Destroys a runtime (NULL: nothing). Its mask builders must be destroyed first, and no work
 * it launched may still be running. */
SPARSEJIT_API void sparsejit_runtime_destroy(sparsejit_runtime* runtime);

/* ---------------------------------------------------------------------------------------
 * Token order (DFSAttn's reordering step)
 * ------------------------------------------------------------------------------------- */

typedef enum sparsejit_token_order_kind {
  SPARSEJIT_ORDER_RASTER = 0,  /* the identity */
  SPARSEJIT_ORDER_TILE3D = 1,  /* 8x8x8 tiles in raster order, raster order inside a tile */
  SPARSEJIT_ORDER_HILBERT = 2  /* a generalized 3D Hilbert curve over the whole grid */
} sparsejit_token_order_kind;

/* The gather index of a frames x height x width latent grid plus `extra_tokens` (text) after
 * it, written to the host array `order` of `capacity` elements: order[i] is the original
 * token put at position i (tokens numbered in raster order, (f * height + y) * width + x,
 * extra tokens last and kept last). Needs frames * height * width + extra_tokens elements.
 * Host only, no GPU needed.
 * Errors: NULL_POINTER (order), INVALID_ARGUMENT (kind; a non-positive grid dimension;
 * negative extra tokens; more than INT32_MAX tokens; capacity too small). */
SPARSEJIT_API sparsejit_status sparsejit_token_order(sparsejit_token_order_kind kind, int32_t frames,
                                                     int32_t height, int32_t width, int32_t extra_tokens,
                                                     int32_t* order, int64_t capacity);

typedef enum sparsejit_permute_direction {
  SPARSEJIT_PERMUTE_GATHER = 0, /* destination token i <- source token permutation[i] */
  SPARSEJIT_PERMUTE_SCATTER = 1 /* destination token permutation[i] <- source token i */
} sparsejit_permute_direction;

/* Up to three tensors (Q, K, V) moved into or out of a token order in one launch; the layout
 * may change on the way (source [B,N,H,D], destination [B,H,N,D], say). All tensors have the
 * same shape; head dim 64, 96 or 128. Pointers and strides * 2 must be multiples of 4 bytes
 * (16 for the fastest kernel). */
typedef struct sparsejit_permute_args {
  int32_t tensor_count; /* 1..3 */
  sparsejit_tensor source[3];
  sparsejit_tensor destination[3];
  const int32_t* permutation; /* device, [tokens]: a gather index for either direction */
  sparsejit_permute_direction direction;
} sparsejit_permute_args;

/* Permutes the tokens of args' tensors on `stream`, with this GPU's tuned configuration.
 * Gather with the order of sparsejit_token_order before the mask build and attention, then
 * scatter the attention output back with the same order.
 * Errors: NULL_POINTER, UNSUPPORTED (head dim), SHAPE_MISMATCH, MISALIGNED, INVALID_ARGUMENT,
 * COMPILE, CUDA. */
SPARSEJIT_API sparsejit_status sparsejit_permute_tokens(sparsejit_runtime* runtime,
                                                        const sparsejit_permute_args* args,
                                                        sparsejit_stream stream);

/* ---------------------------------------------------------------------------------------
 * Block masks
 * ------------------------------------------------------------------------------------- */

typedef enum sparsejit_mask_form {
  SPARSEJIT_MASK_BLOCK_CSR = 0, /* kv_block_count + kv_block_index */
  SPARSEJIT_MASK_BITMASK = 1    /* kv_block_bits: compact above ~1/16 density; for caching */
} sparsejit_mask_form;

/* A block mask in device memory, over blocks of block_q queries x block_kv keys: QB =
 * ceil(tokens_q / block_q) query blocks and KB = ceil(tokens_kv / block_kv) key blocks per
 * (batch, head). Row r = (b * heads + h) * QB + qb.
 *  block-CSR: kv_block_count[r] kept key blocks, listed ascending in
 *             kv_block_index[r * max_kv_blocks + i]; kv_block_bits NULL.
 *  bitmask:   kv_block_words = ceil(KB / 64) words per row, bit k % 64 of word
 *             r * kv_block_words + k / 64 set when key block k is kept (bits >= KB zero);
 *             kv_block_count and kv_block_index NULL.
 * max_kv_blocks (0..KB) bounds every row's kept count and is the row pitch of the index and
 * the fine bits; max_kv_blocks / KB is the density the configuration lookup uses.
 * Fine bits (FG-Attn), only with fine_n > 0: fine_bits[r * max_kv_blocks + i] refines the
 * row's i-th kept block, one bit per sub-tile of 16 queries x fine_n keys (bit qs *
 * (block_kv / fine_n) + ks); a 0 bit drops those keys for those queries.
 * Alignment: int32 arrays 4 bytes, uint64 arrays 8 bytes. */
typedef struct sparsejit_block_mask {
  sparsejit_mask_form form;
  int32_t block_q;  /* 64 or 128 */
  int32_t block_kv; /* 64 or 128 */
  const int32_t* kv_block_count;
  const int32_t* kv_block_index;
  const uint64_t* kv_block_bits;
  int32_t kv_block_words;
  int32_t max_kv_blocks;
  int32_t fine_n; /* 0 (no fine bits), 8, 16 or 32, with (block_q / 16) * (block_kv / fine_n) <= 64 */
  const uint64_t* fine_bits;
} sparsejit_block_mask;

/* What the mask build reads: Q [B,H,Nq,D] and K [B,H,Nkv,D] (head dim 64, 96 or 128). */
typedef struct sparsejit_mask_inputs {
  sparsejit_dtype dtype;
  sparsejit_tensor q;
  sparsejit_tensor k;
  float softmax_scale; /* the attention's scale; 0: 1 / sqrt(head_dim) */
} sparsejit_mask_inputs;

/* How a mask is built (DFSAttn): Q and K are mean-pooled over tiles of `tile` tokens, each
 * (query block, key block) pair scores the tile softmax mass falling in it, and each query
 * block keeps the top ceil(density * KB) key blocks (density > 0, threshold 0) or the fewest
 * whose scores reach `threshold` of the row's mass (threshold > 0, density 0). The first and
 * the diagonal key block are always kept (the first only for its score after
 * sparsejit_mask_builder_set_first_block_by_score), and the last text_blocks key blocks (text
 * tokens after the video tokens) too. */
typedef struct sparsejit_mask_options {
  int32_t block_q;     /* 64 or 128 */
  int32_t block_kv;    /* 64 or 128 */
  int32_t tile;        /* tokens per pooled tile: 8, 16 or 32 */
  double density;      /* (0, 1]; or 0 with a threshold */
  double threshold;    /* (0, 1]; or 0 with a density */
  int32_t text_blocks; /* 0..KB */
  int32_t fine_n;      /* 0: no fine bits; 8, 16 or 32 */
  double fine_share;   /* with fine bits: the share of a kept pair's mass its sub-tiles keep */
} sparsejit_mask_options;

/* Fills DFSAttn's defaults: blocks of 128, tiles of 16, density 0.3, no threshold, no text
 * blocks, no fine bits (fine_share 0.9 for when they are turned on). */
SPARSEJIT_API void sparsejit_mask_options_init(sparsejit_mask_options* options);

/* The geometry of a built mask. Array sizes in elements: kv_block_count rows, kv_block_index
 * and fine_bits rows * max_kv_blocks, a bitmask rows * kv_block_words. */
typedef struct sparsejit_mask_layout {
  int32_t q_blocks;      /* QB */
  int32_t kv_blocks;     /* KB */
  int32_t max_kv_blocks; /* the row pitch: KB with a threshold, about density * KB with top-k */
  int32_t top_k;         /* key blocks kept per row by density; 0 with a threshold */
  int32_t kv_block_words;
  int64_t rows; /* batch * heads * QB */
} sparsejit_mask_layout;

/* The layout a build of `inputs` with `options` makes, and the validation of both; reads
 * only the shapes (so it sizes buffers before Q and K exist). No GPU needed.
 * Errors: NULL_POINTER (inputs, options, layout), UNSUPPORTED (head dim, dtype, block sizes,
 * tile, fine width), SHAPE_MISMATCH (Q and K batch, heads or head dim), INVALID_ARGUMENT
 * (sizes, density/threshold, text_blocks). */
SPARSEJIT_API sparsejit_status sparsejit_mask_layout_of(const sparsejit_mask_inputs* inputs,
                                                        const sparsejit_mask_options* options,
                                                        sparsejit_mask_layout* layout);

typedef struct sparsejit_mask_builder sparsejit_mask_builder;

/* A mask builder on `runtime`'s device, stored in *builder; the caller destroys it with
 * sparsejit_mask_builder_destroy before the runtime. It owns the build's workspace (pooled
 * Q/K, scores: 56 MB at 40 heads x 75,600 tokens) and, unless the caller gives buffers, the
 * built mask. Buffers only grow: a repeated shape allocates nothing.
 * Errors: NULL_POINTER, OUT_OF_MEMORY. */
SPARSEJIT_API sparsejit_status sparsejit_mask_builder_create(sparsejit_runtime* runtime,
                                                             sparsejit_mask_builder** builder);

/* From the builder's next build on: by_score 1 keeps key block 0 only for its score, like any
 * other block (for a model without an attention sink there); 0 (the default) keeps it in
 * every row, as DFSAttn does. The layout does not change.
 * Errors: NULL_POINTER, INVALID_ARGUMENT (by_score other than 0 or 1). */
SPARSEJIT_API sparsejit_status sparsejit_mask_builder_set_first_block_by_score(sparsejit_mask_builder* builder,
                                                                               int32_t by_score);

/* Destroys a builder (NULL: nothing) and its buffers; no build of it may still be running. */
SPARSEJIT_API void sparsejit_mask_builder_destroy(sparsejit_mask_builder* builder);

/* Builds the block-CSR mask of `inputs` on `stream` (Q and K: data and token rows 16-byte
 * aligned). `mask` is in and out: on entry its
 * kv_block_count, kv_block_index and fine_bits are the caller's device buffers, sized by
 * sparsejit_mask_layout_of, or NULL for the builder's own (valid until its next build); the
 * other fields are ignored. On return it describes the mask (form BLOCK_CSR, block sizes,
 * max_kv_blocks, fine_n), ready for sparsejit_attention_args.mask. `layout` may be NULL.
 * Errors: those of sparsejit_mask_layout_of; NULL_POINTER (builder, mask, q.data, k.data);
 * MISALIGNED; INVALID_ARGUMENT (fine_bits given without fine bits, the softmax scale);
 * COMPILE, CUDA, OUT_OF_MEMORY. */
SPARSEJIT_API sparsejit_status sparsejit_mask_build(sparsejit_mask_builder* builder,
                                                    const sparsejit_mask_inputs* inputs,
                                                    const sparsejit_mask_options* options,
                                                    sparsejit_stream stream, sparsejit_block_mask* mask,
                                                    sparsejit_mask_layout* layout);

/* Per-head densities (SVOO's sparsity profiles, `sparsejit profile`): as
 * sparsejit_mask_layout_of and sparsejit_mask_build, but head h keeps max(1,
 * ceil(head_densities[h] * KB)) key blocks per query block. head_densities is host memory of
 * head_count values in (0, 1], read during the call; head_count must equal q.heads;
 * options->density is ignored and options->threshold must be 0. The layout's top_k is the
 * largest per-head k, which sizes max_kv_blocks.
 * Errors: those of the functions they extend; NULL_POINTER (head_densities);
 * INVALID_ARGUMENT (head_count other than q.heads, a density outside (0, 1], a threshold). */
SPARSEJIT_API sparsejit_status sparsejit_mask_layout_of_per_head(const sparsejit_mask_inputs* inputs,
                                                                 const sparsejit_mask_options* options,
                                                                 const double* head_densities, int32_t head_count,
                                                                 sparsejit_mask_layout* layout);
SPARSEJIT_API sparsejit_status sparsejit_mask_build_per_head(sparsejit_mask_builder* builder,
                                                             const sparsejit_mask_inputs* inputs,
                                                             const sparsejit_mask_options* options,
                                                             const double* head_densities, int32_t head_count,
                                                             sparsejit_stream stream, sparsejit_block_mask* mask,
                                                             sparsejit_mask_layout* layout);

/* Writes the bitmask form of the block-CSR mask `csr` (as built, with its `layout`) into the
 * caller's device buffer `bits` of layout->rows * layout->kv_block_words words, on `stream`,
 * and describes it in *bitmask (form BITMASK, the same fine bits and max_kv_blocks).
 * Errors: NULL_POINTER, BAD_MASK (csr not block-CSR, or not of that layout), MISALIGNED,
 * COMPILE, CUDA. */
SPARSEJIT_API sparsejit_status sparsejit_mask_to_bitmask(sparsejit_mask_builder* builder,
                                                         const sparsejit_block_mask* csr,
                                                         const sparsejit_mask_layout* layout, uint64_t* bits,
                                                         sparsejit_stream stream, sparsejit_block_mask* bitmask);

/* ---------------------------------------------------------------------------------------
 * Masks across diffusion steps (DFSAttn's mask caching with an adaptive ratio; host only)
 * ------------------------------------------------------------------------------------- */

/* When a layer builds its mask, reuses it, or runs dense, over a sampler's steps
 * (runtime/mask_schedule.h): steps 0..dense_steps-1 run dense; from dense_steps on the steps
 * fall into refresh windows of refresh_interval steps, and window w builds its mask at its first
 * step at densities[min(w, density_count - 1)] (the last repeats), or with thresholds instead
 * in threshold mode at thresholds[min(w, threshold_count - 1)], and reuses it for the rest of
 * the window; the dense_layers run dense at every step. The arrays are the caller's, read
 * during each call; counts are >= 0. */
typedef struct sparsejit_mask_schedule {
  int32_t steps;            /* the sampler's steps */
  int32_t dense_steps;      /* warm-up steps run dense, 0..steps */
  int32_t refresh_interval; /* steps per refresh window, >= 1 */
  const double* densities;  /* density_count values in (0, 1]; or none, with thresholds */
  int32_t density_count;
  const double* thresholds; /* threshold_count values in (0, 1]; exactly one list is non-empty */
  int32_t threshold_count;
  const int32_t* dense_layers; /* dense_layer_count distinct layers >= 0 */
  int32_t dense_layer_count;
} sparsejit_mask_schedule;

/* Fills the DFSAttn code's defaults: 50 steps, dense for 12, refresh every 12, densities 0.3,
 * 0.2, 0.1 (arrays of the library, never freed), layer 0 dense, no thresholds. */
SPARSEJIT_API void sparsejit_mask_schedule_init(sparsejit_mask_schedule* schedule);

typedef enum sparsejit_mask_action {
  SPARSEJIT_MASK_DENSE = 0,   /* dense attention, no mask */
  SPARSEJIT_MASK_REFRESH = 1, /* build the mask (at the decision's density or threshold), use it */
  SPARSEJIT_MASK_REUSE = 2    /* use the mask built at the window's refresh */
} sparsejit_mask_action;

typedef struct sparsejit_mask_decision {
  sparsejit_mask_action action;
  int32_t window;   /* the refresh window (refresh, reuse); -1 when dense */
  double density;   /* the window's density in a density schedule; else 0 */
  double threshold; /* the window's threshold in a threshold schedule; else 0 */
} sparsejit_mask_decision;

/* What `layer` does at `step` under `schedule`. No GPU needed.
 * Errors: NULL_POINTER (schedule, decision, a list with a count but no array),
 * INVALID_ARGUMENT (the schedule, naming the field and value, a negative count among them; a
 * negative step or layer, or a step at or past schedule->steps). */
SPARSEJIT_API sparsejit_status sparsejit_mask_schedule_decide(const sparsejit_mask_schedule* schedule, int32_t step,
                                                              int32_t layer, sparsejit_mask_decision* decision);

/* ---------------------------------------------------------------------------------------
 * Sparse attention
 * ------------------------------------------------------------------------------------- */

/* O = softmax(Q K^T * softmax_scale) V per (batch, head), restricted to the block mask. A
 * query row that keeps no key gets O = 0 and LSE = -inf. */
typedef struct sparsejit_attention_args {
  sparsejit_dtype dtype;
  sparsejit_tensor q; /* [B, H, Nq, D]; D = 64, 96 or 128 */
  sparsejit_tensor k; /* [B, H, Nkv, D] */
  sparsejit_tensor v; /* [B, H, Nkv, D] */
  sparsejit_tensor o; /* [B, H, Nq, D], written */
  float* lse;         /* optional [B, H, Nq] float32, contiguous, natural log; NULL: not written */
  sparsejit_block_mask mask;
  float softmax_scale; /* 0: 1 / sqrt(D) */
  /* Nonzero: copy the mask to the host and check every entry before the launch (indices in
   * range and ascending, counts within max_kv_blocks, no bits past KB). Synchronizes the
   * stream; for debugging a mask builder. */
  int32_t checked;
} sparsejit_attention_args;

/* Zeroes args (block-CSR form, default scale, unchecked); fill the tensors and mask after. */
SPARSEJIT_API void sparsejit_attention_args_init(sparsejit_attention_args* args);

/* Checks everything about `args` that needs no GPU and does not read device memory: NULL
 * pointers, alignment, supported head dim/dtype/blocks/fine width, agreeing shapes, the mask's
 * geometry and form, positive sizes and scale. sparsejit_attention runs it first.
 * Errors: NULL_POINTER, MISALIGNED, UNSUPPORTED, SHAPE_MISMATCH, BAD_MASK, INVALID_ARGUMENT. */
SPARSEJIT_API sparsejit_status sparsejit_attention_validate(const sparsejit_attention_args* args);

/* Runs sparse attention on `stream` with the configuration the lookup picks for this call.
 * The first call of a kind loads (or compiles and stores) its kernel; later calls read no
 * database and allocate nothing.
 * Errors: those of sparsejit_attention_validate; BAD_MASK (checked mode: an entry out of
 * range); COMPILE, CUDA. */
SPARSEJIT_API sparsejit_status sparsejit_attention(sparsejit_runtime* runtime, const sparsejit_attention_args* args,
                                                   sparsejit_stream stream);

/* Where the configuration of a call came from (DESIGN.md "Keys"), best first. */
typedef enum sparsejit_lookup_level {
  SPARSEJIT_LOOKUP_EXACT = 0,                   /* this GPU's tuned best for the call's problem */
  SPARSEJIT_LOOKUP_NEAREST_BUCKET = 1,          /* this GPU's, for the nearest density/length */
  SPARSEJIT_LOOKUP_SAME_COMPUTE_CAPABILITY = 2, /* tuned on another GPU of this compute capability */
  SPARSEJIT_LOOKUP_BUILT_IN_DEFAULT = 3         /* nothing tuned applies */
} sparsejit_lookup_level;

/* "exact", "nearest bucket", "same compute capability", "built-in default"; "unknown" for other
 * values. A static string. */
SPARSEJIT_API const char* sparsejit_lookup_level_name(sparsejit_lookup_level level);

/* The configuration sparsejit_attention uses for `args`. The strings belong to the runtime and
 * stay valid until it is destroyed. */
typedef struct sparsejit_attention_choice {
  sparsejit_lookup_level level;
  int32_t block_m; /* the tile: query rows per CTA */
  int32_t block_n; /* keys per step */
  int32_t warps;
  const char* problem_key; /* the call's bucketed problem, "sparse_attention|bf16|d128|..." */
  const char* source_key;  /* the problem the config was tuned for; "" for the default */
  const char* source_gpu;  /* the fingerprint of the GPU it was tuned on; "" for the default */
} sparsejit_attention_choice;

/* Looks the configuration of `args` up (validating args first) without running anything.
 * Errors: those of sparsejit_attention_validate; DATABASE. */
SPARSEJIT_API sparsejit_status sparsejit_attention_lookup(sparsejit_runtime* runtime,
                                                          const sparsejit_attention_args* args,
                                                          sparsejit_attention_choice* choice);

#ifdef __cplusplus
}
#endif

#endif /* SPARSEJIT_SPARSEJIT_H */
