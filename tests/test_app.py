"""The dashboard driven headless: validation, presets, a real run, stop, quit and failure."""

from __future__ import annotations

import io
import re
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console
from textual.widgets import Button, Checkbox, Input, Select, SelectionList, Static, TextArea
from textual.worker import Worker, WorkerState

from minimind.data.sampler import plan_run
from minimind.events import CheckpointSaved, RunFinished, RunStarted, StepMetrics
from minimind.run_folder import RunFolder
from minimind.run_status import RunStatus
from minimind.settings import ModelSettings, TrainSettings
from minimind_tui.app import MiniMindApp
from minimind_tui.run.history import RunHistory, downsample_minmax
from minimind_tui.run.source import FolderSource
from minimind_tui.form.presets import load_settings
from minimind_tui.screens.confirm import ConfirmScreen
from minimind_tui.screens.resume import ResumeScreen
from minimind_tui.screens.run_failed import RunFailedScreen
from minimind_tui.screens.save_preset import SavePresetScreen
from minimind_tui.widgets.metric_plot import MetricPlot, nice_ticks
from minimind_tui.widgets.problems_panel import ProblemsPanel
from minimind_tui.widgets.readouts_panel import ReadoutsPanel
from minimind_tui.widgets.stats_panel import StatsPanel
from pilot_waits import wait_until

# These tests follow live CPU runs on the dashboard and wait for its lines and charts.
pytestmark = pytest.mark.usefixtures("gpu_run_redraw_rhythm")

SIZE = (120, 40)


def quick_overrides(tmp_path: Path, **train) -> dict:
    """Flags that shrink the tiny preset so a step takes a fraction of a second on two CPU
    cores and nothing is tokenized up front (no packing). max_steps is large so a test can stop
    the run mid-way on any machine."""
    base = {"out_dir": str(tmp_path / "run"), "max_steps": 2000, "log_interval": 2,
            "save_interval": 0, "eval_interval": 0, "val_data_path": "", "dtype": "float32",
            "batch_size": 4, "max_seq_len": 64, "packing": False}
    return {"train": {**base, **train}}


def quick_settings(tmp_path: Path, **train):
    return load_settings("tiny", quick_overrides(tmp_path, **train))


def quick_app(tmp_path: Path, **train) -> MiniMindApp:
    """The app as `minimind-tui --preset tiny <quick flags>` opens it."""
    return MiniMindApp("tiny", quick_overrides(tmp_path, **train))


def engine_threads() -> list[int]:
    """Threads currently executing the engine's code (a finished run leaves none)."""
    return [tid for tid, frame in sys._current_frames().items()
            if any("minimind/engine.py" in f.f_code.co_filename
                   for f in _stack(frame))]


def _stack(frame):
    while frame is not None:
        yield frame
        frame = frame.f_back


def error_text(app: MiniMindApp, name: str) -> str:
    return str(app.screen.query_one(f"#field-{name} .field-error", Static).render())


async def type_into(pilot, name: str, text: str) -> None:
    field = pilot.app.screen.query_one(f"#{name}", Input)
    field.focus()
    field.clear()
    await pilot.press(*text)
    await pilot.pause()


async def set_value(pilot, name: str, text: str) -> None:
    """Like pasting: one change instead of one per character (long paths)."""
    pilot.app.screen.query_one(f"#{name}", Input).value = text
    await pilot.pause()


# -- configure screen --------------------------------------------------------------------------
async def test_cli_flags_without_a_preset_fill_the_form():
    """`minimind-tui --learning_rate 5e-4`: the default preset with the flag laid over it."""
    assert load_settings("tiny").train.learning_rate != 5e-4
    app = MiniMindApp(None, {"train": {"learning_rate": "5e-4"}})
    async with app.run_test(size=SIZE):
        assert float(app.screen.query_one("#learning_rate", Input).value) == 5e-4
        assert app.screen.query_one("#field-learning_rate").has_class("-changed")
        assert app.screen.query_one("#preset-select", Select).value == "tiny"


async def test_invalid_value_shows_inline_error_and_disables_start(tmp_path):
    app = quick_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        # The form is generated from the settings models: every field has its control.
        for name in [*ModelSettings.model_fields, *TrainSettings.model_fields]:
            app.screen.query_one(f"#{name}")
        assert isinstance(app.screen.query_one("#qk_norm"), Select)  # bool | None: tri-state
        start = app.screen.query_one("#start-button", Button)
        assert not start.disabled
        await type_into(pilot, "batch_size", "0")
        assert "must be ≥ 1" in error_text(app, "batch_size")
        assert app.screen.query_one("#field-batch_size").has_class("-invalid")
        assert start.disabled
        await pilot.press("f5")  # refused: the run must not start with invalid settings
        assert app.training is None
        await pilot.press("backspace", "8")
        await pilot.pause()
        assert error_text(app, "batch_size") == ""
        assert not start.disabled


async def test_an_auto_fields_value_is_not_shown_while_the_model_is_invalid(tmp_path):
    """intermediate_size kept showing "auto (384)", worked out from the last valid
    hidden_size, while hidden_size held a value that makes no model."""
    app = quick_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        auto = app.screen.query_one("#intermediate_size", Input)
        await wait_until(pilot, lambda: auto.placeholder.startswith("auto ("))
        await type_into(pilot, "hidden_size", "100")  # not a multiple of the heads
        await wait_until(pilot, lambda: error_text(app, "hidden_size") != "")
        assert auto.placeholder == "auto"
        await type_into(pilot, "hidden_size", "256")
        await wait_until(pilot, lambda: auto.placeholder == "auto (704)")


async def test_tab_restyles_two_fields_and_the_form_border_follows_the_focus(tmp_path,
                                                                           monkeypatch):
    """A Tab restyles the field left and the field reached, not the form's ~400 widgets
    (about 0.4 s of CPU a Tab on two cores with a `:focus-within` rule on the form), and
    the focus leaving or entering the form restyles its border alone."""
    app = quick_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        form = app.screen.query_one("#settings-form")
        assert form.has_class("-focus-within") and len(list(form.walk_children())) > 300
        restyled: list[int] = []
        update_nodes = app.stylesheet.update_nodes

        def counted(nodes, animate=False):
            nodes = list(nodes)
            restyled.append(len(nodes))
            update_nodes(nodes, animate=animate)

        monkeypatch.setattr(app.stylesheet, "update_nodes", counted)
        for _ in range(3):
            await pilot.press("tab")
            await pilot.pause()
        assert restyled and max(restyled) < 40, restyled
        focused_border = form.styles.border_top
        # Leaving the form and coming back restyle the form alone, not its fields (a class
        # change restyles every descendant: 0.5 s at each start and change of view).
        restyled.clear()
        app.screen.query_one("#start-button", Button).focus()
        await pilot.pause()
        assert not form.has_class("-focus-within") and form.styles.border_top != focused_border
        app.screen.query_one("#batch_size").focus()
        await pilot.pause()
        assert form.has_class("-focus-within") and form.styles.border_top == focused_border
        assert max(restyled) < 40, restyled


async def test_a_wide_forms_row_shrinks_back_when_its_help_stops_wrapping(tmp_path):
    """Wide, the focused field's help wraps under itself; the first field, focused as the app
    starts, kept its three lines after Tab (a change of text-wrap repaints, lays nothing out),
    leaving two blank rows under `family`."""
    app = quick_app(tmp_path)
    async with app.run_test(size=(150, 40)) as pilot:
        await pilot.pause()
        family = app.screen.query_one("#field-family")
        assert app.focused.id == "family" and family.region.height > 1
        await pilot.press("tab")
        await pilot.pause()
        assert app.focused.id != "family" and family.region.height == 1
        # ...and the field reached grows to show its whole help (it showed one line of it).
        heads = app.screen.query_one("#field-num_key_value_heads")
        assert heads.region.height == 1
        heads.query_one("#num_key_value_heads").focus()
        await pilot.pause()
        assert heads.region.height > 1


async def test_every_sample_prompt_is_in_sight(tmp_path):
    """tiny-sft's first prompt is wider than the box: the box showed it cut, then a scrollbar
    over the second one, which nothing said was there. Each item is a numbered line, a long
    one wrapped under its number."""
    app = MiniMindApp("tiny-sft", {"train": {"out_dir": str(tmp_path / "run")}})
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        box = app.screen.query_one("#sample_prompts", TextArea)
        assert box.document.line_count == 2 and box.show_line_numbers
        assert box.wrapped_document.height > 2  # the first prompt wraps...
        assert box.region.height == box.wrapped_document.height  # ...and all of it shows


@pytest.mark.parametrize("size, width_class", [(SIZE, "-narrow"), ((150, 40), "-wide")])
async def test_the_form_is_styled_once_as_the_app_starts(tmp_path, monkeypatch, size,
                                                        width_class):
    """Textual styles every widget of a screen as it mounts, again each time the screen is
    shown, and again when its size classes change: switching to the form on mount, its first
    showing and its first resize (which gave it its width's class) each styled all ~400,
    1.2 s of CPU in every start (and in each of the suite's ~150). The form now composes
    with its width's class, and its first showing keeps the styles its mount gave
    (`StyledOnce`): the widgets are styled once, as they mount, and never as a whole screen."""
    app = quick_app(tmp_path)
    whole_screens: list[int] = []
    update_nodes = app.stylesheet.update_nodes

    def counted(nodes, animate=False):
        nodes = list(nodes)
        if len(nodes) > 300:
            whole_screens.append(len(nodes))
        update_nodes(nodes, animate=animate)

    monkeypatch.setattr(app.stylesheet, "update_nodes", counted)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        assert app.current_mode == "configure" and app.screen.has_class(width_class)
        assert whole_screens == []


async def test_cross_field_problem_is_listed_in_the_summary(tmp_path):
    app = quick_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await type_into(pilot, "num_attention_heads", "8")
        await type_into(pilot, "num_key_value_heads", "3")
        summary = str(app.screen.query_one(ProblemsPanel).render())
        assert "num_key_value_heads (3) must divide num_attention_heads (8)" in summary
        assert "must divide" in error_text(app, "num_key_value_heads")
        assert app.screen.query_one("#start-button", Button).disabled


async def test_missing_data_file_is_reported_beside_the_field(tmp_path):
    app = quick_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await set_value(pilot, "data_path", str(tmp_path / "nope.jsonl"))
        assert error_text(app, "data_path") == \
            f"{tmp_path / 'nope.jsonl'}: no such file or folder"
        assert app.screen.query_one("#start-button", Button).disabled
        await set_value(pilot, "data_path", "builtin:nope")
        assert "unknown built-in" in error_text(app, "data_path")
        await set_value(pilot, "data_path", "builtin:shakespeare")
        assert error_text(app, "data_path") == ""
        # A tokenizer with more ids than the embedding has rows: said here, not after Start.
        await set_value(pilot, "vocab_size", "120")
        assert error_text(app, "vocab_size") == \
            "(120) is smaller than the tokenizer's vocabulary (6400)"
        assert app.screen.query_one("#start-button", Button).disabled


async def test_loading_a_preset_replaces_the_form_and_marks_changes(tmp_path):
    app = quick_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        assert app.screen.query_one("#field-batch_size").has_class("-changed")  # 4 vs tiny's 16
        assert not app.screen.query_one("#field-hidden_size").has_class("-changed")
        app.screen.query_one("#preset-select", Select).value = "minimind3"
        await pilot.pause()
        assert app.screen.query_one("#hidden_size", Input).value == "768"
        assert app.screen.query_one("#family", Select).value == "minimind3"
        # The marks follow the new baseline on the screen's next refresh (one pause was not
        # always enough on a loaded machine).
        await wait_until(pilot, lambda: not app.screen.query_one("#field-batch_size")
                         .has_class("-changed"), timeout=10)
        await type_into(pilot, "hidden_size", "512")
        assert app.screen.query_one("#field-hidden_size").has_class("-changed")


async def test_choosing_the_preset_already_shown_resets_the_form(tmp_path):
    """Ctrl+L then the same preset did nothing (the list posts no change for its own value),
    though the binding says choosing one replaces the form; Escape keeps the edits."""
    app = quick_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        select = app.screen.query_one("#preset-select", Select)
        await type_into(pilot, "batch_size", "7")
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: select.expanded)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not select.expanded)
        assert (select.value, app.screen.query_one("#batch_size", Input).value) == ("tiny", "7")
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: select.expanded)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen.query_one("#batch_size", Input).value == "16")
        assert select.value == "tiny" and not select.expanded
        assert not app.screen.query_one("#field-batch_size").has_class("-changed")


async def test_save_as_preset_round_trips(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMIND_TUI_PRESETS", str(tmp_path / "presets"))
    settings = quick_settings(tmp_path)
    app = quick_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+s")
        await pilot.press(*"mine", "enter")
        await pilot.pause()
        assert (tmp_path / "presets" / "mine.toml").is_file()
        assert load_settings("mine") == settings
        assert app.screen.query_one("#preset-select", Select).value == "mine"


async def test_a_preset_saves_what_only_this_machine_or_folder_refuses(tmp_path, monkeypatch):
    """A preset is a template: data absent here (the bundled presets name upstream's) and a
    from_resume with no run to resume (a field a preset leaves out) stop a start, not a save;
    an invalid setting still stops both."""
    monkeypatch.setenv("MINIMIND_TUI_PRESETS", str(tmp_path / "presets"))
    app = quick_app(tmp_path, data_path=str(tmp_path / "not-here.jsonl"), from_resume=True)
    async with app.run_test(size=SIZE) as pilot:
        problems = {p.loc for p in app.screen.problems}
        assert {"train.data_path", "train.from_resume"} <= problems, problems
        await pilot.press("ctrl+s", *"mine", "enter")
        await pilot.pause()
        saved = load_settings(str(tmp_path / "presets" / "mine.toml"))
        assert saved.train.data_path == str(tmp_path / "not-here.jsonl")
        app.screen.query_one("#batch_size", Input).value = "0"
        await wait_until(pilot, lambda: "train.batch_size" in {
            p.loc for p in app.screen.problems})
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert not isinstance(app.screen, SavePresetScreen)
        assert [n.message for n in app._notifications][-1] == \
            "Fix the settings marked in red first."


async def test_a_preset_saved_as_out_loads_back_beside_the_out_folder(tmp_path, monkeypatch):
    # The app creates out/ where it is launched; picking the preset named out is not that folder.
    monkeypatch.setenv("MINIMIND_TUI_PRESETS", str(tmp_path / "presets"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    app = quick_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+s", *"out", "enter")
        await pilot.pause()
        select = app.screen.query_one("#preset-select", Select)
        select.value = "tiny"
        await pilot.pause()
        assert app.screen.query_one("#batch_size", Input).value == "16"
        select.value = "out"
        await pilot.pause()
        assert select.value == "out"
        assert app.screen.query_one("#batch_size", Input).value == "4"  # the saved form's


async def test_resume_loads_the_run_folder(tmp_path):
    folder = tmp_path / "old-run"
    folder.mkdir()
    quick_settings(tmp_path, batch_size=6).save_toml(folder / "config.toml")
    (folder / "pretrain_128_resume.pth").write_bytes(b"")
    app = quick_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+o")
        field = app.screen.query_one("#run-folder", Input)
        field.value = str(tmp_path)  # not a run folder: refused with a reason
        await pilot.pause()
        assert app.screen.query_one("#load", Button).disabled
        field.value = str(folder)
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen.query_one("#batch_size", Input).value == "6"
        assert app.screen.query_one("#out_dir", Input).value == str(folder)
        assert app.screen.query_one("#from_resume").value is True


async def test_resume_key_on_the_dashboard_opens_the_dialog_on_the_form(tmp_path):
    app = quick_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f2")
        assert app.current_mode == "dashboard"
        await pilot.press("ctrl+o")
        assert app.current_mode == "configure"
        assert isinstance(app.screen, ResumeScreen)
        assert app.screen.query_one("#run-folder", Input).value == str(tmp_path / "run")


def dialog_title(app: MiniMindApp) -> str:
    return str(app.screen.query_one(".dialog").border_title)


async def test_saving_over_a_taken_name_asks_first(tmp_path, monkeypatch):
    presets = tmp_path / "presets"
    monkeypatch.setenv("MINIMIND_TUI_PRESETS", str(presets))
    presets.mkdir()
    (presets / "mine.toml").write_text("[model]\n")
    app = quick_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+s", *"mine", "enter")
        assert isinstance(app.screen, ConfirmScreen)
        assert dialog_title(app) == "Replace preset mine?"
        await pilot.press("n")  # back to the name, nothing written
        assert isinstance(app.screen, SavePresetScreen)
        assert (presets / "mine.toml").read_text() == "[model]\n"
        await pilot.press("enter", "y")
        await pilot.pause()
        assert load_settings("mine") == quick_settings(tmp_path)

        await pilot.press("ctrl+s", *"tiny", "enter")
        assert "bundled" in dialog_title(app)
        await pilot.press("y")
        await pilot.pause()
        assert (presets / "tiny.toml").is_file()
        # The picker lists the bundled presets by size, then the user's, marked as theirs.
        select = app.screen.query_one("#preset-select", Select)
        labels = [str(o.prompt) for o in select.query_one("SelectOverlay").options]
        assert labels[:2] == ["custom", "tiny-sft"]  # tiny is hidden by the user's
        assert labels[-2:] == ["mine (yours)", "tiny (yours)"]
        assert select.value == "tiny"


def stats_text(app: MiniMindApp) -> str:
    """The Run panel's table as plain text, each run of spaces as one."""
    console = Console(width=80, file=io.StringIO())
    console.print(app.dashboard_screen.query_one("#stats-table", Static).content)
    return " ".join(console.file.getvalue().split())


def eta_seconds(text: str) -> int:
    *hours, minutes, seconds = re.search(r"ETA\s+≈ ([\d:]+)", text).group(1).split(":")
    return int(hours[0] if hours else 0) * 3600 + int(minutes) * 60 + int(seconds)


def readouts(app: MiniMindApp) -> str:
    console = Console(width=60, file=io.StringIO())
    console.print(app.screen.query_one(ReadoutsPanel).content)
    return console.file.getvalue()


async def test_readouts_show_what_the_valid_settings_allow():
    """minimind2-small's data is not here: the model's figures show, the data's say why not."""
    app = MiniMindApp("minimind2-small")
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "no such file or folder" in error_text(app, "data_path")
        text = readouts(app)
        assert "25.83M" in text and "minimind2 layout, at this size" in text
        assert "131,072" in text and "GiB" in text  # tokens/step, memory
        assert "fix data_path first" in text and "total steps" not in text
        await type_into(pilot, "batch_size", "0")
        text = readouts(app)
        assert "25.83M" in text and "131,072" not in text
        assert text.count("fix batch_size first") == 3  # tokens/step, steps/epoch, memory
        await type_into(pilot, "hidden_size", "0")
        assert "25.83M" not in readouts(app) and "fix hidden_size first" in readouts(app)


async def test_a_number_typed_with_a_stray_key_is_refused_not_altered(tmp_path):
    """Textual's number inputs dropped the keys they refuse: a European "1,5" became 15, "1.0"
    in a whole-number field 10, each valid and ten times what was meant, without a word."""
    app = quick_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await type_into(pilot, "learning_rate", "1,5")
        assert app.screen.query_one("#learning_rate", Input).value == "1,5"
        assert error_text(app, "learning_rate")
        assert app.screen.query_one("#start-button", Button).disabled
        await type_into(pilot, "max_steps", "1.0")  # read as what it says
        assert app.screen.query_one("#max_steps", Input).value == "1.0"
        assert not error_text(app, "max_steps")


async def test_boxes_say_ticked_or_not_in_text(tmp_path):
    """Textual draws ▐X▌ for a box either way and tells them apart by colour only: report_to
    read as four trackers on, the export dialog's --overwrite as on while it was off."""
    from minimind_tui.screens.export import ExportScreen

    app = quick_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        trackers = app.screen.query_one("#report_to", SelectionList)
        trackers.select("wandb")
        await pilot.pause()
        boxes = [trackers.render_line(y).text[:3] for y in range(trackers.option_count)]
        assert boxes == ["▐ ▌", "▐X▌", "▐ ▌", "▐ ▌"], boxes
        app.action_export()
        await pilot.pause()
        assert isinstance(app.screen, ExportScreen)
        overwrite = app.screen.query_one("#export-overwrite", Checkbox)
        assert str(overwrite.render()).startswith("▐ ▌")
        overwrite.value = True
        assert str(overwrite.render()).startswith("▐X▌")


# -- runs --------------------------------------------------------------------------------------
async def test_run_starts_plots_and_stops_with_a_checkpoint(tmp_path):
    app = quick_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5")
        assert app.current_mode == "dashboard"
        loss_plot = app.screen.query_one("#loss-plot", MetricPlot)
        # The key appears in the border with the first points, leaving the curve's start free.
        await wait_until(pilot, lambda: "━ ema" in str(loss_plot.border_title))
        assert "ema" not in loss_plot.render().plain
        assert app.screen.query_one("#run-progress").progress >= 2
        await pilot.press("f6")
        assert app.run_phase in ("stopping", "stopped")
        await wait_until(pilot, lambda: app.run_phase not in ("running", "stopping"))
        finished = app.history.finished
        assert finished is not None and finished.status == "stopped"
        assert app.history.checkpoint is not None
        assert app.history.checkpoint.step == finished.step
        assert list((tmp_path / "run").glob("*_resume.pth"))
        await pilot.pause(0.3)
        log = "\n".join(line.text for line in app.screen.query_one("#run-log").lines)
        assert "[checkpoint] step" in log and "[stopped]" in log
    assert app.training.worker.is_finished
    assert not engine_threads()


async def test_quitting_mid_run_asks_then_stops_the_worker(tmp_path):
    app = quick_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        app.action_start()  # F5 is covered above; a key press waits for an idle CPU
        await wait_until(pilot, lambda: len(app.history.steps) >= 1)
        await pilot.press("ctrl+q")
        assert isinstance(app.screen, ConfirmScreen)
        assert app.run_phase == "running"  # nothing happens before the answer
        await pilot.press("y")
        await wait_until(pilot, lambda: app.training.worker.is_finished)
        await pilot.pause(0.2)
    # The code and the last line its process gives (`of_run`): only a completed run is a
    # success, whoever stopped it (it exited 0, so `&& export` went on from a stopped run).
    assert app.history.finished is not None and app.history.finished.status == "stopped"
    assert app.return_code == 130
    assert app.return_value.startswith(f"{tmp_path / 'run'}: [stopped] at step "), \
        app.return_value
    assert not engine_threads()


async def test_failed_run_shows_the_error_and_the_form_is_usable(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "fine"}\n{"text": "also fine"}\n{"text": oops}\n')
    app = quick_app(tmp_path, data_path=str(data), packing=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5")
        await wait_until(pilot, lambda: isinstance(app.screen, RunFailedScreen))
        reason = str(app.screen.query_one("#failed-reason", Static).render())
        assert f"{data}:3" in reason and "not valid JSON" in reason
        # A worker that fails at once has ended when its RUNNING message arrives, as under
        # load: that message must not show the end again (a second dialog waited beneath).
        app.post_message(Worker.StateChanged(app.training.worker, WorkerState.RUNNING))
        await pilot.pause()
        assert [type(s) for s in app.screen_stack].count(RunFailedScreen) == 1
        await pilot.press("enter")
        await pilot.pause()
        assert app.current_mode == "configure"
        assert app.focused is app.screen.query_one("#data_path", Input)
        assert app.screen.query_one("#data_path", Input).value == str(data)
        data.write_text('{"text": "fine"}\n' * 50)
        assert not app.screen.query_one("#start-button", Button).disabled


# -- history and plots -------------------------------------------------------------------------
def test_spaces_around_a_text_change_no_field():
    """A space typed into the empty tokenizer_path marked the field changed, while it still
    meant the bundled tokenizer (the settings strip it)."""
    from minimind_tui.form.schema import field_specs

    spec = next(s for s in field_specs() if s.name == "tokenizer_path")
    assert not spec.differs(" ", "") and not spec.differs(" model/ ", "model/")
    assert spec.differs("model/", "") and spec.differs(" |", "")


def test_downsampling_keeps_extrema_and_bounds_the_length():
    n = 100_000
    xs = list(range(n))
    ys = [((i * 7919) % 1000) / 10 for i in range(n)]
    ys[12_345], ys[67_890] = -50.0, 500.0
    out_x, out_y = downsample_minmax(xs, ys, 400)
    assert len(out_x) == len(out_y) <= 400
    assert min(out_y) == -50.0 and max(out_y) == 500.0
    assert out_x == sorted(out_x)
    assert downsample_minmax(xs[:10], ys[:10], 400) == (xs[:10], ys[:10])


async def test_the_forms_eta_takes_the_last_runs_average_rate_for_the_same_model_only(
        tmp_path):
    """The ETA used the last log interval's rate (~1.6x the run's average), kept a rate from
    before the run ended, and applied it to a model eight times larger."""
    app = quick_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f8")  # the data inspected: tokens per epoch, which the ETA needs
        await app.workers.wait_for_complete()
        await pilot.pause(0.5)
        await pilot.press("escape")
        await wait_until(pilot, lambda: "tokens/epoch" in readouts(app))
        assert "ETA" not in readouts(app)  # no run yet
        ran = quick_settings(tmp_path).model_dump(mode="json")
        app.apply_events([  # a run ends (as the app's own would)
            replace(_started(0), settings=ran),
            replace(_step(10), tokens_per_sec=9_999.0, tokens_seen=50_000, elapsed=10.0),
            # its last save and evaluation took 2.5 s more: the run's rate is over 12.5 s
            RunFinished(status="completed", step=10, tokens_seen=50_000, elapsed=12.5)])
        await pilot.press("f2", "f2")  # to the dashboard and back: the readouts follow it
        await wait_until(pilot, lambda: "ETA" in readouts(app))
        assert "at the last run's 4.00k tokens/s" in " ".join(readouts(app).split())
        # The same run watched (F4, w): another machine's speed, maybe a GPU's, gave this CPU
        # an ETA orders of magnitude short.
        app.training = FolderSource(tmp_path / "elsewhere")
        app.configure_screen.validate(force=True)
        await wait_until(pilot, lambda: "ETA" not in readouts(app))
        app.training = None
        app.configure_screen.validate(force=True)
        await wait_until(pilot, lambda: "ETA" in readouts(app))
        # A resume trains the steps after its checkpoint only (it timed the whole plan).
        whole = eta_seconds(readouts(app))
        total = int(re.search(r"total steps\s+([\d,]+)", readouts(app)).group(1).replace(",", ""))
        RunFolder(tmp_path / "run").write_status(RunStatus(state="stopped", step=300,
                                                           checkpoint_step=300))
        app.configure_screen.set_fields({"train.from_resume": True})
        await wait_until(pilot, lambda: "from step 300" in " ".join(readouts(app).split()))
        assert eta_seconds(readouts(app)) == pytest.approx(whole * (total - 300) / total, abs=1)
        app.configure_screen.set_fields({"train.from_resume": False})
        await wait_until(pilot, lambda: "from step" not in readouts(app))
        await type_into(pilot, "hidden_size", "256")
        await wait_until(pilot, lambda: "parameters" in readouts(app)
                         and "1.21M" not in readouts(app))  # the larger model's count
        assert "ETA" not in readouts(app)
        await type_into(pilot, "hidden_size", "128")
        await wait_until(pilot, lambda: "ETA" in readouts(app))
        app.configure_screen.set_fields({"train.grad_checkpointing": True})  # recomputes
        await wait_until(pilot, lambda: "ETA" not in readouts(app))
        app.configure_screen.set_fields({"train.grad_checkpointing": False})
        await wait_until(pilot, lambda: "ETA" in readouts(app))
        # Two processes: another speed, and each trains on half the data (the form said the
        # one process's steps/epoch and tokens/step, while the run took half and twice those).
        await wait_until(pilot, lambda: "documents (inspected)" in readouts(app))
        basis = re.search(r"([\d,]+) documents \(inspected\)", readouts(app))
        documents = int(basis.group(1).replace(",", ""))
        app.configure_screen.set_fields({"train.nproc_per_node": 2})
        await wait_until(pilot, lambda: "ETA" not in readouts(app))
        text = " ".join(readouts(app).split())
        t = quick_settings(tmp_path).train
        plan = plan_run(documents, t.batch_size, t.accumulation_steps, 1, 0, 2)
        assert f"steps/epoch {plan.steps_per_epoch:,} " in text
        assert (f"positions/step {2 * t.batch_size * t.max_seq_len * t.accumulation_steps:,} "
                f"({t.batch_size}×{t.max_seq_len}×{t.accumulation_steps}×2 processes)") in text
        assert re.search(r"train memory ≈ [\d.]+ \w+ per process", text)


def test_history_tracks_series_and_smoothing():
    h = RunHistory()
    for step in (1, 2, 3):
        h.apply([StepMetrics(step=step, total_steps=3, epoch=1, epochs=1, epoch_step=step,
                             steps_per_epoch=3, loss=4.0, logits_loss=4.0, aux_loss=0.0,
                             lr=1e-3, grad_norm=1.0, tokens_per_sec=1.0, tokens_seen=step * 10,
                             elapsed=step, eta_seconds=0, step_time=1.0)])
    h.apply([CheckpointSaved(step=3, weights_path="w.pth", resume_path="r.pth"),
             RunFinished(status="completed", step=3)])
    assert list(h.steps) == [1, 2, 3] and list(h.tokens) == [10, 20, 30]
    assert list(h.loss_ema) == pytest.approx([4.0, 4.0, 4.0])  # debiased: no pull towards zero
    assert h.checkpoint.step == 3 and h.finished.status == "completed"
    assert [seq for seq, _ in h.log_since(3)] == [4, 5]


def _step(step: int, loss: float = 4.0) -> StepMetrics:
    return StepMetrics(step=step, total_steps=10**6, epoch=1, epochs=1, epoch_step=step,
                       steps_per_epoch=10**6, loss=loss, logits_loss=loss, aux_loss=0.0, lr=1e-3,
                       grad_norm=1.0, tokens_per_sec=1.0, tokens_seen=step * 10, elapsed=step,
                       eta_seconds=0, step_time=1.0)


def _started(start_step: int) -> RunStarted:
    return RunStarted(settings={"model": {}}, parameters=1, active_parameters=1, device="cpu",
                      device_name="cpu", world_size=1, tokens_per_step=10, steps_per_epoch=10**6,
                      total_steps=10**6, start_step=start_step, flops_per_token=1.0,
                      peak_flops=None, out_dir="x")


def test_a_resumed_run_keeps_its_history_and_marks_the_segment():
    h = RunHistory()
    h.apply([_started(0), *[_step(s) for s in range(1, 8)],  # crashed after step 7...
             _started(5), *[_step(s, 3.0) for s in range(6, 10)]])  # ...resumed from step 5
    assert list(h.steps) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert list(h.loss) == [4.0] * 5 + [3.0] * 4  # the lost steps 6-7 were trained again
    assert h.resumed_at == [5]
    h.apply([_started(0), _step(1)])  # the folder replaced by a new run: start over
    assert list(h.steps) == [1] and h.resumed_at == []


def test_history_memory_is_bounded(monkeypatch):
    from minimind_tui.run import history

    monkeypatch.setattr(history, "MAX_POINTS", 1000)
    h = RunHistory()
    h.apply([_step(s, loss=1.0 if s != 777 else 9.0) for s in range(1, 5001)])
    assert len(h.steps) <= 1000 and h.steps[-1] == 5000
    assert max(h.loss) == 9.0  # a spike survives the halvings
    assert list(h.steps) == sorted(h.steps)


def test_downsampling_keeps_the_newest_point():
    xs, ys = list(range(100_001)), [1.0] * 100_001
    out_x, out_y = downsample_minmax(xs, ys, 300)
    assert out_x[0] == 0 and out_x[-1] == 100_000 and len(out_x) <= 300


def test_nice_ticks_are_round():
    assert nice_ticks(1, 200) == [50, 100, 150, 200]
    assert nice_ticks(2048, 409_600) == [100_000, 200_000, 300_000, 400_000]


async def test_palette_loads_presets_and_toggles_the_theme(tmp_path):
    app = quick_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p", *"load minimind3")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen.query_one("#hidden_size", Input).value == "768"
        dark = app.current_theme.dark
        await pilot.press("f3")
        assert app.current_theme.dark is not dark
        await pilot.press("f2")
        assert app.current_mode == "dashboard"
        assert str(app.screen.query_one("#stats-status", Static).render()) == "No run yet"
        # Quit asks first while a run trains: its entry does not promise "as soon as possible".
        [quit_entry] = [c for c in app.get_system_commands(app.screen) if c.title == "Quit"]
        assert quit_entry.help.startswith("Quit the app; while it trains a run, it asks first")


async def test_short_dashboard_says_where_the_lr_chart_went(tmp_path):
    app = quick_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f2")
        loss = app.screen.query_one("#loss-plot")
        assert not app.screen.query_one("#lower-charts").display
        assert loss.border_subtitle == "LR chart needs ≥ 32 rows"
        await pilot.resize_terminal(80, 32)
        await pilot.pause()
        assert app.screen.query_one("#lower-charts").display
        assert not loss.border_subtitle


async def test_the_log_keeps_its_newest_lines_in_view_through_a_resize():
    """At 80x24 the log shows fewer rows: it kept its old place, the end ([completed]
    among the lines there) out of view, until the next write, or for good once the run ended."""
    from snapshot_apps.replay import fixed_events

    from minimind_tui.widgets.run_log import RunLog

    app = MiniMindApp("tiny", {})
    async with app.run_test(size=SIZE) as pilot:
        app.switch_mode("dashboard")
        await pilot.pause()
        app.apply_events(fixed_events(60))
        app.dashboard_screen.sync(charts_now=True)
        await pilot.pause()
        log = app.screen.query_one(RunLog)
        assert log.max_scroll_y > 0 and log.is_vertical_scroll_end
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        await pilot.pause()
        assert log.scroll_y == log.max_scroll_y > 0


@pytest.mark.parametrize("device, every", [("cpu", 10.0), ("cuda:0", 3.0)])
async def test_charts_and_log_redraw_less_often_while_the_cpu_trains(device, every, monkeypatch):
    """On the CPU the UI's redraws take cores from training: charts and log every 10 s, not 3."""
    import dataclasses
    from types import SimpleNamespace

    from snapshot_apps.replay import fixed_events

    from minimind_tui.screens import dashboard

    monkeypatch.setattr(dashboard, "CHARTS_SECONDS_CPU_RUN", 10.0)  # undo this module's rhythm
    events = fixed_events(40)
    events[1] = dataclasses.replace(events[1], device=device)
    app = MiniMindApp("tiny", {})
    async with app.run_test(size=SIZE) as pilot:
        app.switch_mode("dashboard")
        await pilot.pause()
        clock = SimpleNamespace(now=1000.0)
        monkeypatch.setattr(dashboard, "time", SimpleNamespace(monotonic=lambda: clock.now))
        screen = app.dashboard_screen
        log = screen.query_one("#run-log")
        app.apply_events(events[:20])
        screen.sync(charts_now=True)
        await pilot.pause(0.2)
        drawn, shown = len(log.lines), app.history.latest.step
        assert drawn > 0
        app.apply_events(events[20:])
        for elapsed in (1.0, 2.0, every - 0.5):  # not yet due: the panel stays with the chart
            clock.now = 1000.0 + elapsed
            screen.sync()
            await pilot.pause(0.05)
            assert len(log.lines) == drawn
            assert screen.query_one("#run-progress").progress == shown
            assert f"{shown}/300" in stats_text(app)
        clock.now = 1000.0 + every
        screen.sync()
        await pilot.pause(0.2)
        assert len(log.lines) > drawn  # log, chart and numbers move on together
        assert screen.query_one("#run-progress").progress == 40
        assert "40/300" in stats_text(app)
        assert "Epoch:[1/1](40/699)" in "".join(line.text for line in log.lines[-3:])


async def test_elapsed_never_counts_the_idle_time_before_a_resume_or_a_failed_start():
    """A completed run resumed 33 s later with nothing left to train (1 s of evaluation), then
    a start that fails before it begins, 200 s after that: elapsed is the run's training time
    (it once counted both pauses)."""
    import dataclasses

    from snapshot_apps.replay import STEP_TIME, fixed_events

    events = [dataclasses.replace(e, time=1000.0) for e in fixed_events(20)]
    run_time = 20 * STEP_TIME
    app = MiniMindApp("tiny", {})
    async with app.run_test(size=SIZE) as pilot:
        app.switch_mode("dashboard")
        app.apply_events(events + [RunFinished(status="completed", step=20, time=1002.0)])
        first = next(e for e in events if isinstance(e, RunStarted))  # resumed at step 20
        resumed = dataclasses.replace(first, start_step=20, elapsed=run_time + 2, time=1035.0)
        app.apply_events([resumed, RunFinished(status="completed", step=20, time=1036.0)])
        app.run_phase = "completed"
        await pilot.pause(0.2)
        assert f"elapsed 0:{int(run_time + 3):02d}" in stats_text(app)
        app.apply_events([RunFinished(status="failed", step=20, time=1236.0,
                                      reason="train.data_path: no such file")])
        app.run_phase = "failed"
        await pilot.pause(0.2)
        assert f"elapsed 0:{int(run_time + 3):02d}" in stats_text(app)


async def test_the_step_row_says_what_happened_before_any_step_was_logged():
    """No "press F5" under "Failed at step 0" or "Preparing…": a start that failed trained
    none, a run stopped before its first log trained that many steps, with their tokens."""
    app = MiniMindApp("tiny", {})
    async with app.run_test(size=SIZE) as pilot:
        app.switch_mode("dashboard")
        await pilot.pause()
        panel = app.dashboard_screen.query_one(StatsPanel)
        panel.show(app.history, "Preparing data and model…", running=True)
        assert "waiting for the first logged step" in stats_text(app)
        app.apply_events([RunFinished(status="failed", step=0, reason="bad data")])
        panel.show(app.history, "Failed at step 0")
        assert "none trained" in stats_text(app) and "press" not in stats_text(app)
        app.history.reset()
        from snapshot_apps.replay import fixed_events

        # A real run's start (its settings, which the dashboard's other panels read).
        started = next(e for e in fixed_events(1) if isinstance(e, RunStarted))
        app.apply_events([started, RunFinished(status="stopped", step=1)])
        panel.show(app.history, "Stopped at step 1")
        await pilot.pause()
        assert "1 trained, none logged" in stats_text(app)
        assert app.history.summary.tokens_seen == started.tokens_per_step  # one step's


async def dashboard_after(app: MiniMindApp, pilot, events: list) -> StatsPanel:
    """The dashboard shown, with `events` applied: its run panel."""
    app.switch_mode("dashboard")
    await pilot.pause()
    app.apply_events(events)
    return app.dashboard_screen.query_one(StatsPanel)


async def test_an_sft_runs_tokens_are_labelled_as_its_replies():
    """The run panel said "tokens 2.74k" for an sft run that read 15k: it counts the replies'
    tokens, those it trains on, as the form's readouts say ("supervised/epoch")."""
    import dataclasses

    from snapshot_apps.replay import fixed_events

    events = fixed_events(3)
    started = next(e for e in events if isinstance(e, RunStarted))
    settings = {**started.settings, "train": {**started.settings["train"], "stage": "sft"}}
    app = MiniMindApp("tiny", {})
    async with app.run_test(size=SIZE) as pilot:
        panel = await dashboard_after(app, pilot, events)
        panel.show(app.history, "Running", running=True)
        assert "reply tokens" not in stats_text(app) and "tokens/s" in stats_text(app)
        app.history.reset()
        app.apply_events([dataclasses.replace(started, settings=settings),
                          *events[events.index(started) + 1:]])
        panel.show(app.history, "Running", running=True)
        assert "reply tokens/s" in stats_text(app) and "reply tokens " in stats_text(app)


async def test_elapsed_ticks_each_second_and_a_stopped_run_shows_one_step(monkeypatch):
    """Between two draws the clock moves elapsed and ETA on; once the run has ended, the
    panel shows the step it ended at, the time up to its end and no ETA."""
    import dataclasses
    from types import SimpleNamespace

    from snapshot_apps.replay import STEP_TIME, fixed_events

    from minimind_tui.widgets import stats_panel

    clock = SimpleNamespace(now=5000.0)
    monkeypatch.setattr(stats_panel, "time", SimpleNamespace(time=lambda: clock.now))
    events = [dataclasses.replace(e, time=4990.0) for e in fixed_events(20)]
    app = MiniMindApp("tiny", {})
    async with app.run_test(size=SIZE) as pilot:
        panel = await dashboard_after(app, pilot, events)
        elapsed = 20 * STEP_TIME  # 8.4 s at step 20, logged 10 s ago
        panel.show(app.history, "Running", running=True, ticking=True)
        assert f"elapsed 0:{int(elapsed + 10):02d} · ETA 1:47" in stats_text(app)
        clock.now += 3
        panel.tick()
        assert f"elapsed 0:{int(elapsed + 13):02d} · ETA 1:44" in stats_text(app)
        # Past its estimate with 280 steps to go (an evaluation ran long): it sat at 0:00.
        clock.now += 200
        panel.tick()
        assert f"elapsed 3:{int(elapsed + 13 + 20):02d} · ETA —" in stats_text(app)
        clock.now -= 200
        # Stopped at step 23, two seconds after step 20 was logged; its checkpoint took 3 s
        # more: the time and the tokens are the run's own, as the runs list gives them.
        app.apply_events([RunFinished(status="stopped", step=23, time=4992.0,
                                      tokens_seen=23 * 640, elapsed=elapsed + 5)])
        app.run_phase = "stopped"
        await pilot.pause(0.2)
        text = stats_text(app)
        assert "23/300" in text and f"elapsed 0:{int(elapsed + 5):02d}" in text
        assert "1/1 last log step 20 loss" in text  # whose loss and lr are shown
        assert "ETA" not in text
        # The rate the runs list gives (the run's average) comes first, labelled.
        average = 23 * 640 / (elapsed + 5)
        assert app.history.summary.tokens_per_sec == average
        assert f"tokens/s {average:,.0f} run average" in text
        # A log from before the end told its figures: the time up to the end's event.
        app.history.reset()
        app.apply_events([*events, RunFinished(status="stopped", step=23, time=4992.0)])
        panel.show(app.history, "Stopped at step 23")
        assert f"elapsed 0:{int(elapsed + 2):02d}" in stats_text(app)
        assert str(app.screen.query_one("#stats-status", Static).render()) == \
            "Stopped at step 23"
        assert app.screen.query_one("#run-progress").progress == 23


async def test_f8_inspects_data_path_wherever_the_cursor_is(tmp_path):
    from minimind_tui.screens.inspect import InspectScreen

    app = quick_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.screen.query_one("#hidden_size").focus()  # not a data field
        await pilot.press("f8")
        assert isinstance(app.screen, InspectScreen)
        assert app.screen.data_path == "builtin:shakespeare"
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.configure_screen


async def test_in_a_browser_f9_starts_and_the_footer_shows_it(tmp_path, monkeypatch):
    """Under `serve` F5 and Ctrl+R reload the page: F9 is the start key there."""
    monkeypatch.setattr(MiniMindApp, "is_web", property(lambda app: True))
    app = quick_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert str(app.screen.query_one("#start-button", Button).label) == "Start F9"
        keys = {key: b.binding.action for key, b in app.screen.active_bindings.items()}
        assert keys.get("f9") == "start" and "f5" not in keys
        await pilot.press("f9")
        assert app.current_mode == "dashboard" and app.run_active
        app.action_stop()
        await wait_until(pilot, lambda: app.run_phase not in ("running", "stopping"))
