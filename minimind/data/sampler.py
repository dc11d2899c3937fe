"""Which samples each rank reads, batch by batch, in each epoch.

The order is a pure function of (seed, epoch, rank, world size), so a resumed run can skip the
batches it already trained on and continue with exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

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
