#!/usr/bin/env bash
# GPU checks end to end, on a machine with one NVIDIA GPU, in under 8 minutes:
#   1. what the machine has (nvidia-smi, sparsebench doctor)
#   2. pytest -m gpu                       (the real cuda-fp16 / cuda-bf16 / cuda-2:4 tests)
#   3. sparsebench run scripts/configs/gpu.toml   (tiny matrix on CUDA, energy via NVML)
#   4. sparsebench run scripts/configs/compare_avx2_1t.toml   (the same cells on the CPU)
#   5. sparsebench compare GPU_RUN CPU_RUN -o OUT/compare.html
#   6. a verdict: every cuda-fp16/bf16 cell ok, cuda-2:4 ok on the 2:4-pruned model, NVML used
# Usage: scripts/gpu_check.sh [OUT_DIR]      (default runs/gpu-check; PY=python overrides .venv)
# Exit status: 0 all checks passed, 1 a check failed, 2 no CUDA here.
# DRY_RUN=1 runs the plumbing on a CPU-only machine (GPU tests skip, cuda cells are recorded as
# skipped, so the verdict fails): for checking this script itself, never as a GPU result.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${1:-runs/gpu-check}
mkdir -p "$OUT"
export SPARSEBENCH_CACHE=${SPARSEBENCH_CACHE:-$OUT/cache}
START=$(date +%s)
fail=0
step() { echo; echo "=== [$(( $(date +%s) - START ))s] $*"; }

step "machine"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv || echo "nvidia-smi not found"
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(), 'cc', torch.cuda.get_device_capability())"
elif [ "${DRY_RUN:-0}" = 1 ]; then
  echo "DRY_RUN: no CUDA here; running the plumbing only"
else
  echo "torch.cuda.is_available() is False: no CUDA device/driver — nothing to check here"; exit 2
fi
timeout 60 "$PY" -m profiler.cli doctor | sed -n '1,12p'

step "pytest -m gpu"
timeout 240 "$PY" -m pytest -q -m gpu -rs tests/ || { echo "FAIL: GPU tests"; fail=1; }

step "sparsebench run scripts/configs/gpu.toml"
CFG=scripts/configs/gpu.toml
if ! "$PY" -c "from profiler.config import load_config; load_config('$CFG')" 2>/tmp/gpu_cfg_err.txt; then
  echo "gpu.toml does not validate here ($(tail -1 /tmp/gpu_cfg_err.txt)); dropping the 2:4 pruner block"
  CFG=$OUT/gpu-no24.toml
  sed '/^# --- 2:4 pruner/,/^# --- end 2:4 ---/d' scripts/configs/gpu.toml > "$CFG"
fi
timeout 200 "$PY" -m profiler.cli run "$CFG" --output-dir "$OUT" || { echo "FAIL: GPU run"; fail=1; }
GPU_RUN=$(ls -td "$OUT"/gpu-2* 2>/dev/null | head -1)

step "sparsebench run scripts/configs/compare_avx2_1t.toml (CPU target)"
timeout 150 "$PY" -m profiler.cli run scripts/configs/compare_avx2_1t.toml --output-dir "$OUT" || { echo "FAIL: CPU run"; fail=1; }
CPU_RUN=$(ls -td "$OUT"/compare-avx2-1t-* 2>/dev/null | head -1)

step "sparsebench compare $GPU_RUN $CPU_RUN"
if [ -n "$GPU_RUN" ] && [ -n "$CPU_RUN" ]; then
  timeout 60 "$PY" -m profiler.cli compare "$GPU_RUN" "$CPU_RUN" -o "$OUT/compare.html" || { echo "FAIL: compare"; fail=1; }
else
  echo "FAIL: a run directory is missing (gpu: '$GPU_RUN', cpu: '$CPU_RUN')"; fail=1
fi

step "verdict"
if [ -n "$GPU_RUN" ]; then
  "$PY" - "$GPU_RUN" <<'EOF' || fail=1
import sys
from pathlib import Path
from profiler.results import read_results

rows = read_results(Path(sys.argv[1]) / "results.jsonl").rows
bad = []
for r in rows:
    acc, st, why = r["accelerator"], r["status"], (r.get("reason") or "").splitlines()[:1]
    structure = (r.get("pruner_params") or {}).get("structure")
    is24 = structure == "2:4"
    line = f"{r['pruner']:<10} {structure or '':<6} {acc:<11} b{r['batch_size']:<2} {st:<7} p50 {r.get('latency_p50_s') or 0:.2e} s  " \
           f"J/inf {r.get('energy_j_per_inference')} ({r.get('energy_method')}, parts {r.get('energy_auto_parts')})  acc {r.get('accuracy')}  {why[0] if why else ''}"
    print(line)
    if acc in ("cuda-fp16", "cuda-bf16") and st != "ok":
        bad.append(line)
    if acc == "cuda-2:4" and is24 and st != "ok":
        bad.append(line)
    if acc == "cuda-2:4" and not is24 and not (st == "failed" and "2:4" in (r.get("reason") or "")):
        bad.append("expected a clear 2:4 error: " + line)
    if acc.startswith("cuda") and st == "ok" and "nvml" not in (r.get("energy_auto_parts") or []):
        print("  note: NVML did not contribute to this cell's energy")
if not any((r.get("pruner_params") or {}).get("structure") == "2:4" for r in rows):
    print("note: no 2:4-pruned model in this run (pruner without N:M structure): cuda-2:4 only checked through pytest -m gpu")
print(f"{len(rows)} cells, {len(bad)} unexpected")
for b in bad:
    print("UNEXPECTED:", b)
sys.exit(1 if bad else 0)
EOF
fi
echo
echo "gpu run: $GPU_RUN"
echo "cpu run: $CPU_RUN"
echo "compare: $OUT/compare.html"
echo "took $(( $(date +%s) - START )) s; $([ $fail = 0 ] && echo PASSED || echo FAILED)"
exit $fail
