import io
import json
import math

import pytest

from minimind.events import (CheckpointSaved, LogMessage, RunFinished, RunStarted, StepMetrics,
                             event_from_dict, event_from_json)
from minimind.data.sampler import Plan, plan_warnings
from minimind.schedule import learning_rate
from minimind.sinks import ConsoleSink, JsonlSink, QueueSink


def test_cosine_lr_known_values():
    assert learning_rate(0, 100, 5e-4) == pytest.approx(5e-4)
    assert learning_rate(50, 100, 5e-4) == pytest.approx(5e-4 * 0.55)
    assert learning_rate(100, 100, 5e-4) == pytest.approx(5e-5)


def test_minimind2_lr_starts_at_1_1x():
    assert learning_rate(0, 100, 5e-4, schedule="minimind2") == pytest.approx(5.5e-4)
    assert learning_rate(100, 100, 5e-4, schedule="minimind2") == pytest.approx(5e-5)


def test_warmup_is_linear_then_cosine_from_peak():
    lrs = [learning_rate(s, 110, 1e-3, warmup=10) for s in range(12)]
    assert lrs[:10] == pytest.approx([1e-4 * (i + 1) for i in range(10)])
    assert lrs[10] == pytest.approx(1e-3)
    assert lrs[11] < 1e-3
    assert learning_rate(110, 110, 1e-3, warmup=10) == pytest.approx(1e-4)
    expected = 1e-3 * (0.1 + 0.45 * (1 + math.cos(math.pi * 50 / 100)))
    assert learning_rate(60, 110, 1e-3, warmup=10) == pytest.approx(expected)


def _metrics(step=10):
    return StepMetrics(step=step, total_steps=100, epoch=1, epochs=2, epoch_step=step,
                       steps_per_epoch=50, loss=3.5, logits_loss=3.4, aux_loss=0.1, lr=1e-4,
                       grad_norm=0.5, tokens_per_sec=1000.0, tokens_seen=5000, elapsed=12.0,
                       eta_seconds=60.0, step_time=0.6, rss=123)


def test_wsd_warms_up_holds_the_peak_then_decays_linearly_to_a_tenth():
    # 10 warmup steps, 100 in all (0..99), the last 20 % decaying: steps 80..99 fall in a
    # straight line from the peak, the last one at a tenth (it stopped short, at 0.145 x lr).
    lr = [learning_rate(s, 100, 1e-3, warmup=10, schedule="wsd", decay_fraction=0.2)
          for s in range(100)]
    assert lr[0] == pytest.approx(1e-4) and lr[9] == pytest.approx(1e-3)
    assert all(x == 1e-3 for x in lr[10:80])
    assert lr[80] == pytest.approx(1e-3 * (1 - 0.9 / 20))
    assert lr[99] == pytest.approx(1e-4)
    steps = [lr[i] - lr[i + 1] for i in range(79, 99)]
    assert max(steps) == pytest.approx(min(steps))  # a straight line
    # However short the decay: two steps end at a tenth too (they ended at 0.55 x lr).
    assert [learning_rate(s, 4, 1e-3, schedule="wsd", decay_fraction=0.5) for s in range(4)
            ] == pytest.approx([1e-3, 1e-3, 5.5e-4, 1e-4])


def test_a_run_that_ends_within_its_warmup_says_so(tiny_settings):
    """The schedule's peak and decay never came, and nothing said so."""
    from minimind.engine import Trainer

    sink = QueueSink()
    settings = tiny_settings(max_steps=2, warmup_iters=4, learning_rate=1e-3)
    assert Trainer(settings, [sink]).run().status == "completed"
    assert [e.text for e in sink.drain() if isinstance(e, LogMessage) and e.level == "warning"
            ] == ["the run's 2 steps end within warmup_iters (4): the learning rate only rises, "
                  "to 0.0005 at the last step (learning_rate is 0.001), and never decays"]
    # As many steps as warmup_iters reach the peak, at the last (it spoke of "only rises").
    train = settings.train.model_copy(update={"warmup_iters": 2})
    assert plan_warnings(train, Plan(2, 2, 2, 10_000), 0) == [
        "the run's 2 steps are all warmup (warmup_iters 2): the learning rate reaches "
        "learning_rate (0.001) at the last step only, and never decays"]


def test_a_wsd_decay_too_short_for_a_step_says_so(tiny_settings):
    """decay_fraction 0.01 of 20 steps rounds to none: the lr stayed at its peak to the end,
    where the README says wsd ends at a tenth, and nothing said so."""
    train = tiny_settings(lr_schedule="wsd", decay_fraction=0.01, learning_rate=3e-3,
                          warmup_iters=0).train
    assert plan_warnings(train, Plan(20, 20, 20, 10_000), 0) == [
        "wsd's decay_fraction (0.01) of the run's 20 steps rounds to no step: the learning "
        "rate stays at 0.003 to the end and never decays; for a decay set decay_fraction to "
        "at least 0.05"]
    assert learning_rate(19, 20, 3e-3, schedule="wsd", decay_fraction=0.01) == 3e-3
    assert learning_rate(19, 20, 3e-3, schedule="wsd", decay_fraction=0.05) == pytest.approx(3e-4)
    for fine in (train.model_copy(update={"decay_fraction": 0.05}),
                 train.model_copy(update={"lr_schedule": "cosine"})):
        assert plan_warnings(fine, Plan(20, 20, 20, 10_000), 0) == []


def test_steps_smaller_than_the_settings_make_them_are_said(tiny_settings):
    """accumulation_steps 1000 on 25 micro-batches: the header said positions/step 128,000,
    and the one step trained on 50 samples, with no word."""
    from minimind.data.sampler import plan_run

    train = tiny_settings(batch_size=2, accumulation_steps=1000, max_steps=0,
                          warmup_iters=0).train
    plan = plan_run(50, 2, 1000, 1, 0)
    assert (plan.batches_per_epoch, plan.steps_per_epoch) == (25, 1)
    assert plan_warnings(train, plan, 0) == [
        "an epoch holds 50 sample(s) per process, fewer than a step's batch_size × "
        "accumulation_steps (2 × 1000 = 2000): each step trains on those 50, not the "
        "positions/step the header counts; lower batch_size or accumulation_steps to fit the "
        "data"]
    # Per process: two ranks share 50 samples, and a batch of 1000 is no fit either.
    assert plan_run(50, 1000, 1, 1, 0, world_size=2).samples_per_epoch == 25
    assert plan_warnings(train.model_copy(update={"accumulation_steps": 25}),
                         plan_run(50, 2, 25, 1, 0), 0) == []


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    from minimind import MiniMindConfig, MiniMindForCausalLM
    from minimind.optim import build_optimizer
    from minimind.settings import TrainSettings

    model = MiniMindForCausalLM(MiniMindConfig(hidden_size=64, num_hidden_layers=2,
                                               use_moe=True))
    pair = build_optimizer(model, TrainSettings(optimizer="muon"))
    names = {p: n for n, p in model.named_parameters()}
    muon = {names[p] for g in pair.optimizers["muon"].param_groups for p in g["params"]}
    adamw = {names[p] for g in pair.optimizers["adamw"].param_groups for p in g["params"]}
    assert muon.isdisjoint(adamw) and muon | adamw == set(names.values())
    assert "model.layers.0.self_attn.q_proj.weight" in muon
    assert "model.layers.1.mlp.experts.3.down_proj.weight" in muon
    assert "model.layers.0.mlp.shared_experts.0.up_proj.weight" in muon
    assert adamw == {"model.embed_tokens.weight", "model.norm.weight",
                     *(f"model.layers.{i}.{n}" for i in range(2) for n in (
                         "input_layernorm.weight", "post_attention_layernorm.weight",
                         "mlp.gate.weight"))}


@pytest.mark.parametrize("muon_lr", [0.0, 0.02])
def test_each_optimizer_group_follows_the_schedule_from_its_own_peak(muon_lr):
    from minimind import MiniMindConfig, MiniMindForCausalLM
    from minimind.optim import apply_settings, build_optimizer, set_learning_rate
    from minimind.settings import TrainSettings

    model = MiniMindForCausalLM(MiniMindConfig(hidden_size=64, num_hidden_layers=2))
    t = TrainSettings(optimizer="muon", learning_rate=5e-4, muon_lr=muon_lr)
    pair = build_optimizer(model, t)
    muon = pair.optimizers["muon"]
    assert muon.param_groups[0]["adjust_lr_fn"] == ("original" if muon_lr else "match_rms_adamw")
    set_learning_rate(pair, 2.5e-4)  # half-way down the schedule
    assert pair.optimizers["adamw"].param_groups[0]["lr"] == 2.5e-4
    assert muon.param_groups[0]["lr"] == pytest.approx((muon_lr or 5e-4) / 2)
    # A resume loads the saved groups, which carry the saving run's options; the resumed run's
    # own settings are put back on them (the engine calls apply_settings after loading).
    resumed = TrainSettings(optimizer="muon", learning_rate=5e-4, muon_lr=0.01,
                            weight_decay=0.05)
    again = build_optimizer(model, resumed)
    again.load_state_dict(pair.state_dict())
    apply_settings(again, resumed)
    set_learning_rate(again, 2.5e-4)
    group = again.optimizers["muon"].param_groups[0]
    assert group["lr"] == pytest.approx(resumed.muon_lr / 2)
    assert group["adjust_lr_fn"] == "original"
    assert {g["weight_decay"] for g in again.param_groups} == {0.05}


def test_muon_lr_needs_muon():
    from minimind.settings_rules import validate

    _, problems = validate({"train": {"muon_lr": 0.02, "data_path": "x"}})
    assert [(p.loc, p.related) for p in problems] == [("train.muon_lr", ("train.optimizer",))]
    _, problems = validate({"train": {"muon_lr": 0.02, "optimizer": "muon", "data_path": "x"}})
    assert problems == []


def test_decay_fraction_needs_wsd():
    """Recorded under cosine it would read as a setting the run followed, and it was not."""
    from minimind.settings_rules import validate

    for schedule in ("cosine", "minimind2"):
        _, problems = validate({"train": {"decay_fraction": 0.5, "lr_schedule": schedule,
                                          "data_path": "x"}})
        assert [(p.loc, p.message, p.related) for p in problems] == [
            ("train.decay_fraction", "only applies when lr_schedule is wsd",
             ("train.lr_schedule",))]
    _, problems = validate({"train": {"decay_fraction": 0.5, "lr_schedule": "wsd",
                                      "data_path": "x"}})
    assert problems == []


def test_events_round_trip_through_json():
    for event in (_metrics(), LogMessage(level="warning", text="héllo"),
                  RunFinished(status="failed", step=3, reason="x", cause="input"),
                  CheckpointSaved(step=5, weights_path="a.pth", resume_path="b.pth")):
        assert event_from_json(event.to_json()) == event


def test_console_line_is_upstream_style():
    out = io.StringIO()
    ConsoleSink(out).emit(_metrics())
    line = out.getvalue()
    assert line.startswith("Epoch:[1/2](10/50), loss: 3.5000, logits_loss: 3.4000, "
                           "aux_loss: 0.1000, lr: 0.00010000, epoch_time: 0.4min")


def test_queue_sink_is_bounded_and_drops_oldest():
    sink = QueueSink(maxlen=3)
    for step in range(10):
        sink.emit(_metrics(step))
    assert [e.step for e in sink.drain()] == [7, 8, 9]
    assert sink.drain() == []


def test_jsonl_sink_lines_are_readable_while_open(tmp_path):
    sink = JsonlSink(tmp_path / "m.jsonl")
    sink.emit(_metrics(1))
    assert sink.flush()
    # Flushed per line: another reader sees it before close.
    lines = (tmp_path / "m.jsonl").read_text().splitlines()
    assert event_from_json(lines[0]).step == 1
    sink.close()


def test_step_line_shows_time_left_in_the_run_when_max_steps_cuts_the_epoch():
    from minimind.event_text import step_line

    whole = _metrics()  # 40 steps left in the epoch, 90 in the run: upstream's epoch_time
    assert "epoch_time: 0.4min" in step_line(whole) and "eta" not in step_line(whole)
    cut = _cut()
    assert "eta: 0.1min" in step_line(cut) and "epoch_time" not in step_line(cut)


def _cut():
    e = _metrics()
    e.total_steps = 20  # max_steps ends the run 10 steps from now, 40 before the epoch ends
    return e


def test_jsonl_sink_appending_after_a_cut_line_starts_a_new_one(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(_metrics(1).to_json() + "\n" + '{"kind": "step", "ti')  # a copy cut short
    sink = JsonlSink(path, append=True)
    sink.emit(_metrics(2))
    sink.close()
    lines = path.read_text().splitlines()
    assert event_from_json(lines[-1]).step == 2 and len(lines) == 3


def test_a_line_whose_numbers_are_text_is_no_event():
    bad = {**_metrics(1).to_dict(), "loss": "high"}
    with pytest.raises(TypeError, match="step.loss is str"):
        event_from_dict(bad)


def test_a_start_whose_settings_sections_are_no_tables_is_no_event(tmp_path):
    """`{"train": 3}` in a start line crashed `watch` (its log line reads train.stage) and the
    runs view's diff, which compares the starts of a resumed run."""
    from minimind.runs import resumed_changes
    from snapshot_apps.replay import fixed_events

    start = next(e for e in fixed_events(1) if isinstance(e, RunStarted)).to_dict()
    bad = {**start, "settings": {**start["settings"], "train": 3}}
    with pytest.raises(TypeError, match="run_started.settings holds a section that is not a"):
        event_from_dict(bad)
    (tmp_path / "metrics.jsonl").write_text(json.dumps(start) + "\n" + json.dumps(bad) + "\n")
    assert resumed_changes(tmp_path) == []


def test_counts_and_rates_read_in_about_three_figures():
    """A slow run's rate in the form's ETA read "295.656 tokens/s"."""
    from minimind.units import format_count

    assert [format_count(x) for x in (295.656, 12.345, 0.5, 999.6, 40_960, 1_213_056)] == [
        "296", "12.3", "0.5", "1,000", "40.96k", "1.21M"]
