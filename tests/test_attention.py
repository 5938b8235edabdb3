"""`attn_implementation="blocked_causal"` gives eager attention's results, in every mask case."""

import json

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from transformers import AutoModelForCausalLM
from transformers.masking_utils import find_packed_sequence_indices

import hfllm.attention  # noqa: F401  (registers the implementation)
from hfllm.attention import blocked_causal_attention
from hfllm.modeling import llama_config

SEQ = 300  # not a multiple of the 128-row block: the last block is partial


def _pair():
    """The same tiny GQA Llama with eager attention and with blocked_causal."""
    torch.manual_seed(0)
    config = llama_config(2, 64, 4, SEQ, 101, num_kv_heads=2)
    eager = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    blocked = AutoModelForCausalLM.from_config(config, attn_implementation="blocked_causal")
    blocked.load_state_dict(eager.state_dict())
    return eager, blocked


def _ids(batch=3):
    return torch.randint(0, 101, (batch, SEQ), generator=torch.Generator().manual_seed(1))


def test_blocked_attention_by_hand():
    # One head, 3 tokens, head_dim 1, q = k = 0: each query averages the values it may see.
    q = k = torch.zeros(1, 1, 3, 1)
    v = torch.tensor([1.0, 2.0, 6.0]).view(1, 1, 3, 1)
    out = blocked_causal_attention(q, k, v, scaling=1.0, block=2)
    torch.testing.assert_close(out.view(-1), torch.tensor([1.0, 1.5, 3.0]))
    # Two documents [0, 1] and [2]: the third token sees only itself.
    out = blocked_causal_attention(q, k, v, scaling=1.0, documents=torch.tensor([[0, 0, 1]]), block=2)
    torch.testing.assert_close(out.view(-1), torch.tensor([1.0, 1.5, 6.0]))


def test_document_ids_follow_position_restarts():
    # The rule blocked_causal relies on, from transformers.
    assert find_packed_sequence_indices(torch.arange(5)[None]) is None  # one document: nothing to mask
    ids = find_packed_sequence_indices(torch.tensor([[0, 1, 2, 0, 1, 0]]))
    assert ids.tolist() == [[0, 0, 0, 1, 1, 2]]


@pytest.mark.parametrize("packed", [False, True])
def test_same_loss_and_gradients_as_eager(packed):
    eager, blocked = _pair()
    ids = _ids()
    extra = {}
    if packed:  # three documents per row, as padding-free packing passes them
        extra["position_ids"] = torch.cat([torch.arange(100), torch.arange(150), torch.arange(50)]).expand(3, -1)
    results = []
    for model in (eager, blocked):
        model.train()
        out = model(input_ids=ids, labels=ids, **extra)
        out.loss.backward()
        results.append((out.logits.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (ref_logits, ref_grads), (logits, grads) = results
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-5)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_padding_and_generation_match_eager():
    eager, blocked = _pair()
    eager.eval(), blocked.eval()
    ids = _ids()
    mask = torch.ones_like(ids)
    mask[0, :40] = 0  # left padding: the SDPA path with transformers' mask
    with torch.no_grad():
        a = eager(input_ids=ids, attention_mask=mask).logits
        b = blocked(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(b[0, 40:], a[0, 40:], rtol=0, atol=1e-5)
    torch.testing.assert_close(b[1:], a[1:], rtol=0, atol=1e-5)
    prompt = ids[:, :20]
    generated = [m.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False)
                 for m in (eager, blocked)]  # prefill blocked, decode steps through the cache
    assert torch.equal(generated[0], generated[1])


def test_compiled_step_uses_the_blocked_path():
    """Under torch.compile, without a KV cache (as training runs: hfllm's loss passes use_cache=False),
    transformers cannot rule out packed sequences and builds a mask; the blocked implementation
    must still run itself, not fall back to SDPA."""
    eager, blocked = _pair()
    ids = _ids(2)
    compiled = torch.compile(blocked, backend="eager")  # dynamo tracing, aten ops run as traced
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        logits = compiled(input_ids=ids, use_cache=False).logits
    ops = {event.key for event in prof.key_averages()}
    assert not any("scaled_dot_product" in op for op in ops), sorted(op for op in ops if "attention" in op)
    with torch.no_grad():
        torch.testing.assert_close(logits, eager(input_ids=ids).logits, rtol=0, atol=1e-5)


def test_saved_model_loads_without_hfllm(tmp_path):
    _, blocked = _pair()
    blocked.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert not any("attn" in key for key in config)  # lm-eval & co. load it with their default
