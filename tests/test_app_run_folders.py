"""Runs that outlive the window, with real processes: a headless run watched live from the app
(through a partial line, a SIGKILL and a resume), the app refusing a folder a live run holds,
a detached run that outlives the app, and a 2-process torchrun job launched and stopped from
the app with a checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from textual.widgets import Button, Static

from minimind.events import RunStarted
from minimind.run_folder import RunFolder
from minimind_tui.app import MiniMindApp
from minimind_tui.screens.choice import ChoiceScreen
from minimind_tui.screens.confirm import ConfirmScreen
from test_app import SIZE, quick_app
from pilot_waits import wait_until
from test_run_folder import cli, read_events, start, wait_for

# These tests follow live CPU runs on the dashboard and wait for its lines and charts.
pytestmark = pytest.mark.usefixtures("gpu_run_redraw_rhythm")


def status_text(app: MiniMindApp) -> str:
    return str(app.screen.query_one("#stats-status", Static).render())


async def test_a_live_run_is_refused_then_watched_through_a_crash_and_a_resume(tmp_path):
    run = tmp_path / "run"
    trainer = start("--out_dir", str(run), "--save_interval", "3")
    try:
        wait_for(trainer, "[checkpoint] step 3")
        app = quick_app(tmp_path)  # the form's out_dir is the folder the trainer holds
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f5")
            assert isinstance(app.screen, ChoiceScreen)
            assert "is in use" in str(app.screen.query_one(".dialog").border_title)
            assert app.training is None  # nothing started
            await pilot.press("w")
            assert app.current_mode == "dashboard" and app.training.read_only
            await wait_until(pilot, lambda: len(app.history.steps) >= 5
                             and app.run_phase == "running")
            assert status_text(app).startswith("Running on")
            assert not app.screen.query_one("#stop-button", Button).display
            assert f"watching {run}" in str(app.screen.query_one("#watch-note").render())
            assert app.check_action("stop", ()) is False

            trainer.send_signal(signal.SIGKILL)  # no final event: a crash
            trainer.communicate(timeout=60)
            await wait_until(pilot, lambda: app.run_phase == "crashed")
            crashed_at = app.history.latest.step
            await wait_until(pilot, lambda: status_text(app)
                             == f"Crashed at step {crashed_at:,} (process gone)", timeout=10)

            # A line still being written (or half synced) waits for its end.
            line = json.dumps({"kind": "log", "time": time.time(), "level": "info",
                               "text": "a line that arrived in two parts"}) + "\n"
            metrics = run / "metrics.jsonl"
            with metrics.open("a") as f:
                f.write(line[:25])
            await pilot.pause(1.2)
            with metrics.open("a") as f:
                f.write(line[25:])
            await wait_until(pilot, lambda: "arrived in two parts" in _log(app))
            assert app.training.skipped == 0

            resumed = cli("--max_steps", str(crashed_at + 2), "--out_dir", str(run),
                          "--from_resume", "1", "--save_interval", "3")
            assert resumed.returncode == 0, resumed.stderr
            await wait_until(pilot, lambda: app.run_phase == "completed")
            h = app.history
            assert h.resumed_at == [RunFolder(run).status().resumed_from]
            assert list(h.steps) == list(range(1, crashed_at + 3))  # lost steps replaced
            assert status_text(app) == f"Completed at step {crashed_at + 2:,}"

            # Moved away (or deleted): said, where the run's last state stayed on show; what
            # was read stays. Moved back: the same run again.
            run.rename(tmp_path / "moved")
            await wait_until(pilot, lambda: app.run_phase == "gone")
            await wait_until(pilot, lambda: status_text(app) == (
                f"Folder gone (deleted or moved): shown as read, up to step {crashed_at + 2:,}"),
                timeout=10)
            assert list(h.steps) == list(range(1, crashed_at + 3))
            (tmp_path / "moved").rename(run)
            await wait_until(pilot, lambda: app.run_phase == "completed")
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.communicate()


async def test_a_run_whose_log_ends_before_its_status_is_shown_at_its_status(tmp_path):
    """A folder moved while its run trained: the run recreates run.json at the old path, its
    metrics.jsonl goes on in the folder moved. The watch showed "Completed at step 2" for a
    run run.json said had completed at step 4."""
    run = tmp_path / "run"
    assert cli("--max_steps", "4", "--log_interval", "1", "--out_dir", str(run)).returncode == 0
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join(lines[:next(i for i, line in enumerate(lines)
                                           if '"step": 3,' in line)]))
    app = MiniMindApp(watch=run)
    async with app.run_test(size=(80, 24)) as pilot:
        expected = "Completed at step 4 (says run.json; the metrics.jsonl here ends at step 2)"
        await wait_until(pilot, lambda: status_text(app) == expected, timeout=20)
        await pilot.pause()
        # The panel is narrow: the status wraps rather than lose its end.
        assert app.screen.query_one("#stats-status", Static).region.height >= 2


def _log(app: MiniMindApp) -> str:
    return "\n".join(line.text for line in app.dashboard_screen.query_one("#run-log").lines)


async def test_a_detached_run_outlives_the_app_and_is_watched_again(tmp_path):
    run = tmp_path / "run"
    app = quick_app(tmp_path, log_interval=1)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p", *"start detached")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(app.history.steps) >= 2, timeout=120)
        child = app.training.child
        assert app.training.detached and app.run_active
        await pilot.press("ctrl+q")  # no question: the run is meant to go on
        await pilot.pause(0.3)
    assert child.poll() is None and RunFolder(run).state() == "running"
    try:
        watcher = MiniMindApp(watch=run)
        async with watcher.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: watcher.run_phase == "running"
                             and len(watcher.history.steps) >= 3)
            assert watcher.current_mode == "dashboard"
            assert watcher.check_action("toggle_view", ()) is False  # no form to go to
            child.request_stop()  # what `kill <pid>` does
            await wait_until(pilot, lambda: watcher.run_phase == "stopped")
            assert watcher.history.checkpoint.step == watcher.history.finished.step
    finally:
        try:
            child.popen.wait(60)  # the final event is written a moment before the exit
        except subprocess.TimeoutExpired:
            child.popen.kill()
            raise
    assert child.poll() == 130  # stopped by a signal, checkpoint written
    assert "[stopped]" in child.log_tail()


async def test_the_app_launches_torchrun_and_stops_it_with_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    app = quick_app(tmp_path, device="cpu", nproc_per_node=2, log_interval=1)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5")
        assert app.training.child.what == "torchrun"
        await wait_until(pilot, lambda: len(app.history.steps) >= 2, timeout=180)
        assert app.history.started.world_size == 2
        await pilot.press("f6")
        assert app.run_phase == "stopping"
        await wait_until(pilot, lambda: app.run_phase == "stopped", timeout=120)
        finished, checkpoint = app.history.finished, app.history.checkpoint
        assert finished.status == "stopped" and checkpoint.step == finished.step
        assert app.training.child.poll() is not None
    assert (run / "pretrain_128_resume.pth").is_file()
    assert RunFolder(run).state() == "stopped"
    assert [e.world_size for e in read_events(run / "metrics.jsonl")
            if isinstance(e, RunStarted)] == [2]


async def test_a_child_that_fails_shows_the_end_of_its_output(tmp_path, monkeypatch):
    # A child that dies before the run reports anything (torchrun refusing its arguments, a
    # broken environment): a real process, cheaper than a trainer that fails the same way.
    from minimind_tui.run import launch

    crash = ("import sys; print('starting'); "
             "print('RuntimeError: the rendezvous port is taken', file=sys.stderr); sys.exit(1)")
    monkeypatch.setattr(launch, "child_command", lambda *_: [sys.executable, "-c", crash])
    app = quick_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        app.action_start_detached()
        await wait_until(pilot, lambda: app.run_phase == "failed")
        reason = str(app.screen.query_one("#failed-reason").render())
        assert "the training process exited with code 1" in reason
        assert reason.endswith("starting\nRuntimeError: the rendezvous port is taken")
        details = str(app.screen.query_one("#failed-details").render())
        assert details == f"Details: {tmp_path / 'run' / 'launch.log'}"


def test_the_headless_cli_becomes_torchrun_for_several_processes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def headless(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "minimind_tui", "--no-ui", "--preset", "tiny", "--device",
             "cpu", "--dtype", "float32", "--max_seq_len", "64", "--batch_size", "2",
             "--packing", "0", "--val_data_path", "", "--eval_interval", "0", "--max_steps", "1",
             "--nproc_per_node", "2", *args], capture_output=True, text=True, env=env,
            timeout=300)

    proc = headless("--out_dir", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "launching 2 processes per node" in proc.stderr
    assert "x2 | positions/step: 256" in proc.stdout  # (padded samples)
    # A refusal every rank meets: said once, with the exit code one process gives (torchrun
    # alone repeated it per rank, added its own traceback, and exited 1). Here one sample for
    # two ranks, which crashed in a division by zero (or "completed" 0 steps with max_steps 0).
    data = tmp_path / "one.jsonl"
    data.write_text('{"text": "To be, or not to be"}\n')
    proc = headless("--out_dir", str(tmp_path / "refused"), "--data_path", str(data))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.count(f"minimind-tui: error: train.data_path: {data} holds 1 sample(s) "
                             "for 2 processes, each of which needs one: use more data, or "
                             "fewer processes (nproc_per_node)") == 1
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr
    assert "failed (exitcode: " not in proc.stderr  # torchrun's own line of it, leaked
    assert not (tmp_path / "refused").exists()


async def test_a_refused_resume_leaves_the_completed_run_on_show(tmp_path):
    """Resume chosen for a run whose data changed since: the engine refuses while preparing
    (only it reads the data). The dashboard showed that completed run as "Failed at step 0",
    with a [failed] line in its log, and the dialog said "Stopped at step 0"."""
    data = tmp_path / "text.jsonl"
    data.write_text("".join(json.dumps({"text": f"line {i} of a small corpus"}) + "\n"
                            for i in range(40)))
    app = quick_app(tmp_path, max_steps=3, log_interval=1, data_path=str(data))
    async with app.run_test(size=SIZE) as pilot:
        app.action_start()
        await wait_until(pilot, lambda: app.run_phase == "completed")
        # Nothing left to train: the Start question's Resume is off, and says why.
        await pilot.press("f2", "f5")
        await wait_until(pilot, lambda: isinstance(app.screen, ChoiceScreen))
        dialog = app.screen.query_one(".dialog")
        assert dialog.query_one("#resume", Button).disabled
        assert any("Resume cannot: the run completed at step 3, where these settings end it "
                   "too" in str(text.render()) for text in dialog.query(Static))
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, ChoiceScreen))
        app.configure_screen.set_fields({"train.max_steps": 5})
        with data.open("a") as f:
            f.write(json.dumps({"text": "one more line"}) + "\n")
        await pilot.pause()
        await pilot.press("f5")
        await wait_until(pilot, lambda: isinstance(app.screen, ChoiceScreen))
        await pilot.press("r")
        await wait_until(pilot, lambda: app.screen.query("#failed-reason"))
        dialog = app.screen.query_one(".dialog")
        assert dialog.border_title == "Cannot start"
        assert "the training data changed since the checkpoint" in str(
            app.screen.query_one("#failed-reason").render())
        assert any("Nothing was trained" in str(s.render()) for s in dialog.query(Static))
        assert app.run_phase == "completed" and app.history.finished.status == "completed"
        assert not [e for _, e in app.history.log if getattr(e, "status", "") == "failed"]
        await pilot.press("enter")
        await wait_until(pilot, lambda: not app.screen.query("#failed-reason"))
        await pilot.press("f2")
        assert status_text(app) == "Completed at step 3"
        assert RunFolder(tmp_path / "run").state() == "completed"


async def test_the_form_checks_its_folder_again_when_shown(tmp_path):
    """A resume that ran to its end left the form saying "ready to start" (its folder was
    checked before that run), and only Start, refused, said nothing was left to train."""
    app = quick_app(tmp_path, max_steps=3, log_interval=1)
    async with app.run_test(size=SIZE) as pilot:
        app.action_start()
        await wait_until(pilot, lambda: app.run_phase == "completed")
        await pilot.press("f2")
        app.configure_screen.set_fields({"train.max_steps": 4, "train.from_resume": True})
        await wait_until(pilot, lambda: app.configure_screen.current_settings() is not None)
        app.action_start()
        await wait_until(pilot, lambda: app.run_phase == "completed"
                         and app.history.summary.step == 4)
        await pilot.press("f2")
        await wait_until(pilot, lambda: app.configure_screen.problems)
        assert [p.loc for p in app.configure_screen.problems] == ["train.from_resume"]
        assert "nothing is left to train" in str(app.configure_screen.problems[0])
        # The run deleted in the runs view: its problem stayed on show until a field was typed.
        await pilot.press("f4")
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_until(pilot, lambda: not (tmp_path / "run" / "run.json").exists())
        await pilot.press("escape")
        await wait_until(pilot, lambda: "no resume checkpoint at" in " ".join(
            map(str, app.configure_screen.problems)))


async def test_start_into_a_used_folder_asks_new_folder_overwrite_or_resume(tmp_path):
    run = tmp_path / "run"
    app = quick_app(tmp_path, max_steps=3, log_interval=1)
    async with app.run_test(size=SIZE) as pilot:

        async def start_and_finish() -> None:
            await wait_until(pilot, lambda: app.run_phase == "completed")
            await pilot.press("f2")  # back on the form for the next start

        app.action_start()
        await start_and_finish()
        assert RunFolder(run).state() == "completed"

        # A second Start asks; a new folder beside it leaves the first run alone.
        await pilot.press("f5")
        dialog = app.screen.query_one(".dialog")
        assert "already holds a run" in str(dialog.border_title)
        assert any("a new folder is run-2" in str(text.render()) for text in dialog.query(Static))
        # It completed: Resume alone would train nothing, and the dialog says what it needs.
        assert any("Resume cannot: the run completed at step 3" in str(text.render())
                   for text in dialog.query(Static))
        # Every answer is in sight, Cancel included (it was cut off by the dialog's edge).
        for button in dialog.query(Button):
            assert dialog.content_region.contains_region(button.region), button.id
        await pilot.press("n")
        await start_and_finish()
        assert app.screen.query_one("#out_dir").value == str(tmp_path / "run-2")
        assert RunFolder(tmp_path / "run-2").state() == "completed"
        assert RunFolder(run).status().step == 3

        # Overwrite asks twice; "no" the second time changes nothing.
        app.configure_screen.set_fields({"train.out_dir": str(run), "train.max_steps": 2})
        await pilot.pause()
        await pilot.press("f5", "o")
        assert "Overwrite" in str(app.screen.query_one(".dialog").border_title)
        await pilot.press("n")
        assert app.current_mode == "configure" and RunFolder(run).status().step == 3
        await pilot.press("f5", "o", "y")
        await start_and_finish()
        assert list(app.history.steps) == [1, 2]
        assert RunFolder(run).status().step == 2 and RunFolder(run).status().resumed_from == 0
        assert app.screen.query_one("#overwrite").value is False  # never left on the form
        # The form's own switch goes straight to that confirmation, never past it.
        app.configure_screen.set_fields({"train.overwrite": True})
        await pilot.pause()
        await pilot.press("f5")
        assert "Overwrite" in str(app.screen.query_one(".dialog").border_title)
        await pilot.press("n")
        assert app.current_mode == "configure" and RunFolder(run).status().step == 2
        app.configure_screen.set_fields({"train.overwrite": False})

        # Resume: the run's earlier history is shown first, the resumed segment marked.
        app.configure_screen.set_fields({"train.max_steps": 4})
        await pilot.pause()
        await pilot.press("f5", "r")
        await start_and_finish()
        assert app.screen.query_one("#from_resume").value is True
        assert list(app.history.steps) == [1, 2, 3, 4] and app.history.resumed_at == [2]


async def test_watching_another_folder_never_stops_the_apps_own_run(tmp_path):
    """The dashboard shows one run, and the app stops what it stops showing: so while its own
    run goes on, Watch (the runs view's w, the palette's dialog) refuses with a notice instead
    of stopping it; the run's own folder only brings the dashboard up."""
    other = tmp_path / "other"
    other.mkdir()
    app = quick_app(tmp_path, max_steps=400, log_interval=1)
    async with app.run_test(size=SIZE) as pilot:
        app.action_start()
        await wait_until(pilot, lambda: len(app.history.steps) >= 2)
        own = app.training
        await pilot.press("f2")
        app.watch_folder(tmp_path / "run")
        assert app.current_mode == "dashboard" and app.training is own
        notices = []  # as told (a toast can expire before a loaded machine looks at it)
        notify = app.notify
        app.notify = lambda message, **kw: notices.append(message) or notify(message, **kw)
        app.watch_folder(other)
        await pilot.pause()
        assert app.training is own and not own.stop_event.is_set()
        assert app.run_phase == "running"
        assert any("Stop it first" in text and str(other) in text for text in notices)
        app.action_stop()
        await wait_until(pilot, lambda: app.run_phase == "stopped")
        app.watch_folder(other)  # once the run has ended, watching is free
        assert app.training is not own and app.training.read_only


async def test_a_watch_of_a_folder_not_made_yet_waits_for_it(tmp_path):
    """`watch out/x` before the run made out/x said "Folder gone (deleted or moved)", and its
    panel "press F5 on the form" (a watch has none) until the first redraw 10 s on."""
    from test_app import stats_text

    app = MiniMindApp(watch=tmp_path / "later")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.5)  # before the panel's next redraw (CHARTS_SECONDS)
        assert "step no run yet: waiting for one to start" in stats_text(app)
        # at a check of the folder (every STATE_SECONDS)
        await wait_until(pilot, lambda: status_text(app) == "Waiting for the run to write…",
                         timeout=10)
    # A folder of runs: told where they are (`watch out` waited for a run in out itself).
    (tmp_path / "out" / "a").mkdir(parents=True)
    (tmp_path / "out" / "a" / "metrics.jsonl").write_text("")
    app = MiniMindApp(watch=tmp_path / "out")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app._notifications)
        [told] = app._notifications
        assert told.message.startswith(f"{tmp_path / 'out'} holds 1 run(s) below it, none of "
                                       f"its own: {tmp_path / 'out' / 'a'}: watch one of those")


def test_watch_needs_a_folder(tmp_path, capsys):
    from minimind_tui.cli.watch import main

    (tmp_path / "notes").write_text("a file")
    for path in (tmp_path / "notes", tmp_path / "notes" / "run"):  # the second waited forever
        assert main([str(path)]) == 2
        assert capsys.readouterr().err.endswith(f"{tmp_path / 'notes'}: a file, not a folder\n")


async def test_start_asks_before_replacing_weights_that_are_no_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    theirs = run / "pretrain_128.pth"  # e.g. upstream MiniMind's own out/pretrain_<hidden>.pth
    theirs.write_bytes(b"the user's weights")
    app = quick_app(tmp_path, max_steps=2, log_interval=1)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5")
        assert isinstance(app.screen, ChoiceScreen)
        dialog = app.screen.query_one(".dialog")
        assert str(dialog.border_title) == f"{run} already holds pretrain_128.pth"
        assert "Start would replace pretrain_128.pth" in " ".join(
            str(s.render()) for s in dialog.query(Static))
        assert app.screen.query_one("#resume", Button).disabled  # nothing to resume
        await pilot.press("escape")
        assert app.training is None and theirs.read_bytes() == b"the user's weights"
        await pilot.press("f5", "o")
        assert "pretrain_128.pth" in " ".join(
            str(s.render()) for s in app.screen.query_one(".dialog").query(Static))
        await pilot.press("y")
        await wait_until(pilot, lambda: app.run_phase == "completed")
    assert theirs.read_bytes() != b"the user's weights"
    assert RunFolder(run).state() == "completed"


def test_the_start_question_says_where_a_resume_goes_on_from(tmp_path):
    """A crashed run's question said "Resume continues from its last checkpoint": 26 steps
    after the save at 100 train again, which only `runs` told ("126/3,000 (saved 100)")."""
    from minimind.run_status import RunStatus
    from minimind_tui.run.start_flow import resume_note

    folder = RunFolder(tmp_path)
    folder.write_status(RunStatus(state="failed", step=126, checkpoint_step=100))
    assert resume_note(folder) == ("Resume continues from its checkpoint at step 100: steps "
                                    "101–126 were never saved and train again")
    folder.write_status(RunStatus(state="stopped", step=100, checkpoint_step=100))
    assert resume_note(folder) == "Resume continues from its checkpoint at step 100"
