"""What the engine measures between log lines, kept on the device until a report reads it.

Losses, token counts and a "something was not finite" flag accumulate as device tensors, so a
step costs no host sync; `report` (at log steps) and the finiteness checks (at log and
checkpoint steps) read them back. Under DDP the checks agree across ranks, so no rank raises
while the others wait in a collective.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import torch

from minimind import distributed
from minimind.events import StepMetrics
from minimind.memory_estimate import device_memory


class NonFiniteError(RuntimeError):
    """The loss, the gradients or the training state became NaN/inf."""


class Meter:
    def __init__(self, dist: distributed.DistInfo, tokens_seen: int, elapsed: float,
                 pad_id: int, window: dict[str, float] | None = None):
        """`pad_id`: what fills a sample past its text, which the model computes but no one
        counts; `window`: the sums since the last report a checkpoint kept (`window`)."""
        self.dist, self.pad_id = dist, pad_id
        self.device = dist.device
        self.start = time.perf_counter() - elapsed
        self.session_start, self.session_steps = time.perf_counter(), 0
        self.tokens_total = tokens_seen
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        self.empty_micro_batches = 0  # in the last report's window, once it is read
        self._reset()
        if window:
            if dist.is_main:  # the sums are every rank's: one rank carries them
                self.loss += window["loss"]
                self.aux += window["aux"]
                self.filled += window["filled"]
            self.micro = int(window["micro"])  # each rank's count, the same on every rank

    def window(self) -> dict[str, float]:
        """Every rank's loss sums since the last report, as numbers a checkpoint keeps (its
        tokens are in `tokens_seen` already). A collective under DDP: call it on all ranks."""
        loss, aux, filled = distributed.sum_over_ranks([self.loss, self.aux, self.filled],
                                                       self.dist)
        return {"loss": loss, "aux": aux, "filled": int(filled), "micro": self.micro}

    def _reset(self) -> None:
        zero = lambda: torch.zeros((), device=self.device)  # noqa: E731
        self.loss, self.aux, self.tokens, self.filled = zero(), zero(), zero(), zero()
        self.computed = zero()
        self.micro, self.grad_norm, self.lr = 0, zero(), 0.0
        self.window_start = time.perf_counter()

    def add_micro(self, logits_loss: torch.Tensor, aux_loss: torch.Tensor,
                  input_ids: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss += logits_loss.float()
        self.aux += aux_loss.float()
        targets = labels != -100
        self.tokens += targets.sum()
        # The model's work is every position of text, an sft prompt's too: MFU counts those.
        self.computed += (targets | (input_ids != self.pad_id)).sum()
        # A micro-batch without a target trains nothing (its loss is 0): not part of the mean.
        self.filled += (labels[:, 1:] != -100).any()
        self.nonfinite |= ~torch.isfinite(logits_loss + aux_loss)
        self.micro += 1

    def add_step(self, grad_norm: torch.Tensor, lr: float, counts_as_nonfinite: bool) -> None:
        """`counts_as_nonfinite` is False under a GradScaler, whose inf gradients are routine
        (it skips that update and lowers the scale)."""
        self.grad_norm = grad_norm.detach().float()
        if counts_as_nonfinite:
            self.nonfinite |= ~torch.isfinite(self.grad_norm)
        self.lr = lr
        self.session_steps += 1

    def check_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Flag NaN/inf in the weights or the optimizer's moments (checked before saving)."""
        tensors = [p.detach() for p in model.parameters()]
        tensors += [v for state in optimizer.state.values() for v in state.values()
                    if isinstance(v, torch.Tensor) and v.is_floating_point()]
        finite = torch.stack([torch.isfinite(x).all() for x in tensors]).all()
        self.nonfinite |= ~finite.to(self.device)

    def raise_if_nonfinite(self, step: int, last_good: int | None) -> None:
        if distributed.any_rank(bool(self.nonfinite), self.dist):
            kept = (f"the checkpoint from step {last_good} is kept" if last_good is not None
                    else "no checkpoint had been written yet")
            raise NonFiniteError(f"loss or weights became NaN/inf by step {step}; stopped so "
                                 f"it does not overwrite good weights ({kept})")

    def tokens_seen(self) -> int:
        """Tokens trained on by every rank together (a collective under DDP: call it on all
        ranks). Shards differ in padding, so the ranks' counts differ too."""
        return self.tokens_total + int(distributed.sum_over_ranks([self.tokens], self.dist)[0])

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @contextmanager
    def aside(self) -> Iterator[None]:
        """Work between two steps (evaluation, samples, checkpoints) is no part of the log
        interval's tokens/s, the training's rate: a run evaluating more often trains no
        slower. The run's elapsed time and the ETA's step time keep it: the run takes it."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.window_start += time.perf_counter() - start

    def report(self, step: int, total: int, epoch: int, epochs: int, epoch_step: int,
               steps_per_epoch: int, flops_per_token: float, peak_flops: float | None
               ) -> StepMetrics:
        # The loss is the mean over every rank's micro-batches, as the gradients DDP averages
        # are: rank 0's shard alone was logged once (8.90 where the whole batch's was 8.95).
        loss, aux, filled, tokens, computed = distributed.sum_over_ranks(
            [self.loss, self.aux, self.filled, self.tokens, self.computed], self.dist)
        micro = max(self.micro * self.dist.world_size, 1)
        self.empty_micro_batches = micro - int(filled)
        self.tokens_total += int(tokens)
        now = time.perf_counter()
        window = max(now - self.window_start, 1e-9)
        rate = tokens / window
        step_time = (now - self.session_start) / max(self.session_steps, 1)
        mfu = (computed / window * flops_per_token / (peak_flops * self.dist.world_size)
               if peak_flops else None)
        metrics = StepMetrics(
            step=step, total_steps=total, epoch=epoch, epochs=epochs, epoch_step=epoch_step,
            steps_per_epoch=steps_per_epoch, loss=loss / max(filled, 1) + aux / micro,
            logits_loss=loss / max(filled, 1), aux_loss=aux / micro, lr=self.lr,
            grad_norm=float(self.grad_norm),
            tokens_per_sec=rate, tokens_seen=self.tokens_total, elapsed=now - self.start,
            eta_seconds=(total - step) * step_time, step_time=step_time, mfu=mfu,
            **memory_figures(self.device))
        self._reset()
        return metrics


def memory_figures(device: torch.device) -> dict[str, int]:
    if device.type == "cuda":
        used = {"mem_allocated": torch.cuda.memory_allocated(device),
                "mem_reserved": torch.cuda.memory_reserved(device),
                "mem_peak": torch.cuda.max_memory_allocated(device)}
    else:
        used = {"rss": psutil.Process().memory_info().rss}
    return {**used, "mem_total": device_memory(device)}
