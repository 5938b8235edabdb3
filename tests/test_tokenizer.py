"""The trained BPE tokenizer: round trip, digits, special tokens, chat template."""

import json

from hfllm.tokenizer import BOS, EOS, IM_END, IM_START, PAD


def test_round_trip_and_digits(tiny_tokenizer):
    text = "Café: x = 12345 → naïve 你好\n\tdone"
    ids = tiny_tokenizer(text)["input_ids"]
    assert tiny_tokenizer.decode(ids) == text
    digits = tiny_tokenizer.convert_ids_to_tokens(tiny_tokenizer("12345")["input_ids"])
    assert digits == ["1", "2", "3", "4", "5"]


def test_special_tokens(tiny_tokenizer):
    tok = tiny_tokenizer
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (BOS, EOS, PAD)
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3
    assert tok("plain text")["input_ids"][0] != tok.bos_token_id  # no special tokens added by default
    for t in (IM_START, IM_END):
        assert len(tok(t)["input_ids"]) == 1


def test_chat_template_marks_assistant_tokens(tiny_tokenizer):
    messages = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "It is 4."}]
    out = tiny_tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                             return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assistant = tiny_tokenizer.decode([i for i, m in zip(ids, mask) if m])
    assert assistant == "It is 4." + IM_END
    prompt = tiny_tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == f"{BOS}{IM_START}user\nWhat is 2+2?{IM_END}\n{IM_START}assistant\n"


def test_bytes_per_token_reported(tiny_run):
    m = json.loads((tiny_run / "tokenizer" / "manifest.json").read_text())["metrics"]
    assert m["vocab_size"] == 2048
    assert 2.0 < m["heldout_bytes_per_token"] < 6.0
