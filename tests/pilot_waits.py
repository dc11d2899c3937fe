"""Waiting in a Pilot test for what the app shows, not for a fixed time: a pause long enough
on an idle machine was once too short on a loaded one."""

from __future__ import annotations

import time
from collections.abc import Callable


async def wait_until(pilot, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.1)


async def inspected(pilot) -> None:
    """Until the inspect screen on top has ended its pass and shows how."""
    await pilot.app.workers.wait_for_complete()
    await wait_until(pilot, lambda: pilot.app.screen.ended)
    await pilot.pause()
