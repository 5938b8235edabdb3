"""The embedded corpus and the data stage, on real text from this machine."""

import json

import datasets
import pytest

from hfllm import corpus
from hfllm.data import DataArguments, load_text_dataset
from hfllm.data.loading import check_texts
from hfllm.data.split import is_held_out
from hfllm.errors import DataError
from hfllm.pipeline import STAGES, execute_stage


def run_data_stage(args):
    return execute_stage(STAGES["data"], (args,))


def test_corpus_is_real_english_text_from_each_source():
    rows = list(corpus.iter_documents(max_bytes_per_source=60_000))
    sources = {r["source"] for r in rows}
    assert sources == set(corpus.SOURCES)
    text = " ".join(r["text"] for r in rows if r["source"] == "pydoc_topics")
    # help() topics are real prose about Python.
    assert "statement" in text and "expression" in text
    for source in corpus.SOURCES:
        assert sum(len(r["text"].encode()) for r in rows if r["source"] == source) <= 60_000
    assert len({r["text"] for r in rows}) == len(rows)  # exact duplicates dropped


def test_held_out_split_depends_only_on_content():
    texts = [r["text"] for r in corpus.iter_documents(["pydoc_topics"])]
    first = [is_held_out(t, 0.2) for t in texts]
    assert first == [is_held_out(t, 0.2) for t in reversed(texts)][::-1]
    assert 0 < sum(first) < len(texts)
    assert corpus.content_hash(texts) == corpus.content_hash(list(texts))
    assert corpus.content_hash(texts) != corpus.content_hash(texts[1:])


def test_data_stage_writes_splits_and_counts(tiny_run):
    dd = datasets.load_from_disk(str(tiny_run / "data"))
    manifest = json.loads((tiny_run / "data" / "manifest.json").read_text())
    m = manifest["metrics"]
    assert (len(dd["train"]), len(dd["test"])) == (m["train_docs"], m["test_docs"])
    assert dd["train"].column_names == ["text", "source"]
    assert not set(dd["train"]["text"]) & set(dd["test"]["text"])
    assert len(m["content_hash"]) == 64


def test_missing_column_names_dataset_and_field(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"content": "hello world"}) + "\n")
    with pytest.raises(DataError) as err:
        load_text_dataset(str(path), "train", text_field="text")
    assert str(path) in err.value.one_line() and "'text'" in err.value.one_line() and "content" in err.value.one_line()


def test_empty_corpus_is_a_clear_error(tmp_path):
    args = DataArguments(corpus_sources=["pydoc_topics"], corpus_min_chars=10**9, output_dir=str(tmp_path / "d"))
    with pytest.raises(DataError, match="empty corpus"):
        run_data_stage(args)
    assert not (tmp_path / "d" / "manifest.json").exists() and not (tmp_path / "d" / "dataset_dict.json").exists()


def test_non_string_row_is_named(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["a real document " * 5, None, "x" * 50]))
    args = DataArguments(dataset_name=str(path), output_dir=str(tmp_path / "d"))
    with pytest.raises(DataError, match="row 1"):
        run_data_stage(args)


def test_local_file_without_test_split_gets_one(tmp_path):
    path = tmp_path / "docs.jsonl"
    texts = [r["text"] for r in corpus.iter_documents(["pydoc_topics"])]
    path.write_text("".join(json.dumps({"body": t}) + "\n" for t in texts))
    args = DataArguments(dataset_name=str(path), dataset_text_field="body", test_fraction=0.2, output_dir=str(tmp_path / "d"))
    metrics = run_data_stage(args)["metrics"]
    assert metrics["train_docs"] + metrics["test_docs"] == len(texts)
    dd = datasets.load_from_disk(str(tmp_path / "d"))
    assert dd["train"].column_names == ["text", "source"]


def test_refused_input_leaves_earlier_output_as_it_was(tmp_path):
    out = tmp_path / "run" / "data"
    good = DataArguments(corpus_sources=["pydoc_topics"], test_fraction=0.2, output_dir=str(out))
    first = execute_stage(STAGES["data"], (good,))
    bad_file = tmp_path / "docs.jsonl"
    bad_file.write_text(json.dumps({"body": "no text column here"}) + "\n")
    bad = DataArguments(dataset_name=str(bad_file), output_dir=str(out))
    with pytest.raises(DataError, match="column not found"):
        execute_stage(STAGES["data"], (bad,))
    assert json.loads((out / "manifest.json").read_text())["fingerprint"] == first["fingerprint"]
    assert len(datasets.load_from_disk(str(out))["train"]) == first["metrics"]["train_docs"]
    assert not (tmp_path / "run" / "data.previous").exists()


def test_tokens_are_redacted_from_the_recorded_command():
    from hfllm.pipeline import redact_command

    cmd = redact_command(["pretrain.py", "--hub_token", "hf_secret", "--hub_model_id", "me/m", "--hub_token=hf_x"])
    assert "hf_secret" not in cmd and "hf_x" not in cmd and "me/m" in cmd


def test_left_out_documents_are_counted_by_reason():
    from collections import Counter

    removed = Counter()
    kept = list(corpus.iter_documents(["pydoc_topics"], min_chars=2000, removed=removed))
    from pydoc_data.topics import topics

    total = len(topics)  # every topic is either kept or counted
    assert removed[("pydoc_topics", "too_short")] > 0
    assert len(kept) + sum(removed.values()) == total


def test_streamed_dataset_keeps_the_first_documents(tmp_path):
    path = tmp_path / "docs.jsonl"
    texts = [r["text"] for r in corpus.iter_documents(["pydoc_topics"])]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    args = DataArguments(dataset_name=str(path), dataset_streaming=True, max_train_docs=30, test_fraction=0.2,
                         output_dir=str(tmp_path / "d"))
    run_data_stage(args)
    dd = datasets.load_from_disk(str(tmp_path / "d"))
    assert sorted(list(dd["train"]["text"]) + list(dd["test"]["text"])) == sorted(texts[:30])
    assert set(dd["test"]["text"]) == {t for t in texts[:30] if is_held_out(t, 0.2)}


def test_check_texts_names_the_row_past_the_first_arrow_batch():
    texts = ["doc"] * 12_000
    texts[10_003] = None
    ds = datasets.Dataset.from_dict({"text": texts})
    with pytest.raises(DataError, match="row 10003: text is None"):
        check_texts(ds, "text", "docs.jsonl")
    view = ds.select(range(10_000, 12_000))  # rows are counted in the dataset as the user sees it
    with pytest.raises(DataError, match="row 3: text is None"):
        check_texts(view, "text", "docs.jsonl")
    check_texts(ds.select(range(10_000)), "text", "docs.jsonl")


def test_check_texts_refuses_a_non_string_column():
    with pytest.raises(DataError, match="row 0: text is int64"):
        check_texts(datasets.Dataset.from_dict({"text": [1, 2]}), "text", "nums.jsonl")


def test_streamed_sample_names_a_non_string_row(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["a real document " * 5, "another " * 9, None]))
    args = DataArguments(dataset_name=str(path), dataset_streaming=True, max_train_docs=3, output_dir=str(tmp_path / "d"))
    with pytest.raises(DataError, match="row 2: text is None"):
        run_data_stage(args)
