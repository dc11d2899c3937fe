"""The runs under a folder: `minimind-tui runs` and the Runs screen over fixture run folders
(sort, select, compare, diff, delete, watch), and the bulk reader a long history loads with."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from rich.cells import cell_len
from textual.widgets import DataTable, Static

from minimind.events import EvalResult, RunStarted, StepMetrics
from minimind.follow import parse_event
from minimind_tui.app import MiniMindApp
from minimind_tui.run.history import RunHistory, StepBlock
from minimind_tui.run.metrics_reader import parse_lines, read_history
from minimind.runs import next_free_folder
from minimind_tui.cli.runs import main as runs_main
from minimind_tui.screens.compare import ComparisonScreen
from minimind_tui.screens.confirm import ConfirmScreen
from minimind_tui.screens.settings_diff import SettingsDiffScreen
from snapshot_apps.run_fixtures import run_events, step_event, write_fixture_runs
from test_app import SIZE
from pilot_waits import wait_until

NAMES = ["tiny-live", "tiny-lr1e-3", "tiny-lr3e-3", "tiny-resumed"]


@pytest.fixture
def runs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    root = tmp_path / "out"
    write_fixture_runs(root)
    (root / "notes").mkdir()  # not a run: no run files
    return root


def test_runs_command_lists_sorts_and_prints_json(runs_root, capsys):
    assert runs_main([str(runs_root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "stage", "from", "shape", "status", "steps", "loss", "val",
                                "loss", "best", "val", "tokens", "tokens/s", "duration", "when"]
    assert [line.split()[0] for line in lines[1:]] == NAMES
    live, stopped = lines[1].split(), lines[2].split()
    assert live[1:3] == ["pretrain", "scratch"]
    assert live[7:9] == ["running", "120/300"]  # this process is its trainer: alive
    assert stopped[7:9] == ["stopped", "200/300"] and "2026-05-28" in lines[2]
    assert lines[3].split()[7:13] == ["completed", "300/300", "3.0760", "3.3260", "3.3064",
                                      "614.40k"]

    assert runs_main([str(runs_root), "--sort", "best_val_loss", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in runs] == ["tiny-lr3e-3", "tiny-resumed", "tiny-live",
                                         "tiny-lr1e-3"]
    assert runs[0]["best_val_loss"] == pytest.approx(3.3064, abs=1e-4)
    assert runs_main([str(runs_root), "--sort", "best_val_loss", "--reverse", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == [
        "tiny-lr1e-3", "tiny-live", "tiny-resumed", "tiny-lr3e-3"]
    # A folder named with ESC in it (a copy from elsewhere): written out, not cleared the screen.
    shutil.copytree(runs_root / "tiny-lr1e-3", runs_root / "odd\x1b[2Jname")
    assert runs_main([str(runs_root)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and out.splitlines()[1].split()[0] == "odd\\x1b[2Jname"
    assert runs_main([str(runs_root / "nope")]) == 2
    assert "nope: no such folder" in capsys.readouterr().err
    assert runs_main([str(runs_root / "tiny-live" / "config.toml")]) == 2
    assert "config.toml: not a folder" in capsys.readouterr().err


def test_runs_json_is_strict_json_whatever_run_json_holds(runs_root, capsys):
    """A NaN or an Infinity in a run.json (edited, or synced badly) came out as bare NaN, which
    jq and every strict parser refuse: it is null, as the table's "–" says nothing known."""
    status = runs_root / "tiny-lr1e-3" / "run.json"
    status.write_text(re.sub(r'"(loss|tokens_per_sec)": [0-9.]+',
                             lambda m: f'"{m[1]}": {"NaN" if m[1] == "loss" else "Infinity"}',
                             status.read_text()))
    assert runs_main([str(runs_root), "--json"]) == 0

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    runs = {r["name"]: r for r in json.loads(capsys.readouterr().out, parse_constant=refuse)}
    assert runs["tiny-lr1e-3"]["loss"] is None and runs["tiny-lr1e-3"]["tokens_per_sec"] is None


def test_a_run_folder_that_holds_other_runs_lists_them_too(runs_root, capsys):
    """Upstream's presets train into out/ and fine-tune into out/sft and out/lora_medical:
    once out/ held a run, every run below it vanished from the list."""
    for path in (runs_root / "tiny-lr1e-3").iterdir():
        if path.is_file():
            shutil.copy(path, runs_root / path.name)
    assert runs_main([str(runs_root), "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["out", *NAMES]


def test_runs_without_the_sorted_value_come_last_either_way(tmp_path):
    """--reverse put the runs with no validation yet first, as the "largest" losses."""
    from minimind.runs import RunSummary, sorted_runs

    runs = [RunSummary(tmp_path / name, name, "", "completed", val_loss=loss)
            for name, loss in (("a", 3.0), ("none", None), ("b", 2.0), ("c", 4.0))]
    for reverse, order in ((False, ["b", "a", "c", "none"]), (True, ["c", "a", "b", "none"])):
        assert [run.name for run in sorted_runs(runs, "val_loss", reverse)] == order


def test_a_run_that_ended_before_any_checkpoint_says_none_was_saved():
    """Killed during its first save, before a log line: "crashed 0/200" read as a run at its
    start, with something to resume."""
    from minimind.runs import RunSummary

    def steps(state, step, saved):
        return RunSummary(Path("r"), "r", "", state, step=step, total_steps=200,
                          saved_step=saved).cells()["step"]

    assert steps("crashed", 0, None) == "0/200 (none saved)"
    assert steps("crashed", 18, 14) == "18/200 (saved 14)"
    assert steps("stopped", 14, 14) == "14/200" and steps("running", 0, None) == "0/200"


def test_a_loss_ranks_runs_stage_by_stage():
    """An sft run's loss counts the replies of conversations, a pretraining run's the text: by
    best_val_loss, an sft run at 2.1 ranked between pretraining runs at 2.0 and 3.0."""
    from minimind.runs import RunSummary, sorted_runs

    runs = [RunSummary(Path(name), name, "", "completed", best_val_loss=loss, stage=stage,
                       step=step)
            for name, loss, stage, step in (("p3", 3.0, "pretrain", 5), ("s2", 2.1, "sft", 9),
                                            ("p2", 2.0, "pretrain", 7), ("l1", 1.5, "lora", 1),
                                            ("old", 1.0, "?", 3), ("s1", 1.9, "sft", 2))]
    assert [run.name for run in sorted_runs(runs, "best_val_loss")] == [
        "p2", "p3", "s1", "s2", "l1", "old"]
    assert [run.name for run in sorted_runs(runs, "best_val_loss", reverse=True)] == [
        "p3", "p2", "s2", "s1", "l1", "old"]
    # Other columns rank across stages, as before.
    assert [run.name for run in sorted_runs(runs, "step")] == ["l1", "s1", "old", "p3", "p2",
                                                              "s2"]


def test_the_runs_command_lines_up_wide_characters(runs_root, capsys):
    (runs_root / "tiny-lr1e-3").rename(runs_root / "小模型-lr1e-3")
    assert runs_main([str(runs_root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    # Each column starts at the same terminal cell on every line: "stage" as an example.
    starts = {cell_len(line[:line.index(word)]) for line, word in zip(
        lines, ["stage", *["pretrain"] * (len(lines) - 1)])}
    assert len(starts) == 1 and any(line.startswith("小模型-lr1e-3 ") for line in lines)


def test_a_metrics_file_alone_is_summarised_from_its_end(tmp_path, capsys):
    folder = tmp_path / "synced"
    folder.mkdir()  # only metrics.jsonl came over (rsync of one file)
    events = run_events(120, 300, 3e-3, 3.0, 1)
    (folder / "metrics.jsonl").write_text("".join(e.to_json() + "\n" for e in events))
    assert runs_main([str(tmp_path), "--json"]) == 0
    [run] = json.loads(capsys.readouterr().out)
    assert run["name"] == "synced" and run["step"] == 120
    # Its shape, stage and origin from the settings its start recorded (they were "?").
    assert (run["shape"], run["stage"], run["origin"]) == ("minimind2 128x2 · 1.21M", "pretrain",
                                                          "scratch")
    last_eval = [e for e in events if isinstance(e, EvalResult)][-1]
    assert run["val_loss"] == pytest.approx(last_eval.val_loss) and run["state"] == "crashed"
    # The last event's time, not the file's (which is the copy's).
    assert run["updated"] == events[-1].time


def test_next_free_folder_numbers_beside_the_old_one(tmp_path):
    (tmp_path / "tiny").mkdir()
    assert next_free_folder(tmp_path / "tiny") == tmp_path / "tiny-2"
    (tmp_path / "tiny-2").mkdir()
    assert next_free_folder(tmp_path / "tiny-2") == tmp_path / "tiny-3"


def rows(table: DataTable) -> list[str]:
    return [str(table.get_row_at(i)[1]) for i in range(table.row_count)]


def test_the_settings_diff_leaves_out_the_consent_to_overwrite(runs_root):
    """config.toml no longer records the answers a launch was given; a record written before
    that (here, the consent to replace a run and resume it) still differs by none of them."""
    from minimind.runs import settings_diff

    replaced = runs_root / "tiny-lr3e-3" / "config.toml"
    assert "overwrite" not in replaced.read_text()
    replaced.write_text(replaced.read_text().replace(
        "[train]\n", "[train]\noverwrite = true\nfrom_resume = true\n", 1))
    assert "overwrite = true" in replaced.read_text()
    assert settings_diff(runs_root / "tiny-lr1e-3", runs_root / "tiny-lr3e-3") == [
        ("train.learning_rate", "0.001", "0.003")]
    # A list's items quoted: prompts hold commas, and three read as five.
    from minimind.settings import RunSettings

    settings = RunSettings.from_toml(runs_root / "tiny-lr1e-3" / "config.toml")
    settings.train.sample_prompts = ["To be, or not to be", "ROMEO:"]
    settings.save_toml(replaced)
    assert ("train.sample_prompts", '"To be, or not to be", "ROMEO:"') in [
        row[::2] for row in settings_diff(runs_root / "tiny-lr1e-3", runs_root / "tiny-lr3e-3")]


async def test_runs_screen_sorts_compares_diffs_and_deletes(runs_root):
    app = MiniMindApp("tiny", {"train": {"out_dir": str(runs_root / "tiny-lr3e-3")}})
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f4")
        table = app.screen.query_one(DataTable)
        assert rows(table) == NAMES
        # Every column, `when` included, fits 120 columns: nothing to scroll to.
        assert table.virtual_size.width <= table.scrollable_content_region.width
        await pilot.click("#runs-table", offset=(73, 1))  # the "best" (val loss) heading
        assert rows(table) == ["tiny-lr3e-3", "tiny-resumed", "tiny-live", "tiny-lr1e-3"]
        await pilot.click("#runs-table", offset=(73, 1))  # again: descending
        assert rows(table)[0] == "tiny-lr1e-3"
        await pilot.press("S")  # and from the keyboard (`s` sorts ascending alone)
        assert rows(table)[0] == "tiny-lr3e-3"
        await pilot.press("S")
        assert rows(table)[0] == "tiny-lr1e-3"

        for name in ("tiny-lr1e-3", "tiny-lr3e-3"):
            table.move_cursor(row=rows(table).index(name))
            await pilot.press("space")
        await pilot.press("d")
        assert isinstance(app.screen, SettingsDiffScreen)
        diff = app.screen.query_one(DataTable)
        assert [tuple(map(str, diff.get_row_at(i))) for i in range(diff.row_count)] == [
            ("train.learning_rate", "0.001", "0.003")]
        assert str(app.screen.query_one(".dialog-note", Static).render()) == (
            "1 setting differs (esc closes)")
        await pilot.press("escape")
        table.move_cursor(row=rows(table).index("tiny-resumed"))
        await pilot.press("space", "c")
        assert isinstance(app.screen, ComparisonScreen)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert [len(h.steps) for h in app.screen.histories] == [200, 300, 250]
        key = str(app.screen.query_one("#compare-key", Static).render())
        assert "tiny-resumed" in key and "stages differ" not in key
        loss = app.screen.query_one("#compare-loss")
        assert "step" in loss.render().plain
        await pilot.press("t")
        assert "tokens seen" in loss.render().plain
        compared = app.screen.runs
        await pilot.press("escape")
        # An sft run's tokens are its replies: overlaid on a pretraining run, the key says so.
        await app.push_screen(ComparisonScreen([replace(compared[0], stage="sft"),
                                                *compared[1:]]))
        key = str(app.screen.query_one("#compare-key", Static).render())
        assert key.splitlines()[1] == (
            " stages differ (pretrain, sft): pretraining counts and scores every token, sft and "
            "lora only the replies")
        await app.workers.wait_for_complete()
        await pilot.press("escape")

        # A running run cannot be deleted; another asks first and goes.
        table.move_cursor(row=rows(table).index("tiny-live"))
        await pilot.press("x")
        assert not isinstance(app.screen, ConfirmScreen)
        assert (runs_root / "tiny-live" / "run.json").exists()
        table.move_cursor(row=rows(table).index("tiny-lr1e-3"))
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await pilot.pause()
        assert not (runs_root / "tiny-lr1e-3").exists()
        assert "tiny-lr1e-3" not in rows(table) and table.row_count == 3

        table.move_cursor(row=rows(table).index("tiny-resumed"))
        await pilot.press("w")
        await wait_until(pilot, lambda: app.run_phase == "completed")
        assert app.history.resumed_at == [100] and app.training.read_only


async def test_long_names_in_a_chain_shorten_to_fit_and_the_summary_names_them_whole(runs_root):
    long = "tiny-lr3e-3-with-a-name-far-too-long-for-one-column-of-a-table"
    wide = "小模型预训练-学习率千分之一-第二次尝试-名字很长"  # two terminal cells a character
    (runs_root / "tiny-lr3e-3").rename(runs_root / long)
    (runs_root / "tiny-lr1e-3").rename(runs_root / wide)
    toml = runs_root / "tiny-resumed" / "config.toml"  # an sft run whose base has gone
    toml.write_text(toml.read_text().replace('stage = "pretrain"', 'stage = "sft"', 1).replace(
        'from_weight = ""', f'from_weight = "{runs_root}/a-base-run-now-deleted/full.pth"', 1))
    app = MiniMindApp("tiny", {"train": {"out_dir": str(runs_root / "tiny-live")}})
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.press("f4")
        table = app.screen.query_one(DataTable)
        assert list(table.columns)[1:3] == ["name", "stage"]
        assert table.virtual_size.width <= table.scrollable_content_region.width
        names = rows(table)
        assert names[0] == "tiny-live" and names[2] == "tiny-resumed"
        for row, whole in ((1, long), (3, wide)):
            shown = names[row]
            assert shown != whole and "…" in shown
            head, tail = shown.split("…")
            assert whole.startswith(head) and whole.endswith(tail) and len(head) > len(tail) > 0
        assert max(cell_len(names[1]), cell_len(names[3])) == table.columns["name"].content_width
        assert str(table.get_row_at(2)[2]) == "sft ← missing"
        summary = app.screen.query_one("#runs-summary", Static)
        for row, ending in ((1, f"· {long}"), (3, f"· {wide}"), (2, (
                f"· its from_weight {runs_root}/a-base-run-now-deleted/full.pth is gone"))):
            table.move_cursor(row=row)
            await pilot.pause()
            assert str(summary.render()).endswith(ending)


def test_bulk_parsing_equals_one_event_at_a_time():
    rng = random.Random(0)
    events = run_events(400, 600, 3e-3, 3.0, 7, crash_at=300, resume_from=250, eval_every=100)
    for e in events:
        if hasattr(e, "loss"):
            e.loss += rng.choice([0.0, float("nan")]) if e.step == 333 else 0.0
    lines = [e.to_json().encode() for e in events]
    lines.insert(40, b'{"kind": "step", "time": 1.0, "step": 5')  # a cut line, skipped
    items, skipped = parse_lines(lines)
    assert skipped == 1 and any(isinstance(i, StepBlock) for i in items)
    one_by_one = RunHistory()
    one_by_one.apply([e for e in map(parse_event, lines) if e is not None])
    bulk = RunHistory()
    bulk.apply(items)
    for name in ("steps", "tokens", "loss", "loss_ema", "lr", "val_steps", "val_loss"):
        np.testing.assert_allclose(getattr(bulk, name), getattr(one_by_one, name), rtol=1e-12)
    assert bulk.resumed_at == one_by_one.resumed_at == [250]
    assert bulk.latest == one_by_one.latest
    # The log shows each block's last step, and every other event.
    assert bulk.log[-1][1] == one_by_one.log[-1][1]
    assert ([e for _, e in bulk.log if not isinstance(e, StepMetrics)]
            == [e for _, e in one_by_one.log if not isinstance(e, StepMetrics)])


def test_a_block_that_is_not_what_the_engine_writes_is_parsed_line_by_line():
    lines = [step_event(s, 100, 4.0, 1e-3).to_json().encode() for s in range(1, 101)]
    fields = json.loads(lines[50])
    fields["lr"] = fields.pop("lr")  # valid JSON, the fields in another order
    lines[50] = json.dumps(fields).encode()
    items, skipped = parse_lines(lines)
    assert not any(isinstance(i, StepBlock) for i in items)
    assert skipped == 0 and [e.step for e in items] == list(range(1, 101))


def test_read_history_of_a_resumed_run(tmp_path):
    events = run_events(250, 300, 2e-3, 3.1, 3, crash_at=140, resume_from=100)
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(e.to_json() + "\n" for e in events))
    h = read_history(path)
    assert list(h.steps) == list(range(1, 251)) and h.resumed_at == [100]
    assert list(h.val_steps) == [50, 100, 150, 200, 250]
    assert isinstance(h.started, RunStarted) and isinstance(h.last_eval, EvalResult)


def test_smoothing_after_a_resume_goes_on_from_the_kept_step():
    events = run_events(200, 300, 3e-3, 3.0, 5, crash_at=150, resume_from=100)
    resumed = RunHistory()
    resumed.apply(events)
    restart = max(i for i, e in enumerate(events) if isinstance(e, RunStarted))
    kept = [e for e in events[:restart] if isinstance(e, StepMetrics) and e.step <= 100]
    uninterrupted = RunHistory()
    uninterrupted.apply(kept + [e for e in events[restart:] if isinstance(e, StepMetrics)])
    np.testing.assert_allclose(resumed.loss_ema, uninterrupted.loss_ema, rtol=1e-12)


async def test_a_diff_says_what_a_resume_changed(runs_root):
    """A run resumed with another learning rate: the diff showed its config.toml's, the last
    start's, as if it had trained with that one alone."""
    from minimind.runs import resumed_changes

    resumed = runs_root / "tiny-resumed"
    assert resumed_changes(resumed) == []  # resumed as it was: nothing to say
    metrics = resumed / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    second = max(i for i, line in enumerate(lines) if '"kind": "run_started"' in line)
    assert '"learning_rate": 0.002' in lines[second]
    lines[second] = lines[second].replace('"learning_rate": 0.002', '"learning_rate": 0.001')
    metrics.write_text("".join(lines))
    changes = ["from step 101 on: train.learning_rate 0.002 → 0.001"]
    assert resumed_changes(resumed) == changes
    app = MiniMindApp("tiny", {})
    async with app.run_test(size=SIZE) as pilot:
        app.push_screen(SettingsDiffScreen("tiny-resumed", "tiny-lr3e-3", [],
                                           {"tiny-resumed": changes, "tiny-lr3e-3": []}))
        await pilot.pause()
        notes = [str(note.render()) for note in app.screen.query(".dialog-note")]
        assert notes == ["tiny-resumed was resumed with other settings (these are its last "
                         "start's): from step 101 on: train.learning_rate 0.002 → 0.001"]
    metrics.unlink()
    os.mkfifo(metrics)  # read, it would wait for a writer for good
    assert resumed_changes(resumed) == []


def test_an_origin_whose_weights_changed_since_is_marked():
    from minimind.runs import RunSummary
    from minimind_tui.screens.runs import RunsScreen

    run = RunSummary(Path("out/tiny-sft"), "tiny-sft", "minimind2 128x2", "completed",
                     stage="sft", origin="tiny", origin_save="a1", origin_changed=True)
    assert run.cells()["origin"] == "tiny (changed since)"
    assert RunsScreen._short_cells(run)["stage"] == "sft ← tiny*"
    run.origin_changed = False
    assert RunsScreen._short_cells(run)["stage"] == "sft ← tiny"
