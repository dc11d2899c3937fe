"""A data inspection in words: the rows `minimind-tui inspect` prints and the Inspect data screen
shows, worded once here (no Textual)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from minimind.data.inspect import DataInspection, Fit, length_histogram
from minimind.units import format_count

if TYPE_CHECKING:  # the conversation inspector imports torch; these rows need only its fields
    from minimind.data.sft_inspect import ConversationInspection

BAR_WIDTH = 30


def figure_rows(insp: DataInspection, max_seq_len: int) -> list[tuple[str, str]]:
    """(label, value) rows: what the file holds, then how it fits samples of max_seq_len."""
    fit = insp.fit(max_seq_len)
    rows = [
        ("documents", f"{insp.documents:,}"),
        ("characters", f"{insp.characters:,}"),
        ("tokens", f"{insp.tokens:,} ({insp.text_tokens:,} in texts + bos/eos)"),
        ("tokens/character", f"{insp.tokens_per_char:.3f}"),
        ("empty documents", f"{insp.empty_documents:,}"),
        ("bad lines", f"{insp.bad_lines:,}" + (" (skipped)" if insp.bad_lines else "")),
        (f"padded @{max_seq_len}", f"{fit.padded_samples:,} samples, {fit.padding_share:.1%} "
                                   f"padding"),
        ("truncated", f"{fit.truncated_documents:,} documents, {fit.truncated_tokens:,} tokens "
                      f"lost ({fit.truncated_tokens / max(insp.tokens, 1):.1%})"),
        ("packed", f"{fit.packed_samples:,} samples, {_packing(fit, insp.tokens)}"),
    ]
    return rows


def conversation_rows(insp: ConversationInspection) -> list[tuple[str, str]]:
    """(label, value) rows of a conversation file (stage sft/lora) at its max_seq_len."""
    return [
        ("conversations", f"{insp.documents:,}"),
        ("turns", f"{insp.turns:,}"),
        ("tokens", f"{insp.tokens:,} (cut at max_seq_len {insp.max_seq_len}; "
                   f"{insp.tokens_before_truncation:,} before)"),
        ("supervised tokens", f"{insp.supervised_tokens:,} ({insp.supervised_share:.1%} of the "
                              "tokens: the replies the loss trains on)"),
        ("truncated", f"{insp.truncated_documents:,} conversations longer than "
                      f"{insp.max_seq_len} tokens"),
        ("no reply", f"{insp.unsupervised_documents:,} conversations cut before any reply"),
        ("bad lines", f"{insp.bad_lines:,}" + (" (skipped)" if insp.bad_lines else "")),
    ]


def conversation_warnings(insp: ConversationInspection) -> list[str]:
    """What deserves attention before fine-tuning on this conversation file, in words."""
    warnings = []
    if insp.truncated_documents > 0.1 * max(insp.documents, 1):
        warnings.append(f"{insp.truncated_documents / insp.documents:.0%} of the conversations "
                        f"are longer than max_seq_len={insp.max_seq_len}: they are cut there, "
                        f"and a reply cut off never learns to end.")
    if insp.unsupervised_documents:
        warnings.append(f"{insp.unsupervised_documents:,} conversations keep no reply within "
                        f"max_seq_len={insp.max_seq_len} (the question alone fills it): they "
                        f"train nothing.")
    if insp.bad_lines:
        warnings.append(f"{insp.bad_lines:,} bad lines: training stops at the first one unless "
                        f"train.skip_bad_lines is on.")
    return warnings


def _packing(fit: Fit, tokens: int) -> str:
    if not fit.packed_samples:  # "100% less compute": none, as there is nothing to train
        return f"none complete: {tokens:,} tokens in all, fewer than max_seq_len={fit.max_seq_len}"
    if (saves := fit.packing_saves) >= 0:
        return f"{saves:.1%} less compute than padded"
    # More samples than padded, not "more compute" for nothing: padding cuts long documents
    # to one window and loses the rest, packing trains on every token.
    return f"{1 - saves:.2f}× the padded samples: long documents are not cut"


def bad_line_rows(insp: DataInspection | ConversationInspection) -> list[str]:
    return [f"line {line}: {reason}" for line, reason in insp.first_bad]


def split_chars_text(insp: DataInspection, limit: int = 10) -> str | None:
    """'的 ×856,423, 和 ×385,631 ...': characters spelled with several byte tokens."""
    if not insp.split_chars:
        return None
    shown = ", ".join(f"{_visible(c)} ×{n:,}" for c, n in insp.split_chars[:limit])
    share = insp.split_char_total / max(insp.characters, 1)
    return f"{shown} ({share:.1%} of all characters)"


def _visible(char: str) -> str:
    return char if char.isprintable() and not char.isspace() else f"U+{ord(char):04X}"


def histogram_lines(insp: DataInspection, bins: int = 12) -> list[str]:
    """A text bar chart of document lengths (packed: bos + text + eos)."""
    bars = length_histogram(insp.lengths, bins)
    if not bars:
        return []
    most = max(n for _, _, n in bars)
    width = len(f"{bars[-1][1]:,}")
    lines = []
    for lo, hi, n in bars:
        bar = "█" * max(round(BAR_WIDTH * n / most), n > 0)  # a document shows, however few
        lines.append(f"{lo:>{width},}-{hi:>{width},} {bar:<{BAR_WIDTH}} {format_count(n)}")
    return lines


def warning_texts(insp: DataInspection, max_seq_len: int) -> list[str]:
    """What deserves attention before training on this file, in words."""
    fit = insp.fit(max_seq_len)
    warnings = []
    if mismatch := insp.tokenizer_mismatch():
        warnings.append(mismatch)
    if fit.truncated_documents > 0.1 * max(insp.documents, 1):
        warnings.append(f"{fit.truncated_documents / insp.documents:.0%} of the documents are "
                        f"longer than max_seq_len={max_seq_len}: padded samples cut them "
                        f"({fit.truncated_tokens:,} tokens lost); packing keeps every token.")
    if fit.padding_share > 0.5:
        remedy = ("packing (train.packing) avoids it" if fit.packed_samples else
                  f"packing would make no sample of {max_seq_len} tokens from the {insp.tokens:,}"
                  " there are: lower max_seq_len, or add data")
        warnings.append(f"Padding to max_seq_len={max_seq_len} would spend {fit.padding_share:.0%}"
                        f" of the compute on padding; {remedy}.")
    if insp.bad_lines:
        warnings.append(f"{insp.bad_lines:,} bad lines: training stops at the first one unless "
                        f"train.skip_bad_lines is on.")
    return warnings
