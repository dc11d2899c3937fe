"""Shell completion (`minimind-tui completion bash|zsh`), `--version`, and the subcommands in
`--help`: run as a user's shell runs them."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from minimind_tui.cli.main import SUBCOMMANDS

CLI = [sys.executable, "-m", "minimind_tui"]

# Calls the completion function as the shell does on TAB: COMP_WORDS holds the words up to the
# cursor and COMP_CWORD the index of the one being completed; prints what it offers.
SIMULATE = textwrap.dedent("""
    offer() {
        COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMPREPLY=()
        _minimind_tui
        printf '%s\n' "${COMPREPLY[@]}"
    }
""")


@pytest.fixture
def complete(tmp_path):
    """offer(shell, *words) -> the words the shell's completion offers for the last word."""
    presets = tmp_path / "presets"
    presets.mkdir()
    env = {**os.environ, "MINIMIND_TUI_PRESETS": str(presets), "HOME": str(tmp_path)}
    scripts = {}

    def offer(shell, *words):
        if shell not in scripts:
            generated = subprocess.run([*CLI, "completion", shell], capture_output=True,
                                       text=True, env=env, check=True, timeout=120).stdout
            scripts[shell] = tmp_path / f"completion.{shell}"
            scripts[shell].write_text(generated)
        quoted = " ".join(f"'{w}'" for w in ("minimind-tui", *words))
        proc = subprocess.run([shell, "-f" if shell == "zsh" else "--norc", "-c",
                               f"source {scripts[shell]}\n{SIMULATE}\noffer {quoted}"],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        return [line for line in proc.stdout.splitlines() if line]  # one word a line

    offer.user_presets = presets
    return offer


def test_bash_completes_flags_values_subcommands_and_presets(complete):
    assert complete("bash", "--batch_s") == ["--batch_size"]
    assert complete("bash", "--rep") == ["--report_to"]
    assert complete("bash", "--preset", "ti") == ["tiny", "tiny-sft"]
    assert complete("bash", "--family", "m") == ["minimind2", "minimind3"]
    assert complete("bash", "--use_moe", "") == ["0", "1"]
    # a list flag keeps offering its values after the first
    assert complete("bash", "--report_to", "tensorboard", "w") == ["wandb"]
    assert complete("bash", "se") == ["serve"]
    assert complete("bash", "completion", "") == ["bash", "zsh"]
    assert complete("bash", "serve", "--p") == ["--port", "--public-url"]
    assert complete("bash", "serve", "--", "--preset", "minimind3") == [
        "minimind3", "minimind3-sft", "minimind3-moe"]
    assert complete("bash", "--batch_size", "") == []  # a number: the shell offers files


def test_every_subcommand_completes_its_own_flags_and_their_values(complete):
    assert complete("bash", "generate", "ckpt.pth", "--temp") == ["--temperature"]
    assert complete("bash", "generate", "--top") == ["--top_p", "--top-p", "--top_k", "--top-k"]
    assert complete("bash", "watch", "out/tiny", "--p") == ["--plain"]
    assert complete("bash", "runs", "--sort", "to") == ["tokens", "tokens_per_sec"]
    assert complete("bash", "export", "a", "b", "--format", "") == ["hf", "upstream"]
    assert complete("bash", "inspect", "--max") == ["--max_seq_len", "--max-seq-len"]
    assert complete("bash", "tokenizer", "train", "--voc") == ["--vocab_size", "--vocab-size"]
    assert complete("bash", "tokenizer", "") == ["train"]  # its own command (it offered none)
    assert complete("bash", "tokenizer", "train", "") == []  # then files, from the shell
    # bench takes the training flags too, with their values and presets
    assert complete("bash", "bench", "--fam") == ["--family"]
    assert complete("bash", "bench", "--preset", "ti") == ["tiny", "tiny-sft"]
    assert complete("bash", "presets", "--") == ["--help"]
    assert complete("bash", "runs", "--batch") == []  # not a flag of runs


def test_a_preset_saved_after_the_script_was_generated_completes_too(complete):
    assert complete("bash", "--preset", "my") == []
    (complete.user_presets / "my-run.toml").write_text("[model]\n")
    assert complete("bash", "--preset", "my") == ["my-run"]
    # A name the save dialog takes with a space: one word, escaped as the shell needs it
    # (it completed to "my", the list split at the space).
    (complete.user_presets / "my run 2.toml").write_text("[model]\n")
    assert sorted(complete("bash", "--preset", "my")) == ["my-run", "my\\ run\\ 2"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_runs_the_same_completion_through_bashcompinit(complete):
    # zsh's bash layer hands back every candidate and zsh's own matching filters them by the
    # typed prefix, so these are the candidate sets.
    assert "--batch_size" in complete("zsh", "--batch_s")
    assert complete("zsh", "--family", "m") == ["minimind2", "minimind3"]
    assert complete("zsh", "--report_to", "tensorboard", "w") == [
        "tensorboard", "wandb", "swanlab", "trackio"]
    assert "tiny" in complete("zsh", "--preset", "ti")
    assert complete("zsh", "completion", "") == ["bash", "zsh"]


def test_help_lists_every_subcommand_and_version_answers():
    help_text = subprocess.run([*CLI, "--help"], capture_output=True, text=True,
                               timeout=120).stdout
    for name in SUBCOMMANDS:
        assert f"{name}: " in " ".join(help_text.split())
    version = subprocess.run([*CLI, "--version"], capture_output=True, text=True, timeout=120)
    assert version.returncode == 0
    assert version.stdout.startswith("minimind-tui ") and version.stdout.strip() != "minimind-tui"


def test_a_mistyped_command_is_named_with_the_one_meant(capsys):
    """`minimind-tui wacth out/tiny` printed the whole usage and "unrecognized arguments"."""
    from minimind_tui.cli.main import main

    assert main(["wacth", "out/tiny"]) == 2
    assert capsys.readouterr().err == (
        "minimind-tui: error: unknown command 'wacth': did you mean watch?\n")
    assert main(["frobnicate"]) == 2
    assert capsys.readouterr().err == (
        "minimind-tui: error: unknown command 'frobnicate': the commands are "
        f"{', '.join(SUBCOMMANDS)}; the app itself takes flags alone\n")


def test_version_and_completion_import_neither_torch_nor_textual():
    code = textwrap.dedent("""
        import contextlib, io, sys
        from minimind_tui.cli.main import main
        for argv in (["--version"], ["completion", "bash"], ["serve", "--help"]):
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    main(argv)
                except SystemExit:
                    pass
        print("heavy:", sorted({"torch", "transformers", "textual"} & set(sys.modules)))
    """)
    fresh = {**os.environ, "MINIMIND_TEST_EXEC": "1"}  # not a prewarmed copy: torch is in it
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=fresh, timeout=120)
    assert "heavy: []" in proc.stdout, proc.stderr
