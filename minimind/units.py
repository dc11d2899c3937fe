"""How a duration, a count and a size read, wherever the project prints one: the console, the
dashboard, the runs list, data preparation, the memory figures."""

from __future__ import annotations


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_count(n: float) -> str:
    """1,213,056 → "1.21M" (parameter and token counts)."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.2f}{suffix}"
    # About three figures, as above: a rate of 295.656 tokens/s reads "296".
    return f"{round(n):,}" if n >= 100 else f"{n:.3g}"


def format_bytes(n: float) -> str:
    """1288490188 → "1.2 GiB"."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} GiB"
