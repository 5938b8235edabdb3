"""Chat generation: the inverse-CDF sampler draws from softmax(scores / T) (within top-p, min-p) like
`generate`'s multinomial, and `generate_replies` samples reproducibly through it."""

import math

import pytest
import torch

from hfllm.alignment.generation import InverseCDFSampler, generate_replies, sampling_kwargs
from hfllm.modeling import load_causal_lm, load_tokenizer

PROBS = [0.5, 0.3, 0.2, 0.0]  # the last token has no mass: it must never be drawn


def frequencies(sampler: InverseCDFSampler, draws: int = 40_000) -> list[float]:
    scores = torch.tensor([PROBS]).log().expand(draws, -1)
    torch.manual_seed(0)
    out = sampler(torch.zeros(draws, 1, dtype=torch.long), scores)
    assert (torch.isfinite(out).sum(dim=1) == 1).all()  # one finite score a row: greedy takes the draw
    return (torch.bincount(out.argmax(dim=1), minlength=len(PROBS)).float() / draws).tolist()


@pytest.mark.parametrize("temperature, top_p, min_p, expected", [
    (1.0, 1.0, 0.0, [0.5, 0.3, 0.2, 0.0]),
    (0.5, 1.0, 0.0, [0.25 / 0.38, 0.09 / 0.38, 0.04 / 0.38, 0.0]),  # p² renormalised
    (1.0, 0.7, 0.0, [0.625, 0.375, 0.0, 0.0]),  # the nucleus: 0.5 + 0.3 ≥ 0.7, renormalised
    (1.0, 1.0, 0.5, [0.625, 0.375, 0.0, 0.0]),  # min-p: 0.2 < 0.5 × 0.5 is left out, the rest renormalised
])
def test_inverse_cdf_sampler_draws_from_the_tempered_distribution(temperature, top_p, min_p, expected):
    got = frequencies(InverseCDFSampler(temperature, top_p, min_p))
    # 40,000 draws: a binomial standard error ≤ 0.0025; allow four of them
    assert got == pytest.approx(expected, abs=0.01)
    assert got[-1] == 0.0


def test_sampling_kwargs_greedy_at_zero_and_refuses_a_negative_temperature():
    assert sampling_kwargs(0.0) == {"do_sample": False}
    kwargs = sampling_kwargs(0.7)
    assert kwargs["do_sample"] is False and isinstance(kwargs["logits_processor"][0], InverseCDFSampler)
    with pytest.raises(ValueError, match="temperature"):
        InverseCDFSampler(-1.0)
    assert math.isclose(InverseCDFSampler(0.7).temperature, 0.7)


def test_generate_replies_samples_reproducibly(tiny_run):
    model_dir = str(tiny_run / "pretrain")
    tokenizer = load_tokenizer(model_dir, field="m")
    model = load_causal_lm(model_dir, field="m")
    prompts = ["What is 47+38?", "Compute 12 + 30."]
    sampled = generate_replies(model, tokenizer, prompts, num_samples=6, temperature=1.0, max_new_tokens=12, seed=3)
    assert [len(s) for s in sampled] == [6, 6]
    assert generate_replies(model, tokenizer, prompts, num_samples=6, temperature=1.0, max_new_tokens=12,
                            seed=3) == sampled  # seeded per batch
    assert len({r for s in sampled for r in s}) > 1  # a tiny model at T 1 does not repeat itself twelve times
    greedy = generate_replies(model, tokenizer, prompts, num_samples=2, max_new_tokens=12)
    assert all(a == b for a, b in greedy)
