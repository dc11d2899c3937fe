"""Which samples each rank reads, batch by batch, in each epoch.

The order is a pure function of (seed, epoch, rank, world size), so a resumed run can skip the
batches it already trained on and continue with exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def epoch_batches(n_samples: int, batch_size: int, epoch: int, seed: int,
                  rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """Shuffled sample indices for one rank, grouped into batches (the last may be short).

    Every rank draws the same permutation and takes a strided shard of it; the tail that would
    give ranks unequal shares is dropped so all ranks run the same number of steps.
    """
    generator = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n_samples, generator=generator)
    usable = n_samples - n_samples % world_size
    shard = order[:usable][rank::world_size].tolist()
    return [shard[i:i + batch_size] for i in range(0, len(shard), batch_size)]


@dataclass(frozen=True)
class Plan:
    batches_per_epoch: int  # micro-batches each rank reads per epoch
    steps_per_epoch: int
    total_steps: int

    def epoch_of(self, step: int) -> tuple[int, int]:
        """(epoch, optimizer steps already done in it), both from 0, before `step` runs."""
        return divmod(step, self.steps_per_epoch)


def plan_run(n_samples: int, batch_size: int, accumulation_steps: int, epochs: int,
             max_steps: int, world_size: int = 1) -> Plan:
    """How many steps a run of these sizes takes: every epoch has the same number (the batches
    of `epoch_batches`, each step `accumulation_steps` of them); `max_steps` (0: none) may end
    it sooner."""
    batches = math.ceil(n_samples // world_size / batch_size)
    steps_per_epoch = math.ceil(batches / accumulation_steps)
    total = steps_per_epoch * epochs
    return Plan(batches, steps_per_epoch, min(total, max_steps) if max_steps else total)
