"""Bits per byte of a causal language model on texts: hfllm's held-out metric as an `evaluate` module.

    bits_per_byte = (Σ over texts of the token NLL in nats) / ln 2 / (Σ UTF-8 bytes)

computed by `hfllm.evaluation.bpb.score_texts` (each text scored alone from the prefix token, long
texts in lm-eval's disjoint rolling windows), so it equals the evaluation stage's number and
lm-eval's `bits_per_byte`. It does not depend on the tokenizer, so models with different
vocabularies compare on it.
"""

import datasets
import evaluate

from hfllm.evaluation.bpb import score_texts

_CITATION = ""
_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): the texts to score.
    model: a transformers causal LM object; or
    model_id (str): a local model directory (or Hub id) to load it from, with its tokenizer.
    tokenizer: the model's tokenizer (with `model`).
    batch_size (int): windows per forward pass (default 8).
    max_length (int): window length in tokens (default: the model's context, lm-eval's rule).
Returns:
    bits_per_byte, nll_nats, tokens, bytes, perplexity (exp of the mean token NLL; tokenizer-dependent).
Examples:
    >>> bpb = evaluate.load("<hfllm>/evaluation/metrics/bits_per_byte")
    >>> bpb.compute(predictions=["Some held-out text."], model_id="runs/demo/pretrain")["bits_per_byte"]
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class BitsPerByte(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions, model=None, tokenizer=None, model_id=None, batch_size=8, max_length=None):
        if (model is None) == (model_id is None):
            raise ValueError("pass either model (with tokenizer) or model_id")
        if model_id is not None:
            from hfllm.modeling import load_causal_lm, load_tokenizer

            model = load_causal_lm(model_id, field="model_id")
            tokenizer = load_tokenizer(model_id, field="model_id")
        elif tokenizer is None:
            raise ValueError("a model object needs its tokenizer")
        score = score_texts(model, tokenizer, predictions, max_length=max_length, batch_size=batch_size)
        return {"bits_per_byte": score.bits_per_byte, "nll_nats": score.nll_nats, "tokens": score.tokens,
                "bytes": score.bytes, "perplexity": score.perplexity}
