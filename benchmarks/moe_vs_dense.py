"""An MoE preset against its dense twin: useful tokens/s per *active* parameter.

The twin keeps every setting of the MoE preset but replaces each mixture-of-experts layer with
one SwiGLU feed-forward as wide as the experts a token runs through (top-k routed plus shared),
so both models spend the same parameters on a token; only the router's E x hidden weights per
layer are missing from the twin. The figure of merit is

    ratio = (MoE useful tokens/s x MoE active parameters) / (same for the dense twin)

    PYTHONPATH=$PWD python benchmarks/moe_vs_dense.py --preset minimind3-moe \\
        --variants packed+w0 --warmup 2 --steps 3 --repeat 3 --batch_size 2 \\
        --accumulation_steps 1 --max_seq_len 256

Every `minimind.bench` flag and settings flag is accepted. The two models alternate within each
repeat (MoE, dense, MoE, dense...) and each line keeps its fastest run, so load on a shared
machine slows both alike. JSON lines go to stdout, progress and the table to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from minimind import MiniMindConfig, MiniMindForCausalLM
from minimind.bench import parse_variant, run_bench
from minimind.settings import Problem, RunSettings, SettingsError
from minimind_tui.cli.bench import bench_overrides, log
from minimind_tui.cli.flags import add_settings_flags
from minimind_tui.form.presets import load_settings


def dense_twin(moe: RunSettings) -> RunSettings:
    """The MoE settings with a dense feed-forward of the width a token actually uses."""
    config = MiniMindConfig(**moe.model.to_config_kwargs())
    width = (config.num_experts_per_tok + config.n_shared_experts) * config.moe_intermediate_size
    model = moe.model.model_dump()
    model.update(use_moe=False, intermediate_size=width)
    return RunSettings.parse({"model": model, "train": moe.train.model_dump()})


def active_parameters(settings: RunSettings) -> int:
    with torch.device("meta"):
        model = MiniMindForCausalLM(MiniMindConfig(**settings.model.to_config_kwargs()))
    return model.active_parameters()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", required=True, help="an MoE preset (name or .toml)")
    parser.add_argument("--variants", default="packed+w0")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    add_settings_flags(parser)
    args = parser.parse_args(argv)
    overrides = bench_overrides(args)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    try:
        for v in variants:
            parse_variant(v)
        moe = load_settings(args.preset, overrides)
        if not moe.model.use_moe:
            raise SettingsError([Problem("model.use_moe", "off here; give an MoE preset")])
        models = {"moe": moe, "dense": dense_twin(moe)}
    except SettingsError as e:
        for problem in e.problems:
            print(f"moe_vs_dense: error: {problem}", file=sys.stderr)
        return 2

    runs: dict[tuple[str, str], list[dict]] = {}
    for round_ in range(args.repeat):
        for name, settings in models.items():
            log(f"moe_vs_dense: {name}, round {round_ + 1}/{args.repeat}")
            records = run_bench(settings, f"{args.preset}:{name}", variants, [None],
                                args.warmup, args.steps, None, lambda _: None, log)
            for r in records:
                runs.setdefault((name, r["variant"]), []).append(r)
    best = {key: max(rs, key=lambda r: r.get("useful_tokens_per_sec") or 0.0)
            for key, rs in runs.items()}

    active = {name: active_parameters(s) for name, s in models.items()}
    rows = [f"{'variant':20s} {'model':6s} {'active params':>14s} {'useful tok/s':>13s} "
            f"{'tok/s x active':>15s} {'MoE / dense':>11s}"]
    for variant in variants:
        moe_r, dense_r = best.get(("moe", variant)), best.get(("dense", variant))
        merit = {name: (r.get("useful_tokens_per_sec") or 0.0) * active[name]
                 for name, r in (("moe", moe_r), ("dense", dense_r)) if r}
        ratio = merit["moe"] / merit["dense"] if merit.get("moe") and merit.get("dense") else None
        for name, r in (("moe", moe_r), ("dense", dense_r)):
            if not r:
                continue
            line = {"variant": variant, "model": name, "preset": args.preset,
                    "active_parameters": active[name],
                    "intermediate_size": models[name].model.intermediate_size,
                    "useful_tokens_per_sec": r.get("useful_tokens_per_sec"),
                    "runs_useful_tokens_per_sec": [
                        run.get("useful_tokens_per_sec") for run in runs[(name, variant)]],
                    "step_time_s": r.get("step_time_s"), "error": r.get("error"),
                    "moe_over_dense": ratio}
            print(json.dumps(line), flush=True)
            rate = r.get("useful_tokens_per_sec") or 0.0
            shown = f"{ratio:11.2f}" if ratio is not None and name == "moe" else ""
            rows.append(f"{variant:20s} {name:6s} {active[name]:14,d} {rate:13,.0f} "
                        f"{rate * active[name]:15.3e} {shown:>11s}")
    log("\n".join(rows))
    return 0 if all("error" not in r for r in best.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
