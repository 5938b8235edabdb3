"""The data stage's blocks under datatrove's LocalPipelineExecutor with 2 tasks keep the same
documents as the data stage itself, MinHash dedup included (each cluster keeps its lowest id)."""

from hfllm import corpus
from hfllm.data.blocks import new_rows
from hfllm.data.distributed import clean_with_datatrove
from hfllm.data.split import is_held_out
from hfllm.data.stage import DataArguments, clean


def test_datatrove_executor_keeps_what_the_data_stage_keeps(tmp_path):
    rows = list(corpus.iter_raw_documents(["pydoc_html", "licence_files", "record_lists", "pydoc_topics"], 120_000))
    args = DataArguments(test_fraction=0.1, url_blocklist_words=["/_vendor/"], num_proc=2)
    held = [is_held_out(r["text"], args.test_fraction) for r in rows]
    train_rows = [r for r, h in zip(rows, held) if not h]
    test_rows = [r for r, h in zip(rows, held) if h]
    local = clean(new_rows(train_rows), new_rows(test_rows, first_id=len(train_rows)), args)
    dedup = next(r for r in local.reports["train"] if r.block == "dedup")
    assert sum(dedup.removed.values()) > 10  # the licences' copies: dedup really acts here
    kept = clean_with_datatrove([{**r, "id": i} for i, r in enumerate(train_rows)],
                                {"heldout": list(local.test["text"])}, args, tmp_path, tasks=2)
    assert kept == sorted(local.train["id"])
