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
# Each MoE preset against its dense twin (same active parameters), alternating, best of 2.
for preset in minimind3-moe minimind2-moe; do
    capped "$preset vs dense" 150 $PY benchmarks/moe_vs_dense.py --preset $preset $STEPS \
        --repeat 2 --variants packed+compile+w0+mb64 \
        >> "$OUT/moe_vs_dense.jsonl" 2> >(tee -a "$OUT/bench.log" >&2)
done
# The recipes on the GPU: tokens and time to the default's loss at the MiniMind2-Small shape
# (the README's CPU table is at 4 x 128; here 8 x 512: 240 steps see 2/3 of the bundled corpus).
capped "time to target" 150 $PY -m minimind_tui bench --preset minimind2-small --batch_size 8 \
    --max_seq_len 512 --accumulation_steps 1 --eval_batches 4 --steps 240 --eval_every 10 \
    --recipes muonlr,wsd,muonlr+wsd --seeds 1,2,3 --out "$OUT/target.jsonl" \
    > /dev/null 2> >(tee -a "$OUT/target.log" >&2)
# With time to spare: autotuned GEMMs, and the memory activation checkpointing saves.
bench "minimind2-small autotune" 180 --preset minimind2-small $STEPS \
    --variants packed+compile+w0+mb256 --compile_mode max-autotune-no-cudagraphs
bench "minimind2 checkpointing" 120 --preset minimind2 $STEPS \
    --variants packed+compile+w0+mb64,packed+compile+w0+ckpt+mb64
# The packed cache built by one process and by a worker per core, on this machine's cores.
bench "data preparation" 120 --variants prepare

[ -s "$OUT/bench.jsonl" ] && $PY - "$OUT/bench.jsonl" <<'EOF' 2>&1 | tee "$OUT/summary.txt"
import json, sys
print(f"{'preset':16s} {'variant':30s} {'micro':>6s} {'useful tok/s':>13s} {'MFU':>6s} "
      f"{'peak GiB':>8s} {'vs base':>7s}")
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["variant"] == "prepare":  # no training: MB/s of the old and the new path
        if "error" in r:
            print(f"{'prepare':16s} {r['error'][:60]}")
            continue
        print(f"{'prepare':16s} old {r['old_mb_per_sec']:.1f} MB/s -> new {r['new_mb_per_sec']:.1f} MB/s ({r['speedup_vs_baseline']:.1f}x)")
        continue
    micro = f"{r['micro_batch']}x{r['accumulation_steps']}"
    if "error" in r:
        print(f"{r['preset']:16s} {r['variant']:30s} {micro:>6s}  {r['error'][:60]}")
        continue
    mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] else "-"
    ratio = f"{r['speedup_vs_baseline']:.2f}x" if r["speedup_vs_baseline"] else "-"
    print(f"{r['preset']:16s} {r['variant']:30s} {micro:>6s} {r['useful_tokens_per_sec']:13,.0f} "
          f"{mfu:>6s} {(r['peak_mem_bytes'] or 0) / 2**30:8.1f} {ratio:>7s}")
EOF
[ -s "$OUT/moe_vs_dense.jsonl" ] && $PY - "$OUT/moe_vs_dense.jsonl" <<'EOF' 2>&1 | tee -a "$OUT/summary.txt"
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    ratio = f"MoE / dense {r['moe_over_dense']:.2f}" if r["model"] == "moe" and r["moe_over_dense"] else ""
    print(f"{r['preset']:16s} {r['model']:6s} {r['active_parameters']:12,d} active "
          f"{r['useful_tokens_per_sec'] or 0:13,.0f} useful tok/s  {ratio}")
EOF
log "done"
