"""The memory estimate against what the device holds: the engine's warning before the first
step, and the form's readout."""

from __future__ import annotations

import io

from rich.console import Console

from minimind.engine import Trainer
from minimind.events import LogMessage, RunStarted, StepMetrics
from minimind.memory_estimate import memory_estimate
from minimind.sinks import QueueSink
from minimind_tui.app import MiniMindApp
from minimind_tui.widgets.readouts_panel import ReadoutsPanel
from test_app import SIZE

MIB = 1 << 20


def test_the_estimate_counts_states_activations_and_logits(tiny_settings):
    settings = tiny_settings(batch_size=4, max_seq_len=64, dtype="bfloat16")
    m, tokens = settings.model, 4 * 64
    estimate = memory_estimate(settings, 1_000_000)
    assert estimate.states == 16_000_000  # fp32 weights, grads and AdamW's two moments
    assert estimate.logits == tokens * m.vocab_size * 10
    assert estimate.activations == tokens * m.num_hidden_layers * m.hidden_size * 34
    assert memory_estimate(tiny_settings(dtype="float32"), 1).activations == 2 * (
        memory_estimate(tiny_settings(dtype="bfloat16"), 1).activations)
    checkpointed = memory_estimate(tiny_settings(grad_checkpointing=True), 1)
    assert checkpointed.activations == 4 * 64 * m.num_hidden_layers * m.hidden_size * 2
    lora = tiny_settings(stage="lora", from_weight="x.pth", data_path="builtin:shakespeare-chat",
                         packing=False)
    assert memory_estimate(lora, 1_000_000).states == 4_000_000  # frozen weights alone


def run(settings):
    sink = QueueSink()
    result = Trainer(settings, [sink]).run()
    return result, sink.drain()


def test_a_run_its_device_cannot_hold_is_warned_before_the_first_step(tiny_settings,
                                                                      monkeypatch):
    result, events = run(tiny_settings(max_steps=1))
    assert result.status == "completed"
    assert not [e for e in events if isinstance(e, LogMessage) and "memory" in e.text]

    monkeypatch.setattr("minimind.memory_estimate.device_memory", lambda device: MIB)
    result, events = run(tiny_settings(max_steps=1, out_dir=str(
        tiny_settings().train.out_dir) + "-small", batch_size=8))
    assert result.status == "completed"  # a warning: the estimate is rough
    kinds = [type(e) for e in events]
    warning = next(e for e in events if isinstance(e, LogMessage) and "memory" in e.text)
    assert kinds.index(RunStarted) < events.index(warning) < kinds.index(StepMetrics)
    assert warning.level == "warning"
    assert warning.text.startswith("memory: this run needs about ")
    assert "most of it logits" in warning.text
    assert "this machine's RAM holds 1.0 MiB: expect it to run out of memory; lower " \
           "batch_size or max_seq_len" in warning.text


def test_a_model_whose_training_state_alone_cannot_fit_is_refused(tiny_settings, monkeypatch):
    class Scarce:  # what psutil reports on a machine with 1 MiB free
        total = available = MIB

    monkeypatch.setattr("minimind.memory_estimate.psutil.virtual_memory", Scarce)
    result, _ = run(tiny_settings(max_steps=1))
    assert result.status == "failed" and result.cause == "input"
    assert result.reason == (
        "model: 1.2M parameters need about 18.5 MiB for weights, gradients and AdamW state "
        "alone, but this machine has 1.0 MiB free; choose a smaller shape")


def shown(widget) -> str:
    console = Console(width=200, file=io.StringIO())
    console.print(widget.content)
    return " ".join(console.file.getvalue().split())


async def test_the_forms_memory_readout_says_when_the_device_holds_less(monkeypatch):
    for held, said in ((1 << 50, False), (MIB, True)):
        monkeypatch.setattr("minimind.memory_estimate.device_memory",
                            lambda device, held=held: held)
        app = MiniMindApp("tiny")
        async with app.run_test(size=SIZE) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            text = shown(app.configure_screen.query_one(ReadoutsPanel))
            assert "train memory ≈ " in text
            assert ("more than the 1.0 MiB this machine holds" in text) is said, text
