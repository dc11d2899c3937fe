"""This process's resident-set high-water mark (Linux), which the benchmarks reset before a
measurement and read after it."""

from __future__ import annotations

from pathlib import Path


def reset_peak_rss() -> None:
    try:  # Linux: "5" resets this process's resident-set high-water mark (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
