"""Waiting in a Pilot test for what the app shows, not for a fixed time: a pause long enough
on an idle machine was once too short on a loaded one."""

from __future__ import annotations

from collections.abc import Callable


async def until(pilot, condition: Callable[[], bool], seconds: float = 30.0) -> None:
    """Pause until `condition()` holds (AssertionError after `seconds`), then once more for
    the messages that followed it."""
    for _ in range(int(seconds / 0.05)):
        if condition():
            await pilot.pause()
            return
        await pilot.pause(0.05)
    raise AssertionError(f"not reached within {seconds} s: {condition.__doc__ or condition}")


async def inspected(pilot) -> None:
    """Until the inspect screen on top has ended its pass and shows how."""
    await pilot.app.workers.wait_for_complete()
    await until(pilot, lambda: pilot.app.screen.ended)
