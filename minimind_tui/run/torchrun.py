"""torchrun for our command line: `python -m minimind_tui.run.torchrun [torchrun's options] -m
minimind_tui ...`, which runs torchrun's own launcher in this process.

torchrun meets a worker's non-zero exit with a Python traceback of its own and a ChildFailedError
block, and exits 1 whatever the workers said; a stop signal ends it with another traceback. Our
workers have already said why (rank 0 prints a refusal once, in one line), so this ends with
their exit code instead, as one process would: 2 for a refused input, 130 for a stop by signal.
A rank killed by a signal first, which could say nothing, gets one line naming it.

torchrun passes a stop signal on to the ranks, then kills those still running after its
shutdown timeout: 30 s by default, less than a DDP stop may take (it waits up to
STOP_POLL_STEPS steps for the ranks to agree, then writes the checkpoint), so the stop's steps
were lost. Ours waits STOP_GRACE_SECONDS unless told otherwise (`--shutdown_timeout`, or
TORCH_ELASTIC_SHUTDOWN_TIMEOUT); a second signal still aborts at once.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from torch.distributed import DistNetworkError
from torch.distributed.elastic.multiprocessing import api as elastic_api
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run

from minimind_tui.cli import exit_codes

STOP_GRACE_SECONDS = 600


def main(argv: list[str] | None = None) -> int:
    with tempfile.TemporaryDirectory(prefix="minimind-torchrun-") as folder:
        rank_code = Path(folder) / "code"
        os.environ[exit_codes.RANK_CODE_FILE] = str(rank_code)  # the ranks inherit it
        os.environ.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(STOP_GRACE_SECONDS))
        return _launch(argv, rank_code)


class _OwnFailureLines(logging.Filter):
    """Leaves out torchrun's line for a rank's failure ("failed (exitcode: 2) local_rank: 0
    ..."): the rank said why itself, and `_launch` names one a signal killed."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("failed (exitcode: ")


def _launch(argv: list[str] | None, rank_code: Path) -> int:
    logging.getLogger(elastic_api.__name__).addFilter(_OwnFailureLines())
    args = parse_args(argv)
    try:
        run(args)
    except DistNetworkError as e:  # the rendezvous, before any rank: a traceback of 45 lines
        if "EADDRINUSE" in str(e):
            return exit_codes.invalid(f"train.master_port: {args.master_port} is in use on "
                                      "this machine: choose another")
        print(f"minimind-tui: the nodes could not meet at {args.master_addr}:"
              f"{args.master_port}: {str(e).splitlines()[0]}", file=sys.stderr, flush=True)
        return exit_codes.FAILED
    except ChildFailedError as e:
        first, failures = e.get_first_failure()[0], sorted(e.failures.items())
        for rank, failure in failures:
            # SIGTERM is torchrun's own, to the ranks still running after the first failure
            # (ours stop gracefully on it, with exit 130, once they have begun).
            if failure.exitcode < 0 and -failure.exitcode != signal.SIGTERM:
                print(f"minimind-tui: rank {rank} (pid {failure.pid}) was killed by "
                      f"{_signal_name(-failure.exitcode)}", file=sys.stderr, flush=True)
        codes = [f.exitcode for rank, f in sorted(failures, key=lambda rf: rf[0] != first)
                 if f.exitcode > 0]
        return codes[0] if codes else exit_codes.FAILED
    except SignalException:  # torchrun passed the signal on to the ranks and waited for them
        try:
            return int(rank_code.read_text())  # 130 stopped, 3 aborted by a second signal, ...
        except (OSError, ValueError):  # torchrun killed them first (its --shutdown_timeout)
            print("minimind-tui: the ranks did not end within torchrun's shutdown timeout "
                  "and were killed: the stop's checkpoint may not have been written",
                  file=sys.stderr, flush=True)
            return exit_codes.FAILED
    return exit_codes.OK


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


if __name__ == "__main__":
    exit_codes.exit_with(main)
