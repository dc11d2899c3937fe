"""The training engine: settings + sinks + a stop flag in, events out.

This is the seed's `train_pretrain.py` loop rebuilt so that the dashboard, the headless CLI and
torchrun all drive the same code. The engine never knows who listens: it hands typed events to
sinks. Host syncs (`.item()`) happen only at log, eval and checkpoint steps.
"""

from __future__ import annotations

import math
import threading
import time
import traceback
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import psutil
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from minimind import distributed
from minimind.checkpoint import (capture_rng, restore_rng, resume_path, save_resume,
                                 save_weights)
from minimind.data.sampler import epoch_batches
from minimind.events import (CheckpointSaved, EvalResult, Event, LogMessage, RunFinished,
                             RunStarted, StepMetrics)
from minimind.flops import flops_per_token, peak_flops
from minimind.prepare import InputError, Prepared, prepare
from minimind.schedule import learning_rate
from minimind.settings import RunSettings
from minimind.sinks import JsonlSink, Sink

OOM_HINT = "lower batch_size or max_seq_len (raise accumulation_steps to keep tokens/step), " \
           "or turn on grad_checkpointing"
NAN_HINT = "lower learning_rate, add warmup_iters, keep grad_clip on, or use bfloat16"


class NonFiniteLoss(RuntimeError):
    pass


class Trainer:
    def __init__(self, settings: RunSettings, sinks: Sequence[Sink] = (),
                 stop_event: threading.Event | None = None, compile_mode: str | None = None):
        self.settings = settings
        # torch.compile's mode ("max-autotune", ...) for use_compile runs: a benchmark knob.
        self.compile_mode = compile_mode
        self.sinks = list(sinks)
        self.stop_event = stop_event or threading.Event()
        self.step = 0
        self.last_saved_step: int | None = None

    def request_stop(self) -> None:
        self.stop_event.set()

    # -- public entry -----------------------------------------------------------------
    def run(self) -> RunFinished:
        self.dist = distributed.setup(self.settings.train.device)
        try:
            try:
                self.prep = prepare(self.settings, self.dist, self.log)
            except InputError as e:
                return self._finish("failed", str(e), cause="input")
            if self.dist.is_main:
                self.sinks.append(JsonlSink(self.prep.out_dir / "metrics.jsonl",
                                            append=self.prep.resume is not None))
                self.settings.save_toml(self.prep.out_dir / "config.toml")
            return self._train()
        except torch.cuda.OutOfMemoryError as e:
            return self._finish("failed", f"CUDA out of memory: {str(e).splitlines()[0]}",
                                cause="runtime", hint=OOM_HINT)
        except NonFiniteLoss as e:
            return self._finish("failed", str(e), cause="runtime", hint=NAN_HINT)
        except Exception as e:  # an engine bug or environment failure: keep the details
            details = self._write_details()
            return self._finish("failed", f"{type(e).__name__}: {e}", cause="runtime",
                                details_path=details)
        finally:
            distributed.teardown(self.dist)

    # -- events -------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        if self.dist.is_main:
            for sink in self.sinks:
                sink.emit(event)

    def log(self, text: str, level: str = "info") -> None:
        self.emit(LogMessage(level=level, text=text))

    def _finish(self, status: str, reason: str = "", **extra: str) -> RunFinished:
        event = RunFinished(status=status, step=self.step, reason=reason, **extra)
        self.emit(event)
        for sink in self.sinks:
            if isinstance(sink, JsonlSink):
                sink.close()
        return event

    def _write_details(self) -> str:
        prep = getattr(self, "prep", None)
        if prep is None or not self.dist.is_main:
            traceback.print_exc()
            return ""
        path = prep.out_dir / "error.log"
        path.write_text(traceback.format_exc(), encoding="utf-8")
        return str(path)

    # -- the loop -----------------------------------------------------------------------
    def _train(self) -> RunFinished:
        s, t, prep, dist = self.settings, self.settings.train, self.prep, self.dist
        device = dist.device
        model = prep.model.to(device)
        if t.grad_checkpointing:
            model.activation_checkpointing_enable()
        model.train()
        # Fused kernels exist for both devices settings allow (CUDA and CPU): one pass over
        # each parameter instead of a dozen per-tensor ops (a 3-7x faster optimizer step on CPU).
        optimizer = torch.optim.AdamW(model.parameters(), lr=t.learning_rate,
                                      weight_decay=t.weight_decay, fused=True)
        scaler = torch.amp.GradScaler("cuda") if t.dtype == "float16" else None
        progress = {"epoch": 0, "epoch_step": 0, "step": 0, "tokens_seen": 0, "elapsed": 0.0}
        if prep.resume:
            model.load_state_dict(prep.resume["model"])
            optimizer.load_state_dict(prep.resume["optimizer"])
            if scaler is not None and prep.resume["scaler"]:
                scaler.load_state_dict(prep.resume["scaler"])
            progress = dict(prep.resume["progress"])
            restore_rng(prep.resume["rng"][dist.rank], device)
        else:
            torch.manual_seed(t.seed + dist.rank)  # dropout differs per rank, init did not
        net = torch.compile(model, mode=self.compile_mode) if t.use_compile else model
        if dist.enabled:
            net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda"
                                          else None)
        autocast = _autocast(device, t.dtype)

        n_batches = len(epoch_batches(len(prep.train_data), t.batch_size, 0, t.seed,
                                      dist.rank, dist.world_size))
        steps_per_epoch = math.ceil(n_batches / t.accumulation_steps)
        total = steps_per_epoch * t.epochs
        total = min(total, t.max_steps) if t.max_steps else total
        self.step = progress["step"]
        self.last_saved_step = self.step if prep.resume else None
        active = model.active_parameters()
        fpt = flops_per_token(active, model.model.embed_tokens.weight.numel(),
                              model.config.num_hidden_layers, model.config.hidden_size,
                              t.max_seq_len, model.config.tie_word_embeddings)
        peak = peak_flops(device)
        self.emit(RunStarted(
            settings=s.model_dump(mode="json"), parameters=model.num_parameters(),
            active_parameters=active, device=str(device), device_name=_device_name(device),
            world_size=dist.world_size, tokens_per_step=s.tokens_per_step(dist.world_size),
            steps_per_epoch=steps_per_epoch, total_steps=total, start_step=self.step,
            flops_per_token=fpt, peak_flops=peak, out_dir=str(prep.out_dir)))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        meter = _Meter(device, dist.world_size, progress["tokens_seen"], progress["elapsed"])
        for epoch in range(progress["epoch"], t.epochs):
            batches = epoch_batches(len(prep.train_data), t.batch_size, epoch, t.seed,
                                    dist.rank, dist.world_size)
            epoch_step = progress["epoch_step"] if epoch == progress["epoch"] else 0
            loader = iter(DataLoader(
                prep.train_data, batch_sampler=batches[epoch_step * t.accumulation_steps:],
                num_workers=t.num_workers, pin_memory=device.type == "cuda",
                # Its own generator keeps the loader from drawing on the global RNG, which
                # dropout uses: resumed and uninterrupted runs then see the same masks.
                generator=torch.Generator()))
            while epoch_step < steps_per_epoch and self.step < total:
                group = min(t.accumulation_steps, n_batches - epoch_step * t.accumulation_steps)
                lr = learning_rate(self.step, total, t.learning_rate, t.warmup_iters,
                                   t.lr_schedule)
                for param_group in optimizer.param_groups:
                    param_group["lr"] = lr
                for micro in range(group):
                    input_ids, labels = (x.to(device, non_blocking=True) for x in next(loader))
                    sync = micro == group - 1 or not dist.enabled
                    with nullcontext() if sync else net.no_sync(), autocast:
                        out = net(input_ids=input_ids, labels=labels)
                        loss = out.loss + out.aux_loss
                    scaled = loss / group
                    (scaler.scale(scaled) if scaler else scaled).backward()
                    meter.add_micro(out.loss.detach(), out.aux_loss.detach(), labels)
                if scaler is not None:
                    scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    model.parameters(), t.grad_clip if t.grad_clip > 0 else float("inf"))
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                self.step += 1
                epoch_step += 1
                meter.add_step(grad_norm, lr)
                progress.update(epoch=epoch, epoch_step=epoch_step, step=self.step)

                done = self.step >= total
                if self.step % t.log_interval == 0 or done or epoch_step == steps_per_epoch:
                    meter.check_finite(self.step, self.last_saved_step)
                    self.emit(meter.report(self.step, total, epoch + 1, t.epochs, epoch_step,
                                           steps_per_epoch, fpt, peak))
                if t.eval_interval and self.step % t.eval_interval == 0 and not done:
                    self._evaluate(model, autocast)
                stop = distributed.any_rank(self.stop_event.is_set(), dist)
                if done or stop or (t.save_interval and self.step % t.save_interval == 0):
                    if epoch_step == steps_per_epoch:
                        progress.update(epoch=epoch + 1, epoch_step=0)
                    self._checkpoint(model, optimizer, scaler, progress, meter)
                if stop:
                    return self._finish("stopped", "stop requested; checkpoint written")
            progress.update(epoch=epoch + 1, epoch_step=0)
            if self.step >= total:
                break
        if prep.val_data is not None:
            self._evaluate(model, autocast)
        return self._finish("completed")

    def _evaluate(self, model: torch.nn.Module, autocast) -> None:
        t = self.settings.train
        loader = DataLoader(self.prep.val_data, batch_size=t.batch_size, shuffle=False)
        total_loss, total_tokens = 0.0, 0
        model.eval()
        with torch.no_grad(), autocast:
            for i, (input_ids, labels) in enumerate(loader):
                if i == t.eval_batches:
                    break
                labels = labels.to(self.dist.device)
                out = model(input_ids=input_ids.to(self.dist.device), labels=labels)
                n = int((labels[:, 1:] != -100).sum())
                total_loss += float(out.loss) * n
                total_tokens += n
        model.train()
        if total_tokens:
            self.emit(EvalResult(step=self.step, val_loss=total_loss / total_tokens,
                                 tokens=total_tokens))

    def _checkpoint(self, model, optimizer, scaler, progress: dict, meter: _Meter) -> None:
        if self.last_saved_step == self.step:
            return
        meter.check_finite(self.step, self.last_saved_step)
        progress.update(tokens_seen=meter.tokens_seen(), elapsed=meter.elapsed())
        rng = distributed.all_gather_object(capture_rng(self.dist.device), self.dist)
        if self.dist.is_main:
            weights = save_weights(model, self.prep.weights_path)
            resume = save_resume(resume_path(self.prep.weights_path), model=model,
                                 optimizer=optimizer, scaler=scaler, progress=dict(progress),
                                 rng=rng, settings=self.settings.model_dump(mode="json"),
                                 world_size=self.dist.world_size)
            self.emit(CheckpointSaved(step=self.step, weights_path=str(weights),
                                      resume_path=str(resume)))
        self.last_saved_step = self.step


class _Meter:
    """Accumulates metrics on the device; only `report` and `check_finite` read them back."""

    def __init__(self, device: torch.device, world_size: int, tokens_seen: int, elapsed: float):
        self.device, self.world_size = device, world_size
        self.start = time.perf_counter() - elapsed
        self.session_start, self.session_steps = time.perf_counter(), 0
        self.tokens_total = tokens_seen
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        self._reset()

    def _reset(self) -> None:
        zero = lambda: torch.zeros((), device=self.device)  # noqa: E731
        self.loss, self.aux, self.tokens = zero(), zero(), zero()
        self.micro, self.steps, self.grad_norm, self.lr = 0, 0, zero(), 0.0
        self.window_start = time.perf_counter()

    def add_micro(self, logits_loss, aux_loss, labels) -> None:
        self.loss += logits_loss.float()
        self.aux += aux_loss.float()
        self.tokens += (labels != -100).sum()
        self.nonfinite |= ~torch.isfinite(logits_loss + aux_loss)
        self.micro += 1

    def add_step(self, grad_norm, lr: float) -> None:
        self.grad_norm = grad_norm.detach().float()
        self.lr = lr
        self.steps += 1
        self.session_steps += 1

    def check_finite(self, step: int, last_good: int | None) -> None:
        if bool(self.nonfinite):
            kept = f"the checkpoint from step {last_good} is kept" if last_good else \
                "no checkpoint had been written yet"
            raise NonFiniteLoss(f"loss became NaN/inf by step {step}; stopped so it does not "
                                f"overwrite good weights ({kept})")

    def tokens_seen(self) -> int:
        # Every rank trains on its own shard of about the same size.
        return self.tokens_total + int(self.tokens) * self.world_size

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def report(self, step, total, epoch, epochs, epoch_step, steps_per_epoch, fpt, peak
               ) -> StepMetrics:
        loss, aux = float(self.loss), float(self.aux)
        tokens = int(self.tokens) * self.world_size
        self.tokens_total += tokens
        now = time.perf_counter()
        window = max(now - self.window_start, 1e-9)
        rate = tokens / window
        step_time = (now - self.session_start) / max(self.session_steps, 1)
        micro = max(self.micro, 1)
        metrics = StepMetrics(
            step=step, total_steps=total, epoch=epoch, epochs=epochs, epoch_step=epoch_step,
            steps_per_epoch=steps_per_epoch, loss=(loss + aux) / micro, logits_loss=loss / micro,
            aux_loss=aux / micro, lr=self.lr, grad_norm=float(self.grad_norm),
            tokens_per_sec=rate, tokens_seen=self.tokens_total, elapsed=now - self.start,
            eta_seconds=(total - step) * step_time, step_time=step_time,
            mfu=rate * fpt / (peak * self.world_size) if peak else None, **_memory(self.device))
        self._reset()
        return metrics


def _memory(device: torch.device) -> dict[str, int]:
    if device.type == "cuda":
        return {"mem_allocated": torch.cuda.memory_allocated(device),
                "mem_reserved": torch.cuda.memory_reserved(device),
                "mem_peak": torch.cuda.max_memory_allocated(device),
                "mem_total": torch.cuda.get_device_properties(device).total_memory}
    return {"rss": psutil.Process().memory_info().rss,
            "mem_total": psutil.virtual_memory().total}


def _autocast(device: torch.device, dtype: str):
    if dtype == "float32":
        return nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, dtype))


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"
