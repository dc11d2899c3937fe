"""`minimind-tui generate CHECKPOINT --prompt TEXT`: continue a prompt, printing each piece of
text the moment its tokens exist.

    minimind-tui generate out/tiny --prompt "ROMEO:"
    minimind-tui generate pretrain_512.pth --prompt "<|im_start|>人工智能是" --temperature 0
    minimind-tui generate out/tiny-sft --chat --prompt "Who says: \"To be, or not to be\""

With --chat the prompts are the user's turns of one conversation, rendered with the tokenizer's
chat template; each reply ends at <|im_end|> and stays in the history for the next turn.

CHECKPOINT is anything the playground opens: a run folder, a weights file (ours or upstream's
.pth, a resume checkpoint, .safetensors), a save_pretrained folder or an exported Hugging Face
folder. The text goes to stdout, the model line and the speed to stderr. Exit 0 when done, 2
for a user error (one line on stderr), 1 when the model's output turns NaN/inf, 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from minimind_tui.cli import exit_codes
from minimind_tui.cli.flags import path_arg
from minimind_tui.cli.export import add_head_split_flag

PROG = "minimind-tui generate"


def _seed(text: str) -> int:
    """A seed torch's generator takes: 0 to 2**64 - 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if not 0 <= value < 1 << 64:
        raise argparse.ArgumentTypeError(f"must be from 0 to 2**64 - 1, not {text}")
    return value


def _text(value: str) -> str:
    """A prompt as Unicode: a terminal's invalid UTF-8 reaches Python as lone surrogates, which
    the tokenizer refused with a TypeError and a traceback."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        byte = ord(value[e.start]) - 0xDC00  # how Python keeps an undecodable byte of argv
        raise argparse.ArgumentTypeError(f"not valid UTF-8 (byte {byte:#04x} at character "
                                         f"{e.start + 1})") from None
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog=PROG,
        description="Continue prompts with a trained model, streaming the text as it is "
                    "generated (KV cache, CPU or CUDA).")
    parser.add_argument("checkpoint", metavar="CHECKPOINT", type=path_arg,
                        help="run folder, weights file (.pth, resume checkpoint, .safetensors) "
                             "or a saved / exported Hugging Face folder")
    parser.add_argument("--prompt", action="append", required=True, metavar="TEXT", type=_text,
                        help="text to continue (repeat for several); bos is put first, as "
                             "training put it before every document")
    parser.add_argument("--chat", action="store_true",
                        help="the prompts are user turns of one conversation (for a model "
                             "fine-tuned with stage sft or lora)")
    parser.add_argument("--max_new_tokens", "--max-new-tokens", type=int, default=128,
                        metavar="N", help="tokens to generate at most per prompt (default 128)")
    parser.add_argument("--temperature", type=float, default=0.8,
                        help="0: greedy (default 0.8)")
    parser.add_argument("--top_p", "--top-p", type=float, default=0.95,
                        help="nucleus sampling mass, 1: off (default 0.95)")
    parser.add_argument("--top_k", "--top-k", type=int, default=0,
                        help="keep only the k likeliest tokens, 0: off (default)")
    parser.add_argument("--repetition_penalty", "--repetition-penalty", type=float,
                        default=1.0, help="above 1 discourages repeats, 1: off (default)")
    parser.add_argument("--ignore_eos", "--ignore-eos", action="store_true",
                        help="keep going past the end-of-text token")
    parser.add_argument("--seed", type=_seed, default=None,
                        help="seed for sampling (default: a new one each time)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--tokenizer_path", "--tokenizer-path", metavar="DIR", default=None,
                        type=path_arg,
                        help="tokenizer folder (default: the one the checkpoint's run used)")
    add_head_split_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    # Imported here: torch and transformers take seconds, --help should not.
    import torch

    from minimind.shown import shown_text
    from minimind.generate import (NonFiniteOutput, PromptTooLong, SamplingParams, TextStream,
                                   context_room, encode_chat, encode_prompt, generate_tokens)
    from minimind.open_model import ModelOpenError, open_model

    try:
        params = SamplingParams(max_new_tokens=args.max_new_tokens,
                                temperature=args.temperature, top_k=args.top_k,
                                top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                                stop_on_eos=not args.ignore_eos)
        opened = open_model(args.checkpoint, args.tokenizer_path, args.device,
                            args.num_attention_heads)
    except (ValueError, ModelOpenError) as e:
        return exit_codes.invalid(e, prog=PROG)
    print(f"model: {opened.description} on {opened.device}", file=sys.stderr)
    tokenizer = opened.tokenizer
    if args.chat:
        from minimind.data.sft import ChatTemplateError, mask_markers

        try:
            mask_markers(tokenizer)
        except ChatTemplateError as e:
            return exit_codes.invalid(f"--chat: {e}", prog=PROG)
    generator = torch.Generator()
    if args.seed is None:  # an unseeded generator starts from torch's one fixed default
        seed = generator.seed()
        if params.temperature > 0:  # greedy draws nothing: a seed to repeat it would mislead
            print(f"seed: {seed} (drawn for this run; --seed {seed} repeats it)",
                  file=sys.stderr)
    else:
        generator.manual_seed(args.seed)
    history: list[dict[str, str]] = []
    # A terminal shows the text's control characters written out; a pipe or file gets it as is.
    show = shown_text if sys.stdout.isatty() else str
    try:
        for i, prompt in enumerate(args.prompt):
            if i:
                print("\n")
            if args.chat:
                history.append({"role": "user", "content": prompt})
                prompt_ids = encode_chat(tokenizer, history)
            else:
                prompt_ids = encode_prompt(tokenizer, prompt)
            try:
                room = context_room(opened.model, prompt_ids)
            except PromptTooLong as e:
                return exit_codes.invalid(
                    f"--chat: with the conversation so far, {e}" if args.chat
                    else f"--prompt: {e}", prog=PROG)
            print(show(f"user: {prompt}\nassistant: " if args.chat else prompt), end="",
                  flush=True)
            stream, count, start = TextStream(tokenizer), 0, time.perf_counter()
            reply, token = [], None
            for token in generate_tokens(opened.model, prompt_ids, params,
                                         eos_token_id=tokenizer.eos_token_id,
                                         generator=generator):
                count += 1
                reply.append(stream.push(token))
                print(show(reply[-1]), end="", flush=True)
            reply.append(stream.flush())
            print(show(reply[-1]), flush=True)
            if args.chat:
                text = "".join(reply).removesuffix(tokenizer.eos_token)  # the template adds it
                history.append({"role": "assistant", "content": text})
            seconds = time.perf_counter() - start
            # Neither max_new_tokens nor eos ended it: the text filled the model's context.
            at_eos = params.stop_on_eos and token == tokenizer.eos_token_id
            cut = (f"; stopped at the model's context of {len(prompt_ids) + count} tokens"
                   if count == room < params.max_new_tokens and not at_eos else "")
            print(f"[{count} tokens in {seconds:.2f}s, {count / max(seconds, 1e-9):.1f} "
                  f"tokens/s{cut}]", file=sys.stderr)
    except NonFiniteOutput as e:
        print(f"\nminimind-tui generate: failed: {e}", file=sys.stderr)
        return exit_codes.FAILED
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return exit_codes.SIGNALLED
    except BrokenPipeError:  # e.g. `| head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return exit_codes.OK
