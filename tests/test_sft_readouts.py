"""Conversations in the inspector and the form: the sft/lora inspection's cache, the Inspect
data screen on a conversation file, and the readouts' supervised tokens per step, checked
against `inspect_conversations` run on its own (never a constant copied from a run)."""

import io
import json
import math
from pathlib import Path

import pytest
from rich.console import Console
from textual.widgets import Static

from minimind.data.sft_inspect import inspect_conversations
from minimind.settings import DATA_FIELDS
from minimind.settings import RunSettings
from minimind.tokenizer import load_tokenizer
from minimind_tui.app import MiniMindApp
from minimind_tui.form.readouts import scan_data, steps_per_epoch, supervision
from minimind_tui.screens.inspect import InspectScreen
from minimind_tui.widgets.readouts_panel import ReadoutsPanel
from pilot_waits import inspected

CHAT = "builtin:shakespeare-chat"
SIZE = (140, 48)
TURNS = [{"role": "user", "content": "Who says: \"To be, or not to be\"?"},
         {"role": "assistant", "content": "Hamlet."},
         {"role": "user", "content": "And then?"},
         {"role": "assistant", "content": "That is the question."}]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMIND_CACHE", str(tmp_path / "cache"))


def write(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n",
                    encoding="utf-8")
    return path


def shown(widget) -> str:
    """A Static's content as plain text, each run of spaces as one."""
    console = Console(width=200, file=io.StringIO())
    console.print(widget.content)
    return " ".join(console.file.getvalue().split())


def sft_settings(data: str, max_seq_len: int, **train) -> RunSettings:
    return RunSettings.parse({"train": {"stage": "sft", "data_path": data,
                                        "max_seq_len": max_seq_len, **train}})


def test_conversation_inspection_is_cached_per_content_tokenizer_and_max_seq_len(tok, tmp_path):
    path = write(tmp_path / "chat.jsonl", [{"conversations": TURNS}, {"conversations": TURNS[:2]},
                                           '{"conversations": "nope"}'])
    first = inspect_conversations(str(path), tok, 32)
    again = inspect_conversations(str(path), tok, 32)
    assert again.cached and not first.cached and again == first
    assert (first.documents, first.turns, first.bad_lines) == (2, 6, 1)
    cached_file, = (tmp_path / "cache" / "inspect-sft").glob("chat-*.json")
    cached_file.write_text(cached_file.read_text()[:40])  # a cache cut short: computed again
    assert inspect_conversations(str(path), tok, 32) == first
    assert inspect_conversations(str(path), tok, 32).cached
    assert sum(first.lengths.values()) == 2 and first.first_bad[0][0] == 3
    assert not inspect_conversations(str(path), tok, 16).cached  # another cut
    other = load_tokenizer()
    other.chat_template = tok.chat_template.replace("<|im_start|>", " <|im_start|>", 1)
    assert not inspect_conversations(str(path), other, 32).cached  # same ids, other template
    write(path, [{"conversations": TURNS}])  # same name, new bytes
    assert inspect_conversations(str(path), tok, 32).documents == 1
    # The form's scan finds it for stage sft at the same max_seq_len only; pretrain never does.
    assert scan_data(str(path), "", "sft", 32).inspection.documents == 1
    assert scan_data(str(path), "", "sft", 48).inspection is None
    assert scan_data(str(path), "", "pretrain", 32).inspection is None


def test_sft_steps_count_conversations_and_supervision_needs_an_inspection(tok, tmp_path):
    path = write(tmp_path / "chat.jsonl", [{"conversations": TURNS}] * 5 + ["", "{bad"])
    settings = sft_settings(str(path), 32, batch_size=2, accumulation_steps=1)
    before = scan_data(str(path), "", "sft", 32)
    assert steps_per_epoch(settings, before) == (4, "7 lines")  # every line counts: a guess
    assert supervision(settings, before) is None  # no number without an inspection
    insp = inspect_conversations(str(path), tok, 32)
    after = scan_data(str(path), "", "sft", 32)
    assert steps_per_epoch(settings, after) == (3, "5 conversations (inspected)")
    figures = supervision(settings, after)
    assert figures.per_step == pytest.approx(insp.supervised_tokens / 5 * 2)
    assert figures.position_share == pytest.approx(figures.per_step / (2 * 32))


async def test_f8_inspects_the_chat_corpus_and_the_readouts_count_supervised_tokens():
    """The tiny-sft preset: F8 from the form runs the conversation inspection; the readouts
    then show supervised tokens per step and the trained share that an independent
    `inspect_conversations` of the same file, tokenizer and max_seq_len gives."""
    app = MiniMindApp("tiny-sft")
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        configure = app.configure_screen
        settings = configure._draft
        t = settings.train
        assert (t.stage, t.data_path, t.max_seq_len) == ("sft", CHAT, 128)
        before = shown(configure.query_one(ReadoutsPanel))
        assert "supervised/step F8 (inspect data) counts them at max_seq_len 128" in before
        assert "trained share" not in before and "lines" in before
        await pilot.press("f8")
        screen = app.screen
        assert isinstance(screen, InspectScreen) and screen.conversations
        await inspected(pilot)
        result = screen.result
        expected = inspect_conversations(CHAT, load_tokenizer(), 128, use_cache=False)
        assert result == expected and not expected.cached
        figures = shown(screen.query_one("#inspect-figures", Static))
        assert f"conversations {expected.documents:,}" in figures
        assert f"turns {expected.turns:,}" in figures
        assert f"supervised tokens {expected.supervised_tokens:,} " \
               f"({expected.supervised_share:.1%} of the tokens" in figures
        assert f"truncated {expected.truncated_documents:,} conversations" in figures
        assert "done: 6,464 conversations" in shown(screen.query_one("#inspect-status", Static))
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is configure
        await app.workers.wait_for_complete()
        await pilot.pause()
        after = shown(configure.query_one(ReadoutsPanel))
        per_step = expected.supervised_tokens / expected.documents * t.batch_size \
            * t.accumulation_steps
        steps = math.ceil(math.ceil(expected.documents / t.batch_size) / t.accumulation_steps)
        assert f"supervised/step ≈ {per_step:,.0f} " in after
        assert f"trained share {expected.supervised_share:.1%} of the tokens" in after
        assert f"{per_step / settings.tokens_per_step():.1%} of the positions" in after
        assert f"estimated from {expected.documents:,} conversations inspected at " \
               f"max_seq_len 128" in after
        assert f"steps/epoch {steps:,} {expected.documents:,} conversations (inspected)" in after
        # Another max_seq_len cuts differently: the readouts ask again rather than reuse it.
        configure.set_fields({"train.max_seq_len": "96"})
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        moved = shown(configure.query_one(ReadoutsPanel))
        assert "counts them at max_seq_len 96" in moved and "trained share" not in moved


async def test_the_screen_names_bad_lines_and_a_template_less_tokenizer(tmp_path):
    data = write(tmp_path / "chat.jsonl", [{"conversations": TURNS}, {"text": "plain"},
                                           {"conversations": TURNS[1:]}])
    app = MiniMindApp("tiny-sft", {"train": {"data_path": str(data)}})
    async with app.run_test(size=SIZE) as pilot:
        await app.push_screen(InspectScreen(str(data), "", 64, "sft"))
        await inspected(pilot)
        screen = app.screen
        assert shown(screen.query_one("#inspect-figures", Static)).startswith("conversations 1 ")
        details = shown(screen.query_one("#inspect-details", Static))
        assert 'line 2: missing "conversations" field (this looks like pretraining data' in details
        assert "line 3: turn 1: an assistant turn cannot come first" in details
        assert "2 bad lines" in shown(screen.query_one("#inspect-warnings", Static))
    folder = tmp_path / "plain-tokenizer"
    plain = load_tokenizer()
    plain.chat_template = None
    plain.save_pretrained(folder)
    app = MiniMindApp("tiny-sft", {"train": {"data_path": str(data)}})
    async with app.run_test(size=SIZE) as pilot:
        await app.push_screen(InspectScreen(str(data), str(folder), 64, "sft"))
        for _ in range(100):  # the worker fails: wait_for_complete would raise its error
            status = shown(app.screen.query_one("#inspect-status", Static))
            if status.startswith("cannot"):
                break
            await pilot.pause(0.1)
        assert status.startswith("cannot inspect: the tokenizer has no chat template")


async def test_an_eta_comes_only_from_a_last_run_that_counted_the_same_kind_of_tokens():
    """tokens/s counts the labels that train: every token of a pretraining run, only the
    replies of an sft run. An sft form's ETA from a pretraining run's speed would be
    several times too short, so it shows none; after an sft run it shows one."""
    import dataclasses

    from minimind.events import RunStarted
    from minimind.units import format_duration
    from snapshot_apps.replay import fixed_events

    expected = inspect_conversations(CHAT, load_tokenizer(), 128)  # the form's scan finds it
    app = MiniMindApp("tiny-sft")
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        configure = app.configure_screen
        panel = configure.query_one(ReadoutsPanel)
        assert f"supervised/epoch {expected.supervised_tokens / 1e3:.2f}k" in shown(panel)
        # Two runs of the form's own model and batch, one pretraining, one sft.
        settings = configure._draft.model_dump(mode="json")
        runs = {stage: [dataclasses.replace(e, settings={**settings, "train": {
            **settings["train"], "stage": stage}}) if isinstance(e, RunStarted) else e
            for e in fixed_events(10)] for stage in ("pretrain", "sft")}
        pretrain_run, sft_run = runs["pretrain"], runs["sft"]
        app.apply_events(pretrain_run)
        configure._show_readouts()
        assert "supervised/step ≈" in shown(panel) and "ETA" not in shown(panel)
        app.history.reset()
        app.apply_events(sft_run)
        configure._show_readouts()
        t = configure._draft.train
        steps = math.ceil(expected.documents / t.batch_size)
        run_tokens = expected.supervised_tokens * t.max_steps / steps
        latest = app.history.latest  # the run's average rate
        eta = format_duration(run_tokens / (latest.tokens_seen / latest.elapsed))
        assert f"ETA ≈ {eta}" in shown(panel)


async def test_the_forms_file_name_follows_the_stage_as_the_command_line_does():
    """`--preset tiny-sft` writes full_sft_128.pth headless; the form must start the same run
    (it wrote pretrain_128.pth once), and a stage picked on the form brings its file name
    along, while a name the user typed stays."""
    app = MiniMindApp("tiny-sft")
    async with app.run_test(size=SIZE) as pilot:
        configure = app.configure_screen
        save_weight = configure.form.fields["train.save_weight"]
        await pilot.pause()
        assert save_weight.raw == "full_sft" and "train.save_weight" not in \
            configure.form.mark_changed(configure.baseline)
        assert configure._draft.weights_name() == "full_sft_128.pth"
        data = [configure.form.fields[f"train.{name}"] for name in DATA_FIELDS]
        chat = ["shakespeare-chat", "shakespeare-chat-val"]
        for stage, name, sets in (("pretrain", "pretrain", ["shakespeare", "shakespeare-val"]),
                                  ("sft", "full_sft", chat)):
            configure.set_fields({"train.stage": stage})
            await pilot.pause()
            await pilot.pause()
            assert save_weight.raw == name, stage
            # The bundled data follow too: text for pretraining, conversations for sft.
            assert [field.raw for field in data] == [f"builtin:{s}" for s in sets], stage
            assert not [p for p in configure.problems if p.loc.endswith("data_path")], stage
        # What sft cannot take goes back to its default as the command line's --stage does:
        # the packing switch, which the form refused beside the stage with no word of a fix.
        configure.set_fields({"train.stage": "pretrain", "train.packing": True})
        await pilot.pause()
        configure.set_fields({"train.stage": "sft"})
        await pilot.pause()
        await pilot.pause()
        assert configure.form.fields["train.packing"].raw is False
        assert [p.loc for p in configure.problems] == ["train.from_weight"]  # tiny-sft's base
        configure.set_fields({"train.save_weight": "mine", "train.data_path": "chat.jsonl"})
        await pilot.pause()
        configure.set_fields({"train.stage": "pretrain"})
        await pilot.pause()
        await pilot.pause()
        assert save_weight.raw == "mine" and data[0].raw == "chat.jsonl"
        assert configure._draft.weights_name() == "mine_128.pth"
        # Back to pretraining: the packing sft took comes back (it stayed off, and the next
        # run padded and cut every document).
        assert configure.form.fields["train.packing"].raw is True
        # A schedule moved off wsd takes its decay_fraction back, as the command line does.
        configure.set_fields({"train.lr_schedule": "wsd", "train.decay_fraction": 0.3})
        await pilot.pause()
        configure.set_fields({"train.lr_schedule": "cosine"})
        await pilot.pause()
        await pilot.pause()
        assert configure.form.fields["train.decay_fraction"].raw == "0.2"
        assert not [p for p in configure.problems if p.loc == "train.decay_fraction"]


def test_inspection_counts_conversations_whose_reply_lies_past_the_cut(tmp_path):
    from minimind.data.inspect_report import conversation_rows, conversation_warnings

    rows = [{"conversations": [{"role": "user", "content": "Hi."},
                               {"role": "assistant", "content": "Hello."}]},
            {"conversations": [{"role": "user", "content": "the king is dead " * 30},
                               {"role": "assistant", "content": "A saying."}]}]
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    insp = inspect_conversations(str(data), load_tokenizer(), 64, cache_dir=tmp_path)
    assert (insp.truncated_documents, insp.unsupervised_documents) == (1, 1)
    assert ("no reply", "1 conversations cut before any reply") in conversation_rows(insp)
    assert any("1 conversations keep no reply within max_seq_len=64" in w
               for w in conversation_warnings(insp))
    assert inspect_conversations(str(data), load_tokenizer(), 64, cache_dir=tmp_path).cached
