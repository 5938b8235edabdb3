"""Log-likelihood of a continuation after a context, one plain forward pass per request.

hfllm's own scorer, the independent check on lm-eval's numbers (the tests compare the two on the
same requests to 1e-4). The definition is the harness's: the continuation's tokens are those the
whole text has beyond the context's own tokens (whitespace ending the context moves to the
continuation, so " B" is scored as a word), an empty context is replaced by the prefix token
(bos, else eos), and a pair longer than the model's context keeps its last `max_length + 1`
tokens — computed here without lm-eval's batching, padding, sorting or logits cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hfllm.evaluation.bpb import model_max_length, prefix_token_id


@dataclass(frozen=True)
class ContinuationScore:
    loglikelihood: float  # natural log
    is_greedy: bool  # every continuation token is the model's top choice
    truncated: bool  # the context was cut on the left to fit


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of the context and of the continuation as it follows that context."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    if not context:
        return [prefix_token_id(tokenizer)], tokenizer(continuation, add_special_tokens=False)["input_ids"]
    whole = tokenizer(context + continuation)["input_ids"]
    n_context = len(tokenizer(context)["input_ids"])
    return whole[:n_context], whole[n_context:]


@torch.no_grad()
def continuation_loglikelihood(model, tokenizer, context: str, continuation: str,
                               max_length: int | None = None) -> ContinuationScore:
    max_length = max_length or model_max_length(model, tokenizer)
    context_ids, continuation_ids = encode_pair(tokenizer, context, continuation)
    ids = (context_ids + continuation_ids)[-(max_length + 1):]
    device = next(model.parameters()).device
    logits = model(input_ids=torch.tensor([ids[:-1]], device=device)).logits[0].float()
    logprobs = torch.log_softmax(logits[-len(continuation_ids):], dim=-1)
    targets = torch.tensor(continuation_ids, device=device)
    return ContinuationScore(
        loglikelihood=logprobs.gather(1, targets[:, None]).sum().item(),
        is_greedy=bool((logprobs.argmax(-1) == targets).all()),
        truncated=len(context_ids) + len(continuation_ids) > max_length + 1,
    )
