"""Build the bundled conversation set from the bundled Shakespeare corpus (build-time only).

Each split of `builtin:shakespeare` becomes conversations in MiniMind's SFT format, one
`{"conversations": [{"role": "user", ...}, {"role": "assistant", ...}, ...]}` per line:

    minimind/data/corpus/shakespeare_chat_train.jsonl.gz   (from shakespeare_train)
    minimind/data/corpus/shakespeare_chat_val.jsonl.gz     (from shakespeare_val)

Two kinds of question, both answerable from the play text alone (public domain), so the set is
license-clean and a model pretrained on the plays can learn the turn format quickly:
    "Continue NAME's speech: <a line>"   ->  the next lines of that speech
    "Who says: <a line>"                 ->  "NAME."
A third of the conversations ask two questions (multi-turn). No randomness beyond a seeded
generator, so the output is the same on every run.

Run from the repository root:  python scripts/build_chat_corpus.py
"""

import argparse
import gzip
import json
import random
import re
from pathlib import Path

CORPUS_DIR = Path(__file__).resolve().parent.parent / "minimind" / "data" / "corpus"
SPEECH = re.compile(r"^([A-Z][A-Z' .-]+): (.+)$")
MAX_ANSWER_LINES = 2
KEEP = 0.35  # share of speeches asked about: a small set, still ~6k conversations


def speeches(text: str) -> list[tuple[str, list[str]]]:
    """(speaker, verse lines) of each speech in one document; stage directions dropped."""
    found: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        match = SPEECH.match(line)
        if match:
            found.append((match[1], [match[2]]))
        elif found and line and not line.startswith("["):
            found[-1][1].append(line)
    return found


def exchange(speaker: str, lines: list[str], rng: random.Random) -> tuple[str, str] | None:
    if rng.random() >= KEEP:
        return None
    name = speaker.title()
    if len(lines) >= 2 and rng.random() < 0.6:
        start = rng.randrange(len(lines) - 1)
        answer = lines[start + 1:start + 1 + MAX_ANSWER_LINES]
        return f"Continue {name}'s speech: {lines[start]}", "\n".join(answer)
    line = max(lines, key=len)
    if len(line) < 20:
        return None
    return f"Who says: \"{line}\"", f"{name}."


def conversations(texts: list[str], rng: random.Random) -> list[dict]:
    pairs = [pair for text in texts for speaker, lines in speeches(text)
             if (pair := exchange(speaker, lines, rng))]
    out, i = [], 0
    while i < len(pairs):
        turns = 2 if rng.random() < 1 / 3 and i + 1 < len(pairs) else 1
        chat = []
        for question, answer in pairs[i:i + turns]:
            chat += [{"role": "user", "content": question},
                     {"role": "assistant", "content": answer}]
        out.append({"conversations": chat})
        i += turns
    return out


def build(split: str) -> Path:
    with gzip.open(CORPUS_DIR / f"shakespeare_{split}.jsonl.gz", "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    rows = conversations(texts, random.Random(f"chat-{split}"))
    out = CORPUS_DIR / f"shakespeare_chat_{split}.jsonl.gz"
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(body)
    print(f"{out}: {len(rows)} conversations, {len(body) / 1e6:.1f} MB uncompressed")
    return out


if __name__ == "__main__":
    # No options: --help says what it writes, rather than writing it.
    argparse.ArgumentParser(description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    for split in ("train", "val"):
        build(split)
