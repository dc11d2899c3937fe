"""pretrain -> sft -> lora as a user runs it: three real `--no-ui` processes in one folder
(relative paths, as the presets write them), then the runs list, generate and export on the
lora run folder, what they refuse, and the form's dialog of runs to start from."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from textual.widgets import DataTable, Static

from minimind.checkpoint_reader import load_model, read_checkpoint
from minimind.torchfile import CheckpointError
from minimind.lora import apply_lora, load_lora
from minimind.open_model import open_model
from minimind.runs import find_runs
from minimind_tui.app import MiniMindApp
from minimind_tui.screens.start_from import StartFromScreen
from test_app import SIZE, error_text, readouts
from pilot_waits import wait_until

QUICK = ["--max_steps", "2", "--batch_size", "4", "--eval_batches", "1", "--sample_tokens", "4",
         "--dtype", "float32"]
BASE = "out/tiny-sft/full_sft_128.pth"
ADAPTER = "out/tiny-lora/lora/lora_128.pth"


def minimind(cwd: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "minimind_tui", *args], cwd=cwd,
                            capture_output=True, text=True, timeout=600)
    if ok:
        assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def chain(tmp_path_factory, worker_id) -> Path:
    """A folder holding out/tiny (pretrain), out/tiny-sft (the tiny-sft preset, which starts
    from out/tiny/pretrain_128.pth) and out/tiny-lora (lora on the sft weights), two steps
    each; a high learning rate so the adapters visibly move the logits. Trained once per
    session: under xdist the first worker to ask trains it and the others wait for it (the
    folder above each worker's is the session's own)."""
    if worker_id == "master":
        return train_chain(tmp_path_factory.mktemp("chain"))
    cwd = tmp_path_factory.getbasetemp().parent / "chain"
    with FileLock(f"{cwd}.lock"):
        if not (cwd / ADAPTER).is_file():
            cwd.mkdir(exist_ok=True)
            train_chain(cwd)
    return cwd


def train_chain(cwd: Path) -> Path:
    minimind(cwd, "--no-ui", "--preset", "tiny", *QUICK)
    minimind(cwd, "--no-ui", "--preset", "tiny-sft", *QUICK)
    minimind(cwd, "--no-ui", "--preset", "tiny-sft", "--stage", "lora", "--from_weight", BASE,
             "--out_dir", "out/tiny-lora", "--lora_rank", "4", "--learning_rate", "0.05", *QUICK)
    assert (cwd / ADAPTER).is_file()
    return cwd


def test_the_runs_list_reads_as_a_chain(chain):
    lines = minimind(chain, "runs", "out").stdout.splitlines()
    assert lines[0].split()[:3] == ["run", "stage", "from"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["tiny", "pretrain", "scratch"], ["tiny-lora", "lora", "tiny-sft"],
        ["tiny-sft", "sft", "tiny"]]
    runs = {run["name"]: run for run in json.loads(minimind(chain, "runs", "out", "--json").stdout)}
    assert runs["tiny-lora"]["from_weight"] == BASE and runs["tiny-lora"]["origin"] == "tiny-sft"
    assert runs["tiny-sft"]["stage"] == "sft" and runs["tiny"]["from_weight"] == ""


def test_generate_and_export_open_the_lora_folder_as_base_plus_adapters(chain, monkeypatch):
    built_from = f"{BASE} with the adapters of {ADAPTER} merged in"
    generated = minimind(chain, "generate", "out/tiny-lora", "--prompt", "ROMEO:",
                         "--max_new_tokens", "4", "--device", "cpu")
    assert built_from in generated.stderr and "config from out/tiny-lora/config.toml" in \
        generated.stderr
    exported = minimind(chain, "export", "out/tiny-lora", "hf").stdout
    assert f"weights {built_from}" in exported
    # The adapter file itself (what the dashboard's Try it opens on a lora run) is the folder.
    monkeypatch.chdir(chain)  # where the run took its relative from_weight from
    assert built_from in open_model(ADAPTER, device="cpu").description
    assert "loaded back: its logits match our model's" in exported
    # Independently of the reader's lora path: the base file with the adapters applied (not
    # merged) computes what the exported folder does, and the adapters change it.
    from transformers import AutoModelForCausalLM

    base = load_model(chain / BASE).float().eval()
    ids = torch.randint(0, 6400, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = base(input_ids=ids).logits
        load_lora(base, chain / ADAPTER)
        adapted = base(input_ids=ids).logits
        folder = AutoModelForCausalLM.from_pretrained(chain / "hf").eval()
        assert torch.allclose(folder(input_ids=ids).logits, adapted, atol=1e-4)
    assert (adapted - before).abs().max() > 1e-3


def test_a_relative_base_is_found_from_any_folder(chain, tmp_path):
    """The runs took `out/tiny-sft/...` from the folder they were started in, which their
    relative out_dir records: the runs list and the lora reader find it from elsewhere too
    (they said "missing:" and "is gone" for a file that was there)."""
    lines = minimind(tmp_path, "runs", str(chain / "out")).stdout.splitlines()
    assert [line.split()[:3] for line in lines[1:]] == [
        ["tiny", "pretrain", "scratch"], ["tiny-lora", "lora", "tiny-sft"],
        ["tiny-sft", "sft", "tiny"]]
    generated = minimind(tmp_path, "generate", str(chain / "out" / "tiny-lora"), "--prompt",
                         "ROMEO:", "--max_new_tokens", "2", "--device", "cpu")
    assert f"{chain / BASE} with the adapters of" in generated.stderr
    assert "(base checked against lora_128_resume.pth)" in generated.stderr


def test_export_refuses_to_merge_a_lora_runs_own_adapters_twice(chain, tmp_path):
    for again in (ADAPTER, str(chain / ADAPTER)):  # spelled relative or absolute: one file
        result = minimind(chain, "export", "out/tiny-lora", str(tmp_path / "hf"), "--lora",
                          again, ok=False)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
        assert f"--lora: {again} is already merged: out/tiny-lora is a lora run" in result.stderr
    assert not (tmp_path / "hf").exists()


def test_export_refuses_to_merge_adapters_into_their_own_resume_file(chain, tmp_path, capsys):
    """The resume file holds the base with them folded in: "its base ... is not the one the
    lora run trained on: ... differs from the base saved in" the very same file, and advice
    to merge into the run's base."""
    resume = ADAPTER.replace(".pth", "_resume.pth")
    result = in_process(chain, capsys, "export", resume, str(tmp_path / "hf"), "--lora", ADAPTER)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert (f"--lora: {ADAPTER} is already merged: {resume} is its resume file, which holds the "
            "lora run's base with these adapters folded in (leave --lora out)") in result.stderr
    assert not (tmp_path / "hf").exists()


def in_process(cwd: Path, capsys, *args: str) -> subprocess.CompletedProcess:
    """`minimind(cwd, *args, ok=False)` run by `cli.main` in this process: for refusals, whose
    wording is the point (the real processes are above), without a process's import time."""
    from minimind_tui.cli.main import main

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


@pytest.mark.parametrize("damage", ["removed", "unusable path", "NUL byte", "another shape",
                                    "untied head"])
def test_a_lora_folder_whose_base_is_gone_or_does_not_fit_is_refused(chain, tmp_path, damage,
                                                                     capsys):
    shutil.copytree(chain / "out", tmp_path / "out")
    base = tmp_path / BASE
    if damage == "removed":
        base.unlink()
        why = f"{ADAPTER}: its base {BASE} (train.from_weight in out/tiny-lora/config.toml) is gone"
    elif damage == "unusable path":  # a record from another machine's user
        toml = tmp_path / "out" / "tiny-lora" / "config.toml"
        toml.write_text(toml.read_text().replace(f'"{BASE}"', '"~nosuchuser/sft.pth"', 1))
        why = (f"{ADAPTER}: its base (train.from_weight in out/tiny-lora/config.toml) is gone: "
               "~nosuchuser/sft.pth: no home folder for '~nosuchuser' on this machine")
    elif damage == "NUL byte":  # pathlib itself only says "not there" for it
        toml = tmp_path / "out" / "tiny-lora" / "config.toml"
        toml.write_text(toml.read_text().replace(f'"{BASE}"', '"x\\u0000y/sft.pth"', 1))
        why = (f"{ADAPTER}: its base (train.from_weight in out/tiny-lora/config.toml) is gone: "
               "x\\x00y/sft.pth: not a usable path here (it holds a NUL byte)")
    elif damage == "untied head":  # the one difference; the shapes alike, it said no more
        weights = torch.load(base, weights_only=True)
        weights["lm_head.weight"] = torch.zeros_like(weights["lm_head.weight"])
        torch.save(weights, base)
        why = (f"{ADAPTER}: its base {BASE} does not fit the lora run's model "
               "(out/tiny-lora/config.toml): weights file does not fit the model; file:  "
               "minimind2 128/2")
        tied = "; the file has different model.embed_tokens.weight and lm_head.weight, the " \
               "model ties them"
    else:  # the sft run's folder now holds weights of a 3-layer model
        bigger = load_model(chain / BASE).config
        bigger.num_hidden_layers = 3
        from minimind.model import MiniMindForCausalLM
        from minimind.upstream import export_upstream_state_dict

        torch.save(export_upstream_state_dict(MiniMindForCausalLM(bigger)), base)
        why = (f"{ADAPTER}: its base {BASE} does not fit the lora run's model "
               "(out/tiny-lora/config.toml)")
    for command in (["generate", "out/tiny-lora", "--prompt", "x", "--device", "cpu"],
                    ["export", "out/tiny-lora", "hf"]):
        result = in_process(tmp_path, capsys, *command)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert why in result.stderr, result.stderr
        assert damage != "untied head" or result.stderr.rstrip().endswith(tied), result.stderr
        # A base gone: the resume file beside the adapters keeps the one they trained on.
        assert ("the run's resume file out/tiny-lora/lora/" in result.stderr) == (
            damage not in ("another shape", "untied head")), result.stderr
    assert not (tmp_path / "hf").exists()
    if damage in ("removed", "NUL byte"):  # and the runs list says so, NUL escaped
        listed = {line.split()[0]: line.split()[2:4]
                  for line in minimind(tmp_path, "runs", "out").stdout.splitlines()[1:]}
        assert listed["tiny-lora"] == ["missing:", "tiny-sft" if damage == "removed" else
                                       "x\\x00y/sft.pth"]
        assert listed["tiny"][0] == "scratch"


def test_a_lora_folder_renamed_off_its_out_dir_says_its_base_is_not_here_not_gone(
        chain, tmp_path, capsys):
    """Renamed, its folder no longer tells where the run was started: the base was looked for
    from the current folder alone, and said to be "gone" (and `runs`, "missing:") while it was
    there, one folder up."""
    shutil.copytree(chain / "out", tmp_path / "out")
    (tmp_path / "out" / "tiny-lora").rename(tmp_path / "out" / "lr-keep")
    result = in_process(tmp_path / "out", capsys, "generate", "lr-keep", "--prompt", "x")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert (f"its base {BASE} (train.from_weight in lr-keep/config.toml) counts from the folder "
            "the run was started in, which its out_dir 'out/tiny-lora' cannot tell from where "
            "the run is now (lr-keep: moved or renamed, or an absolute out_dir); it is not in "
            "the current folder: open the run from the folder it was started in") \
        in result.stderr, result.stderr
    assert "is gone" not in result.stderr
    listed = {line.split()[0]: line.split()[2:5]
              for line in minimind(tmp_path / "out", "runs", ".").stdout.splitlines()[1:]}
    assert listed["lr-keep"] == ["not", "here:", BASE]
    # From the folder it was started in, it opens.
    assert in_process(tmp_path, capsys, "generate", "out/lr-keep", "--prompt", "x",
                      "--max_new_tokens", "1").returncode == 0


def test_a_start_from_weights_of_another_shape_is_refused_beside_the_field(chain):
    result = minimind(chain, "--no-ui", "--preset", "tiny-sft", "--hidden_size", "64",
                      "--out_dir", "out/never", ok=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "minimind-tui: error: train.from_weight: out/tiny/pretrain_128.pth was trained as "
        "another shape (out/tiny/config.toml): hidden_size 128 there, 64 here; "
        "intermediate_size 384 there, 192 here")
    assert not (chain / "out" / "never").exists()
    # A pretraining run's from_weight meets the engine's check alone, as before this rule.
    from minimind.environment import validate_for_start

    settings = {"model": {"hidden_size": 64}, "train": {"from_weight": str(chain / "out" / "tiny"
                                                                          / "pretrain_128.pth")}}
    assert validate_for_start(settings)[1] == []
    settings["train"]["stage"] = "sft"
    assert [p.loc for p in validate_for_start(settings)[1]] == ["train.from_weight"]
    # ...whose refusal describes the file by its run's record, not by a guess from its shapes.
    result = minimind(chain, "--no-ui", "--preset", "tiny", "--hidden_size", "64",
                      "--from_weight", "out/tiny/pretrain_128.pth", "--out_dir", "out/never",
                      ok=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert re.search(r"file: .* 128/2.* \(as recorded in .*out/tiny/",
                     result.stderr), result.stderr
    assert "does not record its head split" not in result.stderr


def test_a_config_toml_that_is_not_one_leaves_the_origin_unknown(chain, tmp_path):
    shutil.copytree(chain / "out", tmp_path / "out")
    (tmp_path / "out" / "tiny-sft" / "config.toml").write_text("[model\n")
    hostile = tmp_path / "out" / "tiny" / "config.toml"  # a from_weight no file can have
    hostile.write_text(hostile.read_text().replace('from_weight = ""',
                                                   'from_weight = "x\\u0000' + "y" * 5000 + '"'))
    listed = {line.split()[0]: line.split()[1:3]
              for line in minimind(tmp_path, "runs", "out").stdout.splitlines()[1:]}
    assert listed["tiny-sft"] == ["?", "unknown"]
    assert listed["tiny-lora"] == ["lora", "tiny-sft"]  # its own record still names it
    assert listed["tiny"][0] == "pretrain" and listed["tiny"][1] == "missing:"


def rows(table: DataTable) -> list[list[str]]:
    return [list(map(str, table.get_row_at(i))) for i in range(table.row_count)]


async def test_f7_on_from_weight_offers_the_runs_to_start_from(chain, monkeypatch):
    monkeypatch.chdir(chain)
    app = MiniMindApp("tiny-sft", {"train": {"stage": "lora", "from_weight": "",
                                             "out_dir": "out/tiny-lora-2"}})
    async with app.run_test(size=SIZE) as pilot:
        form = app.configure_screen.form
        # The readouts count what a lora run trains, its adapters (here on a real model).
        await app.workers.wait_for_complete()
        await pilot.pause()
        model = load_model(BASE)
        adapters = sum(p.numel() for p in apply_lora(model, 8))
        assert (f"trained {adapters / 1000:.2f}k in rank-8 adapters "
                f"({adapters / model.num_parameters():.2%})") in " ".join(readouts(app).split())

        async def f7_after_setting(field: str, value: object) -> None:
            """Change a field, then F7 on from_weight."""
            form.fields[field].set_value(value)
            await pilot.pause()
            form.focus_field("train.from_weight")
            await pilot.press("f7")

        form.focus_field("train.data_path")
        await pilot.press("f7")  # only on from_weight
        assert not isinstance(app.screen, StartFromScreen)
        form.focus_field("train.from_weight")
        await pilot.press("f7")
        assert isinstance(app.screen, StartFromScreen)
        table = app.screen.query_one(DataTable)
        # Finished pretrain and sft runs; the lora run is no start for a lora run.
        assert [row[1:3] for row in rows(table)] == [["tiny", "pretrain"], ["tiny-sft", "sft"]]
        assert all(row[0] == "" and "128x2" in row[5] for row in rows(table))
        await pilot.press("down", "enter")
        assert not isinstance(app.screen, StartFromScreen)
        await pilot.pause()
        assert form.raw_values()["train.from_weight"] == BASE
        assert error_text(app, "from_weight") == ""

        # Another model shape: the runs are listed but marked, and picking one is the usual
        # one-line problem beside from_weight.
        await f7_after_setting("model.hidden_size", 64)
        table = app.screen.query_one(DataTable)
        assert [row[0] for row in rows(table)] == ["✗", "✗"]
        why = str(app.screen.query_one("#start-from-why", Static).render())
        assert "hidden_size 128 there, 64 here" in why
        await pilot.press("enter")
        await pilot.pause()
        assert form.raw_values()["train.from_weight"] == "out/tiny/pretrain_128.pth"
        assert error_text(app, "from_weight") == (
            "out/tiny/pretrain_128.pth was trained as another shape (out/tiny/config.toml): "
            "hidden_size 128 there, 64 here; intermediate_size 384 there, 192 here")
        assert app.configure_screen.current_settings() is None  # Start is refused

        # Escape leaves the field as it was; no runs around out_dir: the dialog says so.
        await pilot.press("f7", "escape")
        assert form.raw_values()["train.from_weight"] == "out/tiny/pretrain_128.pth"
        await f7_after_setting("train.out_dir", "elsewhere/run")
        assert not app.screen.query(DataTable)
        assert "No finished pretrain or sft run under elsewhere" in str(
            app.screen.query_one("#start-from Static").render())
        await pilot.press("enter", "escape")
        assert form.raw_values()["train.from_weight"] == "out/tiny/pretrain_128.pth"
        # A pretraining run has nothing to pick from.
        await f7_after_setting("train.stage", "pretrain")
        assert not isinstance(app.screen, StartFromScreen)


def test_export_lora_checks_the_adapters_base_as_the_folder_does(chain, tmp_path, monkeypatch,
                                                                 capsys):
    """`export BASE OUT --lora FILE` merged adapters into any base that fit their shapes, and
    its logit check (against that merge) said they matched."""
    from minimind_tui.cli.main import main

    monkeypatch.chdir(chain)
    pretrain = "out/tiny/pretrain_128.pth"  # the sft run's start, not the lora run's base
    assert main(["export", pretrain, str(tmp_path / "wrong"), "--lora", ADAPTER]) == 2
    err = capsys.readouterr().err
    assert f"its base {pretrain} is not the one the lora run trained on" in err, err
    # Another file than the run's base: not "the file was replaced", which sent users to
    # restore a file nobody had touched.
    assert err.rstrip().endswith(f"The run started from {BASE} (out/tiny-lora/config.toml): "
                                 "merge the adapters into that file, or open the run folder "
                                 "out/tiny-lora, which merges them itself"), err
    assert not (tmp_path / "wrong").exists()
    assert main(["export", BASE, str(tmp_path / "right"), "--format", "upstream",
                 "--lora", ADAPTER]) == 0
    assert (f"merged the rank-4 adapters of {ADAPTER} (base checked against "
            "lora_128_resume.pth)") in capsys.readouterr().out
    # Named as upstream's scripts call the model (they were all pretrain_128.pth): the sft
    # run's as its full_sft file, a merge with the adapters' name after it.
    assert [p.name for p in (tmp_path / "right").iterdir()] == ["full_sft_lora_128.pth"]
    for src, name in (("out/tiny-sft", "full_sft_128.pth"), (BASE, "full_sft_128.pth"),
                      ("out/tiny-lora", "full_sft_lora_128.pth"),
                      ("out/tiny/pretrain_128_resume.pth", "pretrain_128.pth")):
        out = tmp_path / f"named-{len(list(tmp_path.iterdir()))}"
        assert main(["export", src, str(out), "--format", "upstream"]) == 0
        assert [p.name for p in out.iterdir()] == [name], src


def test_lora_on_lora_is_named_for_the_chain_and_listed_from_its_base(chain, tmp_path, capsys):
    """A lora run started from another's adapters exported as lora_second_128.pth: the sft
    base's name was dropped (the merge itself held all three)."""
    shutil.copytree(chain / "out", tmp_path / "out")
    assert in_process(tmp_path, capsys, "--no-ui", "--preset", "tiny-sft", "--stage", "lora",
                      "--from_weight", ADAPTER, "--out_dir", "out/second", "--lora_name",
                      "second", "--lora_rank", "4", *QUICK).returncode == 0
    assert in_process(tmp_path, capsys, "export", "out/second", "up", "--format",
                      "upstream").returncode == 0
    assert [p.name for p in (tmp_path / "up").iterdir()] == ["full_sft_lora_second_128.pth"]
    # A from_weight may name the lora run's folder itself: the runs list said "missing".
    toml = tmp_path / "out" / "second" / "config.toml"
    toml.write_text(toml.read_text().replace(f'"{ADAPTER}"', '"out/tiny-lora"', 1))
    listed = json.loads(in_process(tmp_path, capsys, "runs", "out", "--json").stdout)
    assert {run["name"]: run["origin"] for run in listed}["second"] == "tiny-lora"


def test_export_lora_refuses_a_base_whose_settings_the_run_did_not_train_with(chain, tmp_path,
                                                                              capsys):
    """The lora run trained with rope_theta 10000 on the same tensors; the merge took the
    base's 1e6, and its logit check (against that merge) said they matched."""
    from minimind_tui.cli.main import main

    base = chain / BASE
    minimind(tmp_path, "--no-ui", "--preset", "tiny-sft", "--stage", "lora", "--from_weight",
             str(base), "--out_dir", "lora", "--rope_theta", "10000", *QUICK)
    adapter = tmp_path / "lora" / "lora" / "lora_128.pth"
    assert main(["export", str(base), str(tmp_path / "merged"), "--lora", str(adapter)]) == 2
    err = capsys.readouterr().err
    assert (f"{adapter}: its lora run trained with other settings than {base} records" in err
            and "rope_theta 10000.0 there, 1000000.0 here" in err), err
    assert not (tmp_path / "merged").exists()
    # Its folder takes the run's own settings.
    assert main(["export", str(tmp_path / "lora"), str(tmp_path / "folder")]) == 0


def test_a_lora_runs_adapters_as_from_weight_start_from_the_model_it_trained(chain, tmp_path,
                                                                           monkeypatch):
    """Read as a plain weights file, they "did not fit" a model of the very same shape."""
    from minimind.checkpoint_reader import load_pretrained_weights
    from minimind.model import MiniMindForCausalLM

    monkeypatch.chdir(chain)  # where the lora run took its relative from_weight from
    model = MiniMindForCausalLM(load_model(BASE).config)
    assert load_pretrained_weights(model, ADAPTER) == (
        f"{BASE} with the adapters of {ADAPTER} merged in (base checked against "
        "lora_128_resume.pth)", "")
    # Against the base file with the adapters applied, not merged: the same logits.
    expected = load_model(BASE).float().eval()
    load_lora(expected, ADAPTER)
    ids = torch.randint(0, 6400, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model.eval()(input_ids=ids).logits,
                              expected(input_ids=ids).logits, atol=1e-4)
    # Records edited to make a lora run its own base: refused by name, not a recursion error.
    shutil.copytree(chain / "out", tmp_path / "out")
    monkeypatch.chdir(tmp_path)
    toml = tmp_path / "out" / "tiny-lora" / "config.toml"
    toml.write_text(toml.read_text().replace(f'"{BASE}"', f'"{ADAPTER}"', 1))
    with pytest.raises(CheckpointError, match=f"^{ADAPTER}: its base leads back to it: "
                                              f"{ADAPTER} → {ADAPTER}$"):
        load_pretrained_weights(model, ADAPTER)


def test_a_run_folder_as_from_weight_starts_from_its_weights(chain, tmp_path, monkeypatch):
    """As generate and export open it (a lora run's folder already was a from_weight); a plain
    run's folder was refused as "a folder, not a checkpoint file"."""
    from minimind.checkpoint_reader import load_pretrained_weights
    from minimind.environment import validate_for_start
    from minimind.model import MiniMindForCausalLM
    from minimind.run_folder import save_of

    monkeypatch.chdir(chain)
    model = MiniMindForCausalLM(load_model(BASE).config)
    assert load_pretrained_weights(model, "out/tiny-sft") == (
        f"its weights {BASE}; head split as recorded in out/tiny-sft/config.toml", "")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in load_model(BASE).state_dict()
               .items())
    assert save_of(Path("out/tiny-sft")) == save_of(Path(BASE)) != ""  # the run's origin
    # A lora run's files lie in its lora/: the run is the folder above (`runs` compares the
    # save a run started from with its origin's, to mark it "changed since").
    lora_saves = {save_of(Path(p)) for p in ("out/tiny-lora", ADAPTER,
                                             ADAPTER.replace(".pth", "_resume.pth"))}
    assert len(lora_saves) == 1 and "" not in lora_saves
    # The form's shape rule reads the folder's record, as it reads its weights file's.
    settings = {"model": {"hidden_size": 64}, "train": {"stage": "sft",
                                                        "from_weight": "out/tiny-sft"}}
    assert [(p.loc, p.message) for p in validate_for_start(settings)[1]] == [(
        "train.from_weight", "out/tiny-sft was trained as another shape "
        "(out/tiny-sft/config.toml): hidden_size 128 there, 64 here; num_hidden_layers 2 there, "
        "8 here; num_attention_heads 4 there, 8 here; intermediate_size 384 there, 192 here")]
    # A lora run that started from a run's folder opens with that folder's weights as its base.
    shutil.copytree(chain / "out", tmp_path / "out")
    monkeypatch.chdir(tmp_path)
    toml = tmp_path / "out" / "tiny-lora" / "config.toml"
    toml.write_text(toml.read_text().replace(f'"{BASE}"', '"out/tiny-sft"', 1))
    opened = read_checkpoint("out/tiny-lora")
    assert opened.built_from == (f"out/tiny-sft with the adapters of {ADAPTER} merged in (base "
                                 "checked against lora_128_resume.pth)")
    by_file = read_checkpoint(ADAPTER.replace(".pth", "_resume.pth")).model.state_dict()
    assert all(torch.equal(v, by_file[k]) for k, v in opened.model.state_dict().items())
    # ...and exports in upstream's layout named for that folder's weights (pretrain_lora: the
    # name of a file named another way), as with the base's file named.
    from minimind.export import upstream_save_weight

    assert upstream_save_weight(opened) == "full_sft_lora"
    assert upstream_save_weight(read_checkpoint(ADAPTER.replace(".pth", "_resume.pth"))) == \
        "full_sft_lora"


def test_a_lora_runs_resume_file_opens_as_the_model_it_trained(chain, tmp_path, monkeypatch):
    """The resume file holds the frozen base and the adapters. Export, generate and a
    from_weight refused it: "does not fit the model", and the file and the model described
    alike. It is the run's model at that step, adapters folded in, with no base file needed;
    an adapter file alone says it has no base and where to go."""
    from minimind_tui.cli.main import main

    monkeypatch.chdir(chain)
    resume = ADAPTER.replace(".pth", "_resume.pth")
    by_run, by_file = (read_checkpoint(src).model.state_dict() for src in ("out/tiny-lora",
                                                                           resume))
    assert by_file.keys() == by_run.keys() and not any(".lora." in k for k in by_file)
    assert all(torch.equal(by_file[k], by_run[k]) for k in by_run)
    assert not all(torch.equal(by_file[k], v) for k, v in load_model(BASE).state_dict().items())
    shutil.copy(ADAPTER, tmp_path / "adapter.pth")
    with pytest.raises(CheckpointError, match=r"adapter.pth: holds only LoRA adapters, no base "
                                              r"weights: open the lora run's folder"):
        read_checkpoint(tmp_path / "adapter.pth")
    out = minimind(chain, "export", resume, str(tmp_path / "hf")).stdout
    assert (f"weights {resume} (the base the lora run froze, its adapters merged in); config "
            f"from the settings saved in {resume}") in out, out
    # Upstream's name for the merged model, as from the run folder: lora_128.pth, the name of
    # upstream's adapter-only file, called a whole model that.
    assert main(["export", resume, str(tmp_path / "up"), "--format", "upstream"]) == 0
    assert [p.name for p in (tmp_path / "up").iterdir()] == ["full_sft_lora_128.pth"]


async def test_replacing_a_run_others_started_from_names_them(chain, tmp_path, monkeypatch):
    """An overwrite of the sft run took the lora run's base with it in silence: its adapters
    could not be opened again ("the file was replaced")."""
    shutil.copytree(chain / "out", tmp_path / "out")
    monkeypatch.chdir(tmp_path)
    assert not any(run.origin_changed for run in find_runs(Path("out")))
    app = MiniMindApp("tiny-sft", {"train": {"max_steps": 2}})
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5", "o")
        dialog = app.screen.query_one(".dialog")
        assert "Overwrite out/tiny-sft?" in str(dialog.border_title)
        assert any("Runs started from its weights: tiny-lora (tiny-lora is a lora run: its "
                   "adapters open only with that base, or through the resume file in its lora/ "
                   "folder, which keeps a copy of it; of the runs in out, 4 folders deep)."
                   in str(text.render())
                   for text in dialog.query(Static))
        await pilot.press("n")
        # The runs screen's Delete said nothing of them.
        await pilot.press("f4")
        await wait_until(pilot, lambda: app.screen.query(DataTable))
        table = app.screen.query_one(DataTable)
        table.move_cursor(row=[str(table.get_row_at(i)[1])
                               for i in range(table.row_count)].index("tiny-sft"))
        await pilot.press("x")
        await wait_until(pilot, lambda: app.screen.query(".dialog"))
        assert any("Runs started from its weights: tiny-lora (tiny-lora is a lora run"
                   in str(text.render()) for text in app.screen.query(".dialog Static"))
        await pilot.press("n")
    # A resume trains the base on: it says so, and the lora run's check names the copy of its
    # base that its resume file keeps (it said "restore the base", which nothing kept).
    resumed = minimind(tmp_path, "--no-ui", "--preset", "tiny-sft", *QUICK, "--max_steps", "3",
                       "--from_resume", "1")
    assert ("[warning] runs started from the weights this resume trains on: tiny-lora "
            "(tiny-lora is a lora run") in resumed.stdout, resumed.stdout
    # And the runs list goes on saying it: the base has saved again since the lora run began.
    runs = {run.name: run for run in find_runs(Path("out"))}
    assert runs["tiny-lora"].origin_changed and not runs["tiny-sft"].origin_changed
    assert runs["tiny-sft"].origin_save  # its resume keeps what its start began from
    assert runs["tiny-lora"].cells()["origin"] == "tiny-sft (changed since)"
    with pytest.raises(CheckpointError, match="The file was replaced or trained on since; the "
                       "run's resume file out/tiny-lora/lora/lora_128_resume.pth keeps the base"):
        read_checkpoint(Path("out/tiny-lora"))
    refused = minimind(tmp_path, "--no-ui", "--preset", "tiny-sft", *QUICK, ok=False)
    assert refused.returncode == 2
    assert refused.stderr.rstrip().endswith(
        "replace it with --overwrite 1; runs started from its weights: tiny-lora (tiny-lora is a "
        "lora run: its adapters open only with that base, or through the resume file in its "
        "lora/ folder, which keeps a copy of it; of the runs in out, 4 folders deep)"), \
        refused.stderr
    replaced = minimind(tmp_path, "--no-ui", "--preset", "tiny-sft", *QUICK, "--overwrite", "1")
    assert ("[warning] runs started from the weights replaced here: tiny-lora (tiny-lora is a "
            "lora run") in replaced.stdout, replaced.stdout
    # A run nothing started from says nothing of the kind.
    assert "runs started from" not in minimind(
        tmp_path, "--no-ui", "--preset", "tiny-sft", *QUICK, "--out_dir", "out/lone").stdout
