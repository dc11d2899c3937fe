"""Where a training step's time goes: `torch.profiler` over a benchmark's measured steps, folded
into a few categories a reader can act on.

`StepProfiler` is a sink: it starts the profiler when the engine logs the end of the warm-up and
stops it at the last measured step, so the engine never knows it is being watched and the
compiled graphs, the first allocations and the data cache are outside the window.

Each operator's *self* time (its own, children excluded) goes to one category, so the shares add
up to the profiled time; the rest of the wall-clock window (Python, the loader, waiting) is
"outside operators". The categories:

* `optimizer`: everything under `Optimizer.step` / `Optimizer.zero_grad` (torch's own profiler
  ranges), Muon's Newton-Schulz matmuls included;
* `matmul`: mm / addmm / bmm (the Linear layers, forward and backward);
* `attention`: the scaled-dot-product attention kernels, forward and backward;
* `loss`: log-softmax and NLL (the cross-entropy), forward and backward;
* `embedding`: the lookup and its scatter-add backward;
* `casts and copies`: dtype conversions, copies, `contiguous`;
* `elementwise`: every other operator (RMSNorm, rotary, SiLU, adds, the gradient clip);
* `compiled kernels`: the self time of torch.compile's graphs (their fused kernels are not
  operators the profiler names).

The profiler's own bookkeeping slows small operators more than large ones, so shares are
indicative; the matmul rate is the FLOPs the profiler counts for mm/addmm/bmm over their time.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from minimind.events import Event, RunFinished, StepMetrics

MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm"}
LOSS_OPS = {"aten::_log_softmax", "aten::_log_softmax_backward_data", "aten::nll_loss_forward",
            "aten::nll_loss_backward", "aten::nll_loss2d_forward", "aten::nll_loss2d_backward"}
EMBEDDING_OPS = {"aten::embedding", "aten::embedding_dense_backward", "aten::index_select",
                 "aten::embedding_backward", "aten::index_add_", "aten::index_put_"}
CAST_OPS = {"aten::copy_", "aten::_to_copy", "aten::to", "aten::clone", "aten::contiguous",
            "aten::empty_like", "aten::empty_strided", "aten::empty"}
OPTIMIZER_RANGES = ("Optimizer.step", "Optimizer.zero_grad")
CATEGORIES = ("matmul", "attention", "elementwise", "loss", "embedding", "casts and copies",
              "optimizer", "compiled kernels", "outside operators")


def category(name: str) -> str:
    if name in MATMUL_OPS:
        return "matmul"
    if "scaled_dot_product" in name or "flash_attention" in name:
        return "attention"
    if name in LOSS_OPS:
        return "loss"
    if name in EMBEDDING_OPS:
        return "embedding"
    if name in CAST_OPS:
        return "casts and copies"
    if "Compiled" in name or "compiled" in name or name.startswith(("cpp_fused", "triton_")):
        return "compiled kernels"
    return "elementwise"


class StepProfiler:
    """A sink that profiles optimizer steps `start_step` (exclusive) to `end_step`."""

    def __init__(self, start_step: int, end_step: int):
        self.start_step, self.end_step = start_step, end_step
        activities = [ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(ProfilerActivity.CUDA)
        self._profile = profile(activities=activities, with_flops=True)
        self._started = self._wall = None
        self.steps = end_step - start_step

    def emit(self, event: Event) -> None:
        if isinstance(event, StepMetrics) and event.step == self.start_step and not self._started:
            self._started = time.perf_counter()
            self._profile.start()
        elif self._started and self._wall is None and (
                isinstance(event, RunFinished)
                or isinstance(event, StepMetrics) and event.step >= self.end_step):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self._profile.stop()
            self._wall = time.perf_counter() - self._started

    def close(self) -> None:
        pass

    def breakdown(self) -> dict[str, Any]:
        """Seconds per step by category, their shares of the window, and the matmuls' rate."""
        if self._wall is None:
            raise RuntimeError("the profiler never saw the measured steps end")
        cuda = torch.cuda.is_available()
        seconds = dict.fromkeys(CATEGORIES, 0.0)
        matmul_flops = 0
        for event in self._profile.events():
            own = (event.self_device_time_total if cuda else event.self_cpu_time_total) / 1e6
            name = "optimizer" if _under_optimizer(event) else category(event.name)
            seconds[name] += own
            if name == "matmul":
                matmul_flops += event.flops or 0
        seconds["outside operators"] = max(0.0, self._wall - sum(seconds.values()))
        total = sum(seconds.values()) or 1.0
        return {
            "profiled_steps": self.steps, "window_s": self._wall,
            "seconds_per_step": {k: v / self.steps for k, v in seconds.items()},
            "share": {k: v / total for k, v in seconds.items()},
            "matmul_flops_per_sec": matmul_flops / seconds["matmul"] if seconds["matmul"] else None,
        }


def _under_optimizer(event) -> bool:
    while event is not None:
        if event.name.startswith(OPTIMIZER_RANGES):
            return True
        event = event.cpu_parent
    return False
