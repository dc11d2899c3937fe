"""A process that ends when the one that started it does, however that one ends (`kill -9`
included): Linux's PR_SET_PDEATHSIG, the kernel's signal to a child whose parent died.

The signal follows the parent's *thread* that started the child, so the caller starts its
children from a thread that lives as long as it does (the main thread)."""

from __future__ import annotations

import sys

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def signal_on_parent_death(signum: int) -> bool:
    """Ask for `signum` when this process's parent dies; False where the system has no such
    request (the child is then left to its own end)."""
    if sys.platform != "linux":
        return False
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum)
    return True
