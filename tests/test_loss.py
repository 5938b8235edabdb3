"""The chunked training loss equals the model's own loss, in value and in every gradient."""

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

from hfllm.loss import CrossEntropySum, chunked_causal_lm_loss, use_chunked_loss


def _llama(tie: bool):
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         vocab_size=97, max_position_embeddings=64, tie_word_embeddings=tie)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def _loss_and_grads(model, **batch):
    model.train()
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("num_items", [None, 50])
def test_chunked_loss_equals_the_models_own(tie, num_items):
    own = _llama(tie)
    chunked = copy.deepcopy(own)
    assert use_chunked_loss(chunked, chunk_size=7)  # 2 × 24 tokens: chunks that do not divide them
    ids = torch.randint(0, 97, (2, 24), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[0, :5] = -100  # e.g. a prompt masked out
    extra = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    ref_loss, ref_grads = _loss_and_grads(own, input_ids=ids, labels=labels, **extra)
    loss, grads = _loss_and_grads(chunked, input_ids=ids, labels=labels, **extra)
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-6)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_chunked_loss_by_hand():
    # Two tokens, vocab 2, hidden = logits (identity head): loss is the CE of position 0 → label 1.
    hidden = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]])
    loss = chunked_causal_lm_loss(hidden, lambda h: h, torch.tensor([[0, 1]]), chunk_size=1)
    expected = -torch.log(torch.exp(torch.tensor(0.0)) / (torch.exp(torch.tensor(2.0)) + 1))
    torch.testing.assert_close(loss, expected)


def test_eval_and_generation_keep_the_models_forward():
    model = _llama(True)
    use_chunked_loss(model, 8)
    model.eval()
    ids = torch.randint(0, 97, (1, 10))
    out = model(input_ids=ids, labels=ids)
    assert out.logits.shape == (1, 10, 97) and out.loss is not None
    assert model.generate(ids, max_new_tokens=3, do_sample=False).shape == (1, 13)


def test_other_heads_keep_their_own_loss():
    gpt2 = AutoModelForCausalLM.from_config(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50))
    assert not use_chunked_loss(gpt2, 8)
    assert not use_chunked_loss(_llama(True), 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cross_entropy_sum_equals_torch(dtype):
    logits = torch.randn(40, 97, generator=torch.Generator().manual_seed(2)).to(dtype).requires_grad_()
    target = torch.randint(0, 97, (40,), generator=torch.Generator().manual_seed(3))
    target[::6] = -100
    loss = CrossEntropySum.apply(logits, target)
    (grad,) = torch.autograd.grad(3 * loss, logits)
    ref = F.cross_entropy(logits.float(), target, ignore_index=-100, reduction="sum")
    (ref_grad,) = torch.autograd.grad(3 * ref, logits)
    assert grad.dtype == dtype
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-2 if dtype == torch.bfloat16 else 1e-6, atol=1e-6)
    assert grad[::6].abs().max() == 0  # ignored rows get no gradient


def test_cross_entropy_sum_by_hand():
    # logits [0, ln 3]: softmax [1/4, 3/4]; target 0 → loss ln 4, gradient [1/4 − 1, 3/4].
    logits = torch.tensor([[0.0, torch.log(torch.tensor(3.0)).item()]], requires_grad=True)
    loss = CrossEntropySum.apply(logits, torch.tensor([0]))
    loss.backward()
    torch.testing.assert_close(loss, torch.log(torch.tensor(4.0)))
    torch.testing.assert_close(logits.grad, torch.tensor([[-0.75, 0.75]]))
