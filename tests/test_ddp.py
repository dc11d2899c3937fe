"""A real 2-process gloo job, compared with one process on the same data.

The ranks start as torchrun starts its workers (`ranks`: the environment variables it gives
them), as the test's own children, so they are prewarmed copies (prewarmed.py) like the other
CLI processes: a torchrun job spent ~10 s of CPU importing torch and transformers in its
launcher and ranks. What torchrun itself adds (its launcher, its report of how each rank
ended) is tested through torchrun, here and in test_app_run_folders and test_signal_faults."""

import json
import os
import socket
import textwrap
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ARGS = ["--no-ui", "--preset", "tiny", "--device", "cpu", "--dtype", "float32",
        "--max_seq_len", "64", "--val_data_path", "", "--log_interval", "1",
        "--eval_interval", "0", "--max_steps", "3", "--save_interval", "3",
        "--accumulation_steps", "2", "--num_workers", "1"]
CLI = [sys.executable, "-m", "minimind_tui"]


def ranks(command: list[str], logs: Path, world: int = 2) -> subprocess.CompletedProcess:
    """`command` as `world` ranks of one job, each with the variables torchrun sets; the
    ranks' output in rank order, and the first failed rank's exit status (torchrun's is 1)."""
    with socket.socket() as probe:  # a free port for rank 0's store, as --standalone finds
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for rank in range(world):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
               "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
               "LOCAL_WORLD_SIZE": str(world), "GROUP_RANK": "0",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        with open(logs / f"{rank}.out", "w") as out, open(logs / f"{rank}.err", "w") as err:
            procs.append(subprocess.Popen(command, stdout=out, stderr=err, env=env))
    try:
        codes = [proc.wait(timeout=300) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    told = {name: "".join((logs / f"{rank}.{name}").read_text() for rank in range(world))
            for name in ("out", "err")}
    return subprocess.CompletedProcess(command, next((code for code in codes if code), 0),
                                       told["out"], told["err"])


def launch(out_dir: Path, batch_size: int, *extra) -> subprocess.CompletedProcess:
    return ranks([*CLI, *ARGS, "--batch_size", str(batch_size), "--out_dir", str(out_dir),
                  *extra], out_dir.with_name(out_dir.name + "-logs"))


def single(out_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args, "--out_dir", str(out_dir)], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)


def patched(script: Path, body: str) -> Path:
    """A script that runs `body` (which patches the code) and then the CLI."""
    script.write_text(textwrap.dedent(body) + "\nfrom minimind_tui.cli.main import run\nrun()\n")
    return script


def launch_patched(script: Path, body: str, *args: str) -> subprocess.CompletedProcess:
    """Two gloo ranks running `body` before the CLI."""
    return ranks([sys.executable, str(patched(script, body)), *args],
                 script.with_suffix(".logs"))


def weights(out_dir: Path):
    return torch.load(out_dir / "pretrain_128_resume.pth", weights_only=False)


def test_two_process_gloo_matches_single_process(tmp_path):
    ddp = launch(tmp_path / "ddp", 2)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    # Only rank 0 prints, logs and saves.
    assert ddp.stdout.count("Epoch:[1/1](3/") == 1
    assert ddp.stdout.count("# resolved settings") == 1
    assert "x2 | tokens/step: 512" in ddp.stdout
    events = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert sum('"kind": "step"' in e for e in events) == 3

    # Each rank reads its own shard of the same shuffled order, so two ranks of batch 2
    # see exactly the samples one process sees with batch 4, and DDP averages the gradients.
    alone = single(tmp_path / "single", *ARGS, "--batch_size", "4")
    assert alone.returncode == 0, alone.stderr[-3000:]
    a, b = weights(tmp_path / "ddp"), weights(tmp_path / "single")
    assert a["world_size"] == 2 and b["world_size"] == 1
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-5)
    # The same batch, so the same loss: the mean over both ranks' shards (packed, each shard
    # holds as many targets), not rank 0's alone.
    logged = {run: [(e["step"], e["loss"], e["tokens_seen"]) for e in map(json.loads, (
        tmp_path / run / "metrics.jsonl").read_text().splitlines()) if e["kind"] == "step"]
        for run in ("ddp", "single")}
    assert [(s, t) for s, _, t in logged["ddp"]] == [(s, t) for s, _, t in logged["single"]]
    assert [loss for _, loss, _ in logged["ddp"]] == pytest.approx(
        [loss for _, loss, _ in logged["single"]], rel=1e-5)

    # Resume with the same world size continues the run.
    resumed = launch(tmp_path / "ddp", 2, "--from_resume", "1", "--max_steps", "5")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming at step 3" in resumed.stdout and "[completed] at step 5" in resumed.stdout


def test_a_checkpoint_between_two_logs_keeps_every_ranks_loss_sums(tmp_path):
    """Two gloo ranks, two micro-batches each (losses 1, 3 and 5, 7): the report averages all
    four, 4.0, on every rank, straight through or resumed from a window cut after the first
    micro-batch (the checkpoint keeps the sums of both ranks; one rank carries them on)."""
    script = tmp_path / "meters.py"
    script.write_text(textwrap.dedent("""
        import os

        import torch

        from minimind import distributed
        from minimind.meter import Meter

        info = distributed.setup("cpu")
        ids = torch.ones(1, 8, dtype=torch.long)
        losses = [[1.0, 3.0], [5.0, 7.0]][info.rank]

        def add(meter, loss):
            meter.add_micro(torch.tensor(loss), torch.tensor(0.0), ids, ids)

        straight = Meter(info, 0, 0.0, pad_id=0)
        cut = Meter(info, 0, 0.0, pad_id=0)
        for loss in losses:
            add(straight, loss)
        add(cut, losses[0])
        resumed = Meter(info, cut.tokens_seen(), 0.0, pad_id=0, window=cut.window())
        add(resumed, losses[1])
        for meter in (straight, resumed):
            meter.add_step(torch.tensor(1.0), 1e-3, counts_as_nonfinite=True)
            m = meter.report(1, 1, 1, 1, 1, 1, 1.0, None)
            # One write each: print's text and newline, two writes, interleaved between ranks.
            os.write(1, f"rank {info.rank}: loss {m.loss} tokens {m.tokens_seen}\\n".encode())
        distributed.teardown(info)
    """))
    proc = ranks([sys.executable, str(script)], tmp_path / "logs")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(proc.stdout.split("\n")[:-1]) == [
        "rank 0: loss 4.0 tokens 32", "rank 0: loss 4.0 tokens 32",
        "rank 1: loss 4.0 tokens 32", "rank 1: loss 4.0 tokens 32"]


def test_nan_on_one_rank_stops_every_rank_without_a_hang(tmp_path):
    # Rank 1's loss turns NaN from its 4th forward on; rank 0's stays finite. Both must see the
    # failure at the same step (a rank that raised alone would leave the other in a collective).
    proc = launch_patched(tmp_path / "nan_on_rank1.py", """
        import os, sys
        from minimind.model import MiniMindForCausalLM
        original, calls = MiniMindForCausalLM.forward, [0]
        def poisoned(self, *args, **kwargs):
            out = original(self, *args, **kwargs)
            calls[0] += 1
            if os.environ["RANK"] == "1" and self.training and calls[0] > 3:
                out.loss = out.loss * float("nan")
            return out
        MiniMindForCausalLM.forward = poisoned
    """, *ARGS[:ARGS.index("--max_steps")], "--max_steps", "6", "--save_interval", "1",
        "--accumulation_steps", "1", "--num_workers", "0", "--batch_size", "2", "--out_dir",
        str(tmp_path / "run"))
    assert proc.returncode != 0
    assert "loss or weights became NaN/inf by step 4" in proc.stderr + proc.stdout
    state = torch.load(tmp_path / "run" / "pretrain_128_resume.pth", weights_only=True)
    assert state["progress"]["step"] == 3


def test_a_checkpoint_rank_0_cannot_write_fails_every_rank_alike(tmp_path):
    # Only rank 0 writes. Its second save meets a full disk; rank 1 must fail with it at that
    # step (exit 1, the same reason) rather than go on alone until torchrun kills it.
    proc = launch_patched(tmp_path / "full_disk_on_rank0.py", """
        import errno, sys
        import minimind.engine as engine
        original, calls = engine.save_checkpoint, [0]
        def failing(path, **kwargs):
            calls[0] += 1
            if calls[0] == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return original(path, **kwargs)
        engine.save_checkpoint = failing
    """, *ARGS[:ARGS.index("--max_steps")], "--max_steps", "8", "--save_interval", "2",
        "--accumulation_steps", "1", "--num_workers", "0", "--batch_size", "2", "--out_dir",
        str(tmp_path / "run"))
    assert proc.returncode == 1
    why = "run failed: no space left on device writing"
    # Each rank says it: rank 1 left the step through the failure, not through torchrun's
    # SIGTERM (which may still reach it while it exits, on a loaded machine).
    assert proc.stderr.count(why) == 2, proc.stderr[-3000:]
    state = torch.load(tmp_path / "run" / "pretrain_128_resume.pth", weights_only=True)
    assert state["progress"]["step"] == 2


def test_stop_on_one_rank_stops_every_rank_at_the_same_poll_step(tmp_path):
    # Rank 1 alone is signalled during step 4; rank 0 never is. The ranks compare notes every
    # STOP_POLL_STEPS steps (no log step comes earlier here), so both stop after step 10 with one
    # checkpoint, rather than rank 0 waiting forever in the next gradient all-reduce.
    from minimind.engine import STOP_POLL_STEPS

    # No packing and windows longer than most passages: padding differs, so the ranks count
    # different tokens.
    common = [*ARGS[:ARGS.index("--log_interval")], "--log_interval", "100", "--eval_interval",
              "0", "--accumulation_steps", "1", "--num_workers", "0", "--packing", "0",
              "--max_seq_len", "512"]
    proc = launch_patched(tmp_path / "stop_rank1.py", """
        import os, signal, sys
        from minimind.model import MiniMindForCausalLM
        original, calls = MiniMindForCausalLM.forward, [0]
        def signalled(self, *args, **kwargs):
            calls[0] += 1
            if os.environ["RANK"] == "1" and self.training and calls[0] == 4:
                os.kill(os.getpid(), signal.SIGTERM)
            return original(self, *args, **kwargs)
        MiniMindForCausalLM.forward = signalled
    """, *common, "--max_steps", "20", "--save_interval", "0", "--batch_size", "2",
        "--out_dir", str(tmp_path / "ddp"))
    assert f"[stopped] at step {STOP_POLL_STEPS}" in proc.stdout, proc.stderr[-3000:]
    ddp = torch.load(tmp_path / "ddp" / "pretrain_128_resume.pth", weights_only=True)
    assert ddp["progress"]["step"] == STOP_POLL_STEPS

    # tokens_seen is the ranks' total: one process reading the same samples counts the same.
    plain = single(tmp_path / "single", *common, "--max_steps", str(STOP_POLL_STEPS),
                   "--save_interval", "0", "--batch_size", "4")
    assert plain.returncode == 0, plain.stderr[-3000:]
    alone = torch.load(tmp_path / "single" / "pretrain_128_resume.pth", weights_only=True)
    assert ddp["progress"]["tokens_seen"] == alone["progress"]["tokens_seen"]


def test_a_rank_that_loses_another_to_an_abort_while_stopping_reports_the_abort(tmp_path):
    """Two stop signals in a row reach the ranks at different times: rank 1 aborts at once,
    while rank 0, stopping after its first, waits in the gradient all-reduce for it. That rank
    0 met gloo's "Connection closed by peer" was the abort, not a failed run (exit 1, a
    traceback in error.log and run.json "failed")."""
    # Under torchrun: what it reports of each rank's end is part of what is tested.
    script = patched(tmp_path / "abort_rank1.py", """
        import os, signal, sys
        from minimind.model import MiniMindForCausalLM
        original, calls = MiniMindForCausalLM.forward, [0]
        def signalled(self, *args, **kwargs):
            calls[0] += 1
            if self.training and calls[0] == 4:
                os.kill(os.getpid(), signal.SIGTERM)
                if os.environ["RANK"] == "1":
                    os.kill(os.getpid(), signal.SIGTERM)
            return original(self, *args, **kwargs)
        MiniMindForCausalLM.forward = signalled
    """)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script), *ARGS, "--max_steps", "20", "--save_interval", "0", "--batch_size", "2",
         "--out_dir", str(tmp_path / "ddp")], capture_output=True, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert "[stopped] at step 1 | aborted at step 1 without a new checkpoint (none was " \
           "written): another rank aborted on a second stop signal" in proc.stdout, proc.stderr
    assert "run failed" not in proc.stderr and "exitcode  : 1" not in proc.stderr
    assert "rank      : 0 (local_rank: 0)\n  exitcode  : 3 " in proc.stderr, proc.stderr[-1500:]
    status = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert status["state"] == "stopped" and not (tmp_path / "ddp" / "error.log").exists()


def test_a_bad_line_rank_0_finds_while_packing_stops_every_rank_without_a_traceback(tmp_path):
    # Rank 0 alone tokenizes packed data. The other rank waited for it in a barrier, which
    # rank 0 left with its refusal: rank 1 then died there with gloo's "Connection closed by
    # peer" and a traceback of ours, and the empty run folder stayed behind.
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "To be, or not to be"}\nnot json\n')
    proc = launch(tmp_path / "run", 2, "--data_path", str(data), "--packing", "1")
    assert proc.returncode != 0
    assert f"minimind-tui: error: train.data_path: {data}:2: line is not valid JSON" in \
        proc.stderr, proc.stderr[-3000:]
    assert "run failed" not in proc.stderr and "minimind/" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_stop_one_rank_alone_hears_while_reading_stops_every_rank_without_a_traceback(tmp_path):
    # Without packing each rank indexes its own copy of the data. Rank 1 alone is stopped while
    # reading; rank 0 read on into the model's broadcast, which rank 1 had left: gloo's
    # "Connection closed by peer" failed the run with a traceback.
    proc = launch_patched(tmp_path / "stop_reading.py", """
        import os, sys
        from minimind.data import progress
        original = progress.ReadingProgress.__call__
        def stopped(self, done, total):
            if os.environ["RANK"] == "1":
                self.stop.set()
            return original(self, done, total)
        progress.ReadingProgress.__call__ = stopped
    """, *ARGS, "--packing", "0", "--batch_size", "2", "--out_dir", str(tmp_path / "run"))
    assert proc.stdout.count("[stopped]") == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "stop requested while preparing the data" in proc.stdout
    assert "run failed" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]


def test_an_error_one_rank_alone_meets_while_reading_is_named_on_every_rank(tmp_path):
    # Rank 1's disk error while reading left rank 0 in the model's broadcast: rank 0, which
    # reports the run, said it failed "Connection reset by peer" rather than why.
    proc = launch_patched(tmp_path / "oserror_reading.py", """
        import os, sys
        from minimind.data import progress
        original = progress.ReadingProgress.__call__
        def failing(self, done, total):
            if os.environ["RANK"] == "1":
                raise OSError(28, "No space left on device")
            return original(self, done, total)
        progress.ReadingProgress.__call__ = failing
    """, *ARGS, "--packing", "0", "--batch_size", "2", "--out_dir", str(tmp_path / "run"))
    cause = "rank 1 failed: OSError: [Errno 28] No space left on device"
    assert proc.returncode != 0 and f"[failed] at step 0 | PeerFailed: {cause}" in proc.stdout, \
        proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Connection reset" not in proc.stdout + proc.stderr
