#!/usr/bin/env python3
"""A/B of sparsejit builds on attention, for the GPU machine: `sparsejit bench attention` with
two or more CLIs (the baseline first, then variants built from changed kernels) in turn, R
rounds, on the same shapes and densities; prints every round's effective TFLOP/s and each
variant's median over the baseline's, as a Markdown table for BENCHMARKS.md.

  ab_attention.py --cli head=.gpu-base/sparsejit --cli v28=.gpu-v28/sparsejit \\
      --shapes 12x32768x64,12x32768x128 --densities 1.0,0.1,0.05 --rounds 3 --db .gpu/precompiled.db

Each CLI works on its own copy of --db (or on a database of its own, created empty), so one
build's CUBINs and tuned configs never serve another. In every round each shape and density is
timed by all the CLIs one after the other, round r starting at CLI r mod n, so that no CLI is
always first or always follows the same one. The masks are the bench's random ones, the same for
every CLI (the bench's seed). Timing: 1000 ms of warm-up and 300 ms measured per run (the settled
protocol of BENCHMARKS.md: under the H100's power cap a shorter warm-up measures wherever the
clock happens to be). --bench-args passes more `bench attention` options to every CLI (a tile,
--kernel, --fine-n, ...). Needs no PyTorch. Exit status 1 when a run failed (its cell says why).
"""
import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile

from compare_peers import TIMING, parse_densities, parse_shapes, run_cli_bench, say


def parse_cli(text):
    label, separator, path = text.partition("=")
    label = label.strip()
    if not separator or not label or not path:
        raise argparse.ArgumentTypeError(f"--cli {text!r} is not LABEL=PATH, e.g. head=.gpu-base/sparsejit")
    if not all(c.isalnum() or c in "-_." for c in label):
        raise argparse.ArgumentTypeError(f"--cli label {label!r}: letters, digits, '-', '_' and '.' only")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise argparse.ArgumentTypeError(f"--cli {label}: {path} is not an executable file")
    return label, path


def parse_bench_args(text):
    try:
        return shlex.split(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--bench-args {text!r}: {error}")


def shape_name(shape):
    heads, tokens, head_dim = shape
    return f"H{heads} N{tokens} D{head_dim}"


def run_order(count, round_index):
    """The CLIs' indices in the order round `round_index` (from 0) runs them."""
    return [(round_index + i) % count for i in range(count)]


def measure(args, clis, databases):
    """Every run, in the A/B order: rows of {shape, density, runs: {label: [per round]}}, each run
    {"tflops", "median_ms", "config"} or {"error"}."""
    rows = [{"shape": shape, "density": density, "runs": {label: [] for label, _ in clis}}
            for shape in args.shapes for density in args.densities]
    for round_index in range(args.rounds):
        for row in rows:
            heads, tokens, head_dim = row["shape"]
            bench_args = ["attention", "--heads", str(heads), "--tokens", str(tokens), "--head-dim", str(head_dim),
                          "--density", f"{row['density']:g}", *args.bench_args]
            for index in run_order(len(clis), round_index):
                label, cli = clis[index]
                report, why = run_cli_bench(cli, databases[label], bench_args, args.timeout)
                if report is None:
                    run = {"error": why}
                else:
                    try:
                        run = {"tflops": float(report["effective_tflops"]), "median_ms": float(report["median_ms"]),
                               "config": str(report.get("config", ""))}
                    except (KeyError, TypeError, ValueError):
                        run = {"error": f"no effective_tflops or median_ms in its JSON: {report}"}
                row["runs"][label].append(run)
                result = run.get("error") or f"{run['tflops']:.1f} TFLOP/s ({run['median_ms']:.3f} ms, {run['config']})"
                say(f"round {round_index + 1}/{args.rounds} {shape_name(row['shape'])} density "
                    f"{row['density']:g} {label}: {result}")
    return rows


def summarize(rows, labels):
    """Adds each CLI's median TFLOP/s over its successful rounds, and each variant's ratio to the
    baseline (the first CLI), to every row."""
    for row in rows:
        row["median_tflops"] = {}
        for label in labels:
            values = [run["tflops"] for run in row["runs"][label] if "tflops" in run]
            row["median_tflops"][label] = statistics.median(values) if values else None
        baseline = row["median_tflops"][labels[0]]
        row["ratio_to_baseline"] = {
            label: (row["median_tflops"][label] / baseline if baseline and row["median_tflops"][label] else None)
            for label in labels[1:]}


def table(rows, labels):
    head = ["shape", "density", *[f"{label} (TFLOP/s per round)" for label in labels],
            *[f"{label} / {labels[0]}" for label in labels[1:]]]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        cells = [shape_name(row["shape"]), f"{row['density']:g}"]
        for label in labels:
            cells.append("/".join(f"{run['tflops']:.1f}" if "tflops" in run else "failed" for run in row["runs"][label]))
        for label in labels[1:]:
            ratio = row["ratio_to_baseline"][label]
            cells.append(f"{ratio:.3f}" if ratio is not None else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def differing_configs(rows, labels):
    """Lines naming the rows where the CLIs ran different tiles (the A/B then compares tiles too)."""
    notes = []
    for row in rows:
        configs = {label: sorted({run["config"] for run in row["runs"][label] if "config" in run}) for label in labels}
        if len({tuple(c) for c in configs.values() if c}) > 1:
            notes.append(f"{shape_name(row['shape'])} density {row['density']:g}: different configs: " +
                         ", ".join(f"{label} {' '.join(c) or '-'}" for label, c in configs.items()))
    return notes


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--cli", type=parse_cli, action="append", required=True, metavar="LABEL=PATH",
                        help="a sparsejit binary and its name in the table; the first is the baseline (repeat)")
    parser.add_argument("--shapes", type=parse_shapes, default=parse_shapes("12x32768x128,12x32768x64"),
                        help="HEADSxTOKENSxHEAD_DIM, comma-separated (default: 12x32768x128,12x32768x64)")
    parser.add_argument("--densities", type=parse_densities, default=parse_densities("1.0,0.1,0.05"),
                        help="block densities, comma-separated (default: 1.0,0.1,0.05)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over every shape, density and CLI (default: 3)")
    parser.add_argument("--db", help="a database each CLI starts from a copy of (e.g. the bundle's precompiled.db)")
    parser.add_argument("--bench-args", type=parse_bench_args, default=[],
                        help="more `bench attention` options for every CLI, quoted")
    parser.add_argument("--warmup-ms", type=float, default=1000.0, help="warm-up of each run (default: 1000)")
    parser.add_argument("--measure-ms", type=float, default=300.0, help="measured time of each run (default: 300)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one run may take (default: 600)")
    parser.add_argument("--json-out", help="write every run and the medians as JSON to this file")
    args = parser.parse_args()
    labels = [label for label, _ in args.cli]
    if len(set(labels)) != len(labels):
        parser.error("--cli labels must differ")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not args.timeout > 0:
        parser.error("--timeout must be positive")
    if args.db and not os.path.isfile(args.db):
        parser.error(f"--db {args.db}: no such file")
    TIMING["warmup_ms"], TIMING["measure_ms"] = args.warmup_ms, args.measure_ms

    work = tempfile.mkdtemp(prefix="sparsejit-ab-")
    try:
        databases = {}
        for label in labels:
            databases[label] = os.path.join(work, f"{label}.db")
            if args.db:
                shutil.copyfile(args.db, databases[label])
        rows = measure(args, args.cli, databases)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summarize(rows, labels)
    say(table(rows, labels))
    for note in differing_configs(rows, labels):
        say(note)
    if args.json_out:
        with open(args.json_out, "w") as out:
            json.dump({"clis": dict(args.cli), "timing": dict(TIMING), "bench_args": args.bench_args, "rows": rows},
                      out, indent=1)
    failed = any("error" in run for row in rows for runs in row["runs"].values() for run in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
