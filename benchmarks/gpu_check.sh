#!/usr/bin/env bash
# One prepared GPU session: the CUDA tests, then the benchmark matrix. Every result is appended
# to $OUT/bench.jsonl the moment it is measured, so a run cut short keeps what it finished.
# $OUT is the device tool's output folder; elsewhere results go to ./bench-results.
#
#   bash benchmarks/fetch_wheels.sh               # here, once: the missing wheels into .whl/
#   device tool: run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=570)
#
# BENCH_BUDGET_S (default 480) bounds the whole script: each step is cut to the time left and
# skipped when under a minute is left, most important first, so it ends inside ~8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-./bench-results}
mkdir -p "$OUT"
BUDGET=${BENCH_BUDGET_S:-480}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 MINIMIND_CACHE=${MINIMIND_CACHE:-/tmp/minimind-cache}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the repo is used in place, not installed

log() { echo "[gpu_check +${SECONDS}s] $*" | tee -a "$OUT/gpu_check.log" >&2; }

if compgen -G ".whl/*.whl" > /dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { log "wheel install failed"; exit 1; }
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
{ nvidia-smi; $PY -c "
import sys, torch, transformers, pydantic
print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda,
      '| transformers', transformers.__version__, '| pydantic', pydantic.VERSION)
print(torch.cuda.get_device_name(), torch.cuda.get_device_properties(0).total_memory >> 20, 'MiB')"
} > "$OUT/env.txt" 2>&1 || { cat "$OUT/env.txt"; log "environment check failed"; exit 1; }
log "$(tail -2 "$OUT/env.txt" | tr '\n' ' ')"

capped() {  # capped NAME MAX_SECONDS COMMAND...: run with the smaller of MAX and the time left
    local name=$1 cap=$2 left=$((BUDGET - SECONDS)); shift 2
    if (( left < 60 )); then log "skipped $name: ${left}s left"; return; fi
    (( cap > left )) && cap=$left
    log "$name (limit ${cap}s)"
    timeout -s INT -k 15 "$cap" "$@"  # SIGINT: Python stops cleanly, results so far are kept
    log "$name: exit $?"
}

bench() {  # bench NAME MAX_SECONDS BENCH_ARGS...: JSON to the file, progress to the console
    local name=$1 cap=$2; shift 2
    capped "$name" "$cap" $PY -m minimind_tui bench --out "$OUT/bench.jsonl" "$@" \
        > /dev/null 2> >(tee -a "$OUT/bench.log" >&2)
}

capped "CUDA tests" 120 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py \
    2>&1 | tee "$OUT/cuda_tests.log" | tail -15

# The target first: MiniMind2-Small, upstream-style loop vs the engine's levers.
STEPS="--warmup 3 --steps 10"
bench "minimind2-small" 180 --preset minimind2-small $STEPS \
    --variants baseline,padded,packed+w0,packed+compile+w0+mb128,packed+compile+w0+mb256
bench "minimind2-moe" 100 --preset minimind2-moe $STEPS \
    --variants baseline,packed+w0,packed+compile+w0+mb64
bench "minimind3-moe" 100 --preset minimind3-moe $STEPS \
    --variants baseline,packed+w0,packed+compile+w0+mb64
# With time to spare: autotuned GEMMs, and the memory activation checkpointing saves.
bench "minimind2-small autotune" 180 --preset minimind2-small $STEPS \
    --variants packed+compile+w0+mb256 --compile_mode max-autotune-no-cudagraphs
bench "minimind2 checkpointing" 120 --preset minimind2 $STEPS \
    --variants packed+compile+w0+mb64,packed+compile+w0+ckpt+mb64

[ -s "$OUT/bench.jsonl" ] && $PY - "$OUT/bench.jsonl" <<'EOF' 2>&1 | tee "$OUT/summary.txt"
import json, sys
print(f"{'preset':16s} {'variant':30s} {'micro':>6s} {'useful tok/s':>13s} {'MFU':>6s} "
      f"{'peak GiB':>8s} {'vs base':>7s}")
for line in open(sys.argv[1]):
    r = json.loads(line)
    micro = f"{r['micro_batch']}x{r['accumulation_steps']}"
    if "error" in r:
        print(f"{r['preset']:16s} {r['variant']:30s} {micro:>6s}  {r['error'][:60]}")
        continue
    mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] else "-"
    ratio = f"{r['speedup_vs_baseline']:.2f}x" if r["speedup_vs_baseline"] else "-"
    print(f"{r['preset']:16s} {r['variant']:30s} {micro:>6s} {r['useful_tokens_per_sec']:13,.0f} "
          f"{mfu:>6s} {(r['peak_mem_bytes'] or 0) / 2**30:8.1f} {ratio:>7s}")
EOF
log "done"
