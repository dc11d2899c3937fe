"""The parallel tokenizing pass: the same cache bytes and reports as a plain one-line-at-a-time
pass, whatever the byte ranges, the worker processes, the line endings or the tokenizer."""

import functools
import json
import os
import re
from pathlib import Path

import numpy as np
import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minimind.data import DataError, build_token_cache
from minimind.data import stream as stream_module
from minimind.data.fast_encode import (WHITESPACE, FastEncoder, PrefixCut, backend_json, chunkable,
                                      pieces)
from minimind.data.jsonl import JsonlReader
from minimind.data.packed import cache_report
from minimind.data.pretrain import special_ids, wrap_document
from minimind.data.stream import stream_chunks, wrap_documents
from minimind.tokenizer import load_tokenizer
from prewarmed import helper_pids

REPO = Path(__file__).resolve().parent.parent
UPSTREAM = Path(os.environ.get("MINIMIND_UPSTREAM_TOKENIZERS",
                               REPO.parent / "shared/reference/upstream-tokenizers"))

# Lines that exercise the parser and the tokenizer: multibyte UTF-8 (2, 3 and 4 bytes), special
# tokens inside text, whitespace runs, a CRLF ending, a blank line, bad lines of several kinds.
LINES = [
    '{"text": "Now, fair Hippolyta, our nuptial hour\\nDraws on apace"}\n',
    '{"text": "<|im_start|>已经包裹的文本。<|im_end|>"}\n',
    '{"text": "naïve café — “quoted”  double  spaced\\t\\ttabs \\n  indented"}\r\n',
    "\n",
    '{"text": 3}\n',
    '{"text": "emoji 🙂🙂 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢, ﬁ ligature, '
    '\\u00a0nbsp \\u3000 ideographic"}\n',
    '{"text": ""}\n',
    "not json at all\n",
    '{"text": "   "}\n',
    '{"text": "<|im_end|>ends reversed<|im_start|>"}\n',
    '{"txt": "wrong key"}\n',
    '{"text": "last line, no newline: ÿ"}',
]


def workers() -> list[psutil.Process]:
    """This process's children but the tests' prewarmed interpreter: the pass's workers."""
    return [p for p in psutil.Process().children() if p.pid not in helper_pids()]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MINIMIND_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def reference_cache(path: Path, tokenizer, skip_bad_lines: bool) -> tuple[bytes, dict]:
    """The plain pass: every good line in order, tokenized alone, wrapped, as uint16."""
    bos, eos, _ = special_ids(tokenizer)
    reader = JsonlReader(path, skip_bad_lines=skip_bad_lines)
    stream, documents = [], 0
    for _, text in reader:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        stream += wrap_document(ids, bos, eos)
        documents += 1
    report = {"documents": documents, "bad_lines": reader.bad_lines,
              "first_bad": [list(bad) for bad in reader.first_bad], "tokens": len(stream)}
    return np.asarray(stream, dtype="<u2").tobytes(), report


def write(path: Path, lines: list[str]) -> Path:
    path.write_bytes("".join(lines).encode("utf-8"))
    return path


def test_cache_matches_plain_pass_in_worker_processes(tok, tmp_path, monkeypatch):
    """Tiny ranges put boundaries next to every kind of line; two real worker processes."""
    path = write(tmp_path / "mixed.jsonl", LINES * 3)
    monkeypatch.setattr(stream_module, "CHUNK_BYTES", 97)
    monkeypatch.setattr(stream_module, "default_workers", lambda: 2)
    seen = []
    out = build_token_cache(path, tok, 4, tmp_path / "cache", skip_bad_lines=True,
                            progress=lambda done, total: seen.append((done, total)))
    expected, report = reference_cache(path, tok, skip_bad_lines=True)
    assert out.read_bytes() == expected
    # 3 bad lines per copy, and a copy's last line (no newline) runs into the next one
    assert cache_report(out) == report and report["bad_lines"] == 11
    assert report["first_bad"][0][0] == 5  # absolute line numbers across ranges
    assert seen[-1] == (path.stat().st_size,) * 2
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert not workers()  # the workers are gone


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 8, 13, 40, 1 << 20])
def test_any_range_boundary_gives_the_same_stream(tok, tmp_path, chunk_bytes):
    """Range ends fall on every byte offset (inside multibyte characters too); ranges always
    end at a line end, so the stream cannot change."""
    lines = ['{"text": "ÿé€🙂 x"}\n', '{"text": "中文 and 𝔘"}\r\n', '{"text": "é"}']
    path = write(tmp_path / "utf8.jsonl", lines)
    bos, eos, _ = special_ids(tok)
    chunks = list(stream_chunks(path, backend_json(tok), bos, eos, workers=1,
                                chunk_bytes=chunk_bytes))
    assert b"".join(c.tokens for c in chunks) == reference_cache(path, tok, False)[0]
    assert sum(c.lines for c in chunks) == 3
    assert chunks[-1].end == path.stat().st_size


def test_bad_line_stops_a_strict_pass_with_its_line_number(tok, tmp_path, monkeypatch):
    path = write(tmp_path / "bad.jsonl", [LINES[0]] * 40 + ['{"text": 3}\n'] + [LINES[0]] * 5)
    monkeypatch.setattr(stream_module, "CHUNK_BYTES", 300)
    monkeypatch.setattr(stream_module, "default_workers", lambda: 2)
    with pytest.raises(DataError, match=r"bad\.jsonl:41: \"text\" must be a string"):
        build_token_cache(path, tok, 4, tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.u16"))
    assert not workers()


def test_files_without_good_lines(tok, tmp_path):
    bos, eos, _ = special_ids(tok)
    blank = write(tmp_path / "blank.jsonl", ["\n", "  \n"])
    with pytest.raises(DataError, match="no lines with text"):
        list(stream_chunks(blank, backend_json(tok), bos, eos))
    bad = write(tmp_path / "allbad.jsonl", ["x\n", "\n", '{"a": 1}\n'])
    with pytest.raises(DataError, match=r"no valid lines \(2 bad; first at line 1: line is not "
                                        r"valid JSON"):
        list(stream_chunks(bad, backend_json(tok), bos, eos, skip_bad_lines=True))


def test_stop_during_the_pass_leaves_no_cache_and_no_workers(tok, tmp_path, monkeypatch):
    path = write(tmp_path / "big.jsonl", [LINES[0], LINES[2]] * 300)
    monkeypatch.setattr(stream_module, "CHUNK_BYTES", 1000)
    monkeypatch.setattr(stream_module, "default_workers", lambda: 2)

    class Stopped(Exception):
        pass

    def progress(done, total):
        if done > 0:
            raise Stopped

    with pytest.raises(Stopped):
        build_token_cache(path, tok, 4, tmp_path / "cache", progress=progress)
    assert not (tmp_path / "cache").exists()  # no cache, no temporary file, no folder for them
    assert not workers()


def test_a_killed_worker_fails_the_pass_instead_of_hanging(tok, tmp_path):
    path = write(tmp_path / "big.jsonl", [LINES[0], LINES[2]] * 300)
    bos, eos, _ = special_ids(tok)

    def kill_the_workers(done, total):
        for child in workers():
            child.kill()

    with pytest.raises(RuntimeError, match="tokenizer worker process"):
        list(stream_chunks(path, backend_json(tok), bos, eos, workers=2, chunk_bytes=1000,
                           progress=kill_the_workers))
    assert not workers()


def test_wrap_documents_matches_wrap_document(tok):
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 4, size=n).tolist() for n in rng.integers(0, 5, size=300)]
    docs += [[], [1], [2], [1, 2], [2, 1], [1, 1, 2, 2]]
    counts = np.array([len(d) for d in docs])
    ids = np.array([t for d in docs for t in d], dtype=np.uint32)
    stream, lengths = wrap_documents(ids, counts, 1, 2)
    expected = [wrap_document(d, 1, 2) for d in docs]
    assert stream.tolist() == [t for d in expected for t in d]
    assert lengths.tolist() == [len(d) for d in expected]


# -- FastEncoder: exact ids whatever the text -----------------------------------------------
# Every kind of character the pre-tokenizer's regex tells apart, and every whitespace
# character, plus the ones where Python's idea of whitespace differs from Unicode's.
ALPHABET = (list("ab Zz09'sStlmdrev.,!?-_\n\r\t") + [chr(c) for c in range(0x2000, 0x200c)]
            + list("\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u180e\u2028\u2029\u202f\u205f\u3000")
            + list("éß中文。，ﾟ١٢½²Ⅻ🙂\u0301\ufeff"))
TEXTS = st.lists(st.one_of(st.sampled_from(ALPHABET),
                           st.sampled_from(["<|im_start|>", "<|im_end|>", "'s", "'ll", "  "])),
                 max_size=40).map("".join)


def test_whitespace_class_is_what_the_tokenizers_regex_calls_whitespace(tok):
    """A character is whitespace to the pre-tokenizer when it stands alone between letters,
    between digits and between punctuation; checked for the first 0x3100 code points (every
    White_Space character is among them) and for a few beyond."""
    pre = tok.backend_tokenizer.pre_tokenizer
    chars = [chr(c) for c in [*range(0x3100), 0xFEFF, 0xFF0C, 0x1F642] if chr(c) not in "a1!"]

    def alone(sep: str) -> set[str]:
        pieces = [p for p, _ in pre.pre_tokenize_str(sep + sep.join(chars) + sep)]
        return {_unmap(p) for p in pieces}

    # A space joins the word after it (" a"), so it never stands alone; it is whitespace.
    whitespace = set(chars) & alone("a") & alone("1") & alone("!") | {" "}
    assert whitespace == {c for c in chars if re.fullmatch(f"[{WHITESPACE}]", c)}
    assert len(whitespace) == 25 and "\x1c" not in whitespace and "\u180e" not in whitespace


def _unmap(piece: str) -> str:
    """A byte-level piece back to its text."""
    from tokenizers import decoders
    return decoders.ByteLevel().decode([piece])


@functools.cache
def _tokenizers_and_encoders() -> list:
    """The bundled tokenizer and, where present, upstream MiniMind-3's (36 added tokens), each
    with one encoder that every example goes on filling."""
    tokenizers = [load_tokenizer()]
    upstream = UPSTREAM / "minimind3"
    if upstream.is_dir():
        tokenizers.append(load_tokenizer(upstream))
    return [(t, FastEncoder(backend_json(t))) for t in tokenizers]


@settings(max_examples=300, deadline=None)
@given(st.lists(TEXTS, min_size=1, max_size=8))
def test_fast_encoder_matches_the_tokenizer(texts):
    for tokenizer, encoder in _tokenizers_and_encoders():
        assert encoder.chunked
        for _ in range(2):  # the second time from the cache
            ids, counts = encoder.encode(texts)
            expected = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
            assert counts.tolist() == [len(e) for e in expected]
            assert ids.tolist() == [i for e in expected for i in e]


def test_other_tokenizers_encode_whole_texts(tok):
    spec = json.loads(backend_json(tok))
    spec["normalizer"] = {"type": "Lowercase"}
    assert chunkable(json.loads(backend_json(tok))) and not chunkable(spec)
    encoder = FastEncoder(json.dumps(spec))
    from tokenizers import Tokenizer
    reference = Tokenizer.from_str(json.dumps(spec))
    texts = ["Hello  World", "ÉCOLE normale", ""]
    ids, counts = encoder.encode(texts)
    expected = [reference.encode(t, add_special_tokens=False).ids for t in texts]
    assert ids.tolist() == [i for e in expected for i in e]
    assert counts.tolist() == [len(e) for e in expected]


@settings(max_examples=150, deadline=None)
@given(st.lists(TEXTS, min_size=1, max_size=12).map(" ".join), st.integers(1, 4))
def test_a_prefix_cut_keeps_a_texts_first_ids_exactly(text, tokens):
    for tokenizer, _ in _tokenizers_and_encoders():
        whole = tokenizer(text, add_special_tokens=False)["input_ids"]
        cut = PrefixCut(backend_json(tokenizer), tokens)(text)
        assert text.startswith(cut)
        assert tokenizer(cut, add_special_tokens=False)["input_ids"][:tokens] == whole[:tokens]


@settings(max_examples=150, deadline=None)
@given(st.lists(TEXTS, min_size=1, max_size=12).map(" ".join), st.integers(1, 12))
def test_pieces_encode_to_the_whole_texts_ids(text, size):
    for tokenizer, _ in _tokenizers_and_encoders():
        parts = pieces(text, size)
        assert "".join(parts) == text
        assert all(len(part) >= size for part in parts[:-1])
        assert [i for part in parts for i in tokenizer(part, add_special_tokens=False)[
            "input_ids"]] == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_a_huge_line_is_cut_to_what_its_sample_needs(tok, tmp_path):
    """Unpacked pretraining encoded all of a line for its first max_seq_len ids: ~45 s for a
    50 MB line, at every fetch. Cut, the sample is the same."""
    from minimind.data.pretrain import PretrainDataset

    text = "To be, or not to be, that is the question:\n" * 2000  # 86 KB
    cut = PrefixCut(backend_json(tok), 64)(text)
    assert len(cut) < len(text) / 50
    path = tmp_path / "huge.jsonl"
    path.write_text(json.dumps({"text": text}) + "\n")
    sample = PretrainDataset(path, tok, 64)[0]
    whole = tok(text, add_special_tokens=False)["input_ids"]
    assert sample[0].tolist() == [tok.bos_token_id, *whole[:62], tok.eos_token_id]
    spec = json.loads(backend_json(tok))
    spec["normalizer"] = {"type": "Lowercase"}  # not chunkable: the text whole
    assert PrefixCut(json.dumps(spec), 64)(text) == text
