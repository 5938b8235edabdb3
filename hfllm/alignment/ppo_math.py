"""PPO's maths as pure functions on tensors: what `hfllm.alignment.ppo.PPOTrainer` computes between
generating replies and stepping the optimizer, in the order it computes it.

Shapes: a rollout batch is `B` replies of `T` tokens (the generated width), one row each. Every
function is TRL 1.12's `PPOTrainer` arithmetic (its ``experimental/ppo/ppo_trainer.py``), kept
exactly, including where the score lands: one position *after* the reply's last token (that
position's log-probabilities are the `INVALID_LOGPROB` filler, so its KL term is 0 and only the
score is there), or on the last token when the reply fills the whole width. Its value estimate
(the state after the stop token) is trained; its advantage is not. Kept as TRL had it, because
hfllm's trainer is checked against TRL's to 1e-5.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

# Log-probability written where a reply has ended: the same in the policy and the reference, so
# those positions add nothing to the KL penalty (any value would; TRL used 1.0).
INVALID_LOGPROB = 1.0

KLEstimator = Literal["k1", "k3"]


def first_true_indices(bools: torch.Tensor) -> torch.Tensor:
    """Index of the first True in each row of `bools`; the row length where a row has none."""
    row_len = bools.size(-1)
    index_or_len = row_len * (~bools).long() + torch.arange(row_len, device=bools.device)
    return index_or_len.min(dim=-1).values


def truncate_at_stop(responses: torch.Tensor, stop_token_id: int, pad_token_id: int) -> torch.Tensor:
    """Every token after the first `stop_token_id` of a reply replaced by `pad_token_id` (the stop
    token is kept: it is the reply's last token)."""
    stop_at = first_true_indices(responses == stop_token_id).unsqueeze(-1)
    positions = torch.arange(responses.shape[-1], device=responses.device)
    return responses.masked_fill(positions > stop_at, pad_token_id)


def last_token_indices(responses: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """Index of each reply's last token: the first pad minus one (-1 for a reply that is all pad,
    `T - 1` for one without pad)."""
    return first_true_indices(responses == pad_token_id) - 1


def penalize_missing_stop(
    scores: torch.Tensor, responses: torch.Tensor, stop_token_id: int, penalty: float | None
) -> torch.Tensor:
    """`scores` minus `penalty` for each reply that does not contain `stop_token_id` (it was cut at
    the length limit instead of ending); unchanged where `penalty` is None."""
    if penalty is None:
        return scores
    ended = (responses == stop_token_id).any(dim=-1)
    return torch.where(ended, scores, scores - penalty)


def append_after_stop(responses: torch.Tensor, last_indices: torch.Tensor, stop_token_id: int | None,
                      suffix: list[int], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`(replies, last)`: `suffix` written after the last token of each reply that ends with
    `stop_token_id` (the chat template's text past the end of a turn), the replies widened by its
    length, and each reply's new last index; unchanged without a suffix."""
    if not suffix or stop_token_id is None:
        return responses, last_indices
    rows = torch.arange(responses.shape[0], device=responses.device)
    ended = (last_indices >= 0) & (responses[rows, last_indices.clamp(min=0)] == stop_token_id)
    widened = torch.cat([responses, responses.new_full((responses.shape[0], len(suffix)), pad_token_id)], 1)
    for offset, token in enumerate(suffix, start=1):
        widened[rows[ended], last_indices[ended] + offset] = token
    return widened, last_indices + len(suffix) * ended.long()


def response_masks(last_indices: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`(padding_mask, padding_mask_p1)`: True past each reply's last token, and True past the
    position after it (where the score sits, and whose value is still trained)."""
    positions = torch.arange(width, device=last_indices.device).expand(last_indices.shape[0], width)
    return positions > last_indices.unsqueeze(1), positions > (last_indices + 1).unsqueeze(1)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token] at each position, without materialising the log-softmax."""
    picked = torch.gather(logits, -1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) at each position: logsumexp(z) - Σ p·z."""
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator) -> torch.Tensor:
    """Per-token estimate of KL(policy ‖ reference) on tokens sampled from the policy
    (http://joschu.net/blog/kl-approx.html): k1 = log p - log q (unbiased), k3 = (q/p - 1) - log(q/p)
    (unbiased, never negative, lower variance)."""
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    if estimator == "k3":
        return log_ratio.exp() - 1 - log_ratio
    raise ValueError(f"kl_estimator must be 'k1' or 'k3', got {estimator!r}")


def score_positions(last_indices: torch.Tensor, width: int) -> torch.Tensor:
    """Where each reply's score is added: one past its last token, or the last token when the
    reply fills the width."""
    after = last_indices + 1
    return torch.where(after < width, after, last_indices)


def per_token_rewards(
    kl: torch.Tensor, scores: torch.Tensor, last_indices: torch.Tensor, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(rewards, non_score_reward)`: -kl_coef · KL at every token, plus the score at its position."""
    non_score_reward = -kl_coef * kl
    rewards = non_score_reward.clone()
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, score_positions(last_indices, rewards.shape[1])] += scores
    return rewards, non_score_reward


def masked_mean(values: torch.Tensor, mask: torch.Tensor, axis: int | None = None) -> torch.Tensor:
    """Mean of `values` where `mask` is True (over `axis`, or over everything)."""
    if axis is None:
        return (values * mask).sum() / mask.sum()
    return (values * mask).sum(axis=axis) / mask.sum(axis=axis)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `values` where `mask` is True; with Bessel's correction when `unbiased`."""
    centred = values - masked_mean(values, mask)
    variance = masked_mean(centred**2, mask)
    if unbiased:
        count = mask.sum()
        if count < 2:
            raise ValueError("an unbiased variance needs at least two unmasked values: use a larger mini-batch")
        variance = variance * count / (count - 1)
    return variance


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(values - mean) / std over the unmasked values; with `shift_mean=False` the mean is added
    back (only the scale is normalised)."""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    return whitened if shift_mean else whitened + mean


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each row, last token first:
    δ_t = r_t + γ·V_{t+1} - V_t (V_T = 0), A_t = δ_t + γ·λ·A_{t+1}; returns are A + V.
    Positions past a reply hold zero reward and zero value, so they add nothing."""
    width = rewards.shape[1]
    next_advantage = torch.zeros_like(rewards[:, 0])
    advantages = torch.zeros_like(rewards)
    for t in reversed(range(width)):
        next_value = values[:, t + 1] if t < width - 1 else 0.0
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = next_advantage
    return advantages, advantages + values


class PolicyLoss(NamedTuple):
    loss: torch.Tensor  # mean over unmasked tokens of max(-A·r, -A·clip(r, 1-ε, 1+ε))
    clipfrac: torch.Tensor  # fraction of unmasked tokens where the clipped term was the larger
    ratio: torch.Tensor  # r = exp(new - old) at every position
    log_ratio: torch.Tensor  # new - old log-probabilities at every position


def clipped_policy_loss(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
) -> PolicyLoss:
    """PPO's clipped surrogate (to minimise), over the tokens where `mask` is True."""
    log_ratio = new_logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    return PolicyLoss(loss, clipfrac, ratio, log_ratio)


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(loss, clipfrac)`: ½ · mean over unmasked positions of the larger of (V - R)² and
    (clip(V, V_old ± ε) - R)², and the fraction where the clipped one was larger."""
    clipped_values = torch.clamp(values, old_values - cliprange_value, old_values + cliprange_value)
    unclipped_error = torch.square(values - returns)
    clipped_error = torch.square(clipped_values - returns)
    loss = 0.5 * masked_mean(torch.max(unclipped_error, clipped_error), mask)
    clipfrac = masked_mean((clipped_error > unclipped_error).float(), mask)
    return loss, clipfrac
