#!/usr/bin/env python3
"""Compare sparsejit with its peers on the GPU machine, in one run.

  compare_peers.py permute   token permutation of Q/K/V with the layout change
                             [B,N,H,D] -> [B,H,N,D], against PyTorch's index_select +
                             transpose + contiguous and its one-pass advanced indexing.

sparsejit's figure comes from `sparsejit bench permute --json` (path: $SPARSEJIT_CLI, else
.gpu/sparsejit, else build/tools/sparsejit) run right before, on the same GPU.
Timing: CUDA events, 25 ms warm-up, about 100 ms of repetitions, median.
"""
import argparse
import json
import os
import subprocess
import sys

# (heads, tokens, head_dim): Wan2.1-14B 720p, Wan2.1-1.3B 480p, CogVideoX-5B 480p (video + text)
PERMUTE_SHAPES = [(40, 75600, 128), (12, 32760, 128), (48, 17776, 64)]


def sparsejit_cli():
    for path in (os.environ.get("SPARSEJIT_CLI"), ".gpu/sparsejit", "build/tools/sparsejit"):
        if path and os.path.exists(path):
            return path
    sys.exit("compare_peers: no sparsejit binary (set SPARSEJIT_CLI)")


def median_ms(torch, function, warmup_ms=25.0, measure_ms=100.0):
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
             "--heads", str(heads), "--tokens", str(tokens), "--head-dim", str(head_dim)],
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["permute"])
    parser.add_argument("--db", help="tuning database for sparsejit (default: its own default)")
    args = parser.parse_args()
    if args.what == "permute":
        compare_permute(args)


if __name__ == "__main__":
    main()
