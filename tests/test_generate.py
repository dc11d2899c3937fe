"""Generation: the KV-cached sampling loop, streaming decode, and live samples during training."""

import json
import logging
import math
import sys

import pytest
import torch

from minimind import MiniMindConfig, MiniMindForCausalLM
from minimind.settings import RunSettings
from minimind.engine import Trainer
from minimind.event_text import describe
from minimind.events import Sample, StepMetrics, event_from_json
from minimind.generate import (NonFiniteOutput, PromptTooLong, SamplingParams, TextStream,
                               continue_prompts, encode_chat, encode_prompt, generate_batch,
                               generate_tokens, next_token)
from minimind.sinks import QueueSink
from minimind.tokenizer import load_tokenizer
from minimind_tui.cli.generate import main as generate_main
from test_engine import final_weights

PROMPTS = ["ROMEO:", "To be, or not to be", "First Citizen:"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(None)


def small_model(seed=0, **kwargs) -> MiniMindForCausalLM:
    torch.manual_seed(seed)
    config = MiniMindConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, **kwargs)
    return MiniMindForCausalLM(config).eval()


def greedy(n: int, **kwargs) -> SamplingParams:
    return SamplingParams(max_new_tokens=n, temperature=0.0, top_p=1.0, **kwargs)


@pytest.mark.parametrize("family", ["minimind2", "minimind3"])
def test_greedy_matches_transformers_generate(tokenizer, family):
    model = small_model(family=family)
    ids = encode_prompt(tokenizer, "To be, or not to be")
    ours = list(generate_tokens(model, ids, greedy(24, stop_on_eos=False)))
    theirs = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False)
    assert ours == theirs[0, len(ids):].tolist()


def test_batched_rows_match_single_rows(tokenizer):
    model = small_model()
    prompts = [encode_prompt(tokenizer, p) for p in PROMPTS]
    assert len({len(p) for p in prompts}) > 1  # the batch really is left-padded
    params = [greedy(16), greedy(16), SamplingParams(max_new_tokens=16)]
    rows = [[] for _ in prompts]
    for tokens in generate_batch(model, prompts, params,
                                 generators=[None, None, torch.Generator().manual_seed(3)]):
        for row, token in zip(rows, tokens):
            if token is not None:
                row.append(token)
    for prompt, p, row, seed in zip(prompts, params, rows, (None, None, 3)):
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        assert row == list(generate_tokens(model, prompt, p, generator=generator))


def test_bos_is_prepended_once(tokenizer):
    assert encode_prompt(tokenizer, "ROMEO:")[0] == tokenizer.bos_token_id
    assert encode_prompt(tokenizer, "<|im_start|>ROMEO:") == encode_prompt(tokenizer, "ROMEO:")


def test_sampling_rules():
    logits = torch.tensor([1.0, 3.0, 2.0, -1.0])
    none_seen = torch.zeros(4, dtype=torch.bool)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert next_token(logits, none_seen, greedy(1)) == 1
    # top_k 1 and a tiny top_p leave only the best token, whatever the draw.
    for params in (SamplingParams(top_k=1, top_p=1.0), SamplingParams(top_p=1e-6)):
        assert {next_token(logits, none_seen, params, gen()) for _ in range(5)} == {1}
    # top_k 2: only the two best ever come out.
    draws = {next_token(logits, none_seen, SamplingParams(top_k=2, top_p=1.0, temperature=5.0),
                        torch.Generator().manual_seed(s)) for s in range(200)}
    assert draws == {1, 2}
    # The penalty makes a seen winner lose; a negative seen logit only drops further.
    seen = torch.tensor([False, True, False, True])
    assert next_token(logits, seen, greedy(1, repetition_penalty=2.0)) == 2
    # Seeded draws repeat; different seeds differ somewhere.
    flat = torch.zeros(50)
    p = SamplingParams(top_p=1.0)
    assert [next_token(flat, torch.zeros(50, dtype=torch.bool), p, gen()) for _ in range(3)] \
        == [next_token(flat, torch.zeros(50, dtype=torch.bool), p, gen())] * 3


def test_extreme_but_valid_settings_still_pick_the_limit_token():
    """A temperature, top_p or penalty near 0 is valid; in float32 it made NaN probabilities
    and a traceback from torch.multinomial."""
    logits = torch.tensor([1.0, 3.0, 2.0, -1.0])
    none_seen = torch.zeros(4, dtype=torch.bool)
    seen = torch.tensor([False, True, False, True])
    for params, seen_ids in [(SamplingParams(temperature=1e-39), none_seen),
                             (SamplingParams(temperature=1e-320), none_seen),
                             (SamplingParams(top_p=1e-300), none_seen),
                             # below 1 a penalty favours what was seen: the best seen one wins
                             (SamplingParams(repetition_penalty=1e-300), seen),
                             (SamplingParams(repetition_penalty=1e-320), seen)]:
        assert next_token(logits, seen_ids, params, torch.Generator().manual_seed(0)) == 1


@pytest.mark.parametrize("field, value", [("temperature", -1), ("top_p", 0), ("top_k", -2),
                                          ("repetition_penalty", 0), ("max_new_tokens", 0),
                                          ("temperature", math.inf), ("top_p", math.nan),
                                          ("repetition_penalty", math.inf)])
def test_bad_params_name_the_field(field, value):
    finite = math.isfinite(value)
    with pytest.raises(ValueError, match=f"^{field} " + ("" if finite else "must be a finite")):
        SamplingParams(**{field: value})


def test_stops_at_eos_and_at_the_position_limit(tokenizer):
    model = small_model()
    ids = encode_prompt(tokenizer, "ROMEO:")
    free = list(generate_tokens(model, ids, greedy(30, stop_on_eos=False)))
    eos = free[5]  # call the sixth token "eos": generation must end right after it
    stopped = list(generate_tokens(model, ids, greedy(30), eos_token_id=eos))
    assert stopped == free[:free.index(eos) + 1]
    short = small_model(max_position_embeddings=len(ids) + 4)
    assert len(list(generate_tokens(short, ids, greedy(30, stop_on_eos=False)))) == 4
    full = small_model(max_position_embeddings=len(ids))
    with pytest.raises(PromptTooLong, match=f"^the prompt is {len(ids)} tokens and the model's "
                                            f"context is max_position_embeddings {len(ids)}:"):
        next(generate_tokens(full, ids, greedy(3)))
    # The engine's live samples batch their prompts: one too long yields nothing, the run goes on.
    assert list(generate_batch(full, [ids], [greedy(3)])) == []


def test_text_stream_holds_back_split_characters(tokenizer):
    text = "春眠不觉晓, 处处闻啼鸟 🌸"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    stream = TextStream(tokenizer)
    pieces = [stream.push(i) for i in ids]
    assert len(ids) > len(text)  # byte-level BPE split some characters over tokens...
    assert "" in pieces and all("\ufffd" not in p for p in pieces)  # ...and none leaked out
    assert "".join(pieces) + stream.flush() == text


def test_continue_prompts_restores_train_mode(tokenizer):
    model = small_model().train()
    g1, s1 = continue_prompts(model, tokenizer, PROMPTS, 12, seed=7)
    assert model.training and all(m.training for m in model.modules())
    g2, s2 = continue_prompts(model, tokenizer, PROMPTS, 12, seed=7)
    assert (g1, s1) == (g2, s2) and len(g1) == len(s1) == 3 and all(s1)


# -- live samples in training -------------------------------------------------------------------
def run(settings):
    sink = QueueSink()
    return Trainer(settings, [sink]).run(), sink.drain()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_samples_do_not_change_training(tiny_settings, tmp_path, dtype):
    model = {"dropout": 0.1}  # dropout draws on the RNG that a careless sampler would consume
    common = dict(max_steps=5, dtype=dtype, accumulation_steps=2)
    plain = tiny_settings(model, out_dir=str(tmp_path / "plain"), sample_prompts=[], **common)
    sampled = tiny_settings(model, out_dir=str(tmp_path / "sampled"), sample_interval=2,
                            sample_tokens=8, **common)
    (a, plain_events), (b, events) = run(plain), run(sampled)
    assert a.status == b.status == "completed"
    assert not any(isinstance(e, Sample) for e in plain_events)
    samples = [e for e in events if isinstance(e, Sample)]
    assert [e.step for e in samples] == [2, 4, 5]  # every 2 steps, and at the end
    assert samples[0].prompts == PROMPTS and all(len(e.sampled) == 3 for e in samples)
    losses = lambda evs: [e.loss for e in evs if isinstance(e, StepMetrics)]  # noqa: E731
    assert losses(plain_events) == losses(events)
    wa, wb = final_weights(plain), final_weights(sampled)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_samples_follow_evaluation_and_reach_metrics_jsonl(tiny_settings, tmp_path):
    settings = tiny_settings(max_steps=4, eval_interval=2, val_data_path="builtin:shakespeare-val",
                             eval_batches=1, sample_tokens=6, sample_prompts=["ROMEO:"])
    result, _ = run(settings)
    assert result.status == "completed"
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    logged = [event_from_json(line) for line in lines if json.loads(line)["kind"] == "sample"]
    assert [e.step for e in logged] == [2, 4]  # sample_interval 0: with each evaluation
    assert logged[0].prompts == ["ROMEO:"] and len(logged[0].greedy) == 1
    text, kind = describe(logged[-1])
    assert kind == "sample" and text.startswith("[sample] step 4")
    assert "greedy  ROMEO:" in text and "sampled ROMEO:" in text


def test_exported_hf_folder_generates_like_the_source(tokenizer, tmp_path):
    """A folder exported to LlamaForCausalLM opens through transformers and, with the KV cache
    and the same loop, continues a prompt exactly as the model it came from."""
    from minimind.checkpoint_reader import Checkpoint
    from minimind.export import export_hf
    from minimind.open_model import open_model
    from minimind.tokenizer import BUNDLED_TOKENIZER_DIR

    model = small_model()
    export_hf(Checkpoint(model, tmp_path / "w.pth", "test", BUNDLED_TOKENIZER_DIR),
              tmp_path / "hf", verify=False)
    opened = open_model(tmp_path / "hf", device="cpu")
    assert type(opened.model).__name__ == "LlamaForCausalLM"
    assert opened.description == f"LlamaForCausalLM · {tmp_path / 'hf'} · its own tokenizer"
    ids = encode_prompt(opened.tokenizer, "Now is the winter")
    params = greedy(20, stop_on_eos=False)
    assert list(generate_tokens(opened.model, ids, params)) \
        == list(generate_tokens(model, ids, params))
    # Without its tokenizer the folder still opens, with the bundled one, which it says is a
    # guess (it said nothing, and upstream's tokenizer has as many tokens).
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "hf" / name).unlink()
    assert open_model(tmp_path / "hf", device="cpu").description.endswith(
        "warning: the folder holds no tokenizer, so the bundled one is a guess (give the one "
        "it trained with: --tokenizer_path)")
    assert open_model(tmp_path / "hf", "builtin", device="cpu").description.endswith(
        "tokenizer builtin")


def test_output_that_overflows_is_one_clear_error_greedy_or_sampled(tokenizer):
    """Finite weights whose logits overflow to inf: greedy used to print token 0 forever and
    sampling to fail inside torch.multinomial."""
    model = small_model()
    with torch.no_grad():
        # The largest finite float32: every |activation| above 1 times it is inf.
        model.model.norm.weight.fill_(torch.finfo(torch.float32).max)
    prompt = encode_prompt(tokenizer, "To be")
    for params in (greedy(4), SamplingParams(max_new_tokens=4)):
        with pytest.raises(NonFiniteOutput, match="output holds NaN/inf"):
            list(generate_tokens(model, prompt, params, generator=torch.Generator()))


# -- the generate command at the model's context --------------------------------------------------
CONTEXT = 16


@pytest.fixture
def short_context(tmp_path):
    """A run folder's weights whose config.toml gives the model 16 positions."""
    model = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "max_position_embeddings": CONTEXT}
    torch.manual_seed(0)
    torch.save(MiniMindForCausalLM(MiniMindConfig(**model)).state_dict(),
               tmp_path / "pretrain_64.pth")
    RunSettings.parse({"model": model, "train": {"max_seq_len": CONTEXT}}).save_toml(
        tmp_path / "config.toml")
    return tmp_path / "pretrain_64.pth"


def test_generate_refuses_a_prompt_that_fills_the_context(short_context, tokenizer, capsys):
    """It used to print nothing, say "[0 tokens ...]" and exit 0."""
    prompt = "the king is dead " * 4
    tokens = len(encode_prompt(tokenizer, prompt))
    assert tokens >= CONTEXT
    assert generate_main([str(short_context), "--prompt", prompt, "--device", "cpu"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1] == (
        f"minimind-tui generate: error: --prompt: the prompt is {tokens} tokens and the model's "
        f"context is max_position_embeddings {CONTEXT}: no room for a new token")
    assert generate_main([str(short_context), "--chat", "--prompt", prompt, "--device", "cpu"]) == 2
    assert "error: --chat: with the conversation so far, the prompt is " \
        in capsys.readouterr().err.splitlines()[-1]


def test_generate_says_when_the_context_cut_it_short(short_context, tokenizer, capsys):
    """It used to stop at the context as if it had run out of max_new_tokens."""
    args = [str(short_context), "--prompt", "ROMEO:", "--ignore_eos", "--temperature", "0",
            "--device", "cpu", "--max_new_tokens"]
    room = CONTEXT - len(encode_prompt(tokenizer, "ROMEO:"))
    assert generate_main([*args, "50"]) == 0
    summary = capsys.readouterr().err.splitlines()[-1]
    assert summary.startswith(f"[{room} tokens in ")
    assert summary.endswith(f"; stopped at the model's context of {CONTEXT} tokens]")
    for asked in (room - 1, room):  # max_new_tokens ended it, not the context
        assert generate_main([*args, str(asked)]) == 0
        summary = capsys.readouterr().err.splitlines()[-1]
        assert summary.startswith(f"[{asked} tokens in ") and "context" not in summary


def test_generate_draws_a_new_seed_each_time_and_says_it(short_context, capsys):
    """Its help says "a new one each time": an unseeded generator gave the same text on every
    call (torch's fixed default seed). The seed it draws is printed, and repeats the text."""
    args = [str(short_context), "--prompt", "ROMEO:", "--ignore_eos", "--device", "cpu",
            "--max_new_tokens", "8"]
    runs = []
    for _ in range(2):
        assert generate_main(args) == 0
        out, err = capsys.readouterr()
        seed = next(line for line in err.splitlines() if line.startswith("seed: "))
        runs.append((seed.split()[1], out))
    assert runs[0][0] != runs[1][0]
    assert generate_main([*args, "--seed", runs[0][0]]) == 0
    assert capsys.readouterr().out == runs[0][1]
    assert generate_main([*args, "--temperature", "0"]) == 0  # greedy: no seed to repeat
    assert "seed: " not in capsys.readouterr().err


def test_a_prompt_longer_than_the_tokenizers_limit_is_ours_to_refuse():
    """transformers warned "Token indices sequence length is longer than the specified maximum
    sequence length" before generate's own refusal (the model's context decides, not the
    tokenizer's model_max_length)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("transformers").addHandler(handler)
    try:
        tokenizer = load_tokenizer()  # a fresh one: transformers warns once per tokenizer
        assert len(encode_prompt(tokenizer, "a b " * 20000)) > tokenizer.model_max_length
        tokenizer = load_tokenizer()
        assert len(encode_chat(tokenizer, [{"role": "user", "content": "a b " * 20000}])) \
            > tokenizer.model_max_length
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert not records, [r.getMessage() for r in records]


def test_generate_writes_control_characters_out_on_a_terminal(short_context, tokenizer, capsys,
                                                               monkeypatch):
    """A byte-level vocabulary has a token for ESC: printed raw, a reply holding "\\x1b[2J"
    cleared the user's terminal. A pipe or file still gets the text as it is."""
    import minimind.generate

    clear = tokenizer.encode("\x1b[2J\x07", add_special_tokens=False)
    monkeypatch.setattr(minimind.generate, "generate_tokens", lambda *a, **k: iter(clear))
    args = [str(short_context), "--prompt", "a\bb", "--device", "cpu", "--temperature", "0"]
    assert generate_main(args) == 0
    assert capsys.readouterr().out == "a\bb\x1b[2J\x07\n"
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert generate_main(args) == 0
    assert capsys.readouterr().out == "a\\x08b\\x1b[2J\\x07\n"


def test_live_samples_write_control_characters_out():
    sample = Sample(step=3, prompts=["ROMEO:"], greedy=[" a\x1b[2Jb\r\nc"], sampled=["\x08\t"])
    assert describe(sample)[0].splitlines()[1:] == ["  greedy  ROMEO: a\\x1b[2Jb⏎c",
                                                    "  sampled ROMEO:\\x08\t"]
