"""`python -m minimind_tui` — the entry torchrun uses: `torchrun --nproc_per_node N -m minimind_tui --no-ui ...`."""

from minimind_tui.cli.main import run

run()
