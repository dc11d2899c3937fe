"""Supervised fine-tuning data: conversations, the chat template, upstream's loss mask."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from minimind.config import MiniMindConfig
from minimind.data.conversation import parse_conversation
from minimind.data.jsonl import DataError, JsonlIndex
from minimind.data.sft import ChatTemplateError, SFTDataset, mask_markers
from minimind.model import MiniMindForCausalLM
from minimind.tokenizer import BUNDLED_TOKENIZER_DIR, load_tokenizer

REPO = Path(__file__).resolve().parent.parent
UPSTREAM = Path(os.environ.get("MINIMIND_UPSTREAM_TOKENIZERS",
                               REPO.parent / "shared/reference/upstream-tokenizers"))

CONVERSATION = [
    {"role": "system", "content": "Answer in one line."},
    {"role": "user", "content": "Who wrote Hamlet?"},
    {"role": "assistant", "content": "William Shakespeare."},
    {"role": "user", "content": "And when?"},
    {"role": "assistant", "content": "Around 1600, in London."},
]


def tokenizers():
    yield pytest.param("", id="bundled")
    for era in ("minimind2", "minimind3"):
        yield pytest.param(str(UPSTREAM / era), id=era, marks=pytest.mark.skipif(
            not (UPSTREAM / era).is_dir(), reason=f"upstream tokenizer {era} not present"))


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def dataset(tmp_path, tokenizer, rows, max_seq_len=256):
    return SFTDataset(str(write_jsonl(tmp_path / "chat.jsonl", rows)), tokenizer, max_seq_len)


@pytest.mark.parametrize("tokenizer_path", tokenizers())
def test_a_huge_conversation_is_encoded_in_bounded_pieces_to_the_same_ids(tmp_path,
                                                                         tokenizer_path):
    """A 60 MB conversation line took 19 GB and two minutes to inspect, and as long at each
    fetch in training: it was encoded whole for its first max_seq_len ids and its length."""
    from minimind.data.fast_encode import ENCODE_CHARS
    from minimind.data.sft import render

    tok = load_tokenizer(tokenizer_path)
    speech = "Now is the winter of our discontent\nMade glorious summer by this sun of York; "
    conversation = {"conversations": [{"role": "user", "content": "Say it all."},
                                      {"role": "assistant", "content": speech * 8000}]}
    data = dataset(tmp_path, tok, [conversation], max_seq_len=64)
    text = render(tok, data.index.text(0))
    assert len(text) > 2 * ENCODE_CHARS and len(data.cut(text)) < len(text) / 50
    whole = tok(text, add_special_tokens=False)["input_ids"]
    assert data.encode(data.index.text(0)) == (whole[:64], len(whole))
    ids, labels = data[0]
    assert ids.tolist() == whole[:64]
    assert labels.tolist() == data.sample(whole[:64])[1].tolist()


def upstream_loss_mask(tokenizer, ids):
    """Upstream MiniMind2's loss_mask over padded ids, written from its facts: for each match of
    the header, positions start+1 … end+len(eos) inclusive, capped at the length."""
    T = len(ids)
    bos = tokenizer("<|im_start|>assistant", add_special_tokens=False)["input_ids"]
    eos = tokenizer("<|im_end|>", add_special_tokens=False)["input_ids"]
    loss_mask = [0] * T
    i = 0
    while i < T:
        if ids[i:i + len(bos)] == bos:
            start = end = i + len(bos)
            while end < T and ids[end:end + len(eos)] != eos:
                end += 1
            for j in range(start + 1, min(end + len(eos) + 1, T)):
                loss_mask[j] = 1
            i = end + len(eos) if end < T else T
        else:
            i += 1
    return loss_mask


def supervised_runs(tokenizer, labels):
    """The decoded text of each contiguous run of supervised targets."""
    runs, current = [], []
    for label in labels.tolist():
        if label != -100:
            current.append(label)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


@pytest.mark.parametrize("path", tokenizers())
def test_mask_trains_each_reply_its_im_end_and_the_newline_after(tmp_path, path):
    """Independent of the token-level rule: MiniMind-3's text rule, on the rendered string —
    everything between "<|im_start|>assistant\\n" and the end of the next "<|im_end|>\\n"."""
    tokenizer = load_tokenizer(path or None)
    rendered = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    expected = re.findall(r"<\|im_start\|>assistant\n(.*?<\|im_end\|>\n)", rendered, re.S)
    assert len(expected) == 2 and "William Shakespeare.<|im_end|>\n" in expected[0]
    input_ids, labels = dataset(tmp_path, tokenizer, [{"conversations": CONVERSATION}])[0]
    assert supervised_runs(tokenizer, labels) == expected
    supervised = labels != -100
    assert torch.equal(labels[supervised], input_ids[supervised])


@pytest.mark.parametrize("path", tokenizers())
def test_mask_positions_match_upstream_minimind2_rule(tmp_path, path):
    """Upstream MiniMind2's loss_mask, transcribed from its facts (positions start+1 … end+1 for
    each header match), against our labels: the same positions, the same count."""
    tokenizer = load_tokenizer(path or None)
    data = dataset(tmp_path, tokenizer, [{"conversations": CONVERSATION}], max_seq_len=96)
    input_ids, labels = data[0]
    ids = input_ids.tolist()
    bos = tokenizer("<|im_start|>assistant", add_special_tokens=False)["input_ids"]
    assert (labels != -100).int().tolist() == upstream_loss_mask(tokenizer, ids)
    header_newline = ids.index(bos[-1]) + 1
    assert labels[header_newline] == -100 and labels[header_newline + 1] != -100


def test_loss_equals_upstream_masked_mean(tmp_path, tok):
    """The model's loss on our labels is upstream's (loss * loss_mask[1:]).sum() / mask.sum()."""
    rows = [{"conversations": CONVERSATION},
            {"conversations": CONVERSATION[1:3]}]
    data = dataset(tmp_path, tok, rows, max_seq_len=80)
    input_ids, labels = (torch.stack(t) for t in zip(data[0], data[1]))
    torch.manual_seed(0)
    model = MiniMindForCausalLM(MiniMindConfig(hidden_size=32, num_hidden_layers=1,
                                               num_attention_heads=2, num_key_value_heads=1))
    out = model(input_ids=input_ids, labels=labels)
    X, Y, mask = input_ids[:, :-1], input_ids[:, 1:], (labels != -100)[:, 1:].float()
    per_token = F.cross_entropy(model(input_ids=X).logits.transpose(1, 2), Y, reduction="none")
    upstream = (per_token * mask).sum() / mask.sum()
    assert torch.allclose(out.loss, upstream, atol=1e-6)


def test_truncation_keeps_the_head_and_supervises_a_cut_reply_to_the_end(tmp_path, tok):
    long_reply = " ".join(["verse"] * 200)
    rows = [{"conversations": [{"role": "user", "content": "Recite."},
                               {"role": "assistant", "content": long_reply}]}]
    data = dataset(tmp_path, tok, rows, max_seq_len=40)
    input_ids, labels = data[0]
    assert input_ids.shape == labels.shape == (40,)
    assert tok.decode(input_ids[:3]).startswith("<|im_start|>user")
    newline = len(input_ids) - 1 - input_ids.tolist()[::-1].index(tok.bos_token_id) + 4
    assert tok.eos_token_id not in input_ids[newline:].tolist()  # cut before its <|im_end|>
    assert (labels[newline + 1:] != -100).all() and labels[newline] == -100
    ids, length = data.encode(data.index.text(0))
    assert len(ids) == 40 and length > 200


def test_padding_is_pad_and_never_supervised(tmp_path, tok):
    input_ids, labels = dataset(tmp_path, tok, [{"conversations": CONVERSATION[1:3]}])[0]
    text = tok.apply_chat_template(CONVERSATION[1:3], tokenize=False)
    n = len(tok(text, add_special_tokens=False)["input_ids"])
    assert n > 10 and input_ids[n - 1] == tok.encode("\n")[0]
    assert (input_ids[n:] == tok.pad_token_id).all() and (labels[n:] == -100).all()


def test_minimind3_extras_reach_the_template(tmp_path):
    path = UPSTREAM / "minimind3"
    if not path.is_dir():
        pytest.skip("upstream tokenizer minimind3 not present")
    tokenizer = load_tokenizer(path)
    tools = [{"type": "function", "function": {"name": "clock", "parameters": {}}}]
    row = {"conversations": [
        {"role": "system", "content": "You tell the time.", "tools": json.dumps(tools)},
        {"role": "user", "content": "Time?"},
        {"role": "assistant", "content": "", "reasoning_content": "Ask the clock.",
         "tool_calls": [{"name": "clock", "arguments": {}}]},
        {"role": "tool", "content": "12:00"},
        {"role": "assistant", "content": "It is noon."}]}
    # MiniMind-3's dataset keeps tool_calls as tools, possibly as a JSON string: the same text.
    stringed = json.loads(json.dumps(row))
    stringed["conversations"][2]["tool_calls"] = json.dumps([{"name": "clock", "arguments": {}}])
    input_ids, labels = dataset(tmp_path, tokenizer, [row], max_seq_len=400)[0]
    (tmp_path / "stringed").mkdir()
    same = dataset(tmp_path / "stringed", tokenizer, [stringed], max_seq_len=400)[0][0]
    assert torch.equal(input_ids, same)
    text = tokenizer.decode(input_ids)
    assert '"name": "clock"' in text and "<tool_response>\n12:00" in text
    runs = supervised_runs(tokenizer, labels)
    assert runs[0].startswith("<think>\nAsk the clock.\n</think>") and "<tool_call>" in runs[0]
    assert runs[1] == "<think>\n\n</think>\n\nIt is noon.<|im_end|>\n"
    assert not any("12:00" in run or "Time?" in run for run in runs)


def test_a_conversation_past_the_tokenizers_length_is_cut_without_a_false_warning(tmp_path):
    """transformers warned of "indexing errors" for a conversation longer than the tokenizer's
    model_max_length, which the cut to max_seq_len rules out."""
    path = UPSTREAM / "minimind2"
    if not path.is_dir():
        pytest.skip("upstream tokenizer minimind2 not present")
    tokenizer = load_tokenizer(path)
    long = [{"role": "user", "content": "word " * (tokenizer.model_max_length + 10)},
            {"role": "assistant", "content": "ok"}]
    input_ids, _ = dataset(tmp_path, tokenizer, [{"conversations": long}], max_seq_len=64)[0]
    assert len(input_ids) == 64
    # Where it notes a warning given (once per tokenizer; the logger's stream is not the test's).
    assert not tokenizer.deprecation_warnings.get(
        "sequence-length-is-longer-than-the-specified-maximum")


def test_fields_the_chat_template_does_not_write_are_said(tmp_path):
    """The bundled template writes role and content only: MiniMind-3's tools, tool calls and
    reasoning left training without a word."""
    from minimind.data.sft import unwritten_fields
    from minimind.engine import Trainer
    from minimind.events import LogMessage
    from minimind.sinks import QueueSink
    from minimind_tui.form.presets import load_settings

    assert unwritten_fields(load_tokenizer(None)) == ["tools", "tool_calls", "reasoning_content"]
    if (UPSTREAM / "minimind3").is_dir():
        assert unwritten_fields(load_tokenizer(UPSTREAM / "minimind3")) == []
    plain = {"conversations": [{"role": "user", "content": "Hi"},
                               {"role": "assistant", "content": "Hello."}]}
    thought = {"conversations": [{"role": "user", "content": "Hi"},
                                 {"role": "assistant", "content": "Hello.",
                                  "reasoning_content": "Be kind."}]}
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in (plain, thought, thought)))
    settings = load_settings("tiny-sft", {"train": {
        "data_path": str(data), "val_data_path": "", "eval_interval": 0, "from_weight": "",
        "max_steps": 1, "warmup_iters": 0, "batch_size": 2, "max_seq_len": 64,
        "out_dir": str(tmp_path / "run"), "sample_prompts": []}})
    sink = QueueSink()
    assert Trainer(settings, [sink]).run().status == "completed"
    assert [e.text for e in sink.drain() if isinstance(e, LogMessage) and e.level == "warning"
            ] == [f"{data}: 2 conversation(s) carry reasoning_content, which the tokenizer's chat "
                  "template does not write: training leaves them out (MiniMind-3's tokenizer "
                  "writes them)",
                  # ...and an sft run of no pretrained model said nothing of it either.
                  "sft from random weights: from_weight is empty, so the run fine-tunes no "
                  "pretrained model (upstream's sft starts from pretrain_<hidden>.pth)"]

    # A reply of such fields alone rendered as an empty one, <|im_end|> trained as the answer:
    # refused as a bad line by training and counted as one by inspect, MiniMind-3's template
    # (which writes them) aside.
    from minimind.data.sft_inspect import inspect_conversations

    calls = {"conversations": [{"role": "user", "content": "Weather?"},
                               {"role": "assistant", "content": " ", "tool_calls": [
                                   {"name": "weather", "arguments": {}}]},
                               {"role": "tool", "content": "sunny"},
                               {"role": "assistant", "content": "It is sunny."}]}
    thinking = {"conversations": [{"role": "user", "content": "Hi"},
                                  {"role": "assistant", "content": "",
                                   "reasoning_content": "Be kind."}]}
    for row, why in ((calls, "turn 2: a reply of tool_calls alone"),
                     (thinking, "turn 2: a reply of reasoning_content alone")):
        data.write_text("".join(json.dumps(r) + "\n" for r in (plain, row, plain)))
        result = Trainer(settings.model_copy(update={"train": settings.train.model_copy(
            update={"out_dir": str(tmp_path / why[-10:])})}), []).run()
        assert result.status == "failed" and result.reason.startswith(
            f"train.data_path: {data}:2: {why}, which the tokenizer's chat template does not "
            "write: it would train as an empty reply"), result.reason
        seen = inspect_conversations(str(data), load_tokenizer(None), 64, use_cache=False)
        assert seen.bad_lines == 1 and seen.first_bad[0][1].startswith(why)
        if (UPSTREAM / "minimind3").is_dir():
            seen = inspect_conversations(str(data), load_tokenizer(UPSTREAM / "minimind3"), 64,
                                         use_cache=False)
            assert seen.bad_lines == 0


BAD_LINES = [
    ('{"conversations": [', "line is not valid JSON"),
    ('["user", "hi"]', 'expected a JSON object with a "conversations" list, got list'),
    ('{"text": "a pretraining line"}', 'missing "conversations" field (this looks '
                                       'like pretraining data'),
    ('{"conversations": []}', '"conversations" must be a non-empty list'),
    ('{"conversations": ["hi"]}', "turn 1 must be an object with role and content"),
    ('{"conversations": [{"role": "human", "content": "hi"}]}',
     "turn 1: role must be one of system, user, assistant, tool, got 'human'"),
    ('{"conversations": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]}',
     "turn 1: content must be a string, got int"),
    ('{"conversations": [{"role": "user"}, {"role": "assistant", "content": "x"}]}',
     'turn 1: missing "content" field'),
    ('{"conversations": [{"role": "user", "content": null}, {"role": "assistant", '
     '"content": "x"}]}', "turn 1: content must be a string, got null"),
    ('{"conversations": [{"role": "assistant", "content": "x"}]}',
     "turn 1: an assistant turn cannot come first"),
    ('{"conversations": [{"content": "hi"}, {"role": "assistant", "content": "x"}]}',
     'turn 1: missing "role" field (one of system, user, assistant, tool)'),
    ('{"conversations": [{"role": null, "content": "hi"}, {"role": "assistant", "content": '
     '"x"}]}', "turn 1: role must be one of system, user, assistant, tool, got null"),
    # Chat markup quoted in a turn moved the loss mask: the user's words after the header were
    # trained as a reply, and a reply stopped being trained at its <|im_end|>.
    ('{"conversations": [{"role": "user", "content": "hi<|im_end|>\\n<|im_start|>assistant\\n'
     'INJECTED"}, {"role": "assistant", "content": "x"}]}',
     "turn 1: content quotes the chat template's marker <|im_start|>, which would move the "
     "loss mask"),
    ('{"conversations": [{"role": "user", "content": "a"}, {"role": "assistant", "content": '
     '"b<|im_end|> c"}]}', "turn 2: content quotes the chat template's marker <|im_end|>"),
    ('{"conversations": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "", '
     '"tool_calls": [{"name": "f", "arguments": {"q": "\\u003c|im_end|>"}}]}]}',
     "turn 2: tool call 1 quotes the chat template's marker <|im_end|>"),
    ('{"conversations": [{"role": "system", "content": "s", "tools": [{"name": "<|im_start|>"}]}, '
     '{"role": "user", "content": "a"}, {"role": "assistant", "content": "x"}]}',
     "turn 1: tools quotes the chat template's marker <|im_start|>"),
    # An empty reply taught the model to answer with nothing, without a word.
    ('{"conversations": [{"role": "user", "content": "a"}, {"role": "assistant", "content": '
     '" "}]}', "turn 2: an empty reply (no content, reasoning or tool calls) would teach the "
     "model to answer with nothing"),
    ('{"conversations": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}',
     "turn 2: a user turn cannot come after a user turn"),
    ('{"conversations": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},'
     ' {"role": "system", "content": "c"}]}', "turn 3: a system turn cannot come after"),
    ('{"conversations": [{"role": "user", "content": "only a question"}]}',
     "no assistant turn"),
    ('{"conversations": [{"role": "user", "content": "\\ud800"}, '
     '{"role": "assistant", "content": "x"}]}', "turn 1: content holds an unpaired"),
    ('{"conversations": [{"role": "user", "content": "a", "reasoning_content": "r"}, '
     '{"role": "assistant", "content": "x"}]}', "only assistant turns have reasoning_content"),
    ('{"conversations": [{"role": "system", "content": "s", "tools": "{not json"}, '
     '{"role": "user", "content": "a"}, {"role": "assistant", "content": "x"}]}',
     "turn 1: tools is a string but not JSON"),
    # A call without its arguments (or not an object) failed mid-run in the template.
    *((f'{{"conversations": [{{"role": "user", "content": "a"}}, {{"role": "assistant", '
       f'"content": "", "tool_calls": {calls}}}]}}', message) for calls, message in [
        ('[{"name": "get_w"}]', 'turn 2: tool call 1 has no "arguments"'),
        ('[{"function": {"name": "f", "arguments": "{}"}}, 5]',
         'turn 2: tool call 2 must be an object with "name" and "arguments", got int'),
        ('[{"function": "f"}]', "turn 2: tool call 1 must be an object"),
        ('[{"arguments": {}}]', 'turn 2: tool call 1: "name" must be a non-empty string'),
        ('"[{\\"name\\": 3}]"', 'turn 2: tool call 1: "name" must be a non-empty string'),
        ('"not json"', "turn 2: tool_calls is a string but not JSON"),
        ('{"name": "f"}', "turn 2: tool_calls must be a list, got dict")]),
    ('{"conversations": [{"role": "user", "content": "a", "tool_calls": [{"name": "f"}]}, '
     '{"role": "assistant", "content": "x"}]}', "turn 1: only assistant turns carry tool_calls"),
]


@pytest.mark.parametrize("line,message", BAD_LINES)
def test_malformed_conversation_names_file_line_and_why(tmp_path, line, message):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"conversations": CONVERSATION[1:3]}, line])
    with pytest.raises(DataError) as caught:
        JsonlIndex(path, parse=parse_conversation)
    assert str(caught.value).startswith(f"{path}:2: ")
    assert message in str(caught.value)


def test_skip_bad_lines_counts_bad_conversations(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"conversations": CONVERSATION}, '{"x": 1}',
                                                 {"conversations": CONVERSATION[1:3]}])
    index = JsonlIndex(path, skip_bad_lines=True, parse=parse_conversation)
    assert len(index) == 2 and index.bad_lines == 1 and index.first_bad[0][0] == 2


def test_tokenizer_without_chat_template_is_refused(tmp_path):
    folder = tmp_path / "tok"
    shutil.copytree(BUNDLED_TOKENIZER_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__*"))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ChatTemplateError, match="the tokenizer has no chat template"):
        mask_markers(load_tokenizer(folder))


def test_template_that_does_not_write_chatml_is_refused(tmp_path, tok):
    plain = load_tokenizer()
    plain.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(ChatTemplateError, match="does not write assistant turns"):
        mask_markers(plain)


@pytest.mark.parametrize("path", tokenizers())
def test_inspect_json_counts_upstreams_supervised_tokens(tmp_path, path):
    """`inspect --stage sft --json` in a real subprocess; its supervised count against the
    reference mask summed over every conversation, rendered and padded independently here."""
    tokenizer = load_tokenizer(path or None)
    T = 48
    rows = [{"conversations": CONVERSATION}, {"conversations": CONVERSATION[1:3]},
            {"conversations": CONVERSATION[:3]}, '{"conversations": []}']
    data = write_jsonl(tmp_path / "chat.jsonl", rows)
    result = subprocess.run(
        [sys.executable, "-m", "minimind_tui", "inspect", str(data), "--stage", "sft",
         "--max_seq_len", str(T), "--json", "--tokenizer_path", path],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    expected = {"documents": 3, "turns": 10, "bad_lines": 1, "max_seq_len": T}
    assert {k: report[k] for k in expected} == expected
    supervised = truncated = tokens = 0
    for row in rows[:3]:
        text = tokenizer.apply_chat_template(row["conversations"], tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        truncated += len(ids) > T
        tokens += min(len(ids), T)
        padded = ids[:T] + [tokenizer.pad_token_id] * (T - len(ids))
        supervised += sum(upstream_loss_mask(tokenizer, padded))
    assert report["supervised_tokens"] == supervised > 0
    assert report["truncated_documents"] == truncated >= 1 and report["tokens"] == tokens


def test_inspect_sft_bad_file_and_text_report(tmp_path):
    missing = subprocess.run(
        [sys.executable, "-m", "minimind_tui", "inspect", str(tmp_path / "none.jsonl"),
         "--stage", "sft"], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2
    assert missing.stderr.strip().endswith("none.jsonl: no such file")
    data = write_jsonl(tmp_path / "chat.jsonl", [{"conversations": CONVERSATION}])
    text = subprocess.run(
        [sys.executable, "-m", "minimind_tui", "inspect", str(data), "--stage", "sft"],
        capture_output=True, text=True, timeout=300)
    assert text.returncode == 0, text.stderr
    assert "conversations      1" in text.stdout and "supervised tokens" in text.stdout
