"""Text for a terminal: its control characters written out as Python writes them (\\x1b, \\n)
rather than acted on. A model can generate any of them (a byte-level vocabulary has a token for
each byte), and a file name can hold them: printed raw, ESC clears the screen or recolours it,
a carriage return or backspace hides what came before, a newline splits a one-line error."""

from __future__ import annotations


def _escapes(keep: str) -> dict[int, str]:
    """The C0 and C1 control characters (and DEL) but those in `keep`, as str.translate takes
    them."""
    return {c: repr(chr(c))[1:-1] for c in (*range(0x20), *range(0x7f, 0xa0)) if chr(c) not in keep}


_LINES = _escapes("\n\t")
_ONE_LINE = _escapes("")


def shown_text(text: str) -> str:
    """Text of any length (a model's): its line breaks and tabs kept, other controls written
    out."""
    return text.translate(_LINES)


def shown_line(text: str) -> str:
    """One line (an error, a name): every control character written out, line breaks too."""
    return text.translate(_ONE_LINE)


def printable_path(value: str) -> str:
    """A path: every character Python does not call printable written out, beyond the control
    characters (a right-to-left override in a name reverses what the line after it says)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)
