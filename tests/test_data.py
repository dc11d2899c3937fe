"""JSONL indexing, the bundled corpus, and the padded and packed pretraining datasets."""

import gzip
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from minimind.data import DataError, JsonlIndex, PackedDataset, PretrainDataset, build_token_cache, resolve_data_path
from minimind.data import packed as packed_module
from minimind.data.corpus import BUILTINS
from minimind.data.prefetch import Prefetcher
from minimind.tokenizer import load_tokenizer

REPO = Path(__file__).resolve().parent.parent
UPSTREAM = Path(os.environ.get("MINIMIND_UPSTREAM_TOKENIZERS", REPO.parent / "shared/reference/upstream-tokenizers"))
BOS, EOS, PAD = 1, 2, 0


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MINIMIND_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def texts(index: JsonlIndex) -> list[str]:
    return [index.text(i) for i in range(len(index))]


def write_jsonl(path: Path, rows: list) -> Path:
    """rows: dicts are JSON-encoded, strings are written verbatim (for broken lines)."""
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n")
    return path


TEXTS = [
    "First Citizen: Before we proceed any further, hear me speak.",
    "All: Speak, speak.",
    "First Citizen: You are all resolved rather to die than to famish?",
    "All: Resolved. resolved.",
    "First Citizen: First, you know Caius Marcius is chief enemy to the people.",
]


@pytest.fixture
def small(tmp_path):
    return write_jsonl(tmp_path / "small.jsonl", [{"text": t} for t in TEXTS])


def expected_doc(tok, text: str) -> list[int]:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    head = [] if ids[:1] == [BOS] else [BOS]
    tail = [] if ids[-1:] == [EOS] else [EOS]
    return head + ids + tail


# --- the bundled corpus ------------------------------------------------------------------


def test_builtin_corpus_resolves_and_is_cached():
    train = resolve_data_path("builtin:shakespeare")
    val = resolve_data_path("builtin:shakespeare-val")
    assert train.suffix == ".jsonl" and val.suffix == ".jsonl" and train.is_file() and val.is_file()
    mtime = train.stat().st_mtime_ns
    assert resolve_data_path("builtin:shakespeare") == train and train.stat().st_mtime_ns == mtime


def test_builtin_corpus_splits_are_disjoint_and_sane():
    train = texts(JsonlIndex(resolve_data_path("builtin:shakespeare")))
    val = texts(JsonlIndex(resolve_data_path("builtin:shakespeare-val")))
    assert not set(train) & set(val)
    assert len(train) > 4000 and 0.015 < len(val) / (len(train) + len(val)) < 0.035
    lengths = sorted(len(t) for t in train + val)
    assert lengths[0] >= 50 and lengths[-1] <= 2000 and 400 <= lengths[len(lengths) // 2] <= 1500
    assert "HAMLET: " in "".join(train)
    assert sum(p.stat().st_size for p in BUILTINS.values()) <= 3 * 2**20


def test_unknown_builtin_and_plain_paths(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="unknown built-in corpus"):
        resolve_data_path("builtin:nope")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_path("~/data.jsonl") == tmp_path / "data.jsonl"
    assert resolve_data_path(tmp_path / "x.jsonl") == tmp_path / "x.jsonl"


def test_user_gz_is_decompressed(tmp_path, small):
    gz = tmp_path / "small.jsonl.gz"
    gz.write_bytes(gzip.compress(small.read_bytes()))
    plain = resolve_data_path(gz)
    assert plain != gz and plain.read_bytes() == small.read_bytes()
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="cannot decompress"):
        resolve_data_path(tmp_path / "bad.jsonl.gz")


# --- JsonlIndex --------------------------------------------------------------------------


def test_index_reads_texts(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, "", "   ", {"text": "é 🎭", "id": 3}, {"text": ""}])
    index = JsonlIndex(path)
    assert len(index) == 3 and index.bad_lines == 0
    assert [index.text(i) for i in range(3)] == ["a", "é 🎭", ""] == texts(index)
    assert index.offsets.dtype == np.int64 and index.text(-1) == ""
    with pytest.raises(IndexError):
        index.text(3)


def test_index_survives_pickling_after_use(small):
    index = JsonlIndex(small)
    index.text(0)  # opens a handle, which must not be pickled
    clone = pickle.loads(pickle.dumps(index))
    assert clone.text(4) == TEXTS[4]


def test_index_detects_file_changed_under_it(small):
    index = JsonlIndex(small)
    small.write_text("x" * small.stat().st_size)
    with pytest.raises(DataError, match="file changed since it was indexed"):
        index.text(1)


def test_index_progress_reaches_total(small):
    calls = []
    JsonlIndex(small, progress=lambda done, total: calls.append((done, total)))
    size = small.stat().st_size
    assert calls and calls[-1] == (size, size)


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"text": "a" "b"}', r"bad\.jsonl:2: line is not valid JSON at column 14: expected ',' "
                              r"between items"),
        ('{"text": "a\tb"}', r"bad\.jsonl:2: line is not valid JSON at column 12: a raw control "
                             r"character \(newline, tab, \.\.\.\) inside a string"),
        ('{"text": "ab}', r"bad\.jsonl:2: line is not valid JSON at column 10: unterminated "
                          r"string"),
        # Lines that end early: the error is at their end, not at column 1 of a next line.
        ('{"text": "ab"', r"bad\.jsonl:2: line is not valid JSON at column 14: expected ',' "
                          r"between items"),
        ('{"text": ', r"bad\.jsonl:2: line is not valid JSON at column 10: expected a value"),
        ('{"text": "\\ud800"}', r'bad\.jsonl:2: "text" holds an unpaired surrogate \(\\ud800\) '
                               r"at character 1"),
        ('{"txt": "a"}', r'bad\.jsonl:2: missing "text" field$'),
        ('{"conversations": []}', r'bad\.jsonl:2: missing "text" field \(this looks like '
                                  r'conversation data, which stages "sft" and "lora" read\)'),
        ('{"text": 17}', r'bad\.jsonl:2: "text" must be a string, got int'),
        ('{"text": null}', r'bad\.jsonl:2: "text" must be a string, got null'),
        ('["text", "a"]', r'bad\.jsonl:2: expected a JSON object with a "text" field, got list'),
    ],
)
def test_bad_line_is_reported_with_line_number(tmp_path, line, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok"}, line, {"text": "ok"}])
    with pytest.raises(DataError, match=message) as err:
        JsonlIndex(path)
    assert err.value.line == 2 and err.value.path == path


def test_invalid_utf8_is_reported(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: line is not valid UTF-8"):
        JsonlIndex(path)


def test_missing_empty_and_blank_files(tmp_path):
    with pytest.raises(DataError, match=r"data\.jsonl: no such file") as err:
        JsonlIndex(tmp_path / "data.jsonl")
    assert err.value.line is None
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.jsonl: file is empty"):
        JsonlIndex(tmp_path / "empty.jsonl")
    (tmp_path / "blank.jsonl").write_text("\n\n  \n")
    with pytest.raises(DataError, match="no lines with text"):
        JsonlIndex(tmp_path / "blank.jsonl")
    with pytest.raises(DataError, match="not a file"):
        JsonlIndex(tmp_path)


def test_skip_bad_lines_counts_and_keeps_good(tmp_path):
    rows = [{"text": "one"}, "{oops", {"txt": 1}, {"text": 5}, "[1, 2]", {"text": "two"}, "7", "null", {"text": "three"}]
    index = JsonlIndex(write_jsonl(tmp_path / "mixed.jsonl", rows), skip_bad_lines=True)
    assert texts(index) == ["one", "two", "three"]
    assert index.bad_lines == 6
    assert [n for n, _ in index.first_bad] == [2, 3, 4, 5, 7]
    assert "not valid JSON" in index.first_bad[0][1]


def test_skip_bad_lines_with_no_good_line_still_fails(tmp_path):
    path = write_jsonl(tmp_path / "all_bad.jsonl", ["{oops", {"text": 1}])
    with pytest.raises(DataError, match=r"no valid lines \(2 bad; first at line 1"):
        JsonlIndex(path, skip_bad_lines=True)


# --- PretrainDataset ---------------------------------------------------------------------


def test_pretrain_layout_and_padding(tok, small):
    T = 64
    ds = PretrainDataset(small, tok, T)
    assert len(ds) == len(TEXTS)
    for i, text in enumerate(TEXTS):
        x, y = ds[i]
        doc = expected_doc(tok, text)
        n = len(doc)
        assert x.dtype == y.dtype == torch.long and x.shape == y.shape == (T,)
        assert x[:n].tolist() == doc and doc[0] == BOS and doc[-1] == EOS
        assert (x[n:] == PAD).all() and (y[n:] == -100).all() and y[:n].tolist() == doc


def test_pretrain_does_not_double_markers(tok, tmp_path):
    text = "<|im_start|>Who's there?<|im_end|> <|im_start|>Nay, answer me.<|im_end|>"
    ds = PretrainDataset(write_jsonl(tmp_path / "hq.jsonl", [{"text": text}]), tok, 64)
    x, _ = ds[0]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert x[: len(ids)].tolist() == ids and x[len(ids)] == PAD


def test_pretrain_truncation_keeps_head_and_ends_with_eos(tok, tmp_path):
    text = " ".join(TEXTS * 4)
    ds = PretrainDataset(write_jsonl(tmp_path / "long.jsonl", [{"text": text}, {"text": "<|im_start|>" + text}]), tok, 16)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    for i in range(2):
        x, y = ds[i]
        assert x.tolist() == [BOS] + ids[:14] + [EOS] and y.tolist() == x.tolist()


def test_pretrain_exact_fit_and_literal_pad_token(tok, tmp_path):
    text = "Speak, speak.<|endoftext|>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    ds = PretrainDataset(write_jsonl(tmp_path / "fit.jsonl", [{"text": text}]), tok, len(ids) + 2)
    x, y = ds[0]
    assert x.tolist() == [BOS] + ids + [EOS]
    assert (y != -100).all()  # a literal <|endoftext|> in the text is not padding


def test_pretrain_batch_fetch_matches_one_at_a_time(tok, tmp_path):
    """`__getitems__` (one tokenizer call per batch, what DataLoader uses) gives exactly the
    tensors of `__getitem__`: short, exact-fit, cut, already wrapped and empty texts."""
    long = " ".join(TEXTS * 4)
    rows = [{"text": t} for t in TEXTS] + [
        {"text": long}, {"text": "<|im_start|>" + long}, {"text": "<|im_start|>Hi<|im_end|>"},
        {"text": ""}, {"text": "<|im_end|>"}, {"text": "Speak, speak.<|endoftext|>"}]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    for T in (2, 5, 16, 64):
        ds = PretrainDataset(path, tok, T)
        indices = [3, 0, 5, 6, 7, 8, 9, 10, 3, -1]
        batch = ds.__getitems__(indices)
        for (x, y), i in zip(batch, indices):
            ex, ey = ds[i]
            assert torch.equal(x, ex) and torch.equal(y, ey) and x.dtype == torch.long
    with pytest.raises(IndexError):
        ds.__getitems__([0, len(ds)])


def test_prefetcher_keeps_order_and_errors():
    assert list(Prefetcher(iter(range(100)), depth=3)) == list(range(100))

    def failing():
        yield 1
        raise DataError("data.jsonl", 7, "bad line")

    prefetched = Prefetcher(failing())
    assert next(prefetched) == 1
    with pytest.raises(DataError, match="data.jsonl:7"):
        next(prefetched)


def test_prefetcher_stops_its_thread_when_dropped():
    endless = Prefetcher(iter(lambda: 0, 1), depth=2)  # never ends by itself
    assert next(endless) == 0
    thread = endless._thread
    del endless
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_pretrain_accepts_index_and_builtin(tok, small):
    assert len(PretrainDataset(JsonlIndex(small), tok, 32)) == len(TEXTS)
    assert len(PretrainDataset("builtin:shakespeare-val", tok, 32)) > 50


def test_pretrain_propagates_data_errors(tok, tmp_path):
    with pytest.raises(DataError, match="no such file"):
        PretrainDataset(tmp_path / "missing.jsonl", tok, 32)
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok"}, "[1]"])
    with pytest.raises(DataError, match=r"bad\.jsonl:2:"):
        PretrainDataset(path, tok, 32)
    assert len(PretrainDataset(path, tok, 32, skip_bad_lines=True)) == 1


def test_pretrain_in_dataloader_workers(tok, small):
    ds = PretrainDataset(small, tok, 32)
    ds[0]  # the parent opened its own handle first
    batches = list(DataLoader(ds, batch_size=2, num_workers=2))
    assert torch.equal(torch.cat([b[0] for b in batches]), torch.stack([ds[i][0] for i in range(len(ds))]))


def test_pretrain_with_upstream_tokenizer(tmp_path):
    path = UPSTREAM / "minimind2"
    if not path.is_dir():
        pytest.skip(f"upstream tokenizer folder {path} not present")
    up = load_tokenizer(path)
    text = "<|im_start|>鉴别一组中文文章的风格<|im_end|> <|im_start|>好的<|im_end|>"
    x, _ = PretrainDataset(write_jsonl(tmp_path / "hq.jsonl", [{"text": text}]), up, 64)[0]
    ids = up(text, add_special_tokens=False)["input_ids"]
    assert x[: len(ids) + 1].tolist() == ids + [0]


# --- packed token cache and PackedDataset -----------------------------------------------


def test_token_stream_is_concatenated_documents(tok, small, tmp_path):
    rows = [{"text": t} for t in TEXTS] + [{"text": "<|im_start|>Already wrapped.<|im_end|>"}]
    path = write_jsonl(tmp_path / "docs.jsonl", rows)
    tokens = np.fromfile(build_token_cache(path, tok, 8, tmp_path / "cache"), dtype="<u2")
    expected = [t for row in rows for t in expected_doc(tok, row["text"])]
    assert tokens.tolist() == expected


def test_packed_covers_each_token_once(tok, tmp_path):
    T = 32
    token_file = build_token_cache("builtin:shakespeare-val", tok, T, tmp_path / "cache")
    ds = PackedDataset(token_file, T)
    tokens = np.fromfile(token_file, dtype="<u2")
    assert ds.n_tokens == len(tokens) and len(ds) == len(tokens) // T
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    assert all(x.dtype == torch.long and x.shape == (T,) and torch.equal(x, y) for x, y in zip(xs, ys))
    assert torch.cat(xs).tolist() == tokens[: len(ds) * T].tolist()
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_packed_cache_hit_and_keys(tok, small, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = build_token_cache(small, tok, 16, cache)
    mtime = first.stat().st_mtime_ns

    def no_rebuild(*args):
        raise AssertionError("a cached token file was rebuilt")

    with monkeypatch.context() as m:
        m.setattr(packed_module, "_write_tokens", no_rebuild)
        assert build_token_cache(small, tok, 16, cache) == first
        # The stream does not depend on max_seq_len, so one cache serves every length.
        assert build_token_cache(small, tok, 32, cache) == first
    assert first.stat().st_mtime_ns == mtime

    write_jsonl(small, [{"text": t} for t in reversed(TEXTS)])  # same name, new content
    second = build_token_cache(small, tok, 16, cache)
    assert second != first and first.exists()

    other = load_tokenizer()
    other.add_tokens(["<|new|>"])
    assert build_token_cache(small, other, 16, cache) not in (first, second)
    assert sorted(p.suffix for p in cache.iterdir() if p.suffix != ".json") == [".u16"] * 3
    assert not [p for p in cache.iterdir() if p.suffix == ".tmp"]  # no temp files left


def test_a_token_cache_cut_short_or_grown_is_built_again(tok, small, tmp_path):
    """A cache file cut short was trusted: the run trained on half its data ("15/epoch" where
    it had been 30), and said nothing."""
    cache = tmp_path / "cache"
    first = build_token_cache(small, tok, 16, cache)
    whole = first.read_bytes()
    assert packed_module.cache_report(first)["tokens"] == len(whole) // 2
    for damaged in (whole[: len(whole) // 2], whole[:-1], whole + b"\0\0"):
        first.write_bytes(damaged)
        said: list[tuple[str, str]] = []
        assert build_token_cache(small, tok, 16, cache,
                                 log=lambda *line: said.append(line)) == first
        assert first.read_bytes() == whole
        assert said == [(f"{first}: the token cache holds {len(damaged):,} bytes where its "
                         f"record counts {len(whole) // 2:,} tokens ({len(whole):,} bytes): "
                         "tokenizing again", "warning")]


def test_packed_cache_ignores_transformers_call_state(tok, small, tmp_path):
    first = build_token_cache(small, tok, 16, tmp_path / "cache")
    tok("anything", truncation=True, max_length=4)  # mutates the backend's truncation setting
    assert build_token_cache(small, tok, 16, tmp_path / "cache") == first


def test_packed_errors(tok, small, tmp_path):
    with pytest.raises(DataError, match="no such file"):
        build_token_cache(tmp_path / "missing.jsonl", tok, 16, tmp_path / "cache")
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok"}, '{"text": 3}'])
    with pytest.raises(DataError, match=r"bad\.jsonl:2: \"text\" must be a string"):
        build_token_cache(bad, tok, 4, tmp_path / "cache")
    assert build_token_cache(bad, tok, 4, tmp_path / "cache", skip_bad_lines=True).exists()
    with pytest.raises(DataError, match="fewer than max_seq_len"):
        build_token_cache(small, tok, 10_000, tmp_path / "cache")
    with pytest.raises(DataError, match="no such token file"):
        PackedDataset(tmp_path / "none.u16", 16)

    class HugeVocab:
        def __len__(self):
            return 70_000

    with pytest.raises(ValueError, match="uint16"):
        build_token_cache(small, HugeVocab(), 16, tmp_path / "cache")


def test_packed_in_dataloader_workers(tok, small, tmp_path):
    ds = PackedDataset(build_token_cache(small, tok, 8, tmp_path / "cache"), 8)
    ds[0]  # the parent mapped the file first; workers must map their own
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[1][0], ds[1][0])
    batches = list(DataLoader(ds, batch_size=2, num_workers=2))
    assert sum(len(b[0]) for b in batches) == len(ds)
