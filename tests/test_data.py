"""The embedded corpus and the data stage, on real text from this machine."""

import json
from pathlib import Path

import datasets
import pytest

from hfllm import corpus
from hfllm.data import DataArguments, load_text_dataset, run_data_stage
from hfllm.data.loading import check_texts
from hfllm.data.split import is_held_out
from hfllm.errors import DataError
from hfllm.report import Section, StageContext


def context(tmp_path):
    return StageContext(entry_id="data", run_dir=tmp_path, section=Section("data", "Data"))


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
    assert dd["train"].column_names == ["id", "text", "url", "source", "domain", "language", "quality"]
    assert not set(dd["train"]["text"]) & set(dd["test"]["text"])
    assert len(m["content_hash"]) == 64


def test_missing_column_names_dataset_and_field(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"content": "hello world"}) + "\n")
    with pytest.raises(DataError) as err:
        load_text_dataset(str(path), "train", text_field="text")
    assert str(path) in err.value.one_line() and "'text'" in err.value.one_line() and "content" in err.value.one_line()


def test_empty_corpus_is_a_clear_error(tmp_path):
    args = DataArguments(corpus_sources=["pydoc_topics"], corpus_max_bytes_per_source=0, max_doc_bytes=1,
                         output_dir=str(tmp_path / "d"))
    with pytest.raises(DataError, match="empty corpus"):
        run_data_stage(args, context=context(tmp_path))
    assert not (tmp_path / "d").exists()


def test_non_string_row_is_quarantined_with_its_row(tmp_path):
    path = tmp_path / "docs.jsonl"
    texts = [r["text"] for r in corpus.iter_documents(["pydoc_topics"])][:40]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:5] + [None] + texts[5:]))
    args = DataArguments(dataset_name=str(path), test_fraction=0.2, blocks=["extract"], output_dir=str(tmp_path / "d"))
    metrics = run_data_stage(args, context=context(tmp_path))
    assert metrics["quarantined_docs"] == 1
    (row,) = [json.loads(line) for line in (tmp_path / "d" / "quarantine.jsonl").read_text().splitlines()]
    assert (row["file"], row["row"], row["reason"]) == (str(path), 5, "not_a_string")


def test_local_file_without_test_split_gets_one(tmp_path):
    path = tmp_path / "docs.jsonl"
    texts = [r["text"] for r in corpus.iter_documents(["pydoc_topics"])]
    path.write_text("".join(json.dumps({"body": t}) + "\n" for t in texts))
    args = DataArguments(dataset_name=str(path), dataset_text_field="body", test_fraction=0.2, blocks=["extract"],
                         output_dir=str(tmp_path / "d"))
    metrics = run_data_stage(args, context=context(tmp_path))
    assert metrics["train_docs"] + metrics["test_docs"] == len(texts)
    dd = datasets.load_from_disk(str(tmp_path / "d"))
    assert "text" in dd["train"].column_names


def test_refused_input_leaves_earlier_output_as_it_was(tmp_path):
    from hfllm.pipeline import STAGES, execute_stage

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
    args = DataArguments(dataset_name=str(path), dataset_streaming=True, max_train_docs=30,
                         test_fraction=0.2, blocks=["extract"], output_dir=str(tmp_path / "d"))
    run_data_stage(args, context=context(tmp_path))
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


def test_stage_report_adds_up_and_bad_rows_are_quarantined(tmp_path):
    pages = tmp_path / "pages"
    pages.mkdir()
    for name in corpus.PYDOC_MODULES[:11]:
        (pages / f"{name}.html").write_text(corpus.pydoc_page(name))
    (pages / "latin1.html").write_bytes("<html><body><p>caf\xe9</p></body></html>".encode("latin-1"))
    (pages / "not_html.html").write_text("just words, no markup at all " * 20)
    (pages / "empty.html").write_text("   \n")
    (pages / "image.png").write_bytes(b"\x89PNG\r\n")
    texts = [r["text"] for r in corpus.iter_documents(["pydoc_topics"])][:30]
    lines = [json.dumps({"text": t, "url": f"https://example.org/{i}"}) for i, t in enumerate(texts)]
    lines[3] = "{not json"
    lines[4] = json.dumps({"text": "x" * 600_000})
    (pages / "docs.jsonl").write_text("\n".join(lines) + "\n")
    args = DataArguments(dataset_name=str(pages), test_fraction=0.2, max_doc_bytes=500_000,
                         output_dir=str(tmp_path / "d"), num_proc=1, quality_reference="python_reference")
    metrics = run_data_stage(args, context=context(tmp_path))
    report = json.loads((tmp_path / "d" / "report.json").read_text())
    assert report["quarantined"] == {"empty": 1, "malformed_json": 1, "not_html": 1, "not_utf8": 1, "too_large": 1,
                                     "unsupported_file": 1}
    quarantined = [json.loads(line) for line in (tmp_path / "d" / "quarantine.jsonl").read_text().splitlines()]
    named = {(Path(q["file"]).name, q["row"], q["reason"]) for q in quarantined}
    assert named >= {("docs.jsonl", 3, "malformed_json"), ("latin1.html", 0, "not_utf8")}
    for split in ("train", "test"):
        blocks = report["blocks"][split]
        assert all(b["in"] == b["kept"] + sum(b["removed"].values()) for b in blocks)
        assert all(a["kept"] == b["in"] for a, b in zip(blocks, blocks[1:]))
        assert blocks[-1]["kept"] == report["kept"][split]
    assert report["blocks"]["train"][0]["in"] == report["train_rows"]
    assert report["input_rows"] == report["train_rows"] + report["held_out_rows"] + len(quarantined)
    assert metrics["train_docs"] == report["kept"]["train"] > 0
    dd = datasets.load_from_disk(str(tmp_path / "d"))
    assert "<td" not in "".join(dd["train"]["text"])  # the pages were extracted
    assert set(dd) == {"train", "test", "final_phase"} and (tmp_path / "d" / "mixture.json").exists()


def test_missing_column_is_one_error_naming_the_file(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"body": "no text column here"}) + "\n")
    with pytest.raises(DataError) as err:
        run_data_stage(DataArguments(dataset_name=str(path), output_dir=str(tmp_path / "d")),
                       context=context(tmp_path))
    assert str(path) in err.value.one_line() and "'text'" in err.value.one_line()


def test_held_out_text_shares_no_document_with_the_reference_set():
    from hfllm.data.stage import reference_texts

    args = DataArguments(test_fraction=0.2)
    reference = set(reference_texts(args))
    topics = [r["text"] for r in corpus.iter_documents(["pydoc_topics"])]
    held_out = {t for t in topics if is_held_out(t, 0.2)}
    assert held_out and not held_out & reference and set(topics) - held_out <= reference


@pytest.mark.parametrize("name, content, expected", [
    ("empty.jsonl", b"", "empty.jsonl: the file is empty"),
    ("broken.jsonl", b'{"text": "a"}\n{"text": "b"}\n{"text": "c"}\n{"text": "cut in the midd\n{"text": "d"}\n',
     "broken.jsonl: line 4: not JSON (Unterminated string"),
    ("latin1.txt", b"one\ntwo\n" + "caf\u00e9\n".encode("latin-1") + b"four\n", "latin1.txt: line 3: not UTF-8 text"),
])
def test_an_unreadable_file_is_one_line_naming_its_first_bad_line(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_text_dataset(str(path), "train")
    assert expected in err.value.one_line(), err.value.one_line()


def test_the_report_quotes_the_recorded_ablation(tmp_path):
    """The data stage quotes `benchmarks/data_ablation.py --record`'s figures: mean ± seed sd per
    variant and held-out set (hand-computed below), the goal's verdict, and a plot."""
    from hfllm.data.stage import quote_ablation, read_ablation
    from hfllm.errors import ConfigError

    recorded = {"recorded": "2026-12-02, a test", "profile": "tiny", "seeds": [1, 2],
                "bits_per_byte": {"text": {"raw": [2.3, 2.5], "cleaned": [2.1, 2.1]},
                                  "code": {"raw": [2.0, 2.0], "cleaned": [1.9, 1.9]}},
                "text_goal": {"raw_minus_cleaned": 0.3, "twice_sd": 0.2828, "met": True},
                "code_goal": {"raw_minus_cleaned": 0.1, "twice_sd": 0.0, "met": True}}
    path = tmp_path / "ablation.json"
    path.write_text(json.dumps(recorded))
    section = Section("data", "Data")
    quote_ablation(section, read_ablation(str(path)), str(path))
    text = "\n".join(section.blocks)
    # raw on text: mean 2.4, sample sd of (2.3, 2.5) = 0.1414
    assert "| raw | 2.400 ± 0.141 | 2.000 ± 0.000 |" in text
    assert "| cleaned | 2.100 ± 0.000 | 1.900 ± 0.000 |" in text
    assert "held-out text: raw − cleaned +0.300, goal (> 2 sd = 0.283) met" in text
    assert "(plots/data_ablation.png)" in text and len(section._figures) == 1

    for bad, says in ((tmp_path / "missing.json", "not readable"), (tmp_path / "no_table.json", "bits_per_byte")):
        if bad.name == "no_table.json":
            bad.write_text('{"profile": "tiny"}')
        with pytest.raises(ConfigError) as err:
            read_ablation(str(bad))
        assert says in str(err.value) and err.value.field == "ablation_results"
