#!/usr/bin/env bash
# The `amx` kernel variant (AMX tiles for 16x4 INT8 blocks, bsr16x4) checked and timed on an Intel
# CPU with AMX (not yet timed as a whole: each model process of step 4 took about 5 minutes on a
# 2-vCPU AMD Zen 3, so expect 45-75 minutes with step 5):
#   1. the CPU, and the variants the extension compiled and runs here
#   2. the INT8 kernel tests, which run every supported variant, amx included (exact integer
#      products, the same bits as vnni)
#   3. bench_kernels.py --dense-formats: every INT8 format in every variant on dense MiniLM shapes
#      (bsr16x4 under amx = dense AMX tiles), JSON
#   4. bench_kernels.py --model --int8 --model-structure 16x4 at 80 / 90 %, b1 / b8, 1 thread, under
#      vnni and amx in alternating processes (3 each), JSON per process: sparse-int8's `auto` picks
#      bsr16x4 only where timed faster (sparse_layer_choices says which format each layer runs)
#   5. bench_vs_openvino.py: the BERT-base-shaped model pruned in 16x4 blocks at 90 / 80 %, sparse-int8
#      under vnni and under amx against OpenVINO INT8 on the dense model, same rounds, b1 / b8, 1 thread
#      (issue 16's Intel cells, with 16x4 blocks in place of 1x4), OpenVINO bf16 beside them, JSON
#   6. bench_vs_openvino.py: issue 16's MiniLM cells as the issue states them (1x4 and unstructured),
#      against OpenVINO INT8 at its default float precision (bf16 here; until 2026-12-07 the peer
#      forced f32) and OpenVINO bf16, same rounds, b1 / b8, 1 thread, JSON
# Usage: scripts/amx_check.sh [OUT_DIR]      (default runs/amx-check; PY=python overrides .venv)
# Exit status: 0 all checks passed, 1 a check failed, 2 no AMX here.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${1:-runs/amx-check}
mkdir -p "$OUT"
START=$(date +%s)
fail=0
step() { echo; echo "=== [$(( $(date +%s) - START ))s] $*"; }

step "machine"
lscpu | grep -E 'Model name|^Flags' | cut -c1-200
if ! grep -qw amx_int8 /proc/cpuinfo; then
  echo "no amx_int8 in /proc/cpuinfo: nothing to check here"; exit 2
fi
"$PY" -c "from accelerators import _sparse_kernels as k; print('compiled', k.compiled_variants(), 'supported', k.supported_variants(), 'default', k.kernel_variant()); k.set_kernel_variant('amx')" \
  || { echo "FAIL: the amx variant cannot be chosen here"; exit 1; }

step "INT8 kernel tests, every variant"
timeout 900 "$PY" -m pytest -q -p no:cacheprovider tests/test_sparse_int8.py tests/test_ffn_int8.py \
  tests/test_qkv_attention_int8.py tests/test_int8_variants_agree.py || { echo "FAIL: INT8 kernel tests"; fail=1; }

step "dense formats per variant"
timeout 600 "$PY" scripts/bench_kernels.py --dense-formats --sparsities 0 --json "$OUT/dense_formats.json" \
  || { echo "FAIL: dense formats benchmark"; fail=1; }

step "16x4 MiniLM-shaped model, vnni and amx alternating"
for round in 1 2 3; do
  for v in vnni amx; do
    SPARSEBENCH_KERNEL_VARIANT=$v timeout 600 "$PY" scripts/bench_kernels.py --model --int8 --model-structure 16x4 \
      --sparsities 0.8,0.9 --batches 1,8 --threads 1 --json "$OUT/model_16x4_${v}_${round}.json" \
      || { echo "FAIL: model benchmark ($v, round $round)"; fail=1; }
  done
done

step "BERT-base-shaped 16x4 model against OpenVINO INT8, vnni and amx in the same rounds"
timeout 2400 "$PY" scripts/bench_vs_openvino.py --models bert-base --prunings 90-16x4,80-16x4 --variants vnni,amx \
  --dense-peers openvino-bf16 --batch 1,8 --threads 1 --out "$OUT/vs_openvino_16x4.json" \
  || { echo "FAIL: whole-model benchmark"; fail=1; }

step "MiniLM issue cells against OpenVINO INT8 at its default precision and OpenVINO bf16"
timeout 1800 "$PY" scripts/bench_vs_openvino.py --models minilm --prunings 90-1x4,80-1x4,90-unstructured \
  --dense-peers openvino-bf16 --batch 1,8 --threads 1 --out "$OUT/vs_openvino_minilm_default_precision.json" \
  || { echo "FAIL: MiniLM whole-model benchmark"; fail=1; }

step "done in $(( $(date +%s) - START )) s: JSON in $OUT"
exit $fail
