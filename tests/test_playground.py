"""Live samples on the dashboard and the playground, driven headless; `generate` as a process."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from textual.widgets import Input, Static, TextArea

from minimind import MiniMindConfig, MiniMindForCausalLM
from minimind.settings import RunSettings
from minimind.generate import SamplingParams, TextStream, encode_prompt, generate_tokens
from minimind.tokenizer import load_tokenizer
from minimind_tui.run import generation_worker
from minimind_tui.app import MiniMindApp
from minimind_tui.screens.playground import PlaygroundScreen
from minimind_tui.widgets.samples_panel import SamplesPanel
from test_app import SIZE, quick_app
from pilot_waits import wait_until

# These tests follow live CPU runs on the dashboard and wait for its lines and charts.
pytestmark = pytest.mark.usefixtures("gpu_run_redraw_rhythm")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def weights(tmp_path) -> Path:
    """A small random model saved the way upstream saves one (a bare state_dict .pth), in its
    run folder: the config.toml beside it records the head split its shapes cannot tell."""
    model = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    torch.manual_seed(0)
    path = tmp_path / "pretrain_64.pth"
    torch.save(MiniMindForCausalLM(MiniMindConfig(**model)).state_dict(), path)
    RunSettings.parse({"model": model}).save_toml(tmp_path / "config.toml")
    return path


def expected_text(weights: Path, prompt: str, n: int) -> str:
    """What greedy decoding of `n` tokens must print, computed without the UI or the CLI."""
    from minimind.open_model import open_model

    opened = open_model(weights, device="cpu")
    tokenizer = opened.tokenizer
    stream = TextStream(tokenizer)
    params = SamplingParams(max_new_tokens=n, temperature=0.0, stop_on_eos=False)
    text = "".join(stream.push(t) for t in generate_tokens(
        opened.model, encode_prompt(tokenizer, prompt), params))
    return text + stream.flush()


def output_text(app) -> str:
    return str(app.screen.query_one("#playground-output-text", Static).render())


def status_text(app) -> str:
    return str(app.screen.query_one("#playground-status", Static).render())


async def set_params(pilot, **values) -> None:
    for name, value in values.items():
        pilot.app.screen.query_one(f"#sampling-{name}", Input).value = str(value)
    await pilot.pause()


class GatedGenerator:
    """`generate_tokens` that pauses after `first` tokens until released: a test can look at
    the screen while the generation is provably still going."""

    def __init__(self, first: int) -> None:
        self.first, self.paused, self.release = first, threading.Event(), threading.Event()

    def __call__(self, *args, **kwargs):
        for i, token in enumerate(generate_tokens(*args, **kwargs)):
            if i == self.first:
                self.paused.set()
                assert self.release.wait(30), "the test never released the generator"
            yield token


# -- samples on the dashboard --------------------------------------------------------------------
async def test_live_samples_reach_the_panel_and_page_back_then_try_it(tmp_path):
    app = quick_app(tmp_path, sample_interval=2, sample_tokens=4, log_interval=2)
    async with app.run_test(size=SIZE) as pilot:
        app.action_start()
        await wait_until(pilot, lambda: len(app.history.samples) >= 2)
        app.action_stop()
        await wait_until(pilot, lambda: app.run_phase == "stopped")
        await pilot.pause(1.2)  # the dashboard redraws once a second
        log = "\n".join(line.text for line in app.screen.query_one("#run-log").lines)
        assert "[sample] step 2: 3 prompts continued" in log
        panel = app.screen.query_one(SamplesPanel)
        assert not panel.display
        await pilot.press("s")
        assert panel.display and app.focused is panel
        assert not app.screen.query_one("#run-log").display
        samples = app.history.samples
        newest = str(app.screen.query_one("#samples-text", Static).render())
        assert f"greedy  ROMEO:{samples[-1].greedy[0]}".replace("\n", "⏎") in newest
        assert "sampled To be, or not to be" in newest
        assert panel.border_subtitle.startswith(f"step {samples[-1].step} · newest")
        await pilot.press("left_square_bracket")
        assert panel.border_subtitle.startswith(f"step {samples[-2].step} · "
                                                f"{len(samples) - 1}/{len(samples)}")
        assert panel.border_subtitle.endswith("End: newest")
        await pilot.press("end")  # straight back to following the newest
        assert panel.border_subtitle == (f"step {samples[-1].step} · newest · ←/→ or [ ] page")
        await pilot.press("left_square_bracket")
        await pilot.press("right")  # the panel's own keys page too; past the newest it follows
        assert panel.border_subtitle.startswith(f"step {samples[-1].step} · newest")
        await pilot.press("S")  # the key as the log's border writes it
        assert app.screen.query_one("#run-log").display and not panel.display
        # Try it: the playground opens on the checkpoint the stop wrote.
        await pilot.press("f7")
        await pilot.pause()
        assert isinstance(app.screen, PlaygroundScreen)
        source = app.screen.query_one("#playground-source", Input).value
        assert source == app.history.checkpoint.weights_path
        assert app.screen.query_one("#playground-chat").value is False  # a pretraining model
        await set_params(pilot, max_new_tokens=5)
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: "reached max tokens" in status_text(app)
                         or "ended at eos" in status_text(app))
        assert "minimind2 128/2" in status_text(app) and "tokens/s" in status_text(app)
        assert output_text(app).startswith("ROMEO:")
        await pilot.press("escape")
        assert app.screen is app.dashboard_screen


async def test_try_it_on_an_sft_run_opens_the_playground_in_turns(tmp_path):
    """It opened with chat off and "ROMEO:" as the prompt, a pretraining model's."""
    from textual.widgets import Checkbox

    app = quick_app(tmp_path, stage="sft", data_path="builtin:shakespeare-chat", from_weight="",
                    max_steps=2, sample_prompts=[])
    async with app.run_test(size=SIZE) as pilot:
        app.action_start()
        await wait_until(pilot, lambda: app.run_phase == "completed")
        await pilot.press("f7")
        await pilot.pause()
        assert isinstance(app.screen, PlaygroundScreen)
        assert app.screen.query_one("#playground-chat", Checkbox).value is True
        assert app.screen.query_one("#playground-prompt", TextArea).text == "Who are you?"


async def test_try_it_before_any_run_says_there_is_none_yet(tmp_path):
    """It said the run had not saved a checkpoint yet, of a run that never started."""
    app = quick_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f2")
        assert app.screen is app.dashboard_screen
        await pilot.press("f7")
        await pilot.pause()
        [shown] = app._notifications
        assert shown.message.startswith("No run on show yet: F5 starts the form's run")
        assert app.screen is app.dashboard_screen


# -- the playground ------------------------------------------------------------------------------
async def test_playground_streams_tokens_before_generation_ends(weights, monkeypatch):
    gate = GatedGenerator(first=3)
    monkeypatch.setattr(generation_worker, "generate_tokens", gate)
    app = MiniMindApp("tiny")
    async with app.run_test(size=SIZE) as pilot:
        app.open_playground(str(weights))
        await pilot.pause()
        assert app.screen.query_one("#playground-source", Input).value == str(weights)
        app.screen.query_one("#playground-prompt", TextArea).text = "To be"
        await set_params(pilot, temperature=0, max_new_tokens=12)
        await pilot.click("#sampling-stop_on_eos")  # off: always the full 12 tokens
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: "3 tokens ·" in status_text(app))
        partial_text = output_text(app)
        assert app.screen.generating  # the text above came while the worker was still going
        assert partial_text.startswith("To be") and "tokens/s" in status_text(app)
        gate.release.set()
        await wait_until(pilot, lambda: not app.screen.generating)
        await pilot.pause()
        full = "To be" + expected_text(weights, "To be", 12)
        assert output_text(app) == full and full.startswith(partial_text)
        assert "12 tokens" in status_text(app) and "reached max tokens" in status_text(app)
        # The model stays open: a second run does not open it again.
        opened = app.screen.opened
        assert opened is not None
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: not app.screen.generating)
        assert app.screen.opened is opened


async def test_playground_writes_control_characters_out(weights, monkeypatch):
    """Rich drops a few controls (BEL, backspace, CR) and passes ESC on to the terminal: a
    reply holding "\\x1b[2J" would act on the screen. Both are written out instead."""
    clear = load_tokenizer(None).encode("\x1b[2J\x07", add_special_tokens=False)
    monkeypatch.setattr(generation_worker, "generate_tokens", lambda *a, **k: iter(clear))
    app = MiniMindApp("tiny")
    async with app.run_test(size=SIZE) as pilot:
        app.open_playground(str(weights))
        await pilot.pause()
        app.screen.query_one("#playground-prompt", TextArea).text = "a\bb"
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: not app.screen.generating and app.screen._generated)
        await pilot.pause()
        assert output_text(app) == "a\\x08b\\x1b[2J\\x07"
        strip = app.screen.query_one("#playground-output-text", Static).render_line(0)
        assert "\x1b" not in strip.text and "\\x1b[2J" in strip.text


async def test_playground_stops_on_escape_and_reports_bad_input(weights, tmp_path, monkeypatch):
    gate = GatedGenerator(first=2)
    monkeypatch.setattr(generation_worker, "generate_tokens", gate)
    app = MiniMindApp("tiny")
    async with app.run_test(size=SIZE) as pilot:
        app.open_playground()
        await pilot.pause()
        await pilot.press("ctrl+g")  # no model path yet
        assert "Enter the model's path first" in status_text(app)
        screen = app.screen
        screen.query_one("#playground-source", Input).value = str(tmp_path / "nope.pth")
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: not screen.generating)
        await pilot.pause()
        assert status_text(app) == f"{tmp_path / 'nope.pth'}: no such file or folder"
        assert screen.query_one("#playground-status").has_class("-error")
        screen.query_one("#playground-source", Input).value = str(weights)
        await set_params(pilot, top_p=0)
        await pilot.press("ctrl+g")
        assert status_text(app) == "top-p must be > 0 and ≤ 1 (1: off), got 0.0"  # its label
        # Typed as text and refused whole: a number field dropped the comma without a word,
        # and "0,5" sampled at a temperature of 5.
        await set_params(pilot, top_p=0.9, temperature="0,5")
        screen.query_one("#sampling-repetition_penalty", Input).focus()
        await pilot.press("1", ",", "2")  # (select_on_focus: the keys replace the value)
        assert screen.query_one("#sampling-repetition_penalty", Input).value == "1,2"
        await pilot.press("ctrl+g")
        assert status_text(app) == "temperature must be a number, got '0,5'"
        await set_params(pilot, temperature=1, repetition_penalty=1)
        await set_params(pilot, top_p=0.9, max_new_tokens=50)
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: gate.paused.is_set())
        await pilot.press("escape")  # stops the generation; the screen stays
        gate.release.set()
        await wait_until(pilot, lambda: not screen.generating)
        await pilot.pause()
        assert app.screen is screen and "stopped" in status_text(app)
        assert "3 tokens" in status_text(app)  # the token in hand when the stop came
        await pilot.press("escape")  # nothing running: back where it was opened from
        assert app.screen is not screen


async def test_playground_says_when_the_models_context_ends_it(tmp_path):
    """A 16-position model: a generation the context cuts short says so (it said "reached max
    tokens"), and a prompt that fills the context is refused in words, with no type name."""
    model = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "max_position_embeddings": 16}
    torch.manual_seed(0)
    weights = tmp_path / "pretrain_64.pth"
    torch.save(MiniMindForCausalLM(MiniMindConfig(**model)).state_dict(), weights)
    RunSettings.parse({"model": model, "train": {"max_seq_len": 16}}).save_toml(
        tmp_path / "config.toml")
    app = MiniMindApp("tiny")
    async with app.run_test(size=SIZE) as pilot:
        app.open_playground(str(weights))
        await pilot.pause()
        screen = app.screen
        screen.query_one("#playground-prompt", TextArea).text = "To be"
        await set_params(pilot, temperature=0, max_new_tokens=50)
        await pilot.click("#sampling-stop_on_eos")
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: not screen.generating)
        await pilot.pause()
        assert "reached the model's context" in status_text(app), status_text(app)
        screen.query_one("#playground-prompt", TextArea).text = "the king is dead " * 10
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: not screen.generating)
        await pilot.pause()
        assert "the model's context is max_position_embeddings 16" in status_text(app)
        assert "PromptTooLong" not in status_text(app)


# -- generate, headless --------------------------------------------------------------------------
def test_generate_command_streams_the_continuation(weights):
    proc = subprocess.run(
        [sys.executable, "-m", "minimind_tui", "generate", str(weights), "--prompt", "ROMEO:",
         "--temperature", "0", "--max_new_tokens", "10", "--ignore_eos", "--device", "cpu"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ROMEO:" + expected_text(weights, "ROMEO:", 10) + "\n"
    assert "10 tokens in" in proc.stderr and "tokens/s" in proc.stderr
    assert "64/2" in proc.stderr and str(weights) in proc.stderr  # the model line


@pytest.mark.parametrize("args, message", [
    (["/nonexistent/w.pth", "--prompt", "x"], "/nonexistent/w.pth: no such file or folder"),
    (["WEIGHTS", "--prompt", "x", "--top_p", "1.5"], "top_p must be > 0 and ≤ 1"),
    (["WEIGHTS", "--prompt", "x", "--device", "tpu"], "device 'tpu': expected auto, cpu"),
])
def test_generate_command_errors_are_one_line(weights, capsys, args, message):
    from minimind_tui.cli.generate import main

    args = [str(weights) if a == "WEIGHTS" else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("minimind-tui generate:")


def test_tokenizer_mismatch_is_one_line(weights):
    from minimind.open_model import ModelOpenError, open_model

    with pytest.raises(ModelOpenError, match="/nonexistent/tok: no such tokenizer directory"):
        open_model(weights, tokenizer_path="/nonexistent/tok", device="cpu")


@pytest.mark.parametrize("sampling", [["--temperature", "0"], ["--temperature", "0.8"]])
def test_nan_weights_are_one_line_with_or_without_sampling(weights, capsys, sampling):
    """Sampling used to fail inside torch.multinomial ("probability tensor contains inf/nan")
    and greedy decoding printed token 0 forever: the weights themselves are refused."""
    from minimind_tui.cli.generate import main

    state = torch.load(weights, weights_only=True)
    state["model.layers.1.mlp.up_proj.weight"][3, 5] = float("nan")
    torch.save(state, weights)
    assert main([str(weights), "--prompt", "x", "--device", "cpu", *sampling]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert (f"{weights}: model.layers.1.mlp.up_proj.weight holds NaN/inf: the run that wrote "
            "it diverged; use an earlier checkpoint") in err


def test_generate_never_guesses_a_head_split(weights, tmp_path, capsys):
    """Away from its config.toml the file's shapes fit 2/1 ... 32/16 heads: generate names the
    flag that settles it, and with it computes what the run folder's model computes."""
    from minimind_tui.cli.generate import main

    alone = tmp_path / "alone" / weights.name
    alone.parent.mkdir()
    alone.write_bytes(weights.read_bytes())
    assert main([str(alone), "--prompt", "x", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "does not record its head split" in err and "--num_attention_heads" in err
    assert "4/2" in err and "8/4" in err and err.count("\n") == 1

    args = ["--prompt", "ROMEO:", "--temperature", "0", "--max_new_tokens", "6", "--ignore_eos",
            "--device", "cpu"]
    assert main([str(alone), *args, "--num_attention_heads", "4"]) == 0
    assert capsys.readouterr().out == "ROMEO:" + expected_text(weights, "ROMEO:", 6) + "\n"
    assert main([str(weights), *args, "--num_attention_heads", "8"]) == 2  # its record says 4
    assert "num_attention_heads 8 contradicts" in capsys.readouterr().err


def test_generate_says_when_finite_weights_overflow(weights, capsys):
    from minimind_tui.cli.generate import main

    state = torch.load(weights, weights_only=True)
    state["model.norm.weight"].fill_(torch.finfo(torch.float32).max)  # finite, output is not
    torch.save(state, weights)
    assert main([str(weights), "--prompt", "x", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "minimind-tui generate: failed: the model's output holds NaN/inf" in err
async def test_playground_chat_speaks_in_turns_and_keeps_the_history(weights):
    """Chat on: two prompts become two user turns; the second prompt's ids are the template's
    rendering of the whole conversation (checked by replaying it without the UI)."""
    from minimind.generate import encode_chat
    from minimind.open_model import open_model

    app = MiniMindApp("tiny")
    async with app.run_test(size=SIZE) as pilot:
        app.open_playground(str(weights))
        await pilot.pause()
        await set_params(pilot, temperature=0, max_new_tokens=5)
        await pilot.click("#sampling-stop_on_eos")  # off: five tokens each time
        await pilot.click("#playground-chat")
        screen = app.screen
        for prompt in ("Hi", "Again"):
            screen.query_one("#playground-prompt", TextArea).text = prompt
            await pilot.press("ctrl+g")
            await wait_until(pilot, lambda: not screen.generating and screen._generated)
            await pilot.pause()
        assert [t["role"] for t in screen.chat] == ["user", "assistant"] * 2
        assert [screen.chat[0]["content"], screen.chat[2]["content"]] == ["Hi", "Again"]
        opened = open_model(weights, device="cpu")
        stream = TextStream(opened.tokenizer)
        params = SamplingParams(max_new_tokens=5, temperature=0.0, stop_on_eos=False)
        ids = encode_chat(opened.tokenizer, [*screen.chat[:2], {"role": "user",
                                                                 "content": "Again"}])
        second = "".join(stream.push(t) for t in generate_tokens(opened.model, ids, params))
        assert screen.chat[3]["content"] == second + stream.flush()
        shown = output_text(app)
        assert shown.startswith("user: Hi\nassistant: ") and "\nuser: Again\nassistant: " in shown
        # Another model: a new chat (the old turns were fed to it, as if it had said them).
        other = weights.parent / "other" / weights.name
        other.parent.mkdir()
        for name in (weights.name, "config.toml"):
            (other.parent / name).write_bytes((weights.parent / name).read_bytes())
        screen.query_one("#playground-source", Input).value = str(other)
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: not screen.generating and screen._generated)
        await pilot.pause()
        assert [t["content"] for t in screen.chat if t["role"] == "user"] == ["Again"]
        assert output_text(app).startswith("user: Again\nassistant: ")
        await pilot.click("#playground-chat")  # off again: a new chat
        assert screen.chat == [] and output_text(app) == ""


def test_a_run_that_ended_without_samples_is_not_promised_one_at_its_end():
    from minimind.events import RunFinished, Sample
    from minimind_tui.run.history import RunHistory
    from minimind_tui.widgets.samples_panel import _empty_text
    from snapshot_apps.replay import fixed_events

    history = RunHistory()
    history.apply([e for e in fixed_events(20) if not isinstance(e, Sample)])
    assert _empty_text(history).endswith("at each evaluation and at the end.")
    history.apply([RunFinished(status="stopped", step=20)])
    assert _empty_text(history).startswith("No samples: the run stopped before its first")
