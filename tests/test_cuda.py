"""The engine's CUDA paths on the tiny preset; skipped where no GPU is present (CI).

`benchmarks/gpu_check.sh` runs these on a GPU machine before the benchmark matrix.
"""

import io
import json
import math

import pytest
import torch

from minimind import MiniMindConfig
from minimind.data import sampler
from minimind.engine import Trainer
from minimind.events import StepMetrics
from minimind.feed_forward import MoEFeedForward
from minimind.sinks import QueueSink
from minimind_tui.cli.bench import main as bench_main

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def run(settings):
    sink = QueueSink()
    result = Trainer(settings, [sink]).run()
    assert result.status == "completed", result
    return [e for e in sink.drain() if isinstance(e, StepMetrics)]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])  # float16 runs with a GradScaler
def test_tiny_trains_with_finite_loss_and_reports_memory(tiny_settings, dtype):
    steps = run(tiny_settings(device="cuda", dtype=dtype, max_steps=6, log_interval=2))
    assert [e.step for e in steps] == [2, 4, 6]
    assert all(math.isfinite(e.loss) and math.isfinite(e.grad_norm) for e in steps)
    for e in steps:
        assert 0 < e.mem_allocated <= e.mem_peak <= e.mem_total
        assert e.mem_reserved >= e.mem_allocated


def test_compiled_loss_matches_eager_on_the_first_step(tiny_settings, tmp_path):
    # Same seed, same first batch, weights not yet updated: only kernel rounding may differ.
    first = [run(tiny_settings(device="cuda", dtype="bfloat16", max_steps=1,
                               use_compile=compiled, out_dir=str(tmp_path / str(compiled))))[0]
             for compiled in (False, True)]
    assert first[1].loss == pytest.approx(first[0].loss, rel=5e-3)


def test_fused_adamw_and_pinned_packed_batches(tiny_settings, monkeypatch):
    optimizers, pinned = [], []

    class SpyAdamW(torch.optim.AdamW):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            optimizers.append(self)

    class SpyLoader(sampler.DataLoader):
        def __iter__(self):
            for batch in super().__iter__():
                pinned.append(all(t.is_pinned() for t in batch))
                yield batch

    monkeypatch.setattr(torch.optim, "AdamW", SpyAdamW)
    monkeypatch.setattr(sampler, "DataLoader", SpyLoader)
    run(tiny_settings(device="cuda", dtype="bfloat16", packing=True, max_steps=2))
    assert len(optimizers) == 1 and all(g["fused"] for g in optimizers[0].param_groups)
    assert pinned and all(pinned)


def test_bench_reports_gpu_memory_and_mfu(capsys):
    code = bench_main(["--preset", "tiny", "--device", "cuda", "--variants", "baseline,packed",
                       "--warmup", "1", "--steps", "2", "--max_seq_len", "64"])
    assert code == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["variant"] for r in records] == ["baseline", "packed"]
    name = torch.cuda.get_device_name()
    for r in records:
        assert r["device"].startswith("cuda") and r["peak_mem_kind"] == "cuda_max_allocated"
        assert r["peak_mem_bytes"] > 0
        if any(card in name for card in ("H100", "H200", "A100")):
            assert 0 < r["mfu"] < 1
    assert records[0]["settings"]["train"]["dtype"] == "float16"  # the seed's GradScaler path


async def test_dashboard_shows_gpu_memory_of_a_cuda_run(tmp_path):
    from rich.console import Console
    from textual.widgets import Static

    from minimind_tui.app import MiniMindApp

    app = MiniMindApp("tiny", {"train": {
        "device": "cuda", "dtype": "bfloat16", "max_steps": 400, "log_interval": 2,
        "save_interval": 0, "eval_interval": 0, "val_data_path": "", "sample_prompts": [],
        "out_dir": str(tmp_path / "run")}})
    async with app.run_test(size=(120, 40)) as pilot:
        app.action_start()
        for _ in range(600):
            if app.history.latest is not None:
                break
            await pilot.pause(0.1)
        # The Run panel is drawn with the charts: every 3 s for a GPU run.
        for _ in range(100):
            console = Console(width=120, file=io.StringIO())
            console.print(app.screen.query_one("#stats-table", Static).content)
            table = console.file.getvalue()
            if "alloc" in table:
                break
            await pilot.pause(0.1)
        assert "alloc" in table and "peak" in table and "GiB" in table
        app.action_stop()
        for _ in range(600):
            if not app.run_active:
                break
            await pilot.pause(0.1)
    assert app.history.finished.status == "stopped"


def moe_step(use_grouped_mm: bool):
    """bf16 forward + backward of one MoE layer on the GPU whose router sends every token to
    experts 0 and 1. The grouped path runs in sync-debug "error" mode, where a host read of
    routing results raises; the split path reads the counts on the host by design."""
    torch.manual_seed(0)
    moe = MoEFeedForward(MiniMindConfig(hidden_size=128, use_moe=True)).cuda().train()
    moe.use_grouped_mm = lambda device, dtype: use_grouped_mm
    with torch.no_grad():  # positive inputs + this router: experts 2 and 3 stay idle
        moe.gate.weight.copy_(torch.tensor([1.0, 0.5, -1.0, -1.0])[:, None].expand(4, 128))
    x = torch.rand(4, 64, 128, device="cuda", requires_grad=True)
    # The first pass warms up the libraries, which may sync once while loading.
    for debug_mode in ("default", "error" if use_grouped_mm else "default"):
        moe.zero_grad(set_to_none=True)
        x.grad = None
        torch.cuda.set_sync_debug_mode(debug_mode)
        try:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out, aux = moe(x)
            (out.float().square().mean() + aux).backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return out.detach(), aux.detach(), [x.grad, *(p.grad for p in moe.parameters())]


def test_moe_grouped_dispatch_runs_without_host_syncs_and_matches_split():
    moe = MoEFeedForward(MiniMindConfig(hidden_size=128, use_moe=True))
    if not moe.use_grouped_mm(torch.device("cuda"), torch.bfloat16):
        pytest.skip("the grouped path is for sm90 (H100/H200); this GPU runs the split path")
    split = moe_step(use_grouped_mm=False)
    grouped = moe_step(use_grouped_mm=True)
    torch.testing.assert_close(grouped[0], split[0], rtol=1.6e-2, atol=1e-3)
    torch.testing.assert_close(grouped[1], split[1])
    for a, b in zip(grouped[2], split[2]):
        torch.testing.assert_close(a, b, rtol=1.6e-2, atol=1e-2 * b.abs().max().item())
    grads = dict(zip((name for name, _ in moe.named_parameters()), grouped[2][1:]))
    idle = [g for name, g in grads.items() if name.startswith(("experts.2.", "experts.3."))]
    assert len(idle) == 6 and not any(g.any() for g in idle)  # zero, not stale memory
