"""The minimind-tui application: a configure screen and a dashboard around one training run.

The app owns the run: it starts it from a run source (`run_source`: the engine in a thread
worker, a launched child process, or a folder watched read-only), drains its events into a
`RunHistory` a few times a second, and decides what happens when the run ends or the user
quits. The screens only show and edit.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.reactive import var
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from minimind.event_text import describe
from minimind.events import Event, LogMessage
from minimind.runs import runs_below_text, runs_root
from minimind.settings_moves import merge
from minimind.shown import printable_path
from minimind_tui.cli.exit_codes import of_run
from minimind_tui.palette import MiniMindCommands
from minimind_tui.form.schema import settings_values
from minimind_tui.run.history import RunHistory, StepBlock
from minimind_tui.form.presets import DEFAULT_PRESET, preset_data
from minimind_tui.run.source import FolderSource, RunSource
from minimind_tui.run.phase import RunPhase
from minimind_tui.screens.configure import ConfigureScreen
from minimind_tui.screens.confirm import ConfirmScreen
from minimind_tui.screens.dashboard import DashboardScreen
from minimind_tui.screens.export import ExportScreen
from minimind_tui.screens.playground import PlaygroundScreen
from minimind_tui.screens.run_failed import RunFailedScreen
from minimind_tui.screens.runs import RunsScreen
from minimind_tui.screens.stopping import StoppingScreen
from minimind_tui.screens.watch_dialog import WatchDialog
from minimind_tui.run.start_flow import StartFlow
from minimind_tui.worker_end import worker_ended

DRAIN_SECONDS = 0.25  # 4 Hz: smooth enough to watch, rare enough not to slow training


class MiniMindApp(App[str]):
    """`MiniMindApp(preset, overrides)`: the form shows the preset with the CLI's flags laid
    over it, and the preset's own values are the baseline that "changed" marks compare against.
    `MiniMindApp(watch=folder)`: only the dashboard, following that folder's run read-only."""

    CSS_PATH = "app.tcss"
    TITLE = "minimind-tui"
    COMMANDS = App.COMMANDS | {MiniMindCommands}
    # Modes name installed screens: the app builds both itself (the form needs the CLI's
    # settings) and keeps them, so switching never loses form values or the run's log.
    MODES = {"configure": "configure", "dashboard": "dashboard"}
    BINDINGS = [
        # In a browser (`serve`) F5 and Ctrl+R reload the page and never reach the app: there
        # the start key is F9 (`start_key`), set on mount.
        Binding("f5,ctrl+r", "start", "Start", id="start", key_display="F5",
                tooltip="Start training with the form's settings"),
        Binding("f6", "stop", "Stop", id="stop", key_display="F6",
                tooltip="Finish the current step, write a checkpoint and stop"),
        Binding("f4", "runs", "Runs", id="runs", key_display="F4", show=False,
                tooltip="The runs under the output folder: compare, diff, delete, watch"),
        # The form's keys work on every screen (e.g. resume right after a stop): each opens the
        # form first. Hidden here: the form's footer shows them, the dashboard's has no room.
        Binding("ctrl+l", "on_form('pick_preset')", "Presets", show=False),
        Binding("ctrl+s", "on_form('save_preset')", "Save", show=False),
        Binding("ctrl+o", "on_form('resume')", "Resume", show=False),
        # Not in the footer (it is full at 80 columns); the palette lists it as well.
        Binding("f3", "toggle_theme", "Light/Dark", id="toggle_theme", key_display="F3",
                show=False, tooltip="Switch between the light and the dark theme"),
        Binding("ctrl+q", "quit", "Quit", id="quit", priority=True,
                tooltip="Quit (asks first while a run is going)"),
    ]

    # Every binding's state (F5, F6, ...) follows the phase: a change refreshes the footer.
    run_phase: var[RunPhase] = var(RunPhase.IDLE, bindings=True)

    def validate_run_phase(self, phase: str) -> RunPhase:
        return RunPhase(phase)

    def __init__(self, preset: str | None = None,
                 overrides: dict[str, dict[str, Any]] | None = None, *,
                 watch: Path | None = None) -> None:
        # The first screen is the mode the app composes with: switching to it on mount had
        # Textual style its ~400 widgets twice (0.4 s of every start).
        self.DEFAULT_MODE = "dashboard" if watch is not None else "configure"
        super().__init__()
        preset = preset or DEFAULT_PRESET
        baseline = settings_values(preset_data(preset))
        values = settings_values(merge(preset_data(preset), overrides or {}))
        self.history = RunHistory()
        self.training: RunSource | None = None
        """Where the shown run comes from (the name predates watching)."""
        self.watch_only = watch
        """`minimind-tui watch`: no form, nothing to start or stop."""
        self._quitting = False
        self.start_flow = StartFlow(self)
        self.configure_screen = ConfigureScreen(values, baseline, preset)
        self.dashboard_screen = DashboardScreen(self.history)
        self.playground_screen = PlaygroundScreen()
        self.install_screen(self.configure_screen, "configure")
        self.install_screen(self.dashboard_screen, "dashboard")
        self.install_screen(self.playground_screen, "playground")  # kept: its model, its text

    def on_mount(self) -> None:
        if self.is_web:
            self.update_keymap({"start": "f9"})
        self._drain_timer = self.set_interval(DRAIN_SECONDS, self._drain, pause=True)
        if self.watch_only is not None:
            self.watch_folder(self.watch_only)

    def run_until_stopped(self) -> None:
        """`run()`, with SIGTERM and SIGHUP (a closed terminal or SSH session) stopping a run
        gracefully: the step finishes, the checkpoint and the final event are written, then the
        app exits. (The process waits for the training thread before it ends.)"""

        def on_signal(signum: int, _frame: object) -> None:
            if signum == signal.SIGHUP:
                # The terminal is gone: writes to it would fail or block Textual's shutdown,
                # so from now on the screen goes nowhere (as under nohup).
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
            # Through the app's own queue: its handlers run where Textual knows the active
            # app (a bare loop callback does not, and pushing a screen there fails).
            asyncio.get_running_loop().call_soon_threadsafe(
                self.call_later, self.stop_from_signal, signum)

        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, on_signal)
        self.run()

    def stop_from_signal(self, signum: int) -> None:
        if not self.run_active or self._detached:  # a detached run goes on
            self.exit()
            return
        self._quitting = True
        self.action_stop()
        if signum != signal.SIGHUP:  # after a hang-up nobody can see a dialog
            self.push_screen(StoppingScreen())

    def on_unmount(self) -> None:
        # However the app ends, a running engine must not outlive it for long: it stops at
        # the end of its current step (the executor waits for that thread at shutdown). A
        # torchrun child is stopped as well; a detached one goes on.
        if self.training is not None:
            self.training.close()

    @property
    def watching(self) -> bool:
        """The run on show is watched: not the app's own, maybe not even this machine's."""
        return self.training is not None and self.training.read_only

    @property
    def run_active(self) -> bool:
        """A run of the app's own is going (a watched one is not the app's to stop)."""
        return self.run_phase.active and not self.watching

    @property
    def _detached(self) -> bool:
        return self.training is not None and self.training.detached

    @property
    def start_key(self) -> str:
        """The key that starts a run where the app is shown (see BINDINGS)."""
        return "F9" if self.is_web else "F5"

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.watch_only is not None and action in ("start", "on_form", "toggle_view"):
            return False
        if action in ("start", "on_form") and self.screen.is_modal:
            return False
        if action == "start" and self.screen.id == "runs":  # a list; its footer has no room
            return False
        if action == "start":
            return None if self.run_active else True
        if action == "stop":
            if self.run_phase == RunPhase.RUNNING and self.run_active:
                return True
            if self.watching:
                return False  # nothing of the app's to stop
            # Greyed out on the dashboard, where it belongs; hidden on the crowded form.
            return None if self.screen is self.dashboard_screen else False
        return True

    # -- the run --------------------------------------------------------------------------
    def action_start(self, detached: bool = False) -> None:
        """Start the form's run; the run folder may call for a question first (`StartFlow`).
        Detached: in a child process that outlives the app and the terminal."""
        if self.run_active:
            return
        self.configure_screen.validate(force=True)  # the machine may have changed since
        settings = self.configure_screen.current_settings()
        if settings is None:
            self.switch_mode("configure")
            self.notify("Fix the settings marked in red first.", title="Cannot start",
                        severity="warning")
            return
        self.start_flow.start(settings, detached=detached)

    def action_start_detached(self) -> None:
        self.action_start(detached=True)

    def begin_run(self, source: RunSource) -> None:
        """Show `source`'s run from its first event on the dashboard."""
        if self.training is not None:
            self.training.close()  # a folder being watched until now
        self.history.reset()
        self.training = source
        source.start(self)
        # A watched run's phase follows its folder's state (`_drain`); nothing is known yet.
        self.run_phase = RunPhase.IDLE if source.read_only else RunPhase.RUNNING
        watched = source.folder.path if isinstance(source, FolderSource) and source.read_only \
            else None
        self.dashboard_screen.show_watching(watched)
        self.sub_title = f"watching {watched} (read-only)" if watched else ""
        self._drain_timer.resume()
        self.switch_mode("dashboard")
        self.refresh_bindings()

    def watch_folder(self, folder: Path | None) -> None:
        """Follow the run in `folder` read-only (its history first, then live). Not while a run
        of the app's own goes on: the dashboard shows one run, and leaving one stops it."""
        if folder is None:
            return
        if self.run_active and not self._detached:
            own = self.training.path
            if folder.resolve() == own.resolve():
                self.switch_mode("dashboard")  # it is on show already
                return
            self.notify(f"The app's run in {own} is going, on the dashboard. Stop it first "
                        f"(F6), or follow {folder} from another terminal: "
                        f"minimind-tui watch {folder}", title="Cannot watch now",
                        severity="warning", markup=False)
            return
        self.begin_run(FolderSource(folder))
        if below := runs_below_text(folder):  # its runs lie one level down, or deeper
            self.notify(below, title="No run in this folder", severity="warning",
                        timeout=30, markup=False)

    def action_watch(self) -> None:
        default = str(self.configure_screen.form.raw_values().get("train.out_dir") or "")
        self.push_screen(WatchDialog(default), self.watch_folder)

    def action_export(self) -> None:
        """The export dialog, on the run being watched or the form's out_dir."""
        source = self.watch_only or self.configure_screen.form.raw_values().get("train.out_dir")
        self.push_screen(ExportScreen(str(source or "")))

    def action_runs(self) -> None:
        if not isinstance(self.screen, RunsScreen):
            self.push_screen(RunsScreen(self._runs_root()))

    def _runs_root(self) -> Path:
        """Where the runs live: the folder around the form's out_dir (out/ for out/tiny)."""
        if self.watch_only is not None:
            return self.watch_only.parent
        return runs_root(str(self.configure_screen.form.raw_values().get("train.out_dir") or ""))

    def action_stop(self) -> None:
        if self.training is None or self.run_phase != RunPhase.RUNNING or not self.run_active:
            return
        self.training.request_stop()
        self.apply_events([LogMessage(level="info", text="stop requested: finishing the "
                                      "current step and writing a checkpoint")])
        self.run_phase = RunPhase.STOPPING

    def _drain(self) -> None:
        source = self.training
        if source is None:
            return
        events = source.drain()
        if source.take_reset():  # the watched file started over: a new run in the folder
            self.history.reset()
        self.apply_events(events)
        if source.read_only and source.state:
            self.run_phase = RunPhase(source.state)

    def apply_events(self, events: list[Event | StepBlock]) -> None:
        """Feed engine events to the history the dashboard draws from (also used to replay
        a fixed event stream in snapshot tests and screenshots)."""
        self.history.apply(events)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        run = self.training
        if run is None or event.worker is not run.worker or not worker_ended(event):
            return
        if event.state == WorkerState.CANCELLED:  # only on shutdown: nobody left to tell
            return
        if run.read_only:  # a watch ends when it is closed, or when reading failed
            if event.state == WorkerState.ERROR:
                self.notify(str(event.worker.error), title="Stopped following the run",
                            severity="error", markup=False)
            return
        self._drain_timer.pause()
        self._drain()
        finished = run.outcome(self.history.summary.step)
        refused = run.refused(finished)
        if refused:  # the dashboard goes on showing what the folder holds (a resume's run)
            h = self.history
            self.run_phase = (RunPhase(h.finished.status) if h.finished
                              else RunPhase.CRASHED if h.latest else RunPhase.IDLE)
        else:
            if self.history.finished is None:  # the engine did not get to report its end
                self.apply_events([finished])
            self.run_phase = RunPhase(finished.status)
        if self._quitting:  # the code its process would give, and its end in words
            self.exit(f"{printable_path(str(run.path))}: {describe(finished)[0]}",
                      return_code=of_run(finished))
        elif finished.status == "failed":
            self.push_screen(RunFailedScreen(finished, refused=refused),
                             lambda _: self._back_to_form(finished.reason))
        else:
            self.notify(f"{finished.status} at step {finished.step:,}", title="Run ended")

    def _back_to_form(self, reason: str) -> None:
        self.switch_mode("configure")
        self.configure_screen.focus_problem(reason)

    # -- views, theme, quitting -----------------------------------------------------------
    def action_on_form(self, action: str) -> None:
        """Run one of the form's actions (presets, save, resume) from any screen."""
        self.switch_mode("configure")
        getattr(self.configure_screen, f"action_{action}")()

    def action_toggle_view(self) -> None:
        self.switch_mode("dashboard" if self.current_mode == "configure" else "configure")

    def open_playground(self, source: str = "", chat: bool = False) -> None:
        """Show the playground, on `source` when given (the dashboard's Try it), in turns when
        `chat` (an sft or lora run's model)."""
        if source:
            self.playground_screen.pending_source = source
            self.playground_screen.pending_chat = chat
        if self.screen is not self.playground_screen:
            self.push_screen(self.playground_screen)

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.current_theme.dark else "textual-dark"

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        for command in super().get_system_commands(screen):
            if command.callback == self.action_quit:  # Textual's says "as soon as possible"
                command = command._replace(help="Quit the app; while it trains a run, it asks "
                                                "first (a detached run goes on)")
            yield command

    async def action_quit(self) -> None:
        if self._quitting:
            return
        if self.run_active and self._detached:
            folder = printable_path(str(self.training.folder.path))
            self.exit(f"The detached run goes on in {folder}; watch it with: minimind-tui "
                      f"watch {folder}")
            return
        if not self.run_active:
            self.exit()
            return
        self.push_screen(ConfirmScreen(
            "Quit while training?",
            "A run is in progress. Stop it (the current step finishes and a checkpoint is "
            "written), then quit?", yes="Stop and quit"), self._quit_confirmed)

    def _quit_confirmed(self, confirmed: bool | None) -> None:
        if not confirmed:
            return
        if not self.run_active:  # it ended while the question was open
            self.exit()
            return
        self._quitting = True
        self.action_stop()
        self.push_screen(StoppingScreen())

