"""Snapshot tests: the configure screen, the dashboard and the playground, from fixed inputs.

Regenerate the baselines after an intended visual change with
    pytest tests/test_snapshots.py --snapshot-update
and look at the SVGs under tests/__snapshots__/ before committing them. Nothing here depends
on the clock, the machine or a live run: the dashboard is fed a fixed synthetic event stream.
"""

from __future__ import annotations

import pytest
from textual.widgets import Input

from minimind_tui.app import MiniMindApp
from pilot_waits import inspected
from snapshot_apps.replay import fixed_events, show_fixed_generation
from snapshot_apps.run_fixtures import write_fixture_runs


@pytest.fixture(autouse=True)
def _pinned_environment(monkeypatch, tmp_path):
    # A fresh cache (no token cache: the readouts count lines) and no user presets.
    monkeypatch.setenv("MINIMIND_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MINIMIND_TUI_PRESETS", str(tmp_path / "presets"))
    monkeypatch.delenv("NO_COLOR", raising=False)


def tiny_app() -> MiniMindApp:
    return MiniMindApp("tiny")


async def settle(pilot) -> None:
    """Let the readout workers report and stop every cursor from blinking."""
    for field in pilot.app.query(Input):
        field.cursor_blink = False
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def show_replayed_run(pilot) -> None:
    app = pilot.app
    app.apply_events(fixed_events())
    app.run_phase = "running"  # the look of a live run, without a worker
    app.switch_mode("dashboard")
    await pilot.pause()


def test_configure_screen_tiny(snap_compare):
    assert snap_compare(tiny_app(), terminal_size=(100, 40), run_before=settle)


def test_configure_screen_minimind2_small(snap_compare):
    """An upstream preset whose data is not here: the model's readouts still show."""
    app = MiniMindApp("minimind2-small")
    assert snap_compare(app, terminal_size=(100, 40), run_before=settle)


def test_dashboard_replayed_run(snap_compare):
    assert snap_compare(tiny_app(), terminal_size=(120, 40), run_before=show_replayed_run)


def test_dashboard_light_theme_80x24(snap_compare):
    async def run_before(pilot) -> None:
        pilot.app.theme = "textual-light"
        await show_replayed_run(pilot)

    assert snap_compare(tiny_app(), terminal_size=(80, 24), run_before=run_before)


def test_dashboard_samples_panel_80x24(snap_compare):
    """The samples in the log's place, paged one step back from the newest."""
    assert snap_compare(tiny_app(), terminal_size=(80, 24), run_before=show_replayed_run,
                        press=["s", "left_square_bracket"])


def test_dashboard_stopped_run_80x24(snap_compare):
    """After a stop: the panel's step is the stop's (past the last logged one), no ETA."""

    async def run_before(pilot) -> None:
        from minimind.events import RunFinished

        await show_replayed_run(pilot)
        pilot.app.apply_events([RunFinished(status="stopped", step=203, time=0.0,
                                            reason="stop requested; checkpoint written")])
        pilot.app.run_phase = "stopped"
        await pilot.pause()

    assert snap_compare(tiny_app(), terminal_size=(80, 24), run_before=run_before)


def test_playground_after_a_generation(snap_compare):
    async def run_before(pilot) -> None:
        await show_replayed_run(pilot)
        await show_fixed_generation(pilot)

    assert snap_compare(tiny_app(), terminal_size=(100, 30), run_before=run_before)


def test_comparison_of_three_runs(snap_compare, tmp_path):
    """Three fixture runs' curves overlaid (one of them resumed after a crash)."""
    write_fixture_runs(tmp_path / "out")
    app = MiniMindApp("tiny", {"train": {"out_dir": str(tmp_path / "out" / "tiny")}})

    async def run_before(pilot) -> None:
        await pilot.press("f4", "down", "space", "down", "space", "down", "space", "c")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 36), run_before=run_before)


def test_inspect_screen_shakespeare_val(snap_compare):
    """The Inspect data screen after a finished pass over the bundled validation corpus."""

    async def run_before(pilot) -> None:
        from minimind_tui.screens.inspect import InspectScreen

        await pilot.app.push_screen(InspectScreen("builtin:shakespeare-val", "", 128))
        await inspected(pilot)

    assert snap_compare(tiny_app(), terminal_size=(120, 40), run_before=run_before)


def test_inspect_screen_conversations_shakespeare_chat_val(snap_compare):
    """The Inspect data screen for stage sft: the bundled validation conversations."""

    async def run_before(pilot) -> None:
        from minimind_tui.screens.inspect import InspectScreen

        await pilot.app.push_screen(InspectScreen("builtin:shakespeare-chat-val", "", 128,
                                                  "sft"))
        await inspected(pilot)

    assert snap_compare(tiny_app(), terminal_size=(120, 40), run_before=run_before)
