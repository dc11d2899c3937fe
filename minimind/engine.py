"""The training engine: settings + sinks + a stop flag in, events out.

This is the seed's `train_pretrain.py` loop rebuilt so that the dashboard, the headless CLI and
torchrun all drive the same code. The engine never knows who listens: it hands typed events to
sinks. Host syncs (`.item()`) happen only at log, eval and checkpoint steps, and under DDP
every `STOP_POLL_STEPS` steps, when the ranks agree on whether a stop was requested.
"""

from __future__ import annotations

import threading
import traceback
import uuid
from collections.abc import Sequence
from contextlib import closing, nullcontext
from dataclasses import asdict, dataclass
from itertools import islice
from typing import Any

import torch
from pydantic import ValidationError
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from minimind import distributed
from minimind.checkpoint import (CheckpointWriteError, capture_rng, os_reason, restore_rng,
                                 save_checkpoint, write_error)
from minimind.data.progress import PreparationStopped
from minimind.data.pretrain import pad_id
from minimind.data.sampler import Plan, plan_run, plan_warnings, step_batches
from minimind.events import (CheckpointSaved, EvalResult, Event, LogMessage, RunFinished,
                             RunStarted, Sample)
from minimind.flops import flops_per_token, peak_flops
from minimind.generate import continue_prompts
from minimind.memory_estimate import memory_warning
from minimind.meter import Meter, NonFiniteError
from minimind.optim import apply_settings, build_optimizer, set_learning_rate
from minimind.prepare import InputError, prepare
from minimind.run_files import CONFIG_FILE, ERROR_FILE, METRICS_FILE
from minimind.schedule import learning_rate
from minimind.settings import RunSettings, TrainSettings
from minimind.sinks import JsonlSink, Sink
from minimind.status_sink import StatusSink
from minimind.trackers import TrackerSink, tracker_sinks

OOM_HINT = "lower batch_size or max_seq_len (raise accumulation_steps to keep tokens/step), " \
           "or turn on grad_checkpointing"
NAN_HINT = "lower learning_rate, add warmup_iters, keep grad_clip on, or use bfloat16"
# Under DDP a stop request reaches the ranks at different times; they compare notes (an
# all-reduce plus a host read) at log steps and every this many steps, so a request waits at most
# this many steps. A single process reads its flag every step, which costs nothing.
STOP_POLL_STEPS = 10


@dataclass
class Progress:
    """How far the run has got; saved with each checkpoint so a resumed run goes on exactly.
    The epoch and the position in it follow from `step`: every epoch has the same steps."""

    step: int = 0
    tokens_seen: int = 0
    elapsed: float = 0.0
    window: dict[str, float] | None = None
    """The loss sums since the last logged step (`Meter.window`): the first log after a resume
    then averages the steps it would have without the stop."""


class Trainer:
    """`Trainer(settings, sinks, stop_event).run()` trains and returns how the run ended.

    `save_checkpoints=False` writes no weights (benchmarks); `compile_mode` is torch.compile's
    mode for use_compile runs ("max-autotune", ...), a benchmark knob.
    """

    def __init__(self, settings: RunSettings, sinks: Sequence[Sink] = (),
                 stop_event: threading.Event | None = None, *, compile_mode: str | None = None,
                 save_checkpoints: bool = True):
        self.settings, self.sinks = settings, list(sinks)
        self.stop_event = stop_event or threading.Event()
        self.compile_mode = compile_mode
        self.save_checkpoints = save_checkpoints
        self.progress = Progress()
        self.last_saved_step: int | None = None
        # What preparing the run says (a resume's changed settings, a replaced run) comes
        # before the folder's own sinks exist: they get it once the run has started.
        self._before_folder: list[Event] | None = []
        self._folder_sinks: list[Sink] = []
        self.finished: RunFinished | None = None
        """How the run ended, once it has said so: a stop after it has nothing to stop."""

    # -- public entry -----------------------------------------------------------------
    def run(self) -> RunFinished:
        self.dist = distributed.setup(self.settings.train.device)
        try:
            try:
                self.prep = prepare(self.settings, self.dist, self.log, self.stop_event)
            except InputError as e:
                return self._finish("failed", str(e), cause="input", hint=e.hint)
            except PreparationStopped:
                return self._finish("stopped", "stop requested while preparing the data; no "
                                               "step had run, so there is nothing to checkpoint")
            if self.prep.resume:  # where the run stands, also for a failure before its 1st step
                self.progress = Progress(**self.prep.resume["progress"])
                self.last_saved_step = self.progress.step
            if self.dist.is_main:
                self._open_run_folder()
            return self._train()
        except torch.cuda.OutOfMemoryError as e:
            return self._finish("failed", f"CUDA out of memory: {str(e).splitlines()[0]}",
                                cause="runtime", hint=OOM_HINT)
        except NonFiniteError as e:
            return self._finish("failed", str(e), cause="runtime", hint=NAN_HINT)
        except CheckpointWriteError as e:
            again = ("resume" if self.last_saved_step is not None
                     else "start it again with --overwrite 1 (no checkpoint was saved to resume)")
            return self._finish("failed", str(e), cause="runtime",
                                hint=f"free some space (or fix the folder), then {again}")
        except OSError as e:
            if e.filename is None:
                return self._finish("failed", f"{type(e).__name__}: {e}", cause="runtime",
                                    details_path=self._write_details())
            # A file the run reads or writes (config.toml, a cache) was refused: say which, why.
            return self._finish("failed", f"{e.filename}: {os_reason(e)}", cause="runtime")
        except Exception as e:  # an engine bug or environment failure: keep the details
            if distributed.peer_gone(e, self.dist) and distributed.another_rank_aborted(self.dist):
                # A second stop signal reached another rank first, which left at once: this
                # rank's collective lost it. The run was aborted, not failed.
                return self._finish("stopped", f"{self._abort_reason()}: another rank aborted "
                                    "on a second stop signal", cause="signal")
            details = self._write_details()
            return self._finish("failed", f"{type(e).__name__}: {e}", cause="runtime",
                                details_path=details)
        except BaseException:
            # Ctrl+C in a script, or the command line's second stop signal: the run ends here,
            # and its status must say so (a "running" one left behind reads as a crash) --
            # unless it has ended already, and said how (the sinks are closed).
            if self.finished is not None:
                raise
            distributed.say_aborting(self.dist)
            self._finish("stopped", self._abort_reason(), cause="signal")
            raise
        finally:
            if getattr(self, "prep", None) is not None:
                self.prep.folder.release()
            distributed.teardown(self.dist)

    def _open_run_folder(self) -> None:
        """The run's files: the replaced run goes, config.toml, metrics.jsonl (appended to by a
        resume, so the history stays whole) and run.json's status."""
        folder = self.prep.folder
        folder.start_fresh()
        resumed, warn = self.prep.resume is not None, lambda text: self.log(text, "warning")
        self._folder_sinks = [JsonlSink(folder.path / METRICS_FILE, append=resumed, warn=warn),
                              StatusSink(folder, resumed=resumed, warn=warn),
                              *tracker_sinks(self.settings.train.report_to, folder.path, warn)]
        self.sinks += self._folder_sinks
        self.settings.save_toml(folder.path / CONFIG_FILE)

    # -- events -------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        if self.dist.is_main:
            for sink in self.sinks:
                sink.emit(event)
            if self._before_folder is not None and not self._folder_sinks:
                self._before_folder.append(event)

    def _tell_the_folder(self) -> None:
        """The events said before the run folder's sinks were attached, to those sinks (after
        the run's start, which begins each run's part of metrics.jsonl); once."""
        early, self._before_folder = self._before_folder or [], None
        for event in early:
            for sink in self._folder_sinks:
                sink.emit(event)

    def log(self, text: str, level: str = "info") -> None:
        self.emit(LogMessage(level=level, text=text))

    def _finish(self, status: str, reason: str = "", **extra: Any) -> RunFinished:
        self._tell_the_folder()
        event = self.finished = RunFinished(status=status, step=self.progress.step,
                                            reason=reason, **extra)
        self.emit(event)
        # Trackers first, so a warning they give while closing still reaches metrics.jsonl.
        for sink in sorted(self.sinks, key=lambda sink: not isinstance(sink, TrackerSink)):
            sink.close()
        return event

    def _abort_reason(self) -> str:
        step, saved = self.progress.step, self.last_saved_step
        if saved == step:  # between a checkpoint and the next step: nothing is lost
            return f"aborted at step {step}, right after its checkpoint"
        kept = f"the one at step {saved} is intact" if saved is not None else "none was written"
        return f"aborted at step {step} without a new checkpoint ({kept})"

    def _write_details(self) -> str:
        prep = getattr(self, "prep", None)
        if prep is None or not self.dist.is_main:
            traceback.print_exc()
            return ""
        path = prep.out_dir / ERROR_FILE
        try:
            path.write_text(traceback.format_exc(), encoding="utf-8")
        except OSError:  # e.g. the disk is full: the traceback still reaches the terminal
            traceback.print_exc()
            return ""
        return str(path)

    # -- the loop -----------------------------------------------------------------------
    def _train(self) -> RunFinished:
        t = self.settings.train
        self._build()
        plan = plan_run(len(self.prep.train_data), t.batch_size, t.accumulation_steps, t.epochs,
                        t.max_steps, self.dist.world_size)
        self._announce(plan)
        meter = Meter(self.dist, self.progress.tokens_seen, self.progress.elapsed,
                      pad_id(self.prep.tokenizer), self.progress.window)
        batches = step_batches(self.prep.train_data, plan, t, self.progress.step,
                               self.dist.rank, self.dist.world_size,
                               pin_memory=self.dist.device.type == "cuda")
        with closing(batches):
            while self.progress.step < plan.total_steps:
                lr = learning_rate(self.progress.step, plan.total_steps, t.learning_rate,
                                   t.warmup_iters, t.lr_schedule, t.decay_fraction)
                self._optimizer_step(next(batches), lr, meter)
                self.progress.step += 1
                if self._after_step(plan, meter):
                    # The stop's checkpoint counted its tokens; without one, none are known.
                    saved = self.last_saved_step == self.progress.step
                    return self._finish("stopped", "stop requested; " + (
                                            "checkpoint written" if saved else "nothing saved"),
                                        tokens_seen=self.progress.tokens_seen if saved else None,
                                        elapsed=meter.elapsed())
        if self.prep.val_data is not None:
            self._evaluate()
        # No collective at the end: a gloo all-reduce just before the teardown can deadlock the
        # process group's destruction (its worker thread waits for the GIL the main one holds).
        return self._finish("completed", tokens_seen=meter.tokens_total, elapsed=meter.elapsed())

    def _build(self) -> None:
        """Model on its device, optimizer, scaler and autocast; the resume state restored."""
        t, prep, dist = self.settings.train, self.prep, self.dist
        self.model = prep.model.to(dist.device)
        if t.grad_checkpointing:
            self.model.activation_checkpointing_enable()
        self.model.train()
        self.optimizer = build_optimizer(self.model, t)
        self.scaler = torch.amp.GradScaler("cuda") if t.dtype == "float16" else None
        if prep.resume:
            self.model.load_state_dict(prep.resume["model"])
            self.optimizer.load_state_dict(prep.resume["optimizer"])
            apply_settings(self.optimizer, t)  # this run's options, not the saved run's
            if self.scaler is not None and prep.resume["scaler"]:
                self.scaler.load_state_dict(prep.resume["scaler"])
            restore_rng(prep.resume["rng"][dist.rank], dist.device)
        else:
            torch.manual_seed(t.seed + dist.rank)  # dropout differs per rank, init did not
        net = torch.compile(self.model, mode=self.compile_mode) if t.use_compile else self.model
        if dist.enabled:
            net = DistributedDataParallel(
                net, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
        self.net = net
        self.autocast = (nullcontext() if t.dtype == "float32"
                         else torch.autocast(dist.device.type, dtype=getattr(torch, t.dtype)))

    def _announce(self, plan: Plan) -> None:
        s, t, model, dist = self.settings, self.settings.train, self.model, self.dist
        active, c = model.active_parameters(), model.config
        self.flops_per_token = flops_per_token(
            active, model.model.embed_tokens.weight.numel(), c.num_hidden_layers, c.hidden_size,
            t.max_seq_len, c.tie_word_embeddings,
            frozen=max(0, active - model.num_parameters(only_trainable=True)))  # lora's base
        self.peak_flops = peak_flops(dist.device)
        self.emit(RunStarted(
            settings=s.model_dump(mode="json"), parameters=model.num_parameters(),
            active_parameters=active, device=str(dist.device),
            device_name=distributed.device_name(dist.device), world_size=dist.world_size,
            tokens_per_step=s.tokens_per_step(dist.world_size),
            steps_per_epoch=plan.steps_per_epoch, total_steps=plan.total_steps,
            start_step=self.progress.step, flops_per_token=self.flops_per_token,
            peak_flops=self.peak_flops, out_dir=str(self.prep.out_dir),
            tokens_seen=self.progress.tokens_seen, elapsed=self.progress.elapsed,
            origin_save=self.prep.origin_save))
        self._tell_the_folder()
        for warning in plan_warnings(t, plan, self.progress.step, self._resumed_settings()):
            self.log(warning, "warning")
        if warning := memory_warning(s, model.num_parameters(), dist.device):
            self.log(warning, "warning")
        if dist.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dist.device)

    def _optimizer_step(self, micro_batches: list, lr: float, meter: Meter) -> None:
        """Forward and backward over the micro-batches (gradients averaged), clip, update."""
        t, device = self.settings.train, self.dist.device
        set_learning_rate(self.optimizer, lr)
        for i, (input_ids, labels) in enumerate(micro_batches):
            input_ids = input_ids.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            # DDP all-reduces gradients only on the last micro-batch of the step.
            last = i == len(micro_batches) - 1 or not self.dist.enabled
            with nullcontext() if last else self.net.no_sync(), self.autocast:
                out = self.net(input_ids=input_ids, labels=labels)
                loss = (out.loss + out.aux_loss) / len(micro_batches)
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            meter.add_micro(out.loss.detach(), out.aux_loss.detach(), input_ids, labels)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), t.grad_clip if t.grad_clip > 0 else float("inf"))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skips the update when the scaler saw inf
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        meter.add_step(grad_norm, lr, counts_as_nonfinite=self.scaler is None)

    def _resumed_settings(self) -> TrainSettings | None:
        """The train settings the checkpoint's run used, where this run resumes one."""
        saved = (self.prep.resume or {}).get("settings", {}).get("train")
        try:
            return TrainSettings.model_validate(saved) if saved else None
        except ValidationError:  # a record of an older version: nothing to compare
            return None

    def _after_step(self, plan: Plan, meter: Meter) -> bool:
        """Log, evaluate and save as the intervals say; True when the run must stop now."""
        t, step = self.settings.train, self.progress.step
        done = step >= plan.total_steps
        epoch, into_epoch = plan.epoch_of(step - 1)
        epoch_done = into_epoch + 1 == plan.steps_per_epoch
        logged = step % t.log_interval == 0 or done or epoch_done
        if logged:
            meter.raise_if_nonfinite(step, self.last_saved_step)
            self.emit(meter.report(step, plan.total_steps, epoch + 1, t.epochs, into_epoch + 1,
                                   plan.steps_per_epoch, self.flops_per_token, self.peak_flops))
            if meter.empty_micro_batches:
                self.log(f"{meter.empty_micro_batches} micro-batch(es) up to step {step} held no "
                         "target to learn (with sft: every reply lies past max_seq_len), so "
                         "they trained nothing; raise max_seq_len, or see which conversations "
                         "with minimind-tui inspect", "warning")
        with meter.aside():
            if t.eval_interval and step % t.eval_interval == 0 and not done:
                self._evaluate()
            sample_interval = t.sample_interval or t.eval_interval  # 0: at each evaluation
            if t.sample_prompts and (done or (sample_interval and step % sample_interval == 0)):
                self._sample()
            stop = self.stop_event.is_set()
            if self.dist.enabled:  # every rank must reach the same answer at the same step
                poll = logged or step % STOP_POLL_STEPS == 0
                stop = poll and distributed.any_rank(stop, self.dist)
            if done or stop or (t.save_interval and step % t.save_interval == 0):
                self._checkpoint(meter)
        return stop

    def _evaluate(self) -> None:
        t, device = self.settings.train, self.dist.device
        # Its own generator: a DataLoader draws a seed as it starts, and from the global one
        # it took a draw from dropout's RNG. Evaluating changed the training, and a completed
        # run extended by a resume (its checkpoint precedes the last evaluation) trained on
        # other dropout masks than the same run in one go.
        loader = DataLoader(self.prep.val_data, batch_size=t.batch_size, shuffle=False,
                            generator=torch.Generator())
        total_loss, total_tokens, batches = 0.0, 0, 0
        self.model.eval()
        with torch.no_grad(), self.autocast:
            for input_ids, labels in islice(loader, t.eval_batches):
                batches += 1
                labels = labels.to(device)
                out = self.model(input_ids=input_ids.to(device), labels=labels)
                n = int((labels[:, 1:] != -100).sum())
                total_loss += float(out.loss) * n
                total_tokens += n
        self.model.train()
        if total_tokens:
            self.emit(EvalResult(step=self.progress.step, val_loss=total_loss / total_tokens,
                                 tokens=total_tokens))
        else:
            self.log(f"validation at step {self.progress.step} measured nothing: its "
                     f"{batches} micro-batch(es) held no target (with sft: "
                     "every reply lies past max_seq_len), so val_loss stays unknown; raise "
                     "max_seq_len or eval_batches", "warning")

    def _sample(self) -> None:
        """Continue each sample prompt on rank 0 without disturbing training: the plain model
        (never the compiled or DDP wrapper), back in train mode afterwards, under the run's
        autocast, and drawing only on a generator of its own (dropout's RNG is untouched)."""
        if not self.dist.is_main:
            return
        t = self.settings.train
        with self.autocast:
            greedy, sampled = continue_prompts(self.model, self.prep.tokenizer, t.sample_prompts,
                                               t.sample_tokens, seed=t.seed,
                                               chat=t.stage != "pretrain")
        self.emit(Sample(step=self.progress.step, prompts=list(t.sample_prompts), greedy=greedy,
                         sampled=sampled))

    def _checkpoint(self, meter: Meter) -> None:
        if not self.save_checkpoints or self.last_saved_step == self.progress.step:
            return
        t = self.settings.train
        # A NaN that reached the weights or Adam's moments (with a finite loss) must not
        # overwrite the last good checkpoint either.
        meter.check_state(self.model, self.optimizer)
        meter.raise_if_nonfinite(self.progress.step, self.last_saved_step)
        self.progress.tokens_seen, self.progress.elapsed = meter.tokens_seen(), meter.elapsed()
        self.progress.window = meter.window()
        rng = distributed.all_gather_object(capture_rng(self.dist.device), self.dist)
        failure: Exception | None = None
        if self.dist.is_main:
            try:
                weights, resume = save_checkpoint(
                    self.prep.weights_path, model=self.model, optimizer=self.optimizer,
                    scaler=self.scaler, progress=asdict(self.progress), rng=rng,
                    settings=self.settings.model_dump(mode="json"),
                    world_size=self.dist.world_size, data=self.prep.data_fingerprint,
                    adapters_only=t.stage == "lora")
            except OSError as e:
                failure = write_error(e, self.prep.weights_path, self.last_saved_step)
            except NonFiniteError as e:  # a weight beyond float16's range, as the file holds it
                failure = e
            else:
                p = self.progress
                self.emit(CheckpointSaved(step=p.step, weights_path=str(weights),
                                          resume_path=str(resume), tokens_seen=p.tokens_seen,
                                          elapsed=p.elapsed, save_id=uuid.uuid4().hex))
        # Only rank 0 writes, but every rank stops on its failure: one that went on alone
        # would wait in its next all-reduce until torchrun killed it.
        if failure := distributed.from_main(failure, self.dist):
            raise failure
        self.last_saved_step = self.progress.step
