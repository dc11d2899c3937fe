"""torchrun / DDP setup and the few collective helpers the engine needs.

Launched by `torchrun`, every process sees RANK/LOCAL_RANK/WORLD_SIZE; we join the process group
(NCCL on CUDA, gloo on CPU) and pick this rank's device. Without those variables everything here
degrades to a single process and the collectives become no-ops.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from minimind.device import resolve_device
from minimind.environment import launched_by_torchrun

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device_setting: str) -> DistInfo:
    if not launched_by_torchrun():
        return DistInfo(0, 0, 1, resolve_device(device_setting))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    # Under torchrun each local rank owns one GPU, whatever index the settings named.
    device = resolve_device("cuda" if device_setting.startswith("cuda") else device_setting,
                            local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                rank=rank, world_size=world)
    return DistInfo(rank, local_rank, world, device)


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True if `flag` is set on any rank, so every rank takes the same branch (stop, NaN)."""
    if not info.enabled:
        return flag
    t = torch.tensor([int(flag)], device=info.device if info.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def sum_over_ranks(values: list[torch.Tensor], info: DistInfo) -> list[float]:
    """Each value summed over every rank, all in one collective: counts that differ per rank
    (tokens) and loss sums. In float64, which holds every count below 2**53 exactly."""
    if not info.enabled:
        return [float(value) for value in values]
    totals = torch.stack([value.detach().to(torch.float64).reshape(()) for value in values])
    dist.all_reduce(totals, op=dist.ReduceOp.SUM)
    return totals.tolist()


def all_gather_object(obj: Any, info: DistInfo) -> list[Any]:
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def from_main(obj: Any, info: DistInfo) -> Any:
    """Rank 0's `obj` on every rank (a decision only rank 0 can make, e.g. about the folder)."""
    return all_gather_object(obj, info)[0]


class PeerFailed(RuntimeError):
    """Another rank's unexpected error, raised on this one by `together`: named, rather than
    the "Connection reset by peer" of a collective the failed rank left."""

    def __init__(self, rank: int, error: str):
        super().__init__(f"rank {rank} failed: {error}")
        self.rank, self.error = rank, error

    def __reduce__(self) -> tuple[Any, ...]:
        return PeerFailed, (self.rank, self.error)


def together(work: Callable[[], T], errors: tuple[type[Exception], ...], info: DistInfo) -> T:
    """`work()` on this rank; one of `errors` that ends it on any rank is raised on every rank
    (the first rank's), so that all of them leave together rather than one waiting for good in
    a collective the others have left. Any other error is raised as it is on its own rank and
    as `PeerFailed` on the others. `errors` must pickle as they were made."""
    result, problem, own = None, None, None
    try:
        result = work()
    except (*errors, PeerFailed) as e:
        problem = e
    except Exception as e:
        own, problem = e, PeerFailed(info.rank, f"{type(e).__name__}: {e}")
    found = [p for p in all_gather_object(problem, info) if p is not None]
    if own is not None:
        raise own  # with its traceback, where it happened
    if found:
        raise found[0]
    return result


# What a collective raises when another rank's process has gone: gloo's words (a plain
# RuntimeError from inside backward or an all-reduce), and torch's own error types.
_PEER_GONE_WORDS = ("Connection closed by peer", "Connection reset by peer")
# The key a rank that aborts leaves in the job's store (torchrun's, which outlives the ranks).
_ABORTED_KEY = "minimind/aborted"


def peer_gone(error: BaseException, info: DistInfo) -> bool:
    """Whether `error` is a collective failing because another rank has left."""
    if info.world_size < 2:
        return False
    if isinstance(error, (dist.DistNetworkError, dist.DistBackendError)):
        return True
    return isinstance(error, RuntimeError) and any(w in str(error) for w in _PEER_GONE_WORDS)


def say_aborting(info: DistInfo) -> None:
    """Tell the other ranks that this one leaves on purpose (a second stop signal), before it
    does: the collective it leaves them in fails, and they can tell an abort from a crash."""
    if info.enabled and dist.is_initialized():
        try:
            dist.distributed_c10d._get_default_store().set(_ABORTED_KEY, str(info.rank))
        except Exception:  # the store gone too: the others report a failure, as before
            pass


def another_rank_aborted(info: DistInfo) -> bool:
    if not (info.enabled and dist.is_initialized()):
        return False
    try:
        return dist.distributed_c10d._get_default_store().check([_ABORTED_KEY])
    except Exception:
        return False


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def device_name(device: torch.device) -> str:
    """The card's name, or the CPU with its thread count: what the logs and benchmarks show."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"CPU ({threads} thread{'s' * (threads != 1)})"
