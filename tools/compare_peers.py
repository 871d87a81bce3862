#!/usr/bin/env python3
"""Compare sparsejit with its peers on the GPU machine, in one run.

  compare_peers.py permute   token permutation of Q/K/V with the layout change
                             [B,N,H,D] -> [B,H,N,D], against PyTorch's index_select +
                             transpose + contiguous and its one-pass advanced indexing.
  compare_peers.py attention block-sparse attention (bf16, B=1) against cuDNN SDPA dense and
                             FlexAttention with the same random block mask, per density.
  compare_peers.py mask      the mask build (pool, score, select) against cuDNN SDPA dense
                             attention of the same shape (default 40x75600x128).

sparsejit's figure comes from `sparsejit bench permute|attention|mask --json` (path: $SPARSEJIT_CLI,
else .gpu/sparsejit, else build/tools/sparsejit) run right before, on the same GPU.
Timing: CUDA events, 25 ms warm-up, about 100 ms of repetitions, median (--warmup-ms and
--measure-ms change both, for the peers and for sparsejit alike). Under sustained load the H100
lowers its SM clock to stay within its power limit (nvidia-smi's "SW power cap"), and a 25 ms
warm-up leaves each figure wherever that regulation happens to be; a warm-up of a second or more
measures every kernel at its settled clock. attention --rounds R measures the dense peer,
sparsejit and Flex in turn R times per shape and reports each one's median over the rounds.

attention mask files (written per shape and density, read by `sparsejit bench attention
--mask-file PREFIX`): PREFIX.count.i32 is int32 little-endian [B,H,QB] (C order), the number of
key blocks kept by each query block; PREFIX.index.i32 is int32 little-endian [B,H,QB,max_kv], the
kept key-block indices in ascending order, padded past the count with the last valid index.
QB = KB = ceil(N / block); max_kv = the largest count.
"""
import argparse
import functools
import gc
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import warnings

# (heads, tokens, head_dim): Wan2.1-14B 720p, Wan2.1-1.3B 480p, CogVideoX-5B 480p (video + text)
PERMUTE_SHAPES = [(40, 75600, 128), (12, 32760, 128), (48, 17776, 64)]


# (heads, tokens, head_dim): Wan2.1-1.3B 480p (padded to 32768), Wan2.1 720p with 12 and 40
# heads, and the D=64 case (CogVideoX's head dim) at 32768 tokens.
ATTENTION_SHAPES = [(12, 32768, 128), (12, 75600, 128), (40, 75600, 128), (12, 32768, 64)]
ATTENTION_DENSITIES = [1.0, 0.5, 0.3, 0.2, 0.1, 0.05]

# (heads, tokens, head_dim) of the mask build's budget: Wan2.1-14B 720p.
MASK_SHAPES = [(40, 75600, 128)]


def sparsejit_cli(required=True):
    for path in (os.environ.get("SPARSEJIT_CLI"), ".gpu/sparsejit", "build/tools/sparsejit"):
        if path and os.path.exists(path):
            return path
    if required:
        sys.exit("compare_peers: no sparsejit binary (set SPARSEJIT_CLI)")
    return None


# --warmup-ms and --measure-ms (main() sets them): how every figure of the run is timed.
TIMING = {"warmup_ms": 25.0, "measure_ms": 100.0}


def median_ms(torch, function):
    warmup_ms, measure_ms = TIMING["warmup_ms"], TIMING["measure_ms"]
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    function()
    torch.cuda.synchronize()
    start.record()
    function()
    stop.record()
    torch.cuda.synchronize()
    estimate = max(start.elapsed_time(stop), 1e-3)
    for _ in range(max(1, int(warmup_ms / estimate))):
        function()
    samples = []
    for _ in range(max(5, int(measure_ms / estimate))):
        start.record()
        function()
        stop.record()
        stop.synchronize()
        samples.append(start.elapsed_time(stop))
    samples.sort()
    return samples[len(samples) // 2]


def compare_permute(args):
    import torch

    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    header = f"{'shape':>22} {'sparsejit ms':>13} {'GB/s':>6} {'index_select+contig ms':>23} {'adv. index ms':>14} {'copy ms':>8} {'vs best torch':>14}"
    print(header)
    for heads, tokens, head_dim in PERMUTE_SHAPES:
        result = subprocess.run(
            [sparsejit_cli(), *(["--db", args.db] if args.db else []), "bench", "permute", "--json",
             "--heads", str(heads), "--tokens", str(tokens), "--head-dim", str(head_dim), *timing_flags()],
            check=True, capture_output=True, text=True)
        ours = json.loads(result.stdout)
        qkv = [torch.randn(1, tokens, heads, head_dim, device=device, dtype=torch.bfloat16) for _ in range(3)]
        permutation = torch.randperm(tokens, device=device)
        outputs = [torch.empty(1, heads, tokens, head_dim, device=device, dtype=torch.bfloat16) for _ in range(3)]

        def index_select_then_contiguous():
            for x, out in zip(qkv, outputs):
                out.copy_(torch.index_select(x, 1, permutation).transpose(1, 2))

        def advanced_indexing():
            for x, out in zip(qkv, outputs):
                torch.index_select(x.transpose(1, 2), 2, permutation, out=out)

        def copy():
            for x, out in zip(qkv, outputs):
                out.view(-1).copy_(x.view(-1))

        # Both torch paths must compute what sparsejit computes.
        advanced_indexing()
        expected = qkv[0][:, permutation].transpose(1, 2)
        assert torch.equal(outputs[0], expected), "advanced indexing result differs"
        index_select_then_contiguous()
        assert torch.equal(outputs[0], expected), "index_select result differs"

        torch_a = median_ms(torch, index_select_then_contiguous)
        torch_b = median_ms(torch, advanced_indexing)
        copy_ms = median_ms(torch, copy)
        sparsejit_ms = ours["permute_ms"]["median"]
        print(f"{f'H{heads} N{tokens} D{head_dim}':>22} {sparsejit_ms:13.3f} {ours['permute_gb_per_s']:6.0f} "
              f"{torch_a:23.3f} {torch_b:14.3f} {copy_ms:8.3f} {min(torch_a, torch_b) / sparsejit_ms:13.2f}x")


# ---------------------------------------------------------------------------------------------
# attention


def say(*parts):
    print(*parts, flush=True)


def parse_shapes(text):
    shapes = []
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        fields = item.split("x")
        if len(fields) != 3 or not all(f.strip().isdigit() and int(f) > 0 for f in fields):
            raise argparse.ArgumentTypeError(f"shape {item!r} is not HEADSxTOKENSxHEAD_DIM, e.g. 12x32768x128")
        shapes.append(tuple(int(f) for f in fields))
    if not shapes:
        raise argparse.ArgumentTypeError("no shapes given")
    return shapes


def parse_densities(text):
    densities = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            value = float(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"density {item!r} is not a number")
        if not 0.0 < value <= 1.0:
            raise argparse.ArgumentTypeError(f"density {value} is not in (0, 1]")
        densities.append(value)
    if not densities:
        raise argparse.ArgumentTypeError("no densities given")
    return densities


def make_block_indices(np, heads, tokens, block, density, seed):
    """Random block mask: for each head and query block, k = ceil(density * KB) distinct key blocks,
    the diagonal one among them, ascending. Returns int32 [H, QB, k] (every row keeps k blocks)."""
    blocks = -(-tokens // block)  # QB = KB
    keep = min(blocks, max(1, math.ceil(density * blocks - 1e-9)))  # 1e-9: 0.1 * 590 is 59.000000000000007
    rng = np.random.default_rng([seed, heads, tokens, block, int(round(density * 1e6))])
    scores = rng.random((heads, blocks, blocks), dtype=np.float32)  # in [0, 1)
    diagonal = np.arange(blocks)
    scores[:, diagonal, diagonal] = -1.0  # the smallest score in its row: always kept
    chosen = np.argpartition(scores, keep - 1, axis=-1)[..., :keep]
    return np.sort(chosen, axis=-1).astype(np.int32)


def write_mask_files(np, prefix, indices):
    """indices: int32 [H, QB, k] ascending. Writes PREFIX.count.i32 [1,H,QB] and PREFIX.index.i32
    [1,H,QB,max_kv]; rows here all keep k blocks, so max_kv = k and nothing is padded (a row with
    fewer would be padded with its last valid index)."""
    heads, query_blocks, keep = indices.shape
    counts = np.full((1, heads, query_blocks), keep, dtype="<i4")
    np.ascontiguousarray(counts).tofile(prefix + ".count.i32")
    np.ascontiguousarray(indices.reshape(1, heads, query_blocks, keep).astype("<i4")).tofile(prefix + ".index.i32")


def flex_block_arrays(np, indices, tokens, block):
    """BlockMask.from_kv_blocks inputs, [1,H,QB] and [1,H,QB,KB] int32. Kept blocks whose keys
    are all < N are 'full' (no mask_mod); the last key block, when N is not a multiple of the
    block, is 'partial' (mask_mod keeps keys < N). Columns past a row's count are padding that
    Flex ignores; they repeat a valid index."""
    heads, query_blocks, keep = indices.shape
    blocks = -(-tokens // block)
    padded = np.concatenate([indices, np.repeat(indices[..., -1:], blocks - keep, axis=-1)], axis=-1)
    if tokens % block:
        has_tail = (indices[..., -1] == blocks - 1).astype(np.int32)  # ascending: the tail block is last
    else:
        has_tail = np.zeros((heads, query_blocks), dtype=np.int32)
    full_counts = (keep - has_tail).astype(np.int32)
    partial_indices = np.full((heads, query_blocks, blocks), blocks - 1, dtype=np.int32)
    return {
        "kv_num_blocks": np.ascontiguousarray(has_tail[None]),
        "kv_indices": np.ascontiguousarray(partial_indices[None]),
        "full_kv_num_blocks": np.ascontiguousarray(full_counts[None]),
        "full_kv_indices": np.ascontiguousarray(padded[None].astype(np.int32)),
    }


def dense_mask(np, indices, tokens, block):
    """Boolean [H, N, N], True where a query may attend a key (for the small correctness check)."""
    heads, query_blocks, _ = indices.shape
    keep = np.zeros((heads, query_blocks, query_blocks), dtype=bool)
    np.put_along_axis(keep, indices.astype(np.int64), True, axis=-1)
    return np.ascontiguousarray(np.repeat(np.repeat(keep, block, axis=1), block, axis=2)[:, :tokens, :tokens])


@functools.lru_cache(maxsize=None)
def keys_below(tokens):
    """mask_mod keeping keys < N; one function object per N, so torch.compile doesn't recompile."""
    def mask_mod(b, h, q_idx, kv_idx):
        return kv_idx < tokens
    return mask_mod


def build_flex_mask(np, torch, BlockMask, indices, tokens, block, device):
    arrays = flex_block_arrays(np, indices, tokens, block)
    tensors = {name: torch.from_numpy(array).to(device) for name, array in arrays.items()}
    return BlockMask.from_kv_blocks(
        tensors["kv_num_blocks"], tensors["kv_indices"],
        full_kv_num_blocks=tensors["full_kv_num_blocks"], full_kv_indices=tensors["full_kv_indices"],
        BLOCK_SIZE=block, mask_mod=keys_below(tokens) if tokens % block else None,
        seq_lengths=(tokens, tokens))


def tail(text, limit=400):
    text = " | ".join(line.strip() for line in (text or "").strip().splitlines() if line.strip())
    return text if len(text) <= limit else "..." + text[-limit:]


def run_sparsejit(args, heads, tokens, head_dim, prefix):
    """`sparsejit bench attention` on the mask files at `prefix`: (report, None) or (None, why)."""
    report, why = run_sparsejit_bench(args, ["attention", "--heads", str(heads), "--tokens", str(tokens),
                                             "--head-dim", str(head_dim), "--block", str(args.block),
                                             "--mask-file", prefix, *shlex.split(args.sparsejit_tile)])
    if report is None:
        return None, why
    try:
        median = float(report["median_ms"])
    except (KeyError, TypeError, ValueError):
        return None, f"no median_ms in its JSON: {report}"
    if not median > 0:
        return None, f"median_ms is {median}"
    return report, None


def timing_flags():
    return ["--warmup-ms", f"{TIMING['warmup_ms']:g}", "--measure-ms", f"{TIMING['measure_ms']:g}"]


def run_sparsejit_bench(args, bench_args):
    """`sparsejit bench BENCH_ARGS --json`: (its JSON object, None) or (None, why). Never raises."""
    cli = sparsejit_cli(required=False)
    if cli is None:
        return None, "no sparsejit binary (set SPARSEJIT_CLI)"
    return run_cli_bench(cli, args.db, bench_args, args.sparsejit_timeout)


def run_cli_bench(cli, db, bench_args, timeout):
    """`CLI [--db DB] bench BENCH_ARGS --json` with this run's timing: (its JSON object, None) or
    (None, why). Never raises."""
    command = [cli, *(["--db", db] if db else []), "bench", *bench_args, *timing_flags(), "--json"]
    environment = dict(os.environ)
    if os.path.isdir("/usr/local/cuda/lib64"):  # NVRTC, as DESIGN.md's lent machine needs
        paths = [p for p in environment.get("LD_LIBRARY_PATH", "").split(":") if p]
        if "/usr/local/cuda/lib64" not in paths:
            environment["LD_LIBRARY_PATH"] = ":".join(paths + ["/usr/local/cuda/lib64"])
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    except OSError as error:
        return None, f"could not run {cli}: {error}"
    if result.returncode != 0:
        return None, f"exit {result.returncode}: {tail(result.stderr) or tail(result.stdout)}"
    report = None
    try:
        report = json.loads(result.stdout)
    except ValueError:
        for line in reversed(result.stdout.strip().splitlines()):  # JSON after log lines
            if line.strip().startswith("{"):
                try:
                    report = json.loads(line)
                    break
                except ValueError:
                    pass
    if not isinstance(report, dict):
        return None, f"no JSON object in its output: {tail(result.stdout)} {tail(result.stderr)}"
    return report, None


def compare_mask(args):
    """The mask build (`sparsejit bench mask`) against cuDNN's dense attention of the same shape:
    the issue's budget is the whole build within 2% of the dense time."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    say(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    say(f"{'shape':>18} {'cuDNN dense ms':>15} {'pool+score ms':>14} {'select ms':>10} {'build ms':>9} "
        f"{'build/dense':>12}")
    rows = []
    for heads, tokens, head_dim in args.shapes:
        q, k, v = (torch.randn(1, heads, tokens, head_dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        dense_ms, dense_label = time_dense(torch, F, SDPBackend, sdpa_kernel, q, k, v)
        del q, k, v
        gc.collect()
        torch.cuda.empty_cache()
        report, why = run_sparsejit_bench(args, ["mask", "--heads", str(heads), "--tokens", str(tokens),
                                                 "--head-dim", str(head_dim), "--block", str(args.block),
                                                 "--density", str(args.mask_density), "--tile", str(args.tile)])
        shape = f"H{heads} N{tokens} D{head_dim}"
        if report is None:
            say(f"{shape:>18} {dense_ms:>15.3f}  sparsejit failed: {why}")
            rows.append({"shape": shape, "dense_ms": dense_ms, "dense": dense_label, "error": why})
            continue
        build_ms = report["whole"]["median_ms"]
        say(f"{shape:>18} {dense_ms:>15.3f} {report['pool_and_score']['median_ms']:>14.3f} "
            f"{report['select']['median_ms']:>10.3f} {build_ms:>9.3f} {100 * build_ms / dense_ms:>11.2f}%")
        rows.append({"shape": shape, "dense_ms": dense_ms, "dense": dense_label, "sparsejit": report,
                     "build_over_dense": build_ms / dense_ms})
    say(f"density {args.mask_density}, tiles of {args.tile}, blocks of {args.block}, bf16, B=1; "
        f"{rows[0]['dense'] if rows else ''}")
    if args.json_out:
        with open(args.json_out, "w") as out:
            json.dump(rows, out, indent=1)


def fmt(value, spec, width):
    if value is None:
        return f"{'-':>{width}}"
    return f"{value:>{width}{spec}}"


ATTENTION_COLUMNS = [("density", 7), ("kept", 6), ("cuDNN dense ms", 14), ("Flex ms", 9),
                     ("Flex TF/s", 9), ("sparsejit ms", 12), ("sj TF/s", 8),
                     ("sj/cuDNN", 9), ("sj vs Flex", 10)]


def attention_header():
    return " ".join(f"{name:>{width}}" for name, width in ATTENTION_COLUMNS) + "  sparsejit config"


def attention_line(row):
    speedup = lambda a, b: None if a is None or b is None else a / b
    cells = [fmt(row["density"], ".2f", 7), fmt(row["kept_fraction"], ".3f", 6),
             fmt(row["dense_ms"], ".3f", 14), fmt(row["flex_ms"], ".3f", 9),
             fmt(row["flex_tflops"], ".0f", 9), fmt(row["sparsejit_ms"], ".3f", 12),
             fmt(row["sparsejit_tflops"], ".0f", 8),
             fmt(speedup(row["dense_ms"], row["sparsejit_ms"]), ".2f", 8) + "x",
             fmt(speedup(row["flex_ms"], row["sparsejit_ms"]), ".2f", 9) + "x"]
    notes = []
    if row["sparsejit_error"]:
        notes.append(f"sparsejit failed: {row['sparsejit_error']}")
    elif row["sparsejit_config"] is not None:
        notes.append(str(row["sparsejit_config"]))
    if row["flex_error"]:
        notes.append(f"Flex failed: {row['flex_error']}")
    return " ".join(cells).replace(" -x", "  -") + "  " + "; ".join(notes)


def effective_tflops(heads, tokens, head_dim, kept_fraction, ms):
    # Counts whole kept blocks (kept blocks / (QB*KB)), as DESIGN.md's peer figures do: the masked
    # keys of the tail block and the padded query rows are counted as work.
    if ms is None:
        return None
    return 4.0 * tokens * tokens * head_dim * heads * kept_fraction / (ms * 1e-3) / 1e12


def check_flex(np, torch, F, BlockMask, flex, block, seed, device):
    """Flex with our BlockMask against float32 SDPA with the same dense boolean mask, on a small
    case whose N is not a multiple of the block (so the tail mask_mod is exercised)."""
    heads, tokens, head_dim, density = 2, 1000, 128, 0.3
    indices = make_block_indices(np, heads, tokens, block, density, seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    q, k, v = (torch.randn(1, heads, tokens, head_dim, device=device, dtype=torch.bfloat16, generator=generator)
               for _ in range(3))
    block_mask = build_flex_mask(np, torch, BlockMask, indices, tokens, block, device)
    out = flex(q, k, v, block_mask=block_mask).float()
    allowed = torch.from_numpy(dense_mask(np, indices, tokens, block)).to(device)[None]
    reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=allowed)
    unmasked = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    scale = reference.abs().max().item()
    error = (out - reference).abs().max().item() / scale
    unmasked_error = (out - unmasked).abs().max().item() / scale
    say(f"Flex check H{heads} N{tokens} D{head_dim} density {density} block {block}: max |flex - ref| / max |ref| = "
        f"{error:.2e} (against unmasked attention: {unmasked_error:.2e}, should be large)")
    if not error <= 2e-2:
        sys.exit(f"compare_peers: FlexAttention with our BlockMask differs from masked SDPA ({error:.3e} > 2e-2)")


def time_dense(torch, F, SDPBackend, sdpa_kernel, q, k, v):
    """cuDNN SDPA time, or the default SDPA backend's when cuDNN refuses. Returns (ms, label)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                F.scaled_dot_product_attention(q, k, v)
            torch.cuda.synchronize()
            why = None
        except RuntimeError as error:
            why = tail(" | ".join([str(w.message) for w in caught] + [str(error)]), 600)
    if why is None:
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return median_ms(torch, lambda: F.scaled_dot_product_attention(q, k, v)), "cuDNN SDPA"
    say(f"  cuDNN SDPA refused this shape: {why}")
    say("  falling back to the default SDPA backend for the dense column")
    return median_ms(torch, lambda: F.scaled_dot_product_attention(q, k, v)), "default SDPA (cuDNN refused)"


def compile_flex(torch, flex_attention, max_autotune):
    if max_autotune:  # Inductor tries several Triton configs for Flex; slower to compile
        return torch.compile(flex_attention, dynamic=False, mode="max-autotune-no-cudagraphs")
    return torch.compile(flex_attention, dynamic=False)


def median_of(values):
    """The median of a list of figures (the mean of the middle two for an even count); None if empty."""
    return statistics.median(values) if values else None


def fmt_rounds(values):
    return "/".join(f"{value:.3f}" for value in values) + " ms" if values else "-"


def prepare_attention_row(args, np, torch, BlockMask, mask_dir, device, row):
    """What every round of a density reads: the mask files of row["indices"] for sparsejit
    (row["mask_prefix"]) and the same kept blocks as Flex's BlockMask (row["block_mask"]);
    None where making one failed, with the reason in the row's error."""
    heads, tokens, head_dim, density = row["heads"], row["tokens"], row["head_dim"], row["density"]
    prefix = os.path.join(mask_dir, f"h{heads}_n{tokens}_d{head_dim}_b{args.block}_s{args.seed}_p{density:g}")
    row["mask_prefix"] = row["block_mask"] = None
    try:
        write_mask_files(np, prefix, row["indices"])
        row["mask_prefix"] = prefix
    except Exception as error:  # e.g. disk full
        row["sparsejit_error"] = f"{type(error).__name__}: {tail(str(error))}"
    try:
        row["block_mask"] = build_flex_mask(np, torch, BlockMask, row["indices"], tokens, args.block, device)
    except Exception as error:
        row["flex_error"] = f"{type(error).__name__}: {tail(str(error))}"


def release_attention_row(row, keep_masks):
    """Drops what prepare_attention_row made (the mask files unless they are kept)."""
    prefix = row.pop("mask_prefix")
    if prefix is not None and not keep_masks:
        for suffix in (".count.i32", ".index.i32"):
            if os.path.exists(prefix + suffix):
                os.remove(prefix + suffix)
    del row["block_mask"], row["indices"]


def measure_attention_row(args, torch, flex, q, k, v, row):
    """One round of a density: sparsejit on its mask files, then Flex on the same kept blocks;
    appends each time to the row's rounds, or records why it failed."""
    heads, tokens, head_dim = row["heads"], row["tokens"], row["head_dim"]
    if row["mask_prefix"] is not None:
        # sparsejit first, with the torch caching allocator emptied so it has the memory.
        gc.collect()
        torch.cuda.empty_cache()
        report, why = run_sparsejit(args, heads, tokens, head_dim, row["mask_prefix"])
        if report is not None:
            row["sparsejit_ms_rounds"].append(float(report["median_ms"]))
            row["sparsejit_p20_ms"] = report.get("p20_ms")
            row["sparsejit_p80_ms"] = report.get("p80_ms")
            row["sparsejit_reported_tflops"] = report.get("effective_tflops")
            row["sparsejit_reported_density"] = report.get("density")
            row["sparsejit_config"] = report.get("config")
            reported = report.get("density")
            if isinstance(reported, (int, float)) and abs(reported - row["kept_fraction"]) > 1e-3:
                say(f"  note: sparsejit reports density {reported:.4f}, the mask keeps {row['kept_fraction']:.4f}")
        else:
            row["sparsejit_error"] = why

    block_mask = row["block_mask"]
    if block_mask is not None:
        try:
            flex(q, k, v, block_mask=block_mask)  # compiles on the first mask of a shape
            torch.cuda.synchronize()
            row["flex_ms_rounds"].append(median_ms(torch, lambda: flex(q, k, v, block_mask=block_mask)))
        except Exception as error:
            row["flex_error"] = f"{type(error).__name__}: {tail(str(error))}"


def compare_attention(args):
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    device = torch.device("cuda")
    try:
        import triton
        triton_version = triton.__version__
    except Exception:
        triton_version = "?"
    say(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
        f"triton {triton_version}, numpy {np.__version__}")
    say(f"sparsejit: {sparsejit_cli(required=False) or 'none found (set SPARSEJIT_CLI)'}; block {args.block}, seed {args.seed}; "
        f"{TIMING['warmup_ms']:g} ms warm-up, {TIMING['measure_ms']:g} ms timed per figure, {args.rounds} round(s)")
    # Each shape compiles Flex once per mask_mod; leave room so Dynamo never falls back to eager
    # (eager Flex materialises the N x N scores).
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            try:
                setattr(torch._dynamo.config, name, 64)
                break
            except Exception:
                pass

    keep_masks = args.mask_dir is not None
    mask_dir = args.mask_dir or tempfile.mkdtemp(prefix="sparsejit_masks_")
    os.makedirs(mask_dir, exist_ok=True)
    rows = []
    meta = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__,
            "cudnn": torch.backends.cudnn.version(), "triton": triton_version, "block": args.block,
            "seed": args.seed, "dtype": "bfloat16", "batch": 1, "rounds": args.rounds,
            "warmup_ms": TIMING["warmup_ms"], "measure_ms": TIMING["measure_ms"]}

    def save():
        if args.json_out:
            with open(args.json_out, "w") as handle:
                json.dump({"meta": meta, "rows": rows}, handle, indent=1)

    try:
        with torch.no_grad():
            flex = compile_flex(torch, flex_attention, args.flex_max_autotune)
            if not args.skip_check:
                check_flex(np, torch, F, BlockMask, flex, args.block, args.seed, device)
            for heads, tokens, head_dim in args.shapes:
                torch._dynamo.reset()
                flex = compile_flex(torch, flex_attention, args.flex_max_autotune)
                blocks = -(-tokens // args.block)
                dense_flops = 4.0 * tokens * tokens * head_dim * heads
                say("")
                say(f"== H{heads} N{tokens} D{head_dim}, bf16, B=1, block {args.block} ({blocks}x{blocks} blocks)")
                generator = torch.Generator(device=device).manual_seed(args.seed)
                q, k, v = (torch.randn(1, heads, tokens, head_dim, device=device, dtype=torch.bfloat16,
                                       generator=generator) for _ in range(3))
                shape_rows = []
                for density in args.densities:
                    indices = make_block_indices(np, heads, tokens, args.block, density, args.seed)
                    kept_fraction = indices.shape[-1] / blocks  # the same k in every row
                    shape_rows.append({
                        "heads": heads, "tokens": tokens, "head_dim": head_dim, "block": args.block,
                        "density": density, "kept_fraction": kept_fraction, "kept_blocks_per_row": int(indices.shape[-1]),
                        "dense_ms": None, "dense_backend": None, "dense_tflops": None,
                        "flex_ms": None, "flex_tflops": None, "flex_error": None,
                        "sparsejit_ms": None, "sparsejit_p20_ms": None, "sparsejit_p80_ms": None,
                        "sparsejit_tflops": None, "sparsejit_reported_tflops": None,
                        "sparsejit_reported_density": None, "sparsejit_config": None, "sparsejit_error": None,
                        "dense_ms_rounds": [], "sparsejit_ms_rounds": [], "flex_ms_rounds": [],
                        "indices": indices})
                    prepare_attention_row(args, np, torch, BlockMask, mask_dir, device, shape_rows[-1])
                dense_rounds, dense_label = [], None
                for round_index in range(args.rounds):
                    if args.rounds > 1:
                        say(f"  round {round_index + 1} of {args.rounds}")
                    try:
                        dense_ms, dense_label = time_dense(torch, F, SDPBackend, sdpa_kernel, q, k, v)
                        dense_rounds.append(dense_ms)
                        say(f"  dense: {dense_label} {dense_ms:.3f} ms, {dense_flops / (dense_ms * 1e-3) / 1e12:.0f} TFLOP/s")
                    except Exception as error:
                        dense_label = f"failed: {tail(str(error))}"
                        say(f"  dense SDPA failed: {tail(str(error))}")
                    for row in shape_rows:
                        measure_attention_row(args, torch, flex, q, k, v, row)
                        if args.rounds > 1:
                            say(f"    density {row['density']:g}: sparsejit {fmt_rounds(row['sparsejit_ms_rounds'])}, "
                                f"Flex {fmt_rounds(row['flex_ms_rounds'])}")
                say(attention_header())
                for row in shape_rows:
                    release_attention_row(row, keep_masks)
                    row["dense_ms_rounds"] = list(dense_rounds)
                    row["dense_backend"] = dense_label
                    row["dense_ms"] = median_of(dense_rounds)
                    row["dense_tflops"] = None if row["dense_ms"] is None else dense_flops / (row["dense_ms"] * 1e-3) / 1e12
                    row["sparsejit_ms"] = median_of(row["sparsejit_ms_rounds"])
                    row["flex_ms"] = median_of(row["flex_ms_rounds"])
                    row["sparsejit_tflops"] = effective_tflops(heads, tokens, head_dim, row["kept_fraction"], row["sparsejit_ms"])
                    row["flex_tflops"] = effective_tflops(heads, tokens, head_dim, row["kept_fraction"], row["flex_ms"])
                    rows.append(row)
                    say(attention_line(row))
                    save()
                del q, k, v
                flex = None
                torch._dynamo.reset()
                gc.collect()
                torch.cuda.empty_cache()
    finally:
        save()
        if not keep_masks:
            shutil.rmtree(mask_dir, ignore_errors=True)
    if args.json_out:
        say(f"\nrows written to {args.json_out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["permute", "attention", "mask"])
    parser.add_argument("--db", help="tuning database for sparsejit (default: its own default)")
    parser.add_argument("--warmup-ms", type=float, default=25.0,
                        help="warm-up before each figure, in ms of runs, for every kernel timed (default: 25)")
    parser.add_argument("--measure-ms", type=float, default=100.0,
                        help="ms of timed runs per figure, at least 5 runs; their median is the figure (default: 100)")
    attention = parser.add_argument_group("attention")
    attention.add_argument("--shapes", type=parse_shapes, default=None,
                           help="HEADSxTOKENSxHEAD_DIM,... (default: 12x32768x128,12x75600x128,40x75600x128,"
                                "12x32768x64; for mask: 40x75600x128)")
    attention.add_argument("--densities", type=parse_densities, default=ATTENTION_DENSITIES,
                           help="kept fractions of key blocks, in (0, 1] (default: 1,0.5,0.3,0.2,0.1,0.05)")
    attention.add_argument("--block", type=int, default=128, help="sparse block size in tokens (default: 128)")
    attention.add_argument("--seed", type=int, default=0, help="seed of the random block masks and inputs (default: 0)")
    attention.add_argument("--json-out", help="write all rows as JSON to this file")
    attention.add_argument("--mask-dir", help="keep the mask files in this folder (default: a temporary one, removed)")
    attention.add_argument("--sparsejit-timeout", type=float, default=600.0,
                           help="seconds one `sparsejit bench attention` may take (default: 600)")
    attention.add_argument("--sparsejit-tile", default="",
                           help="tile options passed to `sparsejit bench attention`, e.g. --sparsejit-tile='--kernel mma' "
                                "for the portable mma.sync kernel on a Hopper GPU (default: the runtime's choice)")
    attention.add_argument("--flex-max-autotune", action="store_true",
                           help="compile Flex with mode=max-autotune-no-cudagraphs (default: Flex's default configs)")
    attention.add_argument("--skip-check", action="store_true", help="skip the small Flex correctness check")
    attention.add_argument("--rounds", type=int, default=1,
                           help="measure cuDNN, sparsejit and Flex in turn this many times per shape and report "
                                "each one's median (default: 1)")
    mask = parser.add_argument_group("mask (also --shapes, --block, --json-out)")
    mask.add_argument("--mask-density", type=float, default=0.3,
                      help="kept fraction of key blocks of the timed selection (default: 0.3)")
    mask.add_argument("--tile", type=int, default=16, choices=[8, 16, 32],
                      help="tokens pooled per tile (default: 16, DFSAttn's best)")
    args = parser.parse_args()
    if args.shapes is None:
        args.shapes = MASK_SHAPES if args.what == "mask" else ATTENTION_SHAPES
    if not 0 <= args.mask_density <= 1:
        parser.error("--mask-density must be in [0, 1]")
    if args.block <= 0:
        parser.error("--block must be positive")
    if args.seed < 0:
        parser.error("--seed must be non-negative")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not (args.warmup_ms >= 0 and args.measure_ms >= 0):
        parser.error("--warmup-ms and --measure-ms must be non-negative")
    TIMING["warmup_ms"], TIMING["measure_ms"] = args.warmup_ms, args.measure_ms
    if args.what == "permute":
        compare_permute(args)
    elif args.what == "attention":
        compare_attention(args)
    elif args.what == "mask":
        compare_mask(args)


if __name__ == "__main__":
    main()
