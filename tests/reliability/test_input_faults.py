"""Corrupt, foreign and hostile input files and values, each injected for real.

Every fault must end the run before its first step with one clear reason that names the file
(or the field) and why, never a traceback; a crafted checkpoint must not run its payload.
"""

from __future__ import annotations

import ast
import gzip
import os
import pickle
import random
import re
import resource
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import torch

from minimind.checkpoint_reader import read_checkpoint
from minimind.data.corpus import default_cache_dir
from minimind.engine import Trainer
from minimind.events import LogMessage, StepMetrics
from minimind.settings import SettingsError
from minimind.settings_file import read_toml
from minimind.sinks import QueueSink
from minimind.torchfile import CheckpointError
from minimind_tui.form.presets import bundled_preset_dir, load_settings

CLI = [sys.executable, "-m", "minimind_tui", "--no-ui"]
SMALL_DATA = b"".join(b'{"text": "line %d: to be or not to be, that is the question"}\n' % i
                      for i in range(40))
RANDOM_BYTES = random.Random(0).randbytes(4096)  # the same every run: no flaky messages


class Payload:
    """Unpickling this creates `marker`, as a crafted checkpoint could run any code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def run(settings):
    sink = QueueSink()
    result = Trainer(settings, [sink]).run()
    return result, sink.drain()


def assert_refused(result, events, prefix, path):
    """A failed input run whose one-line reason starts with `prefix` and names `path`."""
    assert result.status == "failed" and result.cause == "input", result
    assert result.reason.startswith(prefix), result.reason
    assert str(path) in result.reason and "Traceback" not in result.reason
    assert "\n" not in result.reason
    assert not any(isinstance(e, StepMetrics) for e in events)


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(SMALL_DATA)
    return path


@pytest.fixture
def settings(tiny_settings, data):
    """The tiny preset on a small file, padded (no token cache to build)."""

    def make(model=None, **train):
        return tiny_settings(model, **{"data_path": str(data), "packing": False,
                                       "max_steps": 1, **train})

    return make


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real checkpoint pair from one step of the tiny preset: (weights, resume) bytes."""
    out = tmp_path_factory.mktemp("trained")
    (out / "data.jsonl").write_bytes(SMALL_DATA)
    settings = load_settings("tiny", {"train": {
        "out_dir": str(out / "run"), "data_path": str(out / "data.jsonl"), "packing": False,
        "max_steps": 1, "val_data_path": "", "eval_interval": 0, "dtype": "float32",
        "max_seq_len": 64, "batch_size": 4}})
    assert run(settings)[0].status == "completed"
    return ((out / "run" / "pretrain_128.pth").read_bytes(),
            (out / "run" / "pretrain_128_resume.pth").read_bytes())


# -- hostile pickles --------------------------------------------------------------------------
def crafted(path, marker, how):
    if how == "torch.save":  # what an attacker would hand out as a .pth
        torch.save({"model": Payload(marker), "progress": {"step": 1}}, path)
    else:
        path.write_bytes(pickle.dumps(Payload(marker), protocol=2))


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_the_payload_is_live(tmp_path, how):
    """The check on the other tests: loaded unsafely, the crafted file does create its marker."""
    marker = tmp_path / "ran"
    crafted(tmp_path / "x.pth", marker, how)
    if how == "torch.save":
        torch.load(tmp_path / "x.pth", weights_only=False)
    else:
        pickle.loads((tmp_path / "x.pth").read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_crafted_resume_file_is_refused_and_runs_nothing(settings, tmp_path, how):
    marker = tmp_path / "ran"
    resume = tmp_path / "run" / "pretrain_128_resume.pth"
    resume.parent.mkdir()
    crafted(resume, marker, how)
    result, events = run(settings(from_resume=True))
    assert_refused(result, events, "train.from_resume:", resume)
    assert f"refused: it asks to import {open.__module__}.open" in result.reason
    assert not marker.exists()


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_crafted_from_weight_file_is_refused_and_runs_nothing(settings, tmp_path, how):
    marker, weights = tmp_path / "ran", tmp_path / "gift.pth"
    crafted(weights, marker, how)
    result, events = run(settings(from_weight=str(weights)))
    assert_refused(result, events, f"train.from_weight: {weights}: refused", weights)
    assert not marker.exists()


def test_crafted_file_is_refused_by_export(tmp_path):
    marker, weights = tmp_path / "ran", tmp_path / "gift.pth"
    crafted(weights, marker, "torch.save")
    with pytest.raises(CheckpointError, match=re.escape(f"{weights}: refused")):
        read_checkpoint(weights)
    assert not marker.exists()


def test_a_pickle_of_another_protocol_is_refused_too(settings, tmp_path):
    """pickle's default protocol frames its opcodes; the safe loader stops at the frame."""
    marker, weights = tmp_path / "ran", tmp_path / "gift.pth"
    weights.write_bytes(pickle.dumps(Payload(marker)))
    result, events = run(settings(from_weight=str(weights)))
    assert_refused(result, events, f"train.from_weight: {weights}: not a readable", weights)
    assert not marker.exists()


# -- corrupt and foreign checkpoint files ------------------------------------------------------
def corrupt(path, kind, checkpoint):
    weights, resume = checkpoint
    if kind == "folder":
        path.mkdir()
        return
    path.write_bytes({"truncated": resume[: len(resume) // 2], "random": RANDOM_BYTES,
                      "empty": b"", "text": b"step = 3\nloss = 2.5\n", "weights": weights,
                      "truncated weights": weights[: len(weights) // 2]}[kind])


@pytest.mark.parametrize("kind, why", [
    ("truncated", "not a readable PyTorch checkpoint"),
    ("random", "not a readable PyTorch checkpoint"),
    ("empty", "the file is empty"),
    ("text", "not a readable PyTorch checkpoint"),
    ("weights", "a weights file, not a resume checkpoint"),
    ("folder", "is a folder"),
])
def test_corrupt_resume_file_is_refused_by_name(settings, tmp_path, checkpoint, kind, why):
    resume = tmp_path / "run" / "pretrain_128_resume.pth"
    resume.parent.mkdir()
    corrupt(resume, kind, checkpoint)
    result, events = run(settings(from_resume=True))
    assert_refused(result, events, f"train.from_resume: {resume}: {why}", resume)


@pytest.mark.parametrize("kind, name, why", [
    ("random", "w.pth", "not a readable PyTorch checkpoint"),
    ("empty", "w.pth", "the file is empty"),
    ("text", "w.pth", "not a readable PyTorch checkpoint"),
    ("truncated weights", "w.pth", "not a readable PyTorch checkpoint"),
    ("folder", "w.pth", "neither a run folder (no config.toml) nor a saved model"),
    ("random", "w.safetensors", "not a readable safetensors file"),
])
def test_corrupt_from_weight_file_is_refused_by_name(settings, tmp_path, checkpoint, kind, name,
                                                     why):
    weights = tmp_path / name
    corrupt(weights, kind, checkpoint)
    result, events = run(settings(from_weight=str(weights)))
    assert_refused(result, events, f"train.from_weight: {weights}: {why}", weights)


@pytest.mark.parametrize("kind", ["truncated", "random", "empty"])
def test_an_unreadable_resume_file_beside_the_weights_is_refused_not_skipped(
        settings, tmp_path, checkpoint, kind):
    """It holds the record of how the weights were trained (head split, settings, tokenizer):
    skipped without a word, generate took the config from a config.toml beside it alone, and
    the refusal of a file with no record said to keep it beside its resume file, which it
    was."""
    weights, resume = tmp_path / "pretrain_128.pth", tmp_path / "pretrain_128_resume.pth"
    weights.write_bytes(checkpoint[0])
    corrupt(resume, kind, checkpoint)
    why = f"{resume}: the resume file beside pretrain_128.pth cannot be read ("
    with pytest.raises(CheckpointError, match=re.escape(why)):
        read_checkpoint(weights)
    result, events = run(settings(from_weight=str(weights)))
    assert_refused(result, events, f"train.from_weight: {why}", resume)
    resume.unlink()  # moved away, as it says: the weights open without it
    assert read_checkpoint(weights, num_attention_heads=4).weights_path == weights


def test_shape_mismatch_hint_names_the_files_head_count_and_works(settings, tmp_path):
    """A MiniMind2 file does not record its heads; the hint must give a split that loads."""
    shape = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2}
    first = settings(shape, out_dir=str(tmp_path / "first"))
    assert run(first)[0].status == "completed"
    weights = tmp_path / "first" / "pretrain_64.pth"

    result, _ = run(settings(from_weight=str(weights)))  # the tiny preset: hidden 128
    assert result.cause == "input" and "weights file does not fit" in result.reason
    hint = re.search(r"^hint: build the model with (.*)$", result.reason, re.M)[1]
    fields = {k: ast.literal_eval(v) for k, v in (kv.split("=") for kv in hint.split(", "))}
    assert fields["num_attention_heads"] == 4 and fields["num_key_value_heads"] == 2
    assert fields["hidden_size"] == 64

    followed = settings(fields, out_dir=str(tmp_path / "second"), from_weight=str(weights))
    result, events = run(followed)
    assert result.status == "completed", result
    assert any(isinstance(e, LogMessage) and e.text.startswith("initialised from")
               for e in events)


def test_an_ambiguous_head_split_is_called_a_guess(settings, tmp_path):
    """Into an 8-head model the same file's shapes also fit 8/4 heads, which would load and
    compute another function: away from its run folder, the message must say the split is
    not recorded."""
    shape = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2}
    assert run(settings(shape, out_dir=str(tmp_path / "first")))[0].status == "completed"
    weights = tmp_path / "alone" / "pretrain_64.pth"
    weights.parent.mkdir()
    weights.write_bytes((tmp_path / "first" / "pretrain_64.pth").read_bytes())
    eight = {"hidden_size": 64, "num_attention_heads": 8, "num_key_value_heads": 2}
    result, _ = run(settings(eight, from_weight=str(weights)))
    assert result.cause == "input"
    assert re.search(r"^note: the file does not record its head split; .*\b4/2\b",
                     result.reason, re.M), result.reason


def test_from_weight_refuses_a_head_split_its_run_did_not_train_with(settings, tmp_path):
    """8/4 heads have the same tensor shapes as 4/2 here: the weights load but compute another
    function. Their run's records (config.toml, the resume file) say 4/2, so it is refused."""
    shape = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2}
    assert run(settings(shape, out_dir=str(tmp_path / "first")))[0].status == "completed"
    weights = tmp_path / "first" / "pretrain_64.pth"
    other = {"hidden_size": 64, "num_attention_heads": 8, "num_key_value_heads": 4}
    result, _ = run(settings(other, out_dir=str(tmp_path / "second"), from_weight=str(weights)))
    assert result.cause == "input"
    assert (f"train.from_weight: {weights}: trained with num_attention_heads/num_key_value_heads"
            " 4/2 (the settings saved in") in result.reason
    assert "this run's model has 8/4" in result.reason

    (tmp_path / "first" / "pretrain_64_resume.pth").unlink()  # config.toml alone records it too
    result, _ = run(settings(other, out_dir=str(tmp_path / "third"), from_weight=str(weights)))
    assert f"4/2 ({tmp_path / 'first' / 'config.toml'})" in result.reason


# -- data files --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["garbage after the header", "truncated"])
def test_corrupt_gzip_data_is_refused_by_name(settings, tmp_path, kind):
    packed = gzip.compress(SMALL_DATA * 20)
    path = tmp_path / "corrupt-gzip.jsonl.gz"
    path.write_bytes(packed[:10] + RANDOM_BYTES[:500] if kind != "truncated"
                     else packed[: len(packed) // 2])
    result, events = run(settings(data_path=str(path)))
    assert_refused(result, events, f"train.data_path: {path}: cannot decompress", path)
    # Nothing half-decompressed is left where the next run would find it.
    assert not list((default_cache_dir() / "corpus").glob("corrupt-gzip-*"))


@pytest.mark.parametrize("packing", [False, True])
def test_a_bad_line_in_gzip_data_is_named_in_the_users_file(settings, tmp_path, packing):
    """It was named in the decompressed copy in the cache: a file the user never made, whose
    fixing changed nothing (the cache is keyed on the .gz)."""
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(gzip.compress(SMALL_DATA + b'{"text": 5}\n'))
    result, events = run(settings(data_path=str(path), packing=packing))
    assert_refused(result, events, f'train.data_path: {path}:41: "text" must be a string', path)
    # And where they are skipped, in the report of them.
    result, events = run(settings(data_path=str(path), packing=packing, skip_bad_lines=True,
                                  out_dir=str(tmp_path / "lenient")))
    assert result.status == "completed", result
    assert any(isinstance(e, LogMessage) and e.text.startswith(f"{path}: skipped 1 bad lines")
               for e in events)


@pytest.mark.parametrize("packing", [False, True])
@pytest.mark.parametrize("kind, how", [
    ("gzip", "name it .jsonl.gz to have it decompressed, or decompress it (gunzip)"),
    ("xz", "decompress it first")])
def test_compressed_data_under_a_text_name_is_refused_as_such(settings, tmp_path, kind, how,
                                                              packing):
    """Its first line was 'not valid UTF-8', with no word of why, at the start and in the run."""
    import lzma

    from minimind.environment import data_file_problem

    path = tmp_path / "data.jsonl"
    path.write_bytes((gzip if kind == "gzip" else lzma).compress(SMALL_DATA))
    why = f"holds {kind}-compressed data, not text: {how}"
    assert data_file_problem(str(path), "pretrain", skip_bad_lines=True) == f"{path}: {why}"
    result, events = run(settings(data_path=str(path), packing=packing, skip_bad_lines=True))
    assert_refused(result, events, f"train.data_path: {path}: {why}", path)


def test_a_checkpoint_given_as_data_is_called_one(tmp_path):
    """A .pth is a zip: "holds zip-compressed data, not text: decompress it first"."""
    from minimind.environment import data_file_problem

    path = tmp_path / "pretrain_128.pth"
    torch.save({"w": torch.zeros(2)}, path)
    assert data_file_problem(str(path), "pretrain", skip_bad_lines=False) == (
        f"{path}: is a PyTorch checkpoint (model weights), not data: give a JSONL file")
    # Text that begins as bzip2's magic does ("BZh") is bad text, not compressed data.
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'BZh\n{"text": "fine"}\n')
    assert data_file_problem(str(path), "pretrain", skip_bad_lines=False) == (
        f"{path}:1: line is not valid JSON at column 1: expected a value (a string, number, "
        "object, ...)")


def test_a_number_too_long_for_python_is_a_bad_line_in_our_words():
    """Python's own limit on int digits came through with its advice for programmers: "use
    sys.set_int_max_str_digits() to increase the limit"."""
    from minimind.data.jsonl import parse_line

    with pytest.raises(ValueError) as error:
        parse_line(b'{"n": ' + b"9" * 100_000 + b', "text": "x"}')
    assert str(error.value) == (f"line holds a number of more than "
                                f"{sys.get_int_max_str_digits():,} digits, which no setting or "
                                "text needs")


def test_a_link_loop_is_not_called_a_missing_file(tmp_path):
    """exists() follows links: a loop of them, or one to nothing, was "no such file"."""
    from minimind.environment import path_problem
    from minimind.torchfile import safe_torch_load

    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    why = "a link to nothing (its target is missing, or the links loop)"
    for name in ("a", "gone"):
        assert path_problem("data_path", str(tmp_path / name)) == f"{tmp_path / name}: {why}"
        with pytest.raises(CheckpointError, match=re.escape(f"{tmp_path / name}: {why}")):
            safe_torch_load(tmp_path / name)
    assert path_problem("data_path", str(tmp_path / "c")) == f"{tmp_path / 'c'}: no such file " \
                                                             "or folder"


@pytest.mark.parametrize("data", ["plain", "gzip"])
def test_a_cache_folder_that_cannot_be_used_is_named_as_the_cache(settings, tmp_path, data,
                                                                   monkeypatch, capsys):
    """MINIMIND_CACHE naming a file: the data file was blamed ("cannot read", "corrupt or
    truncated gzip"), by a run (exit 1) and by inspect alike."""
    from minimind_tui.cli.inspect import main as inspect_main

    path = tmp_path / "data.jsonl"
    path.write_bytes(SMALL_DATA)
    if data == "gzip":
        path = tmp_path / "data.jsonl.gz"
        path.write_bytes(gzip.compress(SMALL_DATA))
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("MINIMIND_CACHE", str(tmp_path / "a-file"))
    why = (": Not a directory: derived files (decompressed and tokenized data) go to "
           f"{tmp_path / 'a-file'}; set MINIMIND_CACHE to a folder this user can write")
    result, _ = run(settings(data_path=str(path), packing=True))
    assert (result.status, result.cause) == ("failed", "input")
    assert result.reason.startswith(f"train.data_path: {path}: ") and result.reason.endswith(why)
    assert inspect_main([str(path)]) == 2
    assert capsys.readouterr().err.rstrip().endswith(why)


@pytest.mark.parametrize("packing", [False, True])
def test_lone_surrogate_line_is_refused_or_skipped(settings, tmp_path, packing):
    path = tmp_path / "surrogate.jsonl"
    path.write_bytes(SMALL_DATA + b'{"text": "half a pair: \\ud800 here"}\n' + SMALL_DATA)
    result, events = run(settings(data_path=str(path), packing=packing))
    assert_refused(result, events, f"train.data_path: {path}:41: ", path)
    assert "unpaired surrogate (\\ud800)" in result.reason

    result, events = run(settings(data_path=str(path), packing=packing, skip_bad_lines=True,
                                  out_dir=str(tmp_path / "lenient")))
    assert result.status == "completed", result
    assert any(isinstance(e, LogMessage) and "skipped 1 bad lines, first: line 41:" in e.text
               for e in events)


def test_json_nested_thousands_deep_is_a_bad_line(settings, tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_bytes(SMALL_DATA + b'{"text": "x", "a": ' + b"[" * 100_000 + b"\n")
    result, events = run(settings(data_path=str(path)))
    assert_refused(result, events, f"train.data_path: {path}:41: ", path)
    assert "nested too deeply" in result.reason


# -- values that pass a type check but would crash ---------------------------------------------
@pytest.mark.parametrize("section, field, value", [
    ("train", "seed", 99999999999999999999999),
    ("model", "vocab_size", 1_000_000_000),
])
def test_values_too_large_are_settings_problems(section, field, value):
    with pytest.raises(SettingsError) as err:
        load_settings("tiny", {section: {field: value}})
    assert [p.loc for p in err.value.problems] == [f"{section}.{field}"]


def test_a_model_too_big_for_memory_is_refused_before_allocating(settings):
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    result, events = run(settings({"hidden_size": 16384, "num_hidden_layers": 256}))
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert result.cause == "input" and result.reason.startswith("model: "), result
    need, have = re.search(r"need about ([\d,.]+) GiB .* has ([\d,.]+) GiB free",
                           result.reason).groups()
    assert float(need.replace(",", "")) > 1000 > float(have.replace(",", ""))
    assert "," in need  # thousands separated, as the parameters are (it read "11269.7")
    assert grown < 1 << 20  # < 1 GiB more at peak: the weights were never allocated
    assert not any(isinstance(e, StepMetrics) for e in events)


def test_a_saved_folder_with_json_nested_too_deep_is_refused_by_export(tmp_path):
    (tmp_path / "config.json").write_text("[" * 100_000)
    with pytest.raises(CheckpointError, match="config.json: not readable JSON"):
        read_checkpoint(tmp_path)


# -- the command line: exit 2 and one line per problem -----------------------------------------
def cli(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=300,
                          cwd=cwd)


def errors(proc):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    return [line for line in proc.stderr.splitlines() if line.startswith("minimind-tui: error:")]


@pytest.mark.parametrize("content, message", [
    (b"model = 3\n[train]\n", "model: in p.toml must be a table ([model]), not a int"),
    (None, "p.toml: is a folder, not a preset file"),
    (b"[model]\nhidden_size = 64\n# caf\xe9\n", "p.toml: not a text file (byte 30 is not UTF-8)"),
    (b"[train]\nbatch_size = 4\n", "p.toml: has no [model] table"),
    # The dashboard has no field to show it in: it dropped it and trained the default.
    (b"[model]\n[train]\nlearnig_rate = 0.01\n", "train.learnig_rate: unknown setting in "),
])
def test_broken_preset_exits_2_with_one_line(tmp_path, content, message):
    preset = tmp_path / "p.toml"
    if content is None:
        preset.mkdir()
    else:
        preset.write_bytes(content)
    lines = errors(cli("--preset", str(preset), cwd=tmp_path))
    assert len(lines) == 1 and message in lines[0], lines


def test_a_preset_that_is_a_pipe_or_a_device_never_hangs(tmp_path):
    """`--preset` on a FIFO nobody writes to waited forever, and /dev/zero read without end; a
    pipe being written, as `<(...)` gives, is still read."""
    fifo = tmp_path / "p.toml"
    os.mkfifo(fifo)
    writer_end, written = os.pipe()
    os.write(written, (bundled_preset_dir() / "tiny.toml").read_bytes())
    os.close(written)
    outcomes = {}

    def read_each() -> None:
        for path in (fifo, Path("/dev/zero"), Path(f"/dev/fd/{writer_end}")):
            try:
                outcomes[path.name] = sorted(read_toml(path))
            except SettingsError as e:
                outcomes[path.name] = str(e)

    reader = threading.Thread(target=read_each, daemon=True)
    reader.start()
    reader.join(30)
    os.close(writer_end)
    assert outcomes == {
        "p.toml": f"{fifo}: cannot read (a pipe or a device that gave nothing to read)",
        "zero": "/dev/zero: cannot read (over 1 MiB, too large for settings)",
        str(writer_end): ["model", "train"]}


def test_a_preset_pipe_whose_writer_never_writes_is_given_up_on(tmp_path, monkeypatch):
    """`--preset <(cat)` with nothing on cat's input: the writer is there, so the read waited
    for it for good (the dashboard's preset list too)."""
    from minimind import safe_read

    monkeypatch.setattr(safe_read, "PIPE_WAIT_SECONDS", 0.5)
    silent, writer = os.pipe()
    try:
        with pytest.raises(SettingsError, match=r"/dev/fd/\d+: cannot read \(a pipe that gave "
                                                r"nothing for 0\.5 s\)"):
            read_toml(f"/dev/fd/{silent}")
        os.write(writer, b"[model]\n")  # one that writes slowly is read as it comes
        later, writer = writer, None  # the timer closes it
        threading.Timer(0.3, lambda: (os.write(later, b"[train]\n"), os.close(later))).start()
        assert sorted(read_toml(f"/dev/fd/{silent}")) == ["model", "train"]
    finally:
        os.close(silent)
        if writer is not None:
            os.close(writer)


def test_a_temporary_folder_too_deep_for_the_workers_socket_is_refused(monkeypatch):
    """A DataLoader worker hands batches over through a socket in the temporary folder; past
    the AF_UNIX path limit (TMPDIR over 75 bytes) that failed in a background thread and the
    run waited for its first batch forever."""
    from minimind.environment import environment_problems

    for length, refused in ((75, False), (76, True)):
        monkeypatch.setattr(tempfile, "tempdir", "/tmp/" + "y" * (length - 5))
        for workers in (0, 1):
            found = [p.loc for p in environment_problems(load_settings(
                "tiny", {"train": {"num_workers": workers}}))]
            assert found == (["train.num_workers"] if refused and workers else []), found


def test_every_bad_flag_is_reported_at_once(tmp_path):
    lines = errors(cli("--preset", "tiny", "--batch_size", "0", "--learning_rate", "0",
                       "--dtype", "float16", "--device", "cpu", cwd=tmp_path))
    assert len(lines) == 3, lines
    assert [line.split()[2] for line in lines] == [
        "train.batch_size:", "train.learning_rate:", "train.dtype:"]


UNUSABLE_PATHS = [("~nosuchuser/x", "no home folder for '~nosuchuser' on this machine"),
                  ("a" * 5000, "(5000 characters): not a usable path here (File name too long)"),
                  ("d/" * 3000, "(6000 characters): not a usable path here (File name too long)")]


@pytest.mark.parametrize("field", ["data_path", "tokenizer_path", "from_weight", "out_dir"])
@pytest.mark.parametrize("path, why", UNUSABLE_PATHS)
def test_a_path_this_machine_cannot_use_is_one_line(tmp_path, field, path, why):
    lines = errors(cli("--preset", "tiny", f"--{field}", path, cwd=tmp_path))
    assert len(lines) == 1 and lines[0].startswith(f"minimind-tui: error: train.{field}: ")
    assert lines[0].endswith(why), lines
    assert not any(tmp_path.iterdir())  # nothing was created on the way


@pytest.mark.parametrize("field", ["data_path", "tokenizer_path", "from_weight", "out_dir"])
def test_a_path_with_a_nul_byte_is_refused_and_shown_escaped(field):
    # No command line can carry a NUL, but a preset or a config.toml can ("\u0000"), and
    # pathlib answers "not there" for it, as for a missing file.
    from minimind.environment import validate_for_start

    problems = validate_for_start({"train": {field: "run\x00/x"}})[1]
    assert [str(p) for p in problems if p.loc == f"train.{field}"] == [
        f"train.{field}: run\\x00/x: not a usable path here (it holds a NUL byte)"]


@pytest.mark.parametrize("command", [["generate", "{}", "--prompt", "x"], ["export", "{}", "o"],
                                     ["export", "o", "{}"], ["watch", "{}", "--plain"],
                                     ["runs", "{}"], ["inspect", "{}"]])
def test_subcommands_take_unusable_paths_as_argument_errors(tmp_path, command):
    for path, why in UNUSABLE_PATHS[:2]:
        proc = subprocess.run([sys.executable, "-m", "minimind_tui",
                               *[arg.format(path) for arg in command]], capture_output=True,
                              text=True, timeout=300, cwd=tmp_path)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.rstrip().endswith(why), proc.stderr


def test_corrupt_resume_file_exits_2_naming_it(tmp_path, data, checkpoint):
    resume = tmp_path / "run" / "pretrain_128_resume.pth"
    resume.parent.mkdir()
    resume.write_bytes(checkpoint[1][:1000])
    lines = errors(cli("--preset", "tiny", "--data_path", str(data), "--packing", "0",
                       "--out_dir", str(resume.parent), "--from_resume", "1", "--dtype",
                       "float32", cwd=tmp_path))
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"minimind-tui: error: train.from_resume: {resume}: not a "
                               "readable PyTorch checkpoint (truncated, corrupt")


@pytest.mark.parametrize("path, why", UNUSABLE_PATHS)
def test_the_apps_folder_dialogs_say_why_a_path_is_unusable(path, why):
    from minimind_tui.screens.resume import ResumableFolder
    from minimind_tui.screens.watch_dialog import ExistingFolder

    for validator in (ResumableFolder(), ExistingFolder()):
        result = validator.validate(path)
        assert not result.is_valid and result.failure_descriptions[0].endswith(why)


def test_a_pipe_or_a_file_where_a_folder_belongs_is_named_for_what_it_is(tmp_path):
    """A FIFO given as weights read as "no such file" (generate) or "the file is empty" (a
    from_weight); a file given as a tokenizer or a run folder read as "no such folder"."""
    from minimind.checkpoint_reader import load_pretrained_weights
    from minimind.config import MiniMindConfig
    from minimind.model import MiniMindForCausalLM
    from minimind.tokenizer import TokenizerError, load_tokenizer

    fifo = tmp_path / "weights.pth"
    os.mkfifo(fifo)
    model = MiniMindForCausalLM(MiniMindConfig(**load_settings("tiny").model.to_config_kwargs()))
    for read in (read_checkpoint, lambda path: load_pretrained_weights(model, path)):
        with pytest.raises(CheckpointError, match="weights.pth: not a regular file"):
            read(fifo)
    text = tmp_path / "notes.jsonl"
    text.write_text('{"text": "x"}\n')
    with pytest.raises(TokenizerError, match="notes.jsonl: not a folder"):
        load_tokenizer(text)
    proc = subprocess.run([sys.executable, "-m", "minimind_tui", "watch", "--plain", str(text)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.rstrip().endswith("notes.jsonl: a file, not a folder")


@pytest.mark.parametrize("name", ["config.toml", "run.json", "pretrain_128.pth",
                                  "pretrain_128_resume.pth"])
def test_a_folder_where_the_run_writes_a_file_is_refused_before_anything_is_written(
        settings, tmp_path, name):
    """It failed the run once the folder was claimed, naming the atomic write's temporary file,
    and left a run.json saying "failed" behind."""
    out = tmp_path / "run"
    (out / name).mkdir(parents=True)
    result, _ = run(settings(out_dir=str(out)))
    assert (result.status, result.cause) == ("failed", "input")
    assert result.reason == (f"train.out_dir: {out / name} is a folder, where the run writes a "
                             "file of that name; move it away, or train into another --out_dir")
    assert [p.name for p in out.iterdir()] == [name]


def test_a_data_path_that_is_no_file_is_refused_by_the_form_too(tmp_path):
    """The engine refused /dev/zero, a FIFO or an empty file as data, but the form said "ready
    to start" and its line count read /dev/zero forever (a core spun, and quitting hung)."""
    from minimind.environment import validate_for_start

    fifo, empty = tmp_path / "fifo.jsonl", tmp_path / "empty.jsonl"
    os.mkfifo(fifo)
    empty.write_bytes(b"")
    data = load_settings("tiny").model_dump(mode="json")
    for field in ("data_path", "val_data_path"):
        for path, why in (("/dev/zero", "not a file"), (str(fifo), "not a file"),
                          (str(tmp_path), "not a file"), (str(empty), "file is empty")):
            data["train"][field] = path
            problems = [str(p) for p in validate_for_start(data)[1]]
            assert problems == [f"train.{field}: {path}: {why}"], problems
        data["train"][field] = "builtin:shakespeare"


def test_a_tokenizer_path_without_a_tokenizer_is_refused_by_the_form_too(tmp_path):
    """Only its existence was checked: the form said "ready to start" for an empty folder or a
    FIFO, and the start failed in a dialog."""
    from minimind.environment import validate_for_start

    os.mkfifo(tmp_path / "fifo")
    for value, why in ((tmp_path, "no tokenizer.json or tokenizer_config.json in this directory"),
                       (tmp_path / "fifo", "not a folder (a tokenizer is a folder holding "
                                           "tokenizer.json)")):
        problems = validate_for_start({"train": {"tokenizer_path": str(value)}})[1]
        assert [str(p) for p in problems if p.loc == "train.tokenizer_path"] == [
            f"train.tokenizer_path: {value}: {why}"]
    assert not [p for p in validate_for_start({"train": {"tokenizer_path": "builtin"}})[1]
                if p.loc == "train.tokenizer_path"]
