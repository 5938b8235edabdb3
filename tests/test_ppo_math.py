"""PPO's maths (hfllm.alignment.ppo_math) against values worked out by hand on 3-token replies."""

import math

import pytest
import torch

from hfllm.alignment import ppo_math as pm
from hfllm.tokenizer import IM_END, train_bpe

T = torch.tensor


def close(actual, expected, tol=1e-6):
    assert torch.allclose(actual.double(), T(expected, dtype=torch.float64), atol=tol), (actual, expected)


def test_gae_with_gamma_and_lambda():
    # γ = 0.9, λ = 0.8, rewards r and values V on three tokens, V after the last token = 0:
    # δ2 = 1.0 - 0.3 = 0.7;               A2 = 0.7
    # δ1 = -0.2 + 0.9·0.3 - 0.4 = -0.33;  A1 = -0.33 + 0.72·0.7 = 0.174
    # δ0 = 0.1 + 0.9·0.4 - 0.5 = -0.04;   A0 = -0.04 + 0.72·0.174 = 0.08528
    advantages, returns = pm.gae(T([[0.1, -0.2, 1.0]]), T([[0.5, 0.4, 0.3]]), gamma=0.9, lam=0.8)
    close(advantages, [[0.08528, 0.174, 0.7]])
    close(returns, [[0.58528, 0.574, 1.0]])
    # λ = 0: one-step TD errors; γ = λ = 1: reward-to-go minus the value.
    close(pm.gae(T([[0.1, -0.2, 1.0]]), T([[0.5, 0.4, 0.3]]), 0.9, 0.0)[0], [[-0.04, -0.33, 0.7]])
    close(pm.gae(T([[0.1, -0.2, 1.0]]), T([[0.5, 0.4, 0.3]]), 1.0, 1.0)[0], [[0.4, 0.4, 0.7]])


def test_whitening():
    # [1, 2, 4]: mean 7/3, unbiased variance (16/9 + 1/9 + 25/9) / 2 = 7/3.
    std = math.sqrt(7 / 3)
    close(pm.masked_whiten(T([1.0, 2.0, 4.0]), T([True, True, True])),
          [(1 - 7 / 3) / std, (2 - 7 / 3) / std, (4 - 7 / 3) / std], tol=1e-5)
    # Masked: statistics of [1, 3] only (mean 2, variance 2), applied to every value.
    mask = T([True, True, False])
    close(pm.masked_whiten(T([1.0, 3.0, 100.0]), mask), [-1 / math.sqrt(2), 1 / math.sqrt(2), 98 / math.sqrt(2)],
          tol=1e-5)
    close(pm.masked_whiten(T([1.0, 3.0, 100.0]), mask, shift_mean=False),
          [2 - 1 / math.sqrt(2), 2 + 1 / math.sqrt(2), 2 + 98 / math.sqrt(2)], tol=1e-5)
    close(pm.masked_mean(T([1.0, 2.0, 3.0]), mask), 1.5)
    close(pm.masked_var(T([1.0, 3.0, 100.0]), mask), 2.0)
    with pytest.raises(ValueError):
        pm.masked_var(T([1.0, 3.0]), T([True, False]))


def test_policy_loss_clips_on_both_sides():
    # cliprange 0.2, old log-probs 0, ratios r = exp(new):
    #   row 0: r 1.5, A +1 → max(-1.5, -1.2) = -1.2 clipped (above 1+ε, good action)
    #          r 0.5, A -1 → max( 0.5,  0.8) =  0.8 clipped (below 1-ε, bad action)
    #          r 1.1, A +1 → -1.1 inside the range
    #   row 1: r 1.5, A -1 → max( 1.5,  1.2) =  1.5 not clipped (pessimistic side)
    #          r 0.5, A +1 → max(-0.5, -0.8) = -0.5 not clipped
    #          r 1.0, A +2 → -2.0
    new = torch.log(T([[1.5, 0.5, 1.1], [1.5, 0.5, 1.0]]))
    advantages = T([[1.0, -1.0, 1.0], [-1.0, 1.0, 2.0]])
    everything = torch.ones(2, 3, dtype=torch.bool)
    out = pm.clipped_policy_loss(new, torch.zeros(2, 3), advantages, everything, cliprange=0.2)
    close(out.loss, (-1.2 + 0.8 - 1.1 + 1.5 - 0.5 - 2.0) / 6)
    close(out.clipfrac, 2 / 6)
    close(out.ratio, [[1.5, 0.5, 1.1], [1.5, 0.5, 1.0]])
    row0 = pm.clipped_policy_loss(new[:1], torch.zeros(1, 3), advantages[:1], everything[:1], cliprange=0.2)
    close(row0.loss, (-1.2 + 0.8 - 1.1) / 3)
    close(row0.clipfrac, 2 / 3)
    # Masked tokens count nowhere.
    only_last = T([[False, False, True]])
    close(pm.clipped_policy_loss(new[:1], torch.zeros(1, 3), advantages[:1], only_last, 0.2).loss, -1.1)


def test_value_loss_clips_on_both_sides():
    # cliprange_value 0.2 around old values 0.5, returns R:
    #   V 0.9 → clipped 0.7, R 1: (0.9-1)² = 0.01 < (0.7-1)² = 0.09 → 0.09 (clip above binds)
    #   V 0.1 → clipped 0.3, R 0: (0.1-0)² = 0.01 < (0.3-0)² = 0.09 → 0.09 (clip below binds)
    #   V 0.6 inside,        R 0: 0.36
    #   loss = ½ · mean(0.09, 0.09, 0.36) = 0.09
    loss, clipfrac = pm.clipped_value_loss(T([[0.9, 0.1, 0.6]]), T([[0.5, 0.5, 0.5]]), T([[1.0, 0.0, 0.0]]),
                                           T([[True, True, True]]), cliprange_value=0.2)
    close(loss, 0.09)
    close(clipfrac, 2 / 3)
    # The same values moving towards their returns: the unclipped error is the larger, no clip.
    loss, clipfrac = pm.clipped_value_loss(T([[0.9, 0.1, 0.6]]), T([[0.5, 0.5, 0.5]]), T([[0.0, 1.0, 0.6]]),
                                           T([[True, True, True]]), cliprange_value=0.2)
    close(loss, 0.5 * (0.81 + 0.81 + 0.0) / 3)
    close(clipfrac, 0.0)


@pytest.fixture(scope="module")
def chat_tokenizer():
    text = "It is four. The answer is four. Two and two make four. Python is a language. " * 20
    return train_bpe(iter([text]), 300, min_frequency=1)


def test_missing_stop_penalty_and_truncation(chat_tokenizer):
    tok = chat_tokenizer
    stop, pad = tok.convert_tokens_to_ids(IM_END), tok.pad_token_id
    ended = tok("It is four." + IM_END)["input_ids"][-3:]
    cut = tok("Two and two")["input_ids"][-3:]
    assert ended[-1] == stop and stop not in cut and len(ended) == len(cut) == 3
    replies = T([ended, cut])
    close(pm.penalize_missing_stop(T([1.0, 1.0]), replies, stop, 0.5), [1.0, 0.5])
    close(pm.penalize_missing_stop(T([1.0, 1.0]), replies, stop, None), [1.0, 1.0])
    # Everything after the first stop token becomes padding; the stop token stays.
    a, b = cut[0], cut[1]
    truncated = pm.truncate_at_stop(T([[a, stop, b], [stop, a, b], [a, b, a]]), stop, pad)
    assert truncated.tolist() == [[a, stop, pad], [stop, pad, pad], [a, b, a]]
    assert pm.last_token_indices(truncated, pad).tolist() == [1, 0, 2]
    assert pm.last_token_indices(T([[pad, pad, pad]]), pad).tolist() == [-1]


def test_turn_end_appended_after_the_stop_token():
    # Pad 0, stop 9, the template's end of turn [5, 6]: the reply that ended gets it after its stop
    # token and its last index moves by 2; one cut at the width and one all pad keep theirs.
    replies, last = T([[3, 9, 0], [3, 4, 4], [0, 0, 0]]), T([1, 2, -1])
    widened, moved = pm.append_after_stop(replies, last, 9, [5, 6], 0)
    assert widened.tolist() == [[3, 9, 5, 6, 0], [3, 4, 4, 0, 0], [0, 0, 0, 0, 0]]
    assert moved.tolist() == [3, 2, -1]
    same, kept = pm.append_after_stop(replies, last, 9, [], 0)  # no end of turn: as TRL
    assert same is replies and kept is last


def test_rewards_kl_and_masks():
    # log p = log ½, log q = log ¼: k1 = log 2, k3 = (q/p - 1) - log(q/p) = ½ - 1 + log 2.
    logp, logq = torch.full((1, 3), math.log(0.5)), torch.full((1, 3), math.log(0.25))
    close(pm.kl_per_token(logp, logq, "k1"), [[math.log(2)] * 3])
    close(pm.kl_per_token(logp, logq, "k3"), [[math.log(2) - 0.5] * 3])
    with pytest.raises(ValueError):
        pm.kl_per_token(logp, logq, "k2")
    # Reply's last token at index 1 of 3: the score lands on index 2; filling the width, on its last token.
    rewards, non_score = pm.per_token_rewards(T([[0.1, 0.2, 0.0]]), T([1.0]), T([1]), kl_coef=0.5)
    close(non_score, [[-0.05, -0.1, 0.0]])
    close(rewards, [[-0.05, -0.1, 1.0]])
    close(pm.per_token_rewards(T([[0.1, 0.2, 0.4]]), T([1.0]), T([2]), kl_coef=0.5)[0], [[-0.05, -0.1, 0.8]])
    padding, padding_p1 = pm.response_masks(T([0, 1, 2]), 3)
    assert padding.tolist() == [[False, True, True], [False, False, True], [False, False, False]]
    assert padding_p1.tolist() == [[False, False, True], [False, False, False], [False, False, False]]


def test_logprobs_and_entropy():
    logits = T([[[0.0, 0.0, math.log(2.0)]]])  # probabilities ¼, ¼, ½
    close(pm.token_logprobs(logits, T([[2]])), [[math.log(0.5)]])
    close(pm.entropy_from_logits(logits), [[0.5 * math.log(4) + 0.5 * math.log(2)]])
