"""The bundled tokenizer, training a new one, and loading upstream MiniMind tokenizers."""

import json
import os
import re
from pathlib import Path

import pytest

from minimind.tokenizer import BUNDLED_TOKENIZER_DIR, TokenizerError, load_tokenizer, main, train_tokenizer

REPO = Path(__file__).resolve().parent.parent
UPSTREAM = Path(os.environ.get("MINIMIND_UPSTREAM_TOKENIZERS", REPO.parent / "shared/reference/upstream-tokenizers"))

ROUND_TRIP = [
    "HAMLET: To be, or not to be: that is the question:\nWhether 'tis nobler in the mind to suffer",
    "你好，世界！这是一个测试。",
    "emoji 🎭🗡️👑 and accents: naïve café Æsop",
    "  leading spaces,\ttabs\r\nand trailing space ",
    "<|im_start|>special tokens inside text<|im_end|>",
]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    # builtin:shakespeare decompresses into $MINIMIND_CACHE; keep tests out of ~/.cache.
    monkeypatch.setenv("MINIMIND_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_bundled_special_tokens_and_vocab(tok):
    assert len(tok) == 6400
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 0)
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert tok.model_max_length == 32768


@pytest.mark.parametrize("spec", [None, "", "builtin", BUNDLED_TOKENIZER_DIR, str(BUNDLED_TOKENIZER_DIR)])
def test_load_tokenizer_accepts_bundled_aliases(spec):
    assert len(load_tokenizer(spec)) == 6400


def test_call_adds_no_special_tokens(tok):
    ids = tok("hello")["input_ids"]
    assert ids and not {0, 1, 2} & set(ids)
    assert ids == tok.encode("hello", add_special_tokens=False)
    # Literal markers in the text are recognised as the special tokens themselves.
    wrapped = tok("<|im_start|>hello<|im_end|>")["input_ids"]
    assert wrapped[0] == 1 and wrapped[-1] == 2


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip_is_exact(tok, text):
    assert tok.decode(tok(text)["input_ids"]) == text


def test_english_compresses_reasonably(tok):
    text = ROUND_TRIP[0]
    assert len(text) / len(tok(text)["input_ids"]) > 3.0  # merges were learned from Shakespeare


def test_autotokenizer_loads_bundled_dir():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(BUNDLED_TOKENIZER_DIR))
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
    chat = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def _tiny_jsonl(path: Path) -> Path:
    lines = [
        "Now is the winter of our discontent made glorious summer by this sun of York",
        "Friends, Romans, countrymen, lend me your ears; I come to bury Caesar, not to praise him.",
        "All the world's a stage, and all the men and women merely players",
        "我们都是演员 🎭",
    ] * 5
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in lines), encoding="utf-8")
    return path


def test_train_tokenizer_tiny(tmp_path):
    trained = train_tokenizer(_tiny_jsonl(tmp_path / "tiny.jsonl"), tmp_path / "tok", vocab_size=300, progress=False)
    out = trained.folder
    assert trained.vocab_size == 300
    assert {p.name for p in out.iterdir()} == {"tokenizer.json", "tokenizer_config.json"}
    tok = load_tokenizer(out)
    assert len(tok) == 300
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok("winter")["input_ids"] != [] and tok.decode(tok("我们 🎭 zebra")["input_ids"]) == "我们 🎭 zebra"


def test_train_tokenizer_rejects_tiny_vocab(tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(_tiny_jsonl(tmp_path / "tiny.jsonl"), tmp_path / "tok", vocab_size=100, progress=False)


def test_cli_train(tmp_path, capsys):
    data = _tiny_jsonl(tmp_path / "tiny.jsonl")
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "cli"), "--vocab_size", "280", "--quiet"])
    assert rc == 0 and len(load_tokenizer(tmp_path / "cli")) == 280
    rc = main(["train", "--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x"), "--quiet"])
    assert rc == 2 and "missing.jsonl: no such file" in capsys.readouterr().err


def test_cli_train_refuses_a_folder_that_holds_a_tokenizer(tmp_path, capsys):
    # A run trained on the old tokenizer would silently decode with the new one's ids.
    data, out = _tiny_jsonl(tmp_path / "tiny.jsonl"), tmp_path / "tok"
    assert main(["train", "--data", str(data), "--out", str(out), "--vocab_size", "300", "--quiet"]) == 0
    (out / "notes.txt").write_text("mine")
    before = {name: (out / name).read_bytes() for name in ("tokenizer.json", "tokenizer_config.json")}
    capsys.readouterr()
    rc = main(["train", "--data", str(data), "--out", str(out), "--vocab_size", "280", "--quiet"])
    assert rc == 2
    assert capsys.readouterr().err == (
        f"python -m minimind.tokenizer: error: {out}: already holds a tokenizer; pass --overwrite "
        "to replace its tokenizer.json and tokenizer_config.json (runs trained with the old one "
        "would then decode wrongly)\n")
    assert {name: (out / name).read_bytes() for name in before} == before
    # Either file alone marks a folder that holds a tokenizer.
    (out / "tokenizer.json").unlink()
    assert main(["train", "--data", str(data), "--out", str(out), "--vocab_size", "280", "--quiet"]) == 2
    rc = main(["train", "--data", str(data), "--out", str(out), "--vocab_size", "280", "--quiet",
               "--overwrite"])
    assert rc == 0 and len(load_tokenizer(out)) == 280
    assert (out / "notes.txt").read_text() == "mine"  # only the tokenizer's two files are replaced


def test_cli_train_refuses_a_file_as_out(tmp_path, capsys):
    (tmp_path / "tok").write_text("")
    rc = main(["train", "--data", str(_tiny_jsonl(tmp_path / "tiny.jsonl")), "--out", str(tmp_path / "tok"),
               "--quiet"])
    assert rc == 2 and f"{tmp_path / 'tok'}: is a file" in capsys.readouterr().err
    rc = main(["train", "--data", str(_tiny_jsonl(tmp_path / "tiny.jsonl")), "--out",
               str(tmp_path / "tok" / "sub"), "--quiet"])
    assert rc == 2 and (f"{tmp_path / 'tok' / 'sub'}: cannot write there: {tmp_path / 'tok'} is "
                        "a file, not a folder") in capsys.readouterr().err


def test_cli_train_refuses_empty_texts_and_an_empty_out(tmp_path, capsys, monkeypatch):
    """Texts all "" wrote a tokenizer of the bytes alone, exit 0; --out "" wrote into the
    current folder."""
    data = tmp_path / "empty.jsonl"
    data.write_text('{"text": ""}\n{"text": ""}\n')
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "tok"), "--quiet"])
    assert rc == 2 and capsys.readouterr().err.rstrip().endswith(
        f"{data}: every text is empty: nothing to learn from")
    assert not (tmp_path / "tok").exists()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--data", str(_tiny_jsonl(tmp_path / "tiny.jsonl")), "--out", "",
              "--quiet"])
    assert exit_.value.code == 2 and capsys.readouterr().err.rstrip().endswith(
        "--out is empty: give a folder (. for the current one)")
    assert not (tmp_path / "tokenizer.json").exists()


def test_cli_train_says_when_the_corpus_gives_fewer_tokens(tmp_path, capsys):
    data = _tiny_jsonl(tmp_path / "tiny.jsonl")
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "tok"), "--vocab_size", "6400", "--quiet"])
    got = len(load_tokenizer(tmp_path / "tok"))
    assert rc == 0 and got < 6400
    assert f"the corpus gave only {got} tokens of the 6400 asked for" in capsys.readouterr().out


def test_bundled_files_are_reproducible(tmp_path):
    # The module docstring promises this command regenerates the shipped files exactly.
    rc = main(["train", "--data", "builtin:shakespeare", "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / name).read_bytes() == (BUNDLED_TOKENIZER_DIR / name).read_bytes(), name


@pytest.mark.parametrize("era", ["minimind2", "minimind3"])
def test_upstream_tokenizers_load(era):
    path = UPSTREAM / era
    if not path.is_dir():
        pytest.skip(f"upstream tokenizer folder {path} not present")
    tok = load_tokenizer(path)
    assert len(tok) == 6400
    assert (tok.bos_token_id, tok.eos_token_id) == (1, 2)
    assert not {1, 2} & set(tok("hello")["input_ids"])


def test_missing_dir_raises(tmp_path):
    with pytest.raises(TokenizerError, match="no such tokenizer directory"):
        load_tokenizer(tmp_path / "nope")


def test_dir_without_tokenizer_raises(tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)


def test_corrupt_tokenizer_raises_one_line(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError) as err:
        load_tokenizer(tmp_path)
    assert "cannot load tokenizer" in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("name", ["tokenizer_config.json", "tokenizer.json"])
@pytest.mark.parametrize("kind", ["fifo", "folder", "dangling link"])
def test_a_tokenizer_file_that_is_no_file_is_named(tmp_path, name, kind):
    """transformers passed over it as if it were missing: a FIFO as tokenizer_config.json gave
    "defines no bos/eos token", a tokenizer that the folder's own config does define."""
    for bundled in ("tokenizer.json", "tokenizer_config.json"):
        if bundled != name:
            (tmp_path / bundled).write_bytes((BUNDLED_TOKENIZER_DIR / bundled).read_bytes())
    file = tmp_path / name
    if kind == "fifo":
        os.mkfifo(file)
    elif kind == "folder":
        file.mkdir()
    else:
        file.symlink_to(tmp_path / "moved.json")
    why = "a link to .*moved.json, which is not there" if kind == "dangling link" else "not a file"
    with pytest.raises(TokenizerError, match=f"^{re.escape(str(file))}: {why}"):
        load_tokenizer(tmp_path)


def test_a_tokenizer_without_its_config_says_which_file_names_bos_and_eos(tmp_path):
    """tokenizer.json alone: "defines no bos/eos token", with no word of the file missing."""
    bundled = BUNDLED_TOKENIZER_DIR / "tokenizer.json"
    (tmp_path / "tokenizer.json").write_bytes(bundled.read_bytes())
    with pytest.raises(TokenizerError) as err:
        load_tokenizer(tmp_path)
    assert str(err.value) == (f"{tmp_path}: tokenizer defines no bos/eos token; pretraining needs "
                              "both; it has no tokenizer_config.json, which names them")
