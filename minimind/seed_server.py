"""Imported first by the fork server that `bench --jobs` forks its seeds' processes from
(`target_bench`): the server ends with bench, even one killed with `kill -9`, which left it and
its seeds training on with no one to report to (each seed then ends in turn: `seed_process`).
"""

import signal

from minimind.parent_death import signal_on_parent_death

signal_on_parent_death(signal.SIGKILL)
