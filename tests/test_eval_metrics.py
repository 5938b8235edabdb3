"""Bits per byte across stages, per text, and as an `evaluate` module loaded offline from hfllm."""

import itertools
import math

import evaluate
import pytest
from tiny_lm import single_thread, tiny_llama, tokenizer_for  # noqa: F401 (autouse fixture)

from hfllm import corpus
from hfllm.evaluation.bpb import PERPLEXITY_CAVEAT, language_model_scores, nll_per_text, score_texts
from hfllm.evaluation.metrics import metric_path


@pytest.fixture(scope="module")
def texts():
    return [row["text"] for row in itertools.islice(corpus.iter_documents(("pydoc_topics",)), 12)]


@pytest.fixture(scope="module")
def model_and_tokenizer(texts):
    tokenizer = tokenizer_for(texts)
    return tiny_llama(tokenizer, context=64), tokenizer


def test_per_text_scores_add_up_to_the_total_and_match_texts_scored_alone(texts, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    per_text = nll_per_text(model, tokenizer, texts[:5], batch_size=4)
    total = score_texts(model, tokenizer, texts[:5], batch_size=4)
    assert sum(s.nll_nats for s in per_text) == pytest.approx(total.nll_nats, rel=1e-12)
    assert [s.bytes for s in per_text] == [len(t.encode()) for t in texts[:5]]
    for text, score in zip(texts[:5], per_text):  # alone, in other batches: the same number
        assert score.nll_nats == pytest.approx(score_texts(model, tokenizer, [text], batch_size=3).nll_nats, rel=1e-6)


def test_language_model_scores_give_perplexity_only_for_pretraining_style_models(texts, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    pretrained = language_model_scores(model, tokenizer, texts[:3], pretraining_style=True)
    tuned = language_model_scores(model, tokenizer, texts[:3], pretraining_style=False)
    reference = score_texts(model, tokenizer, texts[:3])
    assert pretrained["bits_per_byte"] == tuned["bits_per_byte"] == reference.bits_per_byte
    assert pretrained["perplexity"] == pytest.approx(math.exp(reference.nll_nats / reference.tokens))
    assert "perplexity" not in tuned
    assert "tokenizer" in PERPLEXITY_CAVEAT and "bits per byte" in PERPLEXITY_CAVEAT


def test_bits_per_byte_evaluate_module_loads_offline_and_equals_score_texts(texts, model_and_tokenizer, tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tokenizer = model_and_tokenizer
    metric = evaluate.load(metric_path("bits_per_byte"))
    expected = score_texts(model, tokenizer, texts[:4], batch_size=2)
    out = metric.compute(predictions=texts[:4], model=model, tokenizer=tokenizer, batch_size=2)
    assert out["bits_per_byte"] == expected.bits_per_byte
    assert (out["tokens"], out["bytes"]) == (expected.tokens, expected.bytes)
    # From a model directory, as `evaluate` users pass a model id.
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    from_dir = metric.compute(predictions=texts[:4], model_id=str(tmp_path / "model"), batch_size=2)
    assert from_dir["bits_per_byte"] == pytest.approx(expected.bits_per_byte, rel=1e-6)
    with pytest.raises(ValueError, match="either model"):
        metric.compute(predictions=texts[:1])
    with pytest.raises(ValueError, match="has bits_per_byte"):
        metric_path("bleu")
