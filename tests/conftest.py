import os
import signal

import pytest

from minimind.tokenizer import load_tokenizer
from minimind_tui.form.presets import load_settings

pytest_plugins = ["prewarmed"]  # the CLI processes start from a prewarmed interpreter


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (pyproject's addopts): twice the cores, at most 8. Many tests spend their time
    waiting (a pilot's pause, a child process, a file to grow), so two per core keep the cores
    busy; the CPU-bound ones then share a core, each with one torch thread (below)."""
    return min(8, 2 * (os.cpu_count() or 1))


if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    # A shell without job control starts `pytest &` with Ctrl+C ignored, and every child
    # would inherit that: the runs the tests stop with SIGINT would train on forever.
    signal.signal(signal.SIGINT, signal.default_int_handler)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Several workers per core: torch's default of one thread per core in each would
    # oversubscribe the machine (and its children inherit this).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """Derived files (decompressed corpus, token caches) go to a per-session folder unless CI
    chose one, so tests never touch the user's ~/.cache."""
    if "MINIMIND_CACHE" not in os.environ:
        os.environ["MINIMIND_CACHE"] = str(tmp_path_factory.mktemp("minimind-cache"))
    yield


@pytest.fixture
def gpu_run_redraw_rhythm(monkeypatch):
    """Tests train on the CPU, where the dashboard redraws its charts and log every 10 s
    instead of 3 s to leave the cores to training (measured by scripts/ui_overhead.py): a test
    that waits for a line or a chart would only wait longer, so it asks for the GPU-run rhythm
    by name (`pytestmark` in the modules that follow live runs). Every other test, the
    snapshots included, sees the product's own constants."""
    from minimind_tui.screens import dashboard

    monkeypatch.setattr(dashboard, "CHARTS_SECONDS_CPU_RUN", dashboard.CHARTS_SECONDS)


@pytest.fixture(scope="module")
def tok():
    """The bundled tokenizer, loaded once per test module."""
    return load_tokenizer()


@pytest.fixture
def tiny_settings(tmp_path):
    """The bundled `tiny` preset, small enough for a test, with the given overrides."""

    def make(model=None, **train):
        base = {"out_dir": str(tmp_path / "run"), "max_steps": 4, "log_interval": 1,
                "save_interval": 0, "eval_interval": 0, "val_data_path": "", "dtype": "float32",
                "max_seq_len": 64, "batch_size": 4}
        return load_settings("tiny", {"model": model or {}, "train": {**base, **train}})

    return make
