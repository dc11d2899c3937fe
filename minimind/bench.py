"""Training throughput: useful and padded tokens/s, MFU, step time and peak memory per variant.

Engine variants run the real `Trainer` (data loader, autocast, optimizer, meter) for
`warmup + steps` optimizer steps. The engine logs once when the warm-up ends and again at the
end, and each report syncs the device, so the difference between the two reports' `tokens_seen`
and `elapsed` is exactly the measured steps; the checkpoint is skipped (it would be written after
the last report anyway). "Useful" tokens are those with a label (padding excluded), as the
engine counts them; padded tokens are every position the model computed.

The `baseline` variant is the upstream MiniMind loop rebuilt on this codebase's model and data:
padded samples tokenized in `__getitem__`, one loader worker, eager model, non-fused AdamW,
fp16 autocast + GradScaler on CUDA and plain fp32 on CPU. Every report carries its own ratio.

The bundled corpus is repeated until one epoch covers the run, so no epoch boundary (a new
loader, a short last batch) falls inside the measurement, as in a real multi-GB run.

The command line is `minimind-tui bench` (`minimind_tui.cli.bench`, next to the presets): the
library never imports the app.
"""

from __future__ import annotations

import gc
import math
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from minimind import distributed
from minimind.atomic import atomic_file
from minimind.data import DataError, JsonlIndex, build_token_cache, resolve_data_path
from minimind.data.corpus import default_cache_dir
from minimind.data.sampler import epoch_batches
from minimind.device import resolve_device
from minimind.engine import Trainer
from minimind.environment import environment_problems
from minimind.event_text import with_hint
from minimind.events import RunStarted, StepMetrics
from minimind.flops import flops_per_token, measured_matmul_rate, peak_flops
from minimind.peak_memory import peak_rss, reset_peak_rss
from minimind.prep_bench import PREPARE, measure_preparation
from minimind.prepare import prepare
from minimind.schedule import learning_rate
from minimind.settings import MOST_EPOCHS, ONE_PROCESS, RunSettings, SettingsError, TrainSettings
from minimind.sinks import QueueSink
from minimind.step_profile import StepProfiler
from minimind.tokenizer import TokenizerError, load_tokenizer

# Variant words, joined with "+" (e.g. "packed+compile+mb128"); each sets train settings.
# Two take a number: w<N> sets num_workers, mb<N> the micro-batch (see variant_settings).
WORDS: dict[str, dict[str, Any]] = {
    "padded": {"packing": False},
    "packed": {"packing": True},
    "eager": {"use_compile": False},
    "compile": {"use_compile": True},
    "fp32": {"dtype": "float32"},
    "bf16": {"dtype": "bfloat16"},
    "fp16": {"dtype": "float16"},
    "ckpt": {"grad_checkpointing": True},
}
BASELINE = "baseline"
ENGINE = "engine"  # the settings exactly as the preset and flags give them
BASELINE_WORKERS = 1  # the seed's default --num_workers


class BenchError(RuntimeError):
    pass


def parse_variant(name: str) -> tuple[dict[str, Any], int | None]:
    """(train-setting overrides, micro-batch or None) of a variant name."""
    if name in (BASELINE, ENGINE, PREPARE):
        return {}, None
    out: dict[str, Any] = {}
    micro_batch = None
    for word in name.split("+"):
        if word in WORDS:
            out.update(WORDS[word])
        elif word[:1] == "w" and word[1:].isdigit():
            out["num_workers"] = int(word[1:])
        elif word[:2] == "mb" and word[2:].isdigit() and int(word[2:]) > 0:
            micro_batch = int(word[2:])
        else:
            known = ", ".join([*WORDS, "w<N>", "mb<N>"])
            raise BenchError(f"unknown variant word {word!r} in {name!r} (known: {known}; "
                             f"or '{BASELINE}' / '{ENGINE}' / '{PREPARE}' alone)")
    return out, micro_batch


def variant_settings(base: RunSettings, variant: str, micro_batch: int | None, warmup: int,
                     steps: int, data_path: str, out_dir: str) -> RunSettings:
    """The settings one run uses: the variant's overrides; a micro-batch that keeps the samples
    per optimizer step (accumulation_steps = batch_size * accumulation_steps / micro-batch);
    and the measuring harness (no eval, samples or saves, a log when the warm-up ends)."""
    t = base.train
    overrides, own_micro_batch = parse_variant(variant)
    micro_batch = own_micro_batch or micro_batch
    train = dict(t.model_dump(), **overrides)
    if variant == BASELINE:
        cuda = resolve_device(t.device).type == "cuda"
        train.update(packing=False, use_compile=False, num_workers=BASELINE_WORKERS,
                     dtype="float16" if cuda else "float32")
    if micro_batch:
        samples = t.batch_size * t.accumulation_steps
        train.update(batch_size=micro_batch,
                     accumulation_steps=max(1, round(samples / micro_batch)))
    train.update(harness_settings(warmup, steps, out_dir), data_path=data_path)
    return RunSettings.parse({"model": base.model.model_dump(), "train": train})


def harness_settings(warmup: int, steps: int, out_dir: str) -> dict[str, object]:
    """The train settings the measuring harness sets itself (a flag for one is refused, as it
    would be ignored): its length, no eval, samples or saves, a log when the warm-up ends, a
    fresh start in its own folder."""
    unused = {name: TrainSettings.model_fields[name].default  # (no eval, no samples)
              for name in ("eval_batches", "sample_tokens")}
    return dict(max_steps=warmup + steps, epochs=MOST_EPOCHS, log_interval=warmup, save_interval=0,
                eval_interval=0, val_data_path="", sample_prompts=[], sample_interval=0,
                report_to=[], from_resume=False, out_dir=out_dir, overwrite=True, **unused,
                **ONE_PROCESS)


# -- data ---------------------------------------------------------------------------------
def documents(train: TrainSettings) -> JsonlIndex:
    """The data file's index, read once before anything is measured. A missing file or a bad
    line is the user's to fix: refused naming their file (not the repeated copy the runs read),
    as the engine refuses it, and skipped where the settings say to skip bad lines."""
    try:
        return JsonlIndex(resolve_data_path(train.data_path), skip_bad_lines=train.skip_bad_lines)
    except DataError as e:
        raise BenchError(f"train.data_path: {e}") from None


def _tokenizer(train: TrainSettings) -> Any:
    try:
        return load_tokenizer(train.tokenizer_path or None)
    except TokenizerError as e:  # the user's folder: one line, as the engine says it
        raise BenchError(f"train.tokenizer_path: {e}") from None


def bench_data(settings: list[RunSettings], docs: JsonlIndex, warmup: int, steps: int,
               log: Callable[[str], None]) -> str:
    """A data_path whose first epoch is long enough for every run: the file `docs` indexes
    repeated a power-of-two number of times (so later runs reuse the cached copy)."""
    t = settings[0].train
    path = docs.path
    tokens = 0
    if any(s.train.packing for s in settings):  # the engine builds this cache anyway
        tokens = build_token_cache(path, _tokenizer(t), 1, default_cache_dir() / "tokens",
                                   skip_bad_lines=t.skip_bad_lines).stat().st_size // 2
    need = 1.0
    for s in settings:
        samples = (warmup + steps + 1) * s.train.batch_size * s.train.accumulation_steps
        have = tokens // s.train.max_seq_len if s.train.packing else len(docs)
        need = max(need, samples / max(have, 1))
    repeat = 1 << math.ceil(math.log2(need))
    if repeat == 1:
        return str(path)
    out = default_cache_dir() / "bench" / f"{path.stem}-x{repeat}.jsonl"
    if not out.exists():
        log(f"writing {out.name} ({repeat} copies of {path.name})")
        text = path.read_bytes()
        text += b"" if text.endswith(b"\n") else b"\n"
        with atomic_file(out) as f:  # a parallel or interrupted run never sees a partial file
            for _ in range(repeat):
                f.write(text)
    return str(out)


# -- measuring ----------------------------------------------------------------------------
def run_engine(settings: RunSettings, warmup: int, compile_mode: str | None,
               profiler: StepProfiler | None = None) -> dict[str, Any]:
    sink = QueueSink()
    # A benchmark keeps no weights: writing them would only cost time and disk.
    sinks = [sink] if profiler is None else [sink, profiler]
    result = Trainer(settings, sinks, compile_mode=compile_mode, save_checkpoints=False).run()
    if result.status != "completed":
        raise BenchError(with_hint(result.reason, result.hint))
    events = sink.drain()
    started = next(e for e in events if isinstance(e, RunStarted))
    logs = [e for e in events if isinstance(e, StepMetrics)]
    first = next(e for e in logs if e.step == warmup)
    last = logs[-1]
    if started.steps_per_epoch < last.step:
        print(f"bench: warning: the data holds only {started.steps_per_epoch} steps per epoch; "
              "epoch boundaries fall inside the measurement", file=sys.stderr)
    window = last.elapsed - first.elapsed
    return {"steps": last.step - first.step, "window": window,
            "useful_tokens": last.tokens_seen - first.tokens_seen,
            "flops_per_token": started.flops_per_token, "peak_flops": started.peak_flops,
            "device_name": started.device_name, "parameters": started.parameters,
            "active_parameters": started.active_parameters, "final_loss": last.loss,
            "peak_mem_bytes": last.mem_peak}


def run_baseline(settings: RunSettings, warmup: int, steps: int) -> dict[str, Any]:
    """The upstream training loop, step for step, on this codebase's model and data."""
    t, m = settings.train, settings.model
    dist = distributed.DistInfo(0, 0, 1, resolve_device(t.device))
    device, cuda = dist.device, dist.device.type == "cuda"
    prep = prepare(settings, dist, lambda *_: None)
    prep.folder.release()  # the baseline writes nothing into the run folder
    model = prep.model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.learning_rate,
                                  weight_decay=t.weight_decay, foreach=False, fused=False)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    autocast = torch.autocast("cuda", dtype=torch.float16) if cuda else nullcontext()
    # Upstream reads a pre-shuffled file in order; the engine's shuffled order stands in for
    # it, so the baseline and the `padded` variant see the same documents (and padding).
    batches = epoch_batches(len(prep.train_data), t.batch_size, 0, t.seed)
    loader = DataLoader(_OneAtATime(prep.train_data), batch_sampler=batches,
                        num_workers=t.num_workers, pin_memory=cuda)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    total, accum = warmup + steps, t.accumulation_steps
    step, micro, useful, start, final_loss = 0, 0, 0, 0.0, math.nan
    for input_ids, labels in loader:
        if step == warmup and micro == 0:
            _sync(device)
            start, useful = time.perf_counter(), 0
        for group in optimizer.param_groups:  # upstream sets the lr on every micro-step
            group["lr"] = learning_rate(step, total, t.learning_rate, t.warmup_iters,
                                        t.lr_schedule)
        useful += int((labels != -100).sum())  # counted on the host copy: no device sync
        input_ids, labels = input_ids.to(device, non_blocking=True), labels.to(device)
        with autocast:
            out = model(input_ids=input_ids, labels=labels)
            loss = (out.loss + out.aux_loss) / accum
        scaler.scale(loss).backward()
        micro += 1
        if micro == accum:
            scaler.unscale_(optimizer)
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step, micro = step + 1, 0
            if step % t.log_interval == 0 or step == total:
                final_loss = loss.item() * accum  # upstream's log line: the one host sync
            if step == total:
                break
    else:
        raise BenchError("the data ran out before the baseline finished its steps")
    _sync(device)
    fpt = flops_per_token(model.active_parameters(), model.model.embed_tokens.weight.numel(),
                          m.num_hidden_layers, m.hidden_size, t.max_seq_len,
                          m.tie_word_embeddings)
    return {"steps": steps, "window": time.perf_counter() - start, "useful_tokens": useful,
            "flops_per_token": fpt, "peak_flops": peak_flops(device),
            "device_name": distributed.device_name(device),
            "parameters": model.num_parameters(),
            "active_parameters": model.active_parameters(), "final_loss": final_loss,
            "peak_mem_bytes": torch.cuda.max_memory_allocated(device) if cuda else None}


class _OneAtATime(Dataset):
    """Upstream's loader tokenizes sample by sample: hides the datasets' batched
    `__getitems__` from the baseline's DataLoader."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.dataset[i]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(settings: RunSettings, variant: str, warmup: int, steps: int,
            compile_mode: str | None, profile: bool = False) -> dict[str, Any]:
    """Run one configuration and turn its counts into the report's figures; with `profile`,
    also where the measured steps' time went (engine variants; see step_profile)."""
    reset_peak_rss()
    profiler = StepProfiler(warmup, warmup + steps) if profile and variant != BASELINE else None
    if variant == BASELINE:
        raw = run_baseline(settings, warmup, steps)
    else:
        raw = run_engine(settings, warmup, compile_mode if settings.train.use_compile else None,
                         profiler)
    if profiler is not None:
        raw["profile"] = profiler.breakdown()
    t = settings.train
    window = max(raw.pop("window"), 1e-9)
    useful = raw.pop("useful_tokens") / window
    padded = raw["steps"] * t.batch_size * t.max_seq_len * t.accumulation_steps / window
    peak = raw.pop("peak_flops")
    fpt = raw.pop("flops_per_token")
    mem = raw.pop("peak_mem_bytes")
    # The dtype the model's matmuls ran in (the baseline's settings already say fp16 / fp32).
    matmul_dtype = getattr(torch, t.dtype)
    rate = measured_matmul_rate(distributed.resolve_device(t.device), matmul_dtype)
    return {"useful_tokens_per_sec": useful, "padded_tokens_per_sec": padded,
            "mfu": useful * fpt / peak if peak else None,
            "useful_flops_per_sec": useful * fpt, "matmul_flops_per_sec": rate,
            "matmul_dtype": str(matmul_dtype).removeprefix("torch."),
            "share_of_matmul_rate": useful * fpt / rate, "step_time_s": window / raw["steps"],
            "peak_mem_bytes": mem if mem is not None else peak_rss(),
            "peak_mem_kind": "cuda_max_allocated" if mem is not None else "process_peak_rss",
            "flops_per_token": fpt, **raw}


def _cleanup() -> None:
    """Free the previous run's model and compiled graphs before the next one."""
    gc.collect()
    torch._dynamo.reset()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_bench(base: RunSettings, preset: str | None, variants: list[str],
              micro_batches: list[int | None], warmup: int, steps: int,
              compile_mode: str | None, emit: Callable[[dict[str, Any]], None],
              log: Callable[[str], None], repeat: int = 1,
              profile: bool = False) -> list[dict[str, Any]]:
    """Measure every (variant, micro-batch) pair; the baseline runs first, at the settings' own
    micro-batch. With `repeat` > 1 the whole list runs that many times, interleaved, and each
    configuration reports its fastest run: on a shared machine other work only ever slows a
    run down. A failing configuration is reported and the rest still run. `profile` adds each
    engine run's time breakdown (the profiler slows it: its tokens/s are not comparable).
    Input it cannot use is refused before anything is measured: a SettingsError for what this
    machine lacks, a BenchError for a stage other than pretraining or a bad data file."""
    # Its data are read as text, not conversations, and its baseline is upstream's pretraining.
    if base.train.stage != "pretrain":
        raise BenchError(f"train.stage: {base.train.stage}: bench measures pretraining "
                         "throughput; use a pretraining preset (e.g. tiny, minimind2-small)")
    configs = [(BASELINE, None)] if BASELINE in variants else []
    for v in variants:
        if v not in (BASELINE, PREPARE):  # one naming its micro-batch is not crossed with the list
            configs += [(v, mb) for mb in ([None] if parse_variant(v)[1] else micro_batches)]
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="minimind-bench-") as folder:
        # A folder of its own around the run: a replaced run's dependents are looked for
        # beside it, and beside the temporary folder are everyone else's files.
        out_dir = str(Path(folder) / "run")
        draft = [variant_settings(base, v, mb, warmup, steps, base.train.data_path, out_dir)
                 for v, mb in configs]
        for s in draft:  # what this machine lacks for a variant (a file, float16 without a GPU)
            problems = environment_problems(s)
            if problems:
                raise SettingsError(problems)
        docs = documents(base.train)
        if PREPARE in variants:  # a line of its own, before any training
            records.append(measure_preparation(base.train.data_path, _tokenizer(base.train),
                                               log))
            emit(records[-1])
        if not configs:
            return records
        data = bench_data(draft, docs, warmup, steps, log)
        plans = [(v, variant_settings(base, v, mb, warmup, steps, data, out_dir))
                 for v, mb in configs]
        runs: list[list[dict[str, Any]]] = [[] for _ in plans]
        reference = None
        for round_ in range(repeat):
            for (variant, s), done in zip(plans, runs):
                run = f", run {round_ + 1}/{repeat}" if repeat > 1 else ""
                log(f"bench: {preset or 'settings'}: {variant} (micro-batch "
                    f"{s.train.batch_size} x {s.train.accumulation_steps}){run} ...")
                try:
                    done.append(measure(s, variant, warmup, steps, compile_mode, profile))
                except (BenchError, torch.cuda.OutOfMemoryError) as e:
                    done.append({"error": f"{type(e).__name__}: {e}".splitlines()[0]})
                _cleanup()
                if round_ < repeat - 1:
                    continue
                record = _record(variant, preset, s, done, compile_mode)
                if variant == BASELINE and "error" not in record:
                    reference = record["useful_tokens_per_sec"]
                rate = record.get("useful_tokens_per_sec")
                record["speedup_vs_baseline"] = rate / reference if rate and reference else None
                records.append(record)
                emit(record)
    return records


def _record(variant: str, preset: str | None, s: RunSettings, runs: list[dict[str, Any]],
            compile_mode: str | None) -> dict[str, Any]:
    t = s.train
    good = [r for r in runs if "error" not in r]
    best = max(good, key=lambda r: r["useful_tokens_per_sec"]) if good else runs[-1]
    record = {"variant": variant, "preset": preset,
              "device": str(resolve_device(t.device)),
              "micro_batch": t.batch_size, "accumulation_steps": t.accumulation_steps, **best}
    if len(runs) > 1:
        record["runs_useful_tokens_per_sec"] = [r.get("useful_tokens_per_sec") for r in runs]
    record.update(compile_mode=compile_mode if t.use_compile else None,
                  torch=torch.__version__, python=platform.python_version(),
                  threads=torch.get_num_threads(), settings=s.model_dump(mode="json"))
    return record

