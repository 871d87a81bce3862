#!/usr/bin/env bash
# Compiles one specialization of the wgmma attention kernel with nvcc for sm_90a (the same
# ptxas that NVRTC drives) and counts what issue 6 asks to see in its SASS: HGMMA in the hot
# loop and no local-memory traffic (LDL/STL), split into the consumers' code and the
# producer's. ptxas's advisories are shown too: C7511 says it serialized the wgmma (too few
# registers for its pipeline), which halves the kernel's speed. Needs nvcc and cuobjdump (CUDA
# toolkit; the GPU machine has both).
#   tools/wgmma_sass.sh ["DTYPE, D, BQ, BKV, BM, BN, STAGES, FINE_N, BITMASK"] [SASS_OUT]
# The default is bf16, D = 128, 128x128 blocks and tile, 2 stages, no fine bits, block-CSR.
set -euo pipefail
cd "$(dirname "$0")/.."
args="${1:-0, 128, 128, 128, 128, 128, 2, 0, false}"
sass_out="${2:-}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
param='const __grid_constant__ sparsejit'
cat >"$work/kernel.cu" <<EOT
#include "sparse_attention/sparse_attention_wgmma.cuh"
template __global__ void sparsejit::sparse_attention_forward_wgmma<$args>($param::SparseAttentionParams,
    $param::TensorMap, $param::TensorMap, $param::TensorMap, $param::TensorMap);
EOT
# The whole log where nvcc fails (a signature that no longer matches, say), else its summary.
if ! nvcc -gencode=arch=compute_90a,code=sm_90a -cubin -std=c++17 -Xptxas -v -I templates \
  -o "$work/kernel.cubin" "$work/kernel.cu" >"$work/nvcc.log" 2>&1; then
  cat "$work/nvcc.log" >&2
  exit 1
fi
grep -E "registers|spill|stack|C75[0-9][0-9]" "$work/nvcc.log" || true
cuobjdump --dump-sass "$work/kernel.cubin" >"$work/kernel.sass"
[ -n "$sass_out" ] && cp "$work/kernel.sass" "$sass_out"
echo "sparse_attention_forward_wgmma<$args>: $(grep -c HGMMA "$work/kernel.sass") HGMMA," \
  "$(grep -cE '\b(LDL|STL)\b' "$work/kernel.sass" || true) LDL/STL instructions"
# ptxas lays the consumers' code (setmaxnreg up, every HGMMA) out before the producer's
# (from its setmaxnreg down, USETMAXREG.DEALLOC): say where the local-memory traffic is.
split=$(grep -n "USETMAXREG.DEALLOC" "$work/kernel.sass" | head -1 | cut -d: -f1)
if [ -n "$split" ]; then
  echo "  consumers (before USETMAXREG.DEALLOC): $(head -n "$split" "$work/kernel.sass" | grep -c HGMMA) HGMMA," \
    "$(head -n "$split" "$work/kernel.sass" | grep -cE '\b(LDL|STL)\b' || true) LDL/STL;" \
    "producer: $(tail -n +"$split" "$work/kernel.sass" | grep -cE '\b(LDL|STL)\b' || true) LDL/STL"
fi
