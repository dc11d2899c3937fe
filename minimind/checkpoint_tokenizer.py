"""Which tokenizer a checkpoint is read with, and whether it is the one the weights learned.

The record beside the weights names a tokenizer (`tokenizer_path`), and a resume file also
holds the fingerprint of the one the run trained with: a tokenizer replaced or retrained at
that path since is told from it. `--tokenizer_path` may replace the recorded one, with a
warning when it gives other ids than the ones the weights learned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .data.packed import tokenizer_digest
from .data.sft import chat_template_digest
from .tokenizer import BUNDLED_NAMES, BUNDLED_TOKENIZER_DIR, TokenizerError, load_tokenizer
from .torchfile import CheckpointError
from .weight_records import BUNDLED, Record


def choose_tokenizer(recorded: tuple[str, str] | None, override: str | None,
                      vocab_size: int, fingerprint: Record | None = None) -> tuple[Path, str]:
    """The tokenizer folder to use and a note: the record's (spec, where), or `override`
    (--tokenizer_path), which the note compares with a recorded one that loads here. A record
    whose tokenizer is not here cannot be compared: that is what the override is for. Where
    a resume file recorded the fingerprint of the tokenizer the run trained with
    (`fingerprint`), that decides: a recorded tokenizer replaced since is refused."""
    if override is None:
        folder, own = _check_tokenizer(*(recorded or BUNDLED), vocab_size)
        if fingerprint is not None and tokenizer_digest(own) != fingerprint.tokenizer_digest:
            spec, where = recorded or BUNDLED
            raise CheckpointError(
                f"tokenizer ({where}): {spec or 'the bundled tokenizer'} is not the tokenizer "
                f"the weights learned (its ids differ from the fingerprint in "
                f"{_fingerprinted(fingerprint)}): it was replaced "
                "or retrained since the run; restore it, or give the run's own with "
                "--tokenizer_path")
        return folder, other_template(own, fingerprint)
    folder, chosen = _check_tokenizer(override, "--tokenizer_path", vocab_size)
    ids = "" if recorded is None else other_ids(recorded, chosen, override, "--tokenizer_path",
                                                 fingerprint)
    return folder, "; ".join(filter(None, (ids, other_template(chosen, fingerprint))))


def other_template(chosen: Any, fingerprint: Record | None) -> str:
    """A warning when the tokenizer's chat template is not the one an sft or lora run trained
    its conversations in (as its resume file records it): the same ids, another format."""
    learned = fingerprint.chat_template_digest if fingerprint is not None else ""
    if not learned or chat_template_digest(chosen) == learned:
        return ""
    return (f"the tokenizer's chat template is not the one the run trained with (as "
            f"{_fingerprinted(fingerprint)} records it): chats are written in another format "
            "than the model learned")


def other_ids(recorded: tuple[str, str], chosen: Any, spec: str, label: str,
               fingerprint: Record | None = None) -> str:
    """A warning when the tokenizer `chosen` (`spec`, set as `label`) gives other ids than the
    one the model learned: the recorded one (spec, where it is named), as `fingerprint`
    records it where it does; "" when they agree, or when there is nothing to compare with
    (the other choice is then the user's remedy, not a mistake)."""
    ours = tokenizer_digest(chosen)
    if fingerprint is not None and ours == fingerprint.tokenizer_digest:
        return ""  # said by the fingerprint: the recorded tokenizer need not be loaded
    try:
        own = tokenizer_digest(load_tokenizer(recorded[0] or None))
    except TokenizerError:
        own = None
    learned = fingerprint.tokenizer_digest if fingerprint is not None else own
    if learned is None or ours == learned:
        return ""
    spec_text = recorded[0] or "the bundled tokenizer"
    named = f"{spec_text} ({recorded[1]})"
    if own != learned:  # the recorded tokenizer is not (or no longer) the one it learned
        named = (f"as {_fingerprinted(fingerprint)} records it ({spec_text}, named in "
                 f"{recorded[1].removeprefix('train.tokenizer_path in ')}, holds another one "
                 "now)")
    return (f"{label} ({spec or 'the bundled tokenizer'}) gives other ids than the tokenizer "
            f"the weights learned: {named}")


def _fingerprinted(record: Record) -> str:
    """The resume file whose data record holds the tokenizer's fingerprint."""
    return record.where.removeprefix("the settings saved in ")


def _check_tokenizer(spec: str, where: str, vocab_size: int) -> tuple[Path, Any]:
    """The tokenizer folder `spec` names, and the tokenizer, once it fits the model."""
    try:
        tokenizer = load_tokenizer(spec or None)
    except TokenizerError as e:
        hint = "" if where == "--tokenizer_path" else "; choose one with --tokenizer_path"
        raise CheckpointError(f"tokenizer ({where}): {e}{hint}") from None
    if len(tokenizer) > vocab_size:
        raise CheckpointError(f"tokenizer ({where}) has {len(tokenizer)} tokens, more than the "
                              f"model's vocab_size {vocab_size}")
    folder = BUNDLED_TOKENIZER_DIR if spec.strip() in BUNDLED_NAMES else Path(spec).expanduser()
    return folder, tokenizer
