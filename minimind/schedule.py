"""Learning-rate schedules, as functions of the optimizer step.

`step` counts the updates already made (0 for the first update) and `total` is the number of
updates in the run, so the first update after warmup uses the peak and the last lands near the
floor of a tenth of it.
"""

from __future__ import annotations

import math
from typing import Literal

Schedule = Literal["cosine", "minimind2"]


def learning_rate(step: int, total: int, peak: float, warmup: int = 0,
                  schedule: Schedule = "cosine") -> float:
    """Linear warmup over `warmup` steps, then a cosine decay.

    cosine:    MiniMind-3's `lr * (0.1 + 0.45 * (1 + cos(pi * p)))`, from lr down to lr/10.
    minimind2: the seed's `lr/10 + 0.5 * lr * (1 + cos(pi * p))`, which starts at 1.1 x lr;
               kept so a MiniMind2 run can be reproduced faithfully.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    cosine = 1 + math.cos(math.pi * progress)
    if schedule == "minimind2":
        return peak / 10 + 0.5 * peak * cosine
    return peak * (0.1 + 0.45 * cosine)
