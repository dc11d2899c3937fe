"""The data inspector: exact figures on a file whose statistics are known, the mismatched
tokenizer warning, the cache, the CLI, the screen and the readouts that use it."""

import gzip
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from minimind.data import DataError
from minimind.data.inspect import inspect_data, length_histogram
from minimind.settings import RunSettings
from minimind.tokenizer import load_tokenizer
from minimind_tui.cli.inspect import main as inspect_main
from minimind_tui.form.readouts import scan_data, steps_per_epoch, tokens_per_epoch
from pilot_waits import inspected, wait_until

PAD = "<|endoftext|>"  # a special token: exactly one id (0) wherever it stands
# Packed lengths (bos + text + eos, bos/eos not doubled): 5, 2, 8, 12.
KNOWN = [
    json.dumps({"text": PAD * 3}),
    json.dumps({"text": ""}),
    json.dumps({"text": "<|im_start|>" + PAD * 6 + "<|im_end|>"}),
    '{"text": 7}',
    "",
    json.dumps({"text": PAD * 10}),
]
CHINESE = "今天天气很好，我们去公园散步。学习语言需要耐心和时间。" * 3


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMIND_CACHE", str(tmp_path / "cache"))


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_figures_of_a_file_known_exactly(tok, tmp_path):
    insp = inspect_data(write(tmp_path / "known.jsonl", KNOWN), tok)
    assert (insp.documents, insp.empty_documents, insp.bad_lines) == (4, 1, 1)
    assert insp.first_bad == [(4, '"text" must be a string, got int')]
    assert insp.lengths == {2: 1, 5: 1, 8: 1, 12: 1}
    assert (insp.tokens, insp.text_tokens) == (27, 3 + 0 + 8 + 10)
    assert insp.characters == len(PAD) * 19 + len("<|im_start|><|im_end|>")
    assert insp.split_chars == [] and insp.tokenizer_mismatch() is None
    fit = insp.fit(8)
    assert fit.padded_samples == 4
    assert fit.padding_share == pytest.approx((3 + 6 + 0 + 0) / (4 * 8))
    assert (fit.truncated_documents, fit.truncated_tokens) == (1, 12 - 8)
    assert fit.packed_samples == 27 // 8 and fit.packing_saves == pytest.approx(1 - 3 / 4)
    assert sum(n for _, _, n in length_histogram(insp.lengths, 4)) == 4
    # Fewer tokens than one window: packing makes nothing ("100% less compute" before, and
    # packing advised against the padding).
    from minimind.data.inspect_report import figure_rows, warning_texts

    assert dict(figure_rows(insp, 32))["packed"] == \
        "0 samples, none complete: 27 tokens in all, fewer than max_seq_len=32"
    assert warning_texts(insp, 32)[-2] == (
        "Padding to max_seq_len=32 would spend 79% of the compute on padding; packing would "
        "make no sample of 32 tokens from the 27 there are: lower max_seq_len, or add data.")
    assert "packing (train.packing) avoids it" in warning_texts(insp, 16)[-2]


def test_mismatched_tokenizer_is_named_with_a_fix(tok, tmp_path):
    insp = inspect_data(write(tmp_path / "zh.jsonl", [json.dumps({"text": CHINESE},
                                                                 ensure_ascii=False)]), tok)
    warning = insp.tokenizer_mismatch()
    assert insp.tokens_per_char > 1 and warning is not None
    assert "tokens per character" in warning and "tokenizer train" in warning
    assert insp.split_chars[0][0] in CHINESE and insp.split_char_total > len(CHINESE) / 2
    english = inspect_data("builtin:shakespeare-val", tok)
    assert english.tokenizer_mismatch() is None and english.tokens_per_char < 0.5


def test_inspection_is_cached_per_content_and_tokenizer(tok, tmp_path):
    path = write(tmp_path / "known.jsonl", KNOWN)
    first = inspect_data(path, tok)
    again = inspect_data(path, tok)
    assert again.cached and not first.cached and again == first
    other = load_tokenizer()
    other.add_tokens(["<|new|>"])
    assert not inspect_data(path, other).cached
    write(path, KNOWN[:3])  # same name, new bytes
    assert inspect_data(path, tok).documents == 3


def test_a_copy_inspected_from_the_cache_is_named_as_asked(tok, tmp_path):
    """The same bytes in another folder come from the cache, under their own path (it named
    the first file inspected, relative to where that was)."""
    from minimind.data.sft_inspect import inspect_conversations

    chat = {"conversations": [{"role": "user", "content": "Hi"},
                              {"role": "assistant", "content": "Hello"}]}
    for name, text, inspect in (
            ("known.jsonl", "".join(json.dumps({"text": t}) + "\n" for t in KNOWN),
             lambda path: inspect_data(path, tok)),
            ("chat.jsonl", json.dumps(chat) + "\n",
             lambda path: inspect_conversations(str(path), tok, 64))):
        first, copy = tmp_path / "a" / name, tmp_path / "b" / name
        for path in (first, copy):
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
        assert inspect(first).path == str(first)
        again = inspect(copy)
        assert again.cached and again.path == str(copy)
        # Compressed, or bundled: the name given, never the cache's decompressed copy.
        gz = tmp_path / "c" / f"{name}.gz"
        gz.parent.mkdir(exist_ok=True)
        gz.write_bytes(gzip.compress(text.encode()))
        assert [inspect(gz).path for _ in range(2)] == [str(gz)] * 2  # the second from the cache
    assert inspect_data("builtin:shakespeare-val", tok).path == "builtin:shakespeare-val"
    assert inspect_conversations("builtin:shakespeare-chat-val", tok, 64).path == \
        "builtin:shakespeare-chat-val"


def test_errors(tok, tmp_path):
    with pytest.raises(DataError, match="no such file"):
        inspect_data(tmp_path / "missing.jsonl", tok)
    with pytest.raises(DataError, match="no valid lines"):
        inspect_data(write(tmp_path / "bad.jsonl", ["nope"]), tok)


def test_cli_text_json_and_exit_codes(tmp_path, capsys):
    path = write(tmp_path / "known.jsonl", KNOWN)
    assert inspect_main([str(path), "--max_seq_len", "8"]) == 0
    out = capsys.readouterr().out
    assert "documents          4" in out and "28.1% padding" in out
    assert "line 4: \"text\" must be a string" in out and "warning: 1 bad lines" in out
    assert inspect_main([str(path), "--max_seq_len", "8", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cached"] and data["tokens"] == 27 and data["fit"]["packed_samples"] == 3
    assert inspect_main([str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.jsonl: no such file" in err[0]
    for too_short in ("4", "0"):  # the training rule's bound, not a looser one of its own
        with pytest.raises(SystemExit) as exit_:
            inspect_main([str(path), "--max_seq_len", too_short])
        assert exit_.value.code == 2
        assert capsys.readouterr().err.rstrip().endswith("--max_seq_len: must be ≥ 8")
    # A name's control characters are written out, as the trainer's errors write them: raw,
    # ESC [2J cleared the screen and a newline split the header.
    hostile = write(tmp_path / "c\x1b[2J\nd.jsonl", KNOWN)
    assert inspect_main([str(hostile), "--max_seq_len", "8"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith(f"{tmp_path}/c\\x1b[2J\\nd.jsonl: ")
    chat = write(tmp_path / "c\x1b[2J.jsonl", [json.dumps({"conversations": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})])
    assert inspect_main([str(chat), "--stage", "sft"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith(
        f"{tmp_path}/c\\x1b[2J.jsonl: conversations")


def test_readouts_count_exactly_once_inspected(tok, tmp_path):
    path = write(tmp_path / "known.jsonl", KNOWN)
    settings = RunSettings.parse({"train": {"data_path": str(path), "max_seq_len": 8,
                                            "batch_size": 1, "accumulation_steps": 1,
                                            "packing": True}})
    before = scan_data(str(path))
    assert before.inspection is None and tokens_per_epoch(settings, before) is None
    # Packed windows from the file's size (one per line read tiny's corpus as 307 steps where
    # the run took 699): its bytes at ~4 a token, in windows of max_seq_len.
    size = path.stat().st_size
    assert steps_per_epoch(settings, before) == (
        size // 4 // 8, f"{size:,} bytes at ~4 a token: a guess until tokenized")
    inspect_data(path, tok)
    after = scan_data(str(path))
    assert steps_per_epoch(settings, after) == (3, "27 tokens (inspected)")
    assert tokens_per_epoch(settings, after) == 24
    padded = RunSettings.parse({"train": {**settings.train.model_dump(), "packing": False}})
    assert steps_per_epoch(padded, after) == (4, "4 documents (inspected)")
    assert tokens_per_epoch(padded, after) == 2 + 5 + 8 + 8


def test_readouts_count_only_this_tokenizers_token_cache(tok, tmp_path):
    """Any tokenizer's cache was taken as "close enough": a 300-token tokenizer's made the
    form's steps/epoch 2.5 times the engine's."""
    from minimind.data import build_token_cache
    from minimind.data.corpus import default_cache_dir
    from minimind.tokenizer import load_tokenizer
    from test_export import other_tokenizer

    path = write(tmp_path / "text.jsonl", [json.dumps({"text": "ab ba " * 20})] * 8)
    other = other_tokenizer(tmp_path)
    build_token_cache(path, load_tokenizer(str(other)), 8, default_cache_dir() / "tokens")
    assert scan_data(str(path)).tokens is None  # only another tokenizer's: no count
    assert scan_data(str(path), str(other)).tokens is not None
    ours = build_token_cache(path, tok, 8, default_cache_dir() / "tokens")
    assert scan_data(str(path)).tokens == ours.stat().st_size // 2


# -- the Inspect data screen -------------------------------------------------------------------
def shown(widget) -> str:
    """A Static's content as plain text."""
    console = Console(width=100, file=io.StringIO())
    console.print(widget.content)
    return console.file.getvalue()


async def test_screen_opens_from_the_data_field_and_shows_the_figures(tmp_path):
    from textual.widgets import ProgressBar, Static

    from minimind_tui.app import MiniMindApp
    from minimind_tui.screens.inspect import InspectScreen

    zh = write(tmp_path / "zh.jsonl", [json.dumps({"text": CHINESE}, ensure_ascii=False)] * 3)
    app = MiniMindApp("tiny", {"train": {"data_path": str(zh), "max_seq_len": 64}})
    async with app.run_test(size=(120, 40)) as pilot:
        configure = app.configure_screen
        assert configure.check_action("inspect_data", ())  # from any field: data_path by default
        configure.form.focus_field("train.data_path")
        await pilot.pause()
        assert configure.check_action("inspect_data", ())
        await pilot.press("f8")
        screen = app.screen
        assert isinstance(screen, InspectScreen) and screen.data_path == str(zh)
        await inspected(pilot)
        assert screen.result is not None and screen.result.documents == 3
        assert screen.query_one(ProgressBar).percentage == 1
        figures = shown(screen.query_one("#inspect-figures", Static))
        assert "documents        3" in figures and "tokens/character" in figures
        assert "does not suit this text" in shown(screen.query_one("#inspect-warnings", Static))
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is configure
        await app.workers.wait_for_complete()
        await pilot.pause()
        # The readouts now count from the inspection.
        readouts = shown(configure.query_one("#readouts", Static))
        assert "(inspected)" in readouts and "tokens/epoch" in readouts

        # A file it cannot inspect: the bar kept moving, and the reason was cut to one line.
        gz = tmp_path / "gz.jsonl"
        gz.write_bytes(gzip.compress(b'{"text": "To be"}\n'))
        app.push_screen(InspectScreen(str(gz), "", 64, "pretrain"))
        await inspected(pilot)
        status = app.screen.query_one("#inspect-status", Static)
        assert not app.screen.query_one(ProgressBar).display
        assert shown(status).split() == (f"cannot inspect: {gz}: holds gzip-compressed data, not "
                                         "text: name it .jsonl.gz to have it decompressed, or "
                                         "decompress it (gunzip)").split()
        assert status.region.height >= 2  # the whole reason, over lines
        await pilot.press("escape")
        await pilot.pause()
        # An invalid max_seq_len: refused, not inspected at a stand-in 512 without a word.
        configure.set_fields({"train.max_seq_len": "12x"})
        await wait_until(pilot, lambda: any(p.loc == "train.max_seq_len"
                                            for p in configure.problems))
        app.clear_notifications()
        await pilot.press("f8")
        await wait_until(pilot, lambda: len(app._notifications) > 0)  # a fixed pause was short
        assert app.screen is configure
        [told] = app._notifications
        assert told.message.startswith("Fix train.max_seq_len: ") and "first" in told.message
        assert app.focused.id == "max_seq_len"


async def test_escape_cancels_a_running_pass(tmp_path, monkeypatch):
    from minimind_tui.app import MiniMindApp
    from minimind_tui.screens import inspect as inspect_screen

    started = []

    def slow_inspect(self):
        started.append(True)
        while True:  # a pass that only ends through its progress callback
            self._progress(1, 10)
            import time
            time.sleep(0.05)

    monkeypatch.setattr(inspect_screen.InspectScreen, "_inspect", slow_inspect)
    app = MiniMindApp("tiny")
    async with app.run_test(size=(120, 40)) as pilot:
        app.configure_screen.action_inspect_data()
        await pilot.pause(0.5)
        assert started and isinstance(app.screen, inspect_screen.InspectScreen)
        await pilot.press("escape")
        await app.workers.wait_for_complete()
        assert app.screen is app.configure_screen


@pytest.mark.parametrize("workers", ["0", "-1", "100000"])
def test_a_worker_count_no_machine_should_start_is_refused(workers, capsys, monkeypatch):
    """-1 ran one worker without a word, and a large count started that many processes."""
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    with pytest.raises(SystemExit) as exit_info:
        inspect_main(["data.jsonl", "--workers", workers])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"minimind-tui inspect: error: --workers: must be from 1 to 8 (4 per core here), got "
        f"{workers}")
