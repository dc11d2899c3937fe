"""Learning-rate schedules, as functions of the optimizer step.

`step` counts the updates already made (0 for the first update) and `total` is the number of
updates in the run, so the first update after warmup uses the peak and the last lands near the
floor of a tenth of it.
"""

from __future__ import annotations

import math
from typing import Literal

Schedule = Literal["cosine", "minimind2", "wsd"]


def wsd_decay_start(total: int, warmup: int, decay_fraction: float) -> int:
    """The first step of wsd's decay: the last `decay_fraction` of the steps, rounded, after
    the warmup. At `total` there is no decay at all."""
    return max(warmup, total - round(decay_fraction * total))


def learning_rate(step: int, total: int, peak: float, warmup: int = 0,
                  schedule: Schedule = "cosine", decay_fraction: float = 0.2) -> float:
    """Linear warmup over `warmup` steps, then the schedule's decay.

    cosine:    MiniMind-3's `lr * (0.1 + 0.45 * (1 + cos(pi * p)))`, from lr down to lr/10.
    minimind2: the seed's `lr/10 + 0.5 * lr * (1 + cos(pi * p))`, which starts at 1.1 x lr;
               kept so a MiniMind2 run can be reproduced faithfully.
    wsd:       warmup-stable-decay: lr until the last `decay_fraction` of the steps, then a
               straight line down to lr/10. The stable phase does not depend on `total`, so a
               run can be extended before its decay starts.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "wsd":
        decay_start = wsd_decay_start(total, warmup, decay_fraction)
        if step < decay_start:
            return peak
        # The run's last step (total - 1) trains at lr/10 and its first decay step below lr:
        # counted from 0, it stopped short at (0.1 + 0.9/n) x lr, 0.55 x lr for n = 2.
        return peak * (1 - 0.9 * (step + 1 - decay_start) / max(1, total - decay_start))
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    cosine = 1 + math.cos(math.pi * progress)
    if schedule == "minimind2":
        return peak / 10 + 0.5 * peak * cosine
    return peak * (0.1 + 0.45 * cosine)
