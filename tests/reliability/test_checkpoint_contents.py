"""Checkpoints that load but hold the wrong thing: a resume file with wrong contents, records that
disagree about the model, weights that are not finite. Each is one clear line and nothing is
written; no weights file anywhere is given NaN/inf."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from minimind import MiniMindConfig, MiniMindForCausalLM, load_model
from minimind.checkpoint import capture_rng, load_resume, save_checkpoint
from minimind.checkpoint_reader import Checkpoint, read_checkpoint
from minimind.engine import Trainer
from minimind.export import export_upstream
from minimind.export_destination import ExportError
from minimind.meter import NonFiniteError
from minimind.sinks import QueueSink
from minimind.torchfile import CheckpointError
from minimind_tui.form.presets import load_settings

REPO = Path(__file__).resolve().parents[2]
DATA = b"".join(b'{"text": "line %d: to be or not to be, that is the question"}\n' % i
                for i in range(40))
RESUME = "pretrain_128_resume.pth"
WEIGHTS = "pretrain_128.pth"


def tiny(folder: Path, data: Path, **train):
    return load_settings("tiny", {"train": {
        "out_dir": str(folder), "data_path": str(data), "packing": False, "max_steps": 1,
        "val_data_path": "", "eval_interval": 0, "dtype": "float32", "max_seq_len": 64,
        "batch_size": 4, **train}})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run folder after one real step of the tiny preset: config.toml and the pair."""
    root = tmp_path_factory.mktemp("trained")
    (root / "data.jsonl").write_bytes(DATA)
    result = Trainer(tiny(root / "run", root / "data.jsonl"), [QueueSink()]).run()
    assert result.status == "completed", result
    return root / "run"


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    shutil.copytree(trained, tmp_path / "run")
    (tmp_path / "data.jsonl").write_bytes(DATA)
    return tmp_path / "run"


def _nan_weights(state):
    state["model"]["model.layers.0.mlp.up_proj.weight"][0, 0] = float("nan")


def _empty_rng(state):
    state["rng"][0]["torch"] = torch.empty(0, dtype=torch.uint8)


def _set(key, value):
    return lambda state: state.__setitem__(key, value)


DAMAGE = {  # how the file is damaged -> what the one line must say
    "settings as a list": (_set("settings", [1, 2]), "settings: Input should be a valid"),
    "empty RNG state": (_empty_rng, "rng.0.torch: must be a non-empty RNG state"),
    "no RNG at all": (_set("rng", []), "rng: List should have at least 1 item"),
    "missing optimizer": (lambda s: s.pop("optimizer"), "optimizer: Field required"),
    "NaN weights": (_nan_weights, "model: model.layers.0.mlp.up_proj.weight holds NaN/inf"),
    "step as text": (lambda s: s["progress"].__setitem__("step", "3"),
                     "progress.step: Input should be a valid integer"),
    "world_size 0": (_set("world_size", 0), "world_size: Input should be greater than"),
    "no weights": (_set("model", {}), "model: holds no tensors"),
}


def damage(folder: Path, how) -> Path:
    path = folder / RESUME
    state = torch.load(path, weights_only=True)
    how(state)
    torch.save(state, path)
    return path


@pytest.mark.parametrize("case", DAMAGE)
def test_a_resume_file_with_wrong_contents_is_one_line(run_copy, case):
    how, message = DAMAGE[case]
    resume, weights = damage(run_copy, how), run_copy / WEIGHTS
    before = weights.read_bytes()
    sink = QueueSink()
    settings = tiny(run_copy, run_copy.parent / "data.jsonl", from_resume=True, max_steps=2)
    result = Trainer(settings, [sink]).run()
    assert result.status == "failed" and result.cause == "input", result
    assert result.reason.startswith(f"train.from_resume: {resume}: not a valid resume "
                                    "checkpoint: "), result.reason
    assert message in result.reason and "\n" not in result.reason
    assert weights.read_bytes() == before  # the "repair" of the weights file never ran


def test_nan_resume_file_exits_2_and_keeps_the_good_weights(run_copy):
    """The case that once overwrote the good weights file with NaN: through the real CLI."""
    resume, weights = damage(run_copy, _nan_weights), run_copy / WEIGHTS
    good = weights.read_bytes()  # differs from the resume file now: it would be "repaired"
    proc = subprocess.run(
        [sys.executable, "-m", "minimind_tui", "--no-ui", "--preset", "tiny", "--out_dir",
         str(run_copy), "--data_path", str(run_copy.parent / "data.jsonl"), "--packing", "0",
         "--from_resume", "1", "--max_steps", "2", "--val_data_path", "", "--eval_interval",
         "0", "--dtype", "float32", "--max_seq_len", "64", "--batch_size", "4"],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert lines == [f"minimind-tui: error: train.from_resume: {resume}: not a valid resume "
                     "checkpoint: model: model.layers.0.mlp.up_proj.weight holds NaN/inf (the "
                     "run diverged; use an earlier checkpoint)"], proc.stderr
    assert weights.read_bytes() == good  # untouched, not rewritten with NaN


# -- hostile contents, generated ---------------------------------------------------------------
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=3),
    st.lists(st.integers(0, 3), max_size=2), st.dictionaries(st.text(max_size=2), st.none(),
                                                             max_size=2),
    st.just(torch.zeros(2)), st.just(torch.full((2,), float("inf"))),
)
PATHS = st.sampled_from([
    ("model",), ("optimizer",), ("optimizer", "state"), ("optimizer", "param_groups"),
    ("scaler",), ("progress",), ("progress", "step"), ("progress", "elapsed"), ("rng",),
    ("rng", 0), ("rng", 0, "torch"), ("settings",), ("settings", "model"),
    ("settings", "model", "hidden_size"), ("settings", "train"), ("world_size",), ("data",),
])
DELETE = object()


@hypothesis_settings(max_examples=60, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(st.tuples(PATHS, st.one_of(st.just(DELETE), VALUES)), min_size=1,
                        max_size=3))
def test_any_resume_contents_are_accepted_whole_or_refused_in_one_line(trained, changes):
    state = torch.load(trained / RESUME, weights_only=True)
    for path, value in changes:
        parent = state
        try:
            for key in path[:-1]:
                parent = parent[key]
            if not isinstance(parent, (dict, list)):  # not a tensor: no indexing into one
                continue
            if value is DELETE:
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change already replaced what this path goes through
    try:
        checked = load_resume(trained / RESUME, state)
    except CheckpointError as e:
        assert "\n" not in str(e) and str(trained / RESUME) in str(e)
        return
    # Accepted: what the engine reads from it is there and well formed.
    assert checked["progress"]["step"] >= 0 and len(checked["rng"]) == checked["world_size"]
    assert all(torch.isfinite(v).all() for v in checked["model"].values())


# -- records that disagree ---------------------------------------------------------------------
def test_an_edited_head_split_is_refused_by_every_reader(run_copy, tmp_path):
    """4/2 -> 8/4 heads keeps every tensor shape: without the resume file's own settings the
    export would be a wrong model that passes its own logit check."""
    toml = run_copy / "config.toml"
    toml.write_text(toml.read_text().replace("num_attention_heads = 4", "num_attention_heads = 8")
                    .replace("num_key_value_heads = 2", "num_key_value_heads = 4"))
    expected = (f"its records disagree: {toml} and the settings saved in {run_copy / RESUME} "
                "(num_attention_heads 8 vs 4, num_key_value_heads 4 vs 2)")
    with pytest.raises(CheckpointError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        read_checkpoint(run_copy)
    for source in (run_copy / WEIGHTS, run_copy / RESUME):
        with pytest.raises(CheckpointError, match="its records disagree"):
            load_model(source)
    proc = subprocess.run([sys.executable, "-m", "minimind_tui", "export", str(run_copy),
                           str(tmp_path / "hf")], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and expected in proc.stderr
    assert "verified" not in proc.stderr and not (tmp_path / "hf").exists()

    # Restored, the same folder reads, naming the record it used and the one that agrees.
    toml.write_text(toml.read_text().replace("num_attention_heads = 8", "num_attention_heads = 4")
                    .replace("num_key_value_heads = 4", "num_key_value_heads = 2"))
    read = read_checkpoint(run_copy)
    assert read.model.config.num_attention_heads == 4
    assert read.config_origin == f"{toml} (agrees with the settings saved in {run_copy / RESUME})"


# -- no writer gives a file NaN/inf -------------------------------------------------------------
def small_model() -> MiniMindForCausalLM:
    torch.manual_seed(0)
    return MiniMindForCausalLM(MiniMindConfig(hidden_size=64, num_hidden_layers=1))


def test_a_checkpoint_with_nan_weights_is_never_written(tmp_path):
    model = small_model()
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
    optimizer = torch.optim.AdamW(model.parameters())
    with pytest.raises(NonFiniteError, match="layers.0.mlp.up_proj.weight holds NaN/inf"):
        save_checkpoint(tmp_path / "w.pth", model=model, optimizer=optimizer, scaler=None,
                        progress={"step": 1}, rng=[capture_rng(torch.device("cpu"))],
                        settings={}, world_size=1, data={})
    assert list(tmp_path.iterdir()) == []


def test_weights_beyond_float16_are_not_written_as_inf(tmp_path):
    model = small_model()
    with torch.no_grad():
        model.model.norm.weight[0] = 1e6  # finite in float32, inf in upstream's float16
    with pytest.raises(ExportError, match="model.norm.weight holds NaN/inf"):
        export_upstream(Checkpoint(model, Path("memory"), "test", Path()), tmp_path / "up.pth")
    assert list(tmp_path.iterdir()) == []


def unwritable_targets(tmp_path: Path) -> list[Path]:
    """Places an export cannot be written to: below a file, and (where permissions bind, i.e.
    not as root) inside a read-only folder."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    targets = [blocker / "hf"]
    if os.geteuid() != 0:
        read_only = tmp_path / "read-only"
        read_only.mkdir()
        read_only.chmod(0o555)
        targets.append(read_only / "hf")
    return targets


@pytest.mark.parametrize("format", ["hf", "upstream"])
def test_export_where_it_cannot_write_is_one_line(trained, tmp_path, format):
    for target in unwritable_targets(tmp_path):
        proc = subprocess.run([sys.executable, "-m", "minimind_tui", "export", str(trained),
                               str(target), "--format", format], capture_output=True, text=True,
                              cwd=REPO, timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith(f"minimind-tui export: error: {target}")
        assert "cannot write" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
