"""Which samples each rank reads, batch by batch, in each epoch.

The order is a pure function of (seed, epoch, rank, world size), so a resumed run can skip the
batches it already trained on and continue with exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from minimind.data.prefetch import Prefetcher
from minimind.schedule import learning_rate, wsd_decay_start
from minimind.settings import TrainSettings, epoch_steps, planned_steps


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
    samples_per_epoch: int  # each rank's

    def epoch_of(self, step: int) -> tuple[int, int]:
        """(epoch, optimizer steps already done in it), both from 0, before `step` runs."""
        return divmod(step, self.steps_per_epoch)


def plan_run(n_samples: int, batch_size: int, accumulation_steps: int, epochs: int,
             max_steps: int, world_size: int = 1) -> Plan:
    """How many steps a run of these sizes takes: every epoch has the same number (the batches
    of `epoch_batches`, each step `accumulation_steps` of them); `max_steps` (0: none) may end
    it sooner."""
    samples = n_samples // world_size
    steps_per_epoch = epoch_steps(n_samples, batch_size, accumulation_steps, world_size)
    return Plan(math.ceil(samples / batch_size), steps_per_epoch,
                planned_steps(steps_per_epoch, epochs, max_steps), samples)


def step_batches(data: Dataset, plan: Plan, train: TrainSettings, start_step: int,
                 rank: int = 0, world_size: int = 1, pin_memory: bool = False
                 ) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    """The micro-batches of each optimizer step from `start_step` on, without end: an epoch's
    last step may have fewer than accumulation_steps of them."""
    accum = train.accumulation_steps
    epoch, done = plan.epoch_of(start_step)
    while True:
        order = epoch_batches(len(data), train.batch_size, epoch, train.seed, rank, world_size)
        loader = iter(DataLoader(
            data, batch_sampler=order[done * accum:], num_workers=train.num_workers,
            pin_memory=pin_memory, worker_init_fn=leave_stops_to_the_trainer,
            # Its own generator keeps the loader from drawing on the global RNG, which
            # dropout uses: resumed and uninterrupted runs then see the same masks.
            generator=torch.Generator()))
        if train.num_workers == 0:  # no loader processes: build the next batches in a thread
            loader = Prefetcher(loader)
        try:
            for step in range(done, plan.steps_per_epoch):
                group = min(accum, plan.batches_per_epoch - step * accum)
                yield [next(loader) for _ in range(group)]
        finally:  # the epoch ended, or the run did (the generator is closed)
            if isinstance(loader, Prefetcher):
                loader.close()
        epoch, done = epoch + 1, 0


def leave_stops_to_the_trainer(_worker_id: int) -> None:
    """A loader worker ignores the stop signals a terminal or a scheduler sends the whole
    process group (Ctrl+C, `timeout`, `kill -- -PGID`, scancel): the trainer finishes its step,
    writes a checkpoint and then shuts its workers down. Killed by the signal, a worker took
    the run down with it ("DataLoader worker is killed by signal") before that checkpoint;
    caught by the handler it inherits, it printed the trainer's notice a second time. (A
    worker whose trainer is gone exits by itself.)"""
    for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, signal.SIG_IGN)


def plan_warnings(train: TrainSettings, plan: Plan, start_step: int,
                  resumed: TrainSettings | None = None) -> list[str]:
    """What the plan does that the settings do not say: a run that ends within its warmup, a
    wsd decay too short to take a step, steps smaller than the settings make them (too few
    samples), data that end it before max_steps (else the header's "steps: 2" is the only
    hint), or a resume whose longer plan takes the learning rate back up (`resumed`: the
    checkpoint's run's settings)."""
    warnings = []
    if resumed is not None and 0 < start_step < plan.total_steps:
        planned = planned_steps(plan.steps_per_epoch, resumed.epochs, resumed.max_steps)
        was = learning_rate(start_step - 1, planned, resumed.learning_rate,
                            resumed.warmup_iters, resumed.lr_schedule, resumed.decay_fraction)
        now = learning_rate(start_step, plan.total_steps, train.learning_rate,
                            train.warmup_iters, train.lr_schedule, train.decay_fraction)
        if planned != plan.total_steps and now > 1.5 * was:
            warnings.append(
                f"the schedule now spans {plan.total_steps} steps (the checkpoint's run planned "
                f"{planned}): the learning rate goes back up from {was:.3g} at step "
                f"{start_step} to {now:.3g} at step {start_step + 1}, as if the run had been "
                "planned this long from its start")
    if train.warmup_iters >= plan.total_steps > start_step:
        last = learning_rate(plan.total_steps - 1, plan.total_steps, train.learning_rate,
                             train.warmup_iters, train.lr_schedule, train.decay_fraction)
        warnings.append(
            f"the run's {plan.total_steps} steps end within warmup_iters "
            f"({train.warmup_iters}): the learning rate only rises, to {last:.3g} at the last "
            f"step (learning_rate is {train.learning_rate:g}), and never decays"
            if last < train.learning_rate else
            f"the run's {plan.total_steps} steps are all warmup (warmup_iters "
            f"{train.warmup_iters}): the learning rate reaches learning_rate "
            f"({train.learning_rate:g}) at the last step only, and never decays")
    elif (train.lr_schedule == "wsd" and plan.total_steps > start_step and wsd_decay_start(
            plan.total_steps, train.warmup_iters, train.decay_fraction) >= plan.total_steps):
        warnings.append(
            f"wsd's decay_fraction ({train.decay_fraction:g}) of the run's {plan.total_steps} "
            f"steps rounds to no step: the learning rate stays at {train.learning_rate:g} to "
            f"the end and never decays; for a decay set decay_fraction to at least "
            f"{1 / plan.total_steps:.3g}")
    step = train.batch_size * train.accumulation_steps
    if plan.samples_per_epoch < step:  # every step of the run is its epoch's last, and short
        warnings.append(
            f"an epoch holds {plan.samples_per_epoch} sample(s) per process, fewer than a step's "
            f"batch_size × accumulation_steps ({train.batch_size} × "
            f"{train.accumulation_steps} = {step}): each step trains on those "
            f"{plan.samples_per_epoch}, not the positions/step the header counts; lower "
            "batch_size or accumulation_steps to fit the data")
    if train.max_steps > plan.total_steps:
        epochs = math.ceil(train.max_steps / plan.steps_per_epoch)
        warnings.append(f"the data ends before max_steps ({train.max_steps}): {train.epochs} "
                        f"epoch(s) of {plan.steps_per_epoch} steps end the run at step "
                        f"{plan.total_steps}; for {train.max_steps} steps set epochs to "
                        f"{epochs} (--epochs {epochs})")
    return warnings
