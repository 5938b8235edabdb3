"""Contamination: n-gram overlap by hand and on real text, and the ordering test (Oren et al. 2023)
on two tiny pretraining runs — one with a test set planted 10 times, one without."""

import itertools
import time

import pytest
from tiny_lm import pretrain, single_thread, tiny_llama, tokenizer_for  # noqa: F401 (autouse fixture)

from hfllm import corpus
from hfllm.evaluation.contamination import ngram_overlap, ordering_test, overlap_table, word_ngrams
from hfllm.evaluation.python_questions import lookup_facts


def test_word_ngrams_and_overlap_by_hand():
    assert word_ngrams("The quick, brown-fox", 2) == {("the", "quick"), ("quick", "brown"), ("brown", "fox")}
    assert word_ngrams("too short", 3) == set()
    train = {"web": ["The quick brown fox jumps over the lazy dog."], "books": ["Nothing here at all, really."]}
    evals = {"quiz": ["A quick brown fox jumps!", "nothing here at all", "no overlap whatsoever"]}
    got = {(o.train, o.eval): o for o in ngram_overlap(train, evals, n=3)}
    # quiz 3-grams: {a quick brown, quick brown fox, brown fox jumps} {nothing here at, here at all}
    # {no overlap whatsoever}: 6 in all; web shares 2 (item 1), books shares 2 (item 2).
    web, books = got["web", "quiz"], got["books", "quiz"]
    assert (web.eval_items, web.contaminated, web.eval_ngrams, web.shared_ngrams) == (3, (0,), 6, 2)
    assert (books.contaminated, books.shared_ngrams) == ((1,), 2)
    assert web.contaminated_fraction == pytest.approx(1 / 3) and web.shared_ngram_fraction == pytest.approx(1 / 3)
    headers, rows = overlap_table([web, books])
    assert len(headers) == len(rows[0]) and rows[0][:5] == ["web", "quiz", 3, 3, "1 (33.3%)"]


def test_overlap_finds_exactly_the_planted_documents_in_real_text():
    docs = [row["text"] for row in corpus.iter_documents(("pydoc_topics", "stdlib_docstrings"))]
    held_out, train = docs[::10], [d for i, d in enumerate(docs) if i % 10]
    planted = train + held_out[:7]  # seven evaluation documents leak into training
    # Evaluation items: a 40-word passage from the middle of each held-out document.
    items = [" ".join(d.split()[len(d.split()) // 2 :][:40]) for d in held_out]
    start = time.perf_counter()
    got = {o.train: o for o in ngram_overlap({"clean": train, "planted": planted}, {"heldout": items})}
    seconds = time.perf_counter() - start
    train_bytes = sum(len(d.encode()) for d in train + planted)
    print(f"n-gram overlap: {train_bytes / 1e6:.1f} MB of training text in {seconds:.1f} s")
    # The few items that overlap the clean training text are boilerplate shared between documents.
    assert set(got["planted"].contaminated) == set(got["clean"].contaminated) | set(range(7))
    assert got["clean"].contaminated_items < len(items) / 4


def _examples(n: int) -> list[str]:
    """A test set: look-up facts written out as question and answer."""
    return [f"Q: {f.question}\nA: {f.answer}" for f in lookup_facts(["next_word"], seed=3)[:n]]


@pytest.mark.training
def test_ordering_test_detects_a_test_set_planted_ten_times(tmp_path):
    """Two 2×128 Llamas, 300 steps each on 155 kB of reference text, one with the 40-example test set
    written into it 10 times (≈ 1 CPU-minute each). The tiny run reads its corpus ≈ 9 times, so the
    planted order is seen ≈ 90 times; at one pass (10 sightings) a model this small does not learn
    the order (p ≈ 0.4 measured) — Oren et al. tested 1.4B-parameter models."""
    examples = _examples(40)
    background = [row["text"] for row in itertools.islice(corpus.iter_documents(("pydoc_topics",)), 30)]
    tokenizer = tokenizer_for(background + examples, vocab_size=1024)
    planted_copy = "\n\n".join(examples)
    p_values = {}
    for name, documents in {"planted": background + [planted_copy] * 10, "clean": background}.items():
        model = pretrain(tiny_llama(tokenizer, layers=2, hidden=128, heads=4, context=128), tokenizer, documents,
                         tmp_path / name, steps=300, batch_size=16)
        result = ordering_test(model, tokenizer, examples, shards=10, permutations=20, seed=0)
        p_values[name] = result.p_value
        print(name, result)
    assert p_values["planted"] < 0.01 and p_values["clean"] > 0.05, p_values
