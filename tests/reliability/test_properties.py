"""Property-based checks that no input, however odd, gets past the checks as anything but a
clear refusal: JSONL lines, flag values and preset files drawn by hypothesis.

Each property is bounded (`max_examples`) so the file runs in seconds; `@example`s pin the
cases that once escaped as tracebacks.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
import tomli_w
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from minimind.config import MiniMindConfig
from minimind.data import DataError, JsonlIndex, PretrainDataset, build_token_cache
from minimind.model import MiniMindForCausalLM
from minimind.settings import SECTIONS, ModelSettings, SettingsError
from minimind.settings_file import read_toml
from minimind.tokenizer import load_tokenizer
from minimind_tui.form.presets import load_settings

BOUNDED = settings(max_examples=60, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MANY = settings(BOUNDED, max_examples=200)  # for the properties that cost milliseconds each
REAL_LOCS = {f"{section}.{name}" for section, model in SECTIONS.items()
             for name in model.model_fields}
SEQ_LEN = 16


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


# -- JSONL lines ------------------------------------------------------------------------------
unicode_text = st.text(st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr)),
                       max_size=30)


def text_record(draw_text: str, ascii_only: bool) -> bytes:
    """A {"text": ...} line; a text with a lone surrogate can only be written as an escape."""
    try:
        return json.dumps({"text": draw_text}, ensure_ascii=ascii_only).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps({"text": draw_text}).encode("utf-8")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["text", "txt", "id"]) | st.text(max_size=5), inner, max_size=3),
    max_leaves=6)

lines = st.one_of(
    st.builds(text_record, unicode_text, st.booleans()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ")),
    st.sampled_from([b"", b"  ", b"\t\r", b'\xef\xbb\xbf{"text": "bom"}', b"[" * 5000]),
)

BLANK, BAD = object(), object()


def expected(line: bytes):
    """The specification, written independently of the reader: blank, bad, or the text."""
    if not line.strip():
        return BLANK
    try:
        obj = json.loads(line.decode("utf-8").removeprefix("\ufeff"))
        text = obj["text"]
        text.encode("utf-8")  # no lone surrogates
        return text
    except (UnicodeError, ValueError, RecursionError, TypeError, KeyError, AttributeError):
        return BAD


@BOUNDED
@given(st.lists(lines, min_size=1, max_size=8), st.booleans())
@example([b'{"text": "a\\ud800b"}'], True)
@example(['{"text": "a\ud800b"}'.encode("utf-16-le", "surrogatepass")], True)
@example([b'{"text": "x", "n": [' + b"[" * 100_000 + b"]}"], True)
def test_jsonl_lines_index_or_fail_by_line(tokenizer, lines, newline_at_end):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.jsonl"
        path.write_bytes(b"\n".join(lines) + (b"\n" if newline_at_end else b""))
        specs = [expected(line) for line in lines]
        if not newline_at_end and lines[-1] == b"":
            specs[-1] = BLANK  # no bytes at all: not a line
        good = [(n, s) for n, s in enumerate(specs, start=1) if s not in (BLANK, BAD)]
        bad = [n for n, s in enumerate(specs, start=1) if s is BAD]

        try:
            index = JsonlIndex(path)
        except DataError as e:
            if bad:
                assert e.line == bad[0] and str(e).startswith(f"{path}:{bad[0]}: ")
            else:
                assert not good and e.line is None and str(e).startswith(f"{path}: ")
        else:
            assert not bad and [index.text(i) for i in range(len(index))] == [t for _, t in good]

        try:
            lenient = JsonlIndex(path, skip_bad_lines=True)
        except DataError as e:
            assert not good and e.line is None and str(e).startswith(f"{path}: ")
            return
        assert [lenient.text(i) for i in range(len(lenient))] == [t for _, t in good]
        assert lenient.bad_lines == len(bad)
        assert [n for n, _ in lenient.first_bad] == bad[:5]

        # Whatever indexes also tokenizes, padded and packed.
        dataset = PretrainDataset(lenient, tokenizer, SEQ_LEN)
        for i in range(len(dataset)):
            input_ids, labels = dataset[i]
            assert input_ids.shape == labels.shape == (SEQ_LEN,)
            assert input_ids.dtype == torch.long
        # Every document is at least bos + eos, so 2 tokens make a full sample.
        tokens = build_token_cache(path, tokenizer, 2, Path(folder) / "cache",
                                   skip_bad_lines=True)
        assert tokens.stat().st_size > 0


# -- flag values ------------------------------------------------------------------------------
fields = st.sampled_from(sorted(REAL_LOCS)).map(lambda loc: tuple(loc.split(".")))
any_value = st.one_of(
    st.text(max_size=12), st.integers(), st.integers(-10, 10**4).map(str), st.floats(),
    st.floats().map(str), st.booleans(), st.none(),
    st.sampled_from(["auto", "cpu", "cuda", "cuda:7", "float16", "minimind3", "1e3", "nan",
                     "inf", "-0", "", "0x10"]))


def overrides_of(pairs) -> dict:
    out: dict = {}
    for (section, name), value in pairs:
        out.setdefault(section, {})[name] = value
    return out


def check_settings(overrides):
    """load_settings returns settings or raises SettingsError naming real fields; valid model
    settings always build a config (and a model, on the meta device)."""
    try:
        settings = load_settings(None, overrides)
    except SettingsError as e:
        assert e.problems and all(p.loc in REAL_LOCS for p in e.problems), e.problems
        return
    config = MiniMindConfig(**settings.model.to_config_kwargs())
    with torch.device("meta"):
        MiniMindForCausalLM(config)


@MANY
@given(st.lists(st.tuples(fields, any_value), min_size=1, max_size=4))
@example([(("train", "seed"), 99999999999999999999999)])
@example([(("model", "vocab_size"), 1_000_000_000)])
@example([(("model", "intermediate_size"), 2**52)])  # found by this test: passed, then crashed
@example([(("train", "device"), "cuda:99999999999999999999")])
def test_any_flag_value_is_settings_or_a_settings_error(pairs):
    check_settings(overrides_of(pairs))


def usually(*likely, rest):
    """Mostly values a user would type (so many draws are valid), sometimes anything."""
    return st.sampled_from(likely) | rest


heads = usually(4, 8, rest=st.integers(-1, 70))
dense = st.fixed_dictionaries({
    "family": st.sampled_from(["minimind2", "minimind3"]),
    "hidden_size": usually(32, 64, 128, rest=st.integers(0, 300)),
    "num_attention_heads": heads,
    "num_key_value_heads": st.none() | usually(1, 2, rest=st.integers(-1, 70)),
}, optional={
    "num_hidden_layers": usually(1, 2, rest=st.integers(0, 3)),
    "intermediate_size": st.none() | st.integers(-1, 400),
    "vocab_size": usually(6400, 300, rest=st.integers(0, 70_000)),
    "max_position_embeddings": usually(64, 128, rest=st.integers(0, 100)),
    "rope_theta": usually(1e4, 1e6, rest=st.floats()),
    "rms_norm_eps": st.none() | usually(1e-5, rest=st.floats()),
    "dropout": usually(0.0, 0.1, rest=st.floats()),
    "qk_norm": st.none() | st.booleans(),
    "tie_word_embeddings": st.booleans(),
})
moe = st.fixed_dictionaries({"use_moe": st.just(True)}, optional={
    "n_routed_experts": st.integers(0, 6),
    "num_experts_per_tok": st.none() | st.integers(0, 6),
    "n_shared_experts": st.none() | st.integers(-1, 2),
    "moe_intermediate_size": st.none() | st.integers(-1, 100),
    "aux_loss_alpha": st.none() | st.floats(),
    "seq_aux": st.none() | st.booleans(),
})
shape = dense | st.builds(lambda d, m: {**d, **m}, dense, moe)


@MANY
@given(shape, st.integers(8, 64))
@example({"family": "minimind3", "hidden_size": 64, "num_attention_heads": 8, "use_moe": True,
          "n_routed_experts": 2}, 16)
def test_valid_model_settings_always_build_the_config(model, max_seq_len):
    check_settings({"model": model, "train": {"max_seq_len": max_seq_len}})


# -- preset files -----------------------------------------------------------------------------
toml_scalars = st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(), st.booleans(),
                         st.text(max_size=10))
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=6)
setting_names = st.sampled_from(sorted({loc.split(".")[1] for loc in REAL_LOCS}))
tables = st.dictionaries(setting_names | st.text(max_size=6), toml_values, max_size=4)
documents = st.dictionaries(st.sampled_from(["model", "train"]) | st.text(max_size=6),
                            tables | toml_scalars, max_size=3)
model_tables = shape.map(lambda m: {"model": {k: v for k, v in m.items() if v is not None}})
preset_bytes = st.one_of(
    documents.map(lambda d: tomli_w.dumps(d).encode()),
    model_tables.map(lambda d: tomli_w.dumps(d).encode()),  # TOML has no null
    st.binary(max_size=60),
    st.binary(max_size=40).map(lambda b: b"[model]\n" + b),
)


@MANY
@given(preset_bytes)
@example(b"x = " + b"[" * 100_000)
@example(b"[model]\nx = " + b"{a=" * 100_000)
@example(b"[model]\nhidden_size = nan\n")
def test_any_preset_file_is_settings_or_a_settings_error(content):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "p.toml"
        path.write_bytes(content)
        try:
            data = read_toml(path)
        except SettingsError as e:
            assert e.problems and all(str(p) for p in e.problems)
        else:
            assert isinstance(data, dict) and isinstance(data["model"], dict)
        try:
            settings = load_settings(str(path))
        except SettingsError as e:
            assert e.problems
        else:
            assert isinstance(settings.model, ModelSettings)
            assert math.isfinite(settings.train.learning_rate)
