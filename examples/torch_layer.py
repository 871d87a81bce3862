"""One attention layer of a video diffusion transformer from PyTorch through sparsejit's Python
package (python/sparsejit), end to end, next to PyTorch's dense scaled_dot_product_attention on
the same inputs: random Q, K, V in the model's [B, N, H, D] layout; the tokens gathered into
Hilbert order ([B, H, N, D]); a DFSAttn block mask built from Q and K; sparse attention; the
output scattered back. Prints each step's time (CUDA events, median of --repeats after a
warm-up that loads the kernels), the configuration lookup level, and dense SDPA's time.

usage: PYTHONPATH=python SPARSEJIT_LIBRARY=build/libsparsejit.so python3 examples/torch_layer.py
       [--grid FxHxW] [--heads H] [--head-dim D] [--density P] [--db PATH] [--repeats R]
Defaults: Wan2.1-1.3B at 480p (21x30x52 latent grid: 32,760 tokens, 12 heads, D = 128), density
0.3. Exit codes: 0 done, 1 error, 2 no GPU (or no PyTorch).
"""
import argparse
import statistics
import sys


def timed(torch, function, repeats):
    """function's result and its median time in ms over `repeats` runs (after one warm-up)."""
    result = function()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        result = function()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return result, statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", default="21x30x52", help="latent grid FxHxW (default: 21x30x52)")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=128, choices=[64, 96, 128])
    parser.add_argument("--density", type=float, default=0.3)
    parser.add_argument("--db", help="tuning database (default: sparsejit's)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    try:
        frames, height, width = (int(x) for x in args.grid.split("x"))
    except ValueError:
        parser.error(f"--grid {args.grid!r}: FxHxW, e.g. 21x30x52")
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print("torch_layer: no PyTorch: this example needs it", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("torch_layer: no GPU: PyTorch sees no CUDA device", file=sys.stderr)
        return 2
    import sparsejit

    tokens = frames * height * width
    generator = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn((1, tokens, args.heads, args.head_dim), generator=generator, device="cuda",
                           dtype=torch.bfloat16) for _ in range(3))
    with sparsejit.Runtime(database=args.db) as runtime, sparsejit.MaskBuilder(runtime) as builder:
        order = sparsejit.token_order("hilbert", frames, height, width).cuda()
        (qh, kh, vh), gather_ms = timed(torch, lambda: runtime.permute([q, k, v], order), args.repeats)
        mask, build_ms = timed(torch, lambda: builder.build(qh, kh, layout="bhnd", density=args.density),
                               args.repeats)
        out_h, attention_ms = timed(torch, lambda: runtime.attention(qh, kh, vh, mask, layout="bhnd"), args.repeats)
        (out,), scatter_ms = timed(torch, lambda: runtime.permute([out_h], order, direction="scatter",
                                                                  source_layout="bhnd", destination_layout="bnhd"),
                                   args.repeats)
        choice = runtime.lookup(qh, kh, vh, mask, layout="bhnd")
        kept = mask.count.double().mean().item() / -(-tokens // 128)
        dense_inputs = [t.transpose(1, 2) for t in (q, k, v)]  # [B, H, N, D] views
        _, dense_ms = timed(torch, lambda: F.scaled_dot_product_attention(*dense_inputs), args.repeats)
        flops = 4 * tokens * tokens * args.head_dim * args.heads
        print(f"grid {args.grid} ({tokens} tokens), {args.heads} heads x {args.head_dim}, bf16, "
              f"{torch.cuda.get_device_name()}")
        print(f"gather Q, K, V   {gather_ms:8.3f} ms")
        print(f"mask build       {build_ms:8.3f} ms  (density {args.density}: {kept:.3f} of the blocks kept)")
        print(f"attention        {attention_ms:8.3f} ms  ({flops * kept / attention_ms / 1e9:.0f} TFLOP/s effective; "
              f"lookup {choice['level']}, tile {choice['block_m']}x{choice['block_n']})")
        print(f"scatter O        {scatter_ms:8.3f} ms")
        print(f"dense SDPA       {dense_ms:8.3f} ms  ({flops / dense_ms / 1e9:.0f} TFLOP/s; "
              f"{dense_ms / attention_ms:.2f}x sparsejit's attention)")
        assert out.shape == q.shape and torch.isfinite(out).all(), "the output has non-finite values"
    return 0


if __name__ == "__main__":
    sys.exit(main())
