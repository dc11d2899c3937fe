"""`minimind-tui export SRC OUT`: a trained model as a Hugging Face folder or upstream's .pth.

    minimind-tui export out/tiny hf/tiny                 # run folder -> HF folder
    minimind-tui export pretrain_512.pth up --format upstream
    minimind-tui export out/sft/full_sft_768.pth hf/medical --lora lora/lora_medical_768.pth

Exit 0 when written, 2 for a user error (one line on stderr), 1 when the destination refused
the files (a full disk) or the written folder failed its own check (a defect worth reporting).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from minimind_tui.cli import exit_codes
from minimind_tui.cli.flags import path_arg

PROG = "minimind-tui export"

DTYPES = ("float32", "bfloat16", "float16")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog=PROG,
        description="Export a trained model. hf (default): a Hugging Face folder that "
                    "AutoModelForCausalLM.from_pretrained loads as LlamaForCausalLM (MiniMind2), "
                    "Qwen3ForCausalLM (MiniMind-3), Qwen3MoeForCausalLM (MiniMind-3-MoE) or "
                    "Ernie4_5_MoeForCausalLM (MiniMind2-MoE), each computing the same function, "
                    "or with our own code (trust_remote_code=True) for shapes no standard class "
                    "computes; the folder is checked against the model's logits before it is "
                    "moved into place. upstream: the <save_weight>_<hidden>[_moe].pth that "
                    "upstream MiniMind's scripts load, named as the source's file (pretrain, "
                    "full_sft; merged adapters add their name: full_sft_lora_medical_512.pth).")
    parser.add_argument("src", metavar="SRC", type=path_arg,
                        help="run folder (config.toml + weights), weights file (.pth, resume "
                             "checkpoint, .safetensors) or a folder saved by save_pretrained")
    parser.add_argument("out", metavar="OUT", type=path_arg,
                        help="folder to create (upstream: a folder or a .pth file name)")
    parser.add_argument("--format", choices=("hf", "upstream"), default="hf")
    parser.add_argument("--tokenizer_path", "--tokenizer-path", metavar="DIR", default=None,
                        type=path_arg,
                        help="tokenizer folder to ship (default: the run's tokenizer_path, else "
                             "the bundled one; 'builtin' forces the bundled one)")
    parser.add_argument("--lora", metavar="FILE", default=None, type=path_arg,
                        help="merge this adapter file (a lora run's lora/<name>_<hidden>.pth, "
                             "or upstream's) into SRC's weights before exporting")
    parser.add_argument("--dtype", choices=DTYPES, default=None,
                        help="weights dtype of the hf folder (default float32: no rounding of "
                             "the weights as read; a run folder's are float16, its resume "
                             "file's float32)")
    parser.add_argument("--remote_code", "--remote-code", action="store_true",
                        help="hf: write our own modeling code even where a standard class fits")
    parser.add_argument("--no_verify", "--no-verify", action="store_true",
                        help="hf: skip loading the folder back to compare logits")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier export at OUT (never a run folder's files)")
    add_head_split_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.format == "upstream" and (args.dtype or args.remote_code or args.no_verify):
        return exit_codes.invalid("--dtype, --remote_code and --no_verify apply to --format hf "
                                  "only (upstream files are always float16)", prog=PROG)
    # Imported here: torch and transformers take seconds, --help should not.
    import torch

    from minimind.checkpoint import resume_path
    from minimind.checkpoint_reader import check_lora_base, read_checkpoint
    from minimind.export import ExportVerificationError, export_hf, export_upstream
    from minimind.export_destination import ExportError, ExportWriteError, check_destination
    from minimind.shown import shown_line
    from minimind.torchfile import CheckpointError
    from minimind.lora import LoRAError, load_lora, merge_lora
    from minimind.upstream import describe_config

    try:
        # Before the seconds spent loading the model.
        check_destination(args.out, args.overwrite, upstream=args.format == "upstream")
        source = read_checkpoint(args.src, args.tokenizer_path, args.num_attention_heads)
        print(f"model: {describe_config(source.model.config)}")
        print(f"  weights {source.built_from}; config from {source.config_origin}")
        if args.lora:
            if source.adapter_path and _same_file(source.adapter_path, args.lora):
                return exit_codes.invalid(
                    f"--lora: {args.lora} is already merged: {args.src} is a lora run, which "
                    "opens as its base with its own adapters (leave --lora out)", prog=PROG)
            if source.adapters_within and _same_file(source.weights_path,
                                                     resume_path(Path(args.lora))):
                return exit_codes.invalid(
                    f"--lora: {args.lora} is already merged: {args.src} is its resume file, "
                    "which holds the lora run's base with these adapters folded in (leave "
                    "--lora out)", prog=PROG)
            rank = load_lora(source.model, args.lora)
            # The same check a lora run folder gets: adapters merged into another base than
            # theirs were exported as "matching" (the logits only compare with the merge).
            base_check = check_lora_base(source.model, source.weights_path, Path(args.lora))
            merge_lora(source.model)
            on_top = " on top of the run's own" if source.adapter_path else ""
            print(f"  merged the rank-{rank} adapters of {args.lora}{on_top} ({base_check})")
        if args.format == "upstream":
            path = export_upstream(source, args.out, overwrite=args.overwrite,
                                   merged=Path(args.lora) if args.lora else None)
            print(f"wrote {path} (upstream MiniMind layout, float16)")
            return exit_codes.OK
        result = export_hf(source, args.out, dtype=getattr(torch, args.dtype or "float32"),
                           remote_code=args.remote_code, verify=not args.no_verify,
                           overwrite=args.overwrite)
    except ExportWriteError as e:
        print(f"minimind-tui export: failed: {shown_line(str(e))}", file=sys.stderr)
        return exit_codes.FAILED
    except (CheckpointError, ExportError) as e:
        return exit_codes.invalid(e, prog=PROG)
    except LoRAError as e:
        return exit_codes.invalid(f"--lora: {e}", prog=PROG)
    except ExportVerificationError as e:
        print(f"minimind-tui export: failed: {e}", file=sys.stderr)
        return exit_codes.FAILED
    print(f"  tokenizer {source.tokenizer_dir}")
    if source.tokenizer_note:
        print(f"minimind-tui export: warning: {source.tokenizer_note}", file=sys.stderr)
    print(f"wrote {result.path} as {result.architecture} ({checked(result, args.dtype)})")
    if result.remote_code:
        print("  our own modeling code: load with AutoModelForCausalLM.from_pretrained(path, "
              "trust_remote_code=True)")
    else:
        print("  load with AutoModelForCausalLM.from_pretrained(path); no trust_remote_code needed")
    return exit_codes.OK


def checked(result, dtype: str | None) -> str:
    """What the check compared: the folder against our model as the reader built it from its
    record (named above), not the record against anything else; in a narrower dtype, against
    our model rounded the same way, with what the rounding alone costs said beside it."""
    if result.max_logit_diff is None:
        return "not loaded back: --no_verify"
    if result.rounding_logit_diff is None:
        return ("loaded back: its logits match our model's within "
                f"{result.max_logit_diff:.2g} in float32")
    return (f"loaded back: its logits match our model rounded to {dtype} within "
            f"{result.max_logit_diff:.2g} in float32; the rounding itself moves logits by up to "
            f"{result.rounding_logit_diff:.2g} against the model as read")


def add_head_split_flag(parser: argparse.ArgumentParser) -> None:
    """The flag that settles a weights file's head split when nothing recorded with it does
    (the reader names it in that error); `generate` takes it too."""

    def positive(text: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
        return int(text)

    parser.add_argument("--num_attention_heads", "--num-attention-heads", type=positive,
                        default=None, metavar="N",
                        help="query heads of a weights file that records no head split (no "
                             "config.toml or resume file beside it); must agree with a record")


def _same_file(a, b) -> bool:
    try:
        return Path(a).expanduser().samefile(Path(b).expanduser())
    except OSError:  # one of them is not there: load_lora says so
        return False
