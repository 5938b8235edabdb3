"""Property-based tests (hypothesis) on the text, packing and data-cleaning functions: on any input they
never crash, and never lose or duplicate a token or a row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hfllm.data.dedup import EXACT, find_duplicates
from hfllm.data.loading import Columns, Quarantine, admit, read_jsonl
from hfllm.data.split import is_held_out
from hfllm.packing import PackedStream, pack_documents

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
documents = st.lists(st.text(min_size=0, max_size=120), min_size=0, max_size=25)


@pytest.fixture(scope="module")
def tokenizer():
    from hfllm.corpus import iter_documents
    from hfllm.tokenizer import train_bpe

    return train_bpe((d["text"] for _, d in zip(range(20), iter_documents(("pydoc_topics",)))), 300)


def token_stream(tokenizer, texts: list[str]) -> list[int]:
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    return [t for doc in ids for t in [tokenizer.bos_token_id, *doc, tokenizer.eos_token_id]]


@SETTINGS
@given(texts=documents, block=st.integers(1, 40))
def test_packing_keeps_every_token_in_order_and_drops_only_the_tail(tokenizer, texts, block):
    import datasets

    blocks = pack_documents(datasets.Dataset.from_dict({"text": texts}, features=datasets.Features(
        {"text": datasets.Value("string")})), tokenizer, "text", block)["input_ids"]
    stream = token_stream(tokenizer, texts)
    assert all(len(b) == block for b in blocks)
    assert [t for b in blocks for t in b] == stream[: len(stream) // block * block]


@SETTINGS
@given(texts=documents.filter(bool), block=st.integers(1, 16), window=st.integers(1, 7), seed=st.integers(0, 3),
       stop=st.integers(0, 60))
def test_a_stream_yields_each_block_once_and_resumes_at_any_block(tokenizer, texts, block, window, seed, stop):
    import datasets

    source = datasets.Dataset.from_dict({"text": texts}, features=datasets.Features(
        {"text": datasets.Value("string")})).to_iterable_dataset()
    stream = PackedStream(source, tokenizer, "text", block, shuffle_blocks=window, seed=seed, read_batch=3)
    rows = list(stream)
    ids = token_stream(tokenizer, texts)
    cut = [ids[i: i + block] for i in range(0, len(ids) // block * block, block)]
    assert sorted(map(tuple, (r["input_ids"] for r in rows))) == sorted(map(tuple, cut))  # none lost, none twice
    assert [r["block_index"] for r in rows] == list(range(1, len(rows) + 1))
    if not rows:
        return
    k = min(stop, len(rows) - 1) + 1  # resume after the k-th block
    position = stream.position_after(k)
    resumed = PackedStream(source, tokenizer, "text", block, position, shuffle_blocks=window, seed=seed,
                           read_batch=3)
    assert [r["input_ids"] for r in resumed] == [r["input_ids"] for r in rows[k:]]


@SETTINGS
@given(text=st.text(max_size=300), fraction=st.floats(0.0, 1.0))
def test_the_held_out_split_is_a_pure_function_of_the_text(text, fraction):
    assert is_held_out(text, fraction) == is_held_out(text, fraction)
    assert not is_held_out(text, 0.0)


lines = st.one_of(
    st.builds(lambda t: json.dumps({"text": t}).encode(), st.text(max_size=80)),
    st.builds(lambda t: json.dumps({"text": t}, ensure_ascii=False).encode(), st.text(max_size=80)),
    st.binary(max_size=60).filter(lambda b: b"\n" not in b and b"\r" not in b),
    st.builds(lambda v: json.dumps({"text": v}).encode(),
              st.one_of(st.integers(), st.none(), st.lists(st.integers()))),
    st.just(b'{"text": "cut'),
)


@SETTINGS
@given(rows=st.lists(lines, min_size=1, max_size=30))
def test_every_jsonl_line_is_kept_or_quarantined_once(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("jsonl") / "rows.jsonl"
    path.write_bytes(b'{"text": "first"}\n' + b"\n".join(rows) + b"\n")
    quarantine = Quarantine()
    kept = []
    for index, row in read_jsonl(path, Columns(), quarantine, "test"):
        if admit(row, str(path), index, quarantine, max_bytes=10_000) is not None:
            kept.append(index)
    quarantined = [q["row"] for q in quarantine.rows]
    non_blank = [i for i, line in enumerate(path.read_bytes().split(b"\n")[:-1]) if line.strip()]
    assert sorted(kept + quarantined) == non_blank  # every line once: kept, or quarantined with its reason
    assert sum(quarantine.counts().values()) == len(quarantined)


@SETTINGS
@given(keys=st.lists(st.integers(0, 5), min_size=1, max_size=40), shuffle=st.randoms(use_true_random=False))
def test_exact_dedup_keeps_the_lowest_id_of_each_text_and_removes_the_rest_once(keys, shuffle):
    ids = list(range(100, 100 + len(keys)))
    order = list(range(len(keys)))
    shuffle.shuffle(order)
    removed = find_duplicates(np.array([ids[i] for i in order]), np.array([keys[i] for i in order]),
                              [None] * len(keys))
    kept = [i for i in ids if i not in removed]
    assert set(removed.values()) <= {EXACT}
    assert sorted(kept) == sorted(min(i for i, k in zip(ids, keys) if k == key) for key in set(keys))
    assert len(kept) + len(removed) == len(ids)


def test_hypothesis_is_a_dev_dependency():
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"hypothesis' in text.split("dev = [", 1)[1].split("]", 1)[0]
