"""Cleaning blocks: each one a datatrove filter step, run here through `datasets` or there under
datatrove's executors, unchanged.

A block is a `datatrove.pipeline.filters.base_filter.BaseFilter`: `filter(doc)` returns True to
keep a document, False or `(False, reason)` to remove it, and may rewrite `doc.text` (counted as
modified) or set a label in `doc.metadata` (`domain`, `language`, `quality`). Under datatrove's
executors (local, Slurm, Ray) a block is a pipeline step like any other: its stats, its exclusion
writer. In the data stage, `run_blocks` applies the same `filter_batch` to a `datasets.Dataset`
with `map(num_proc=…)` and returns the kept rows and one `BlockReport` per block, in which
`in = kept + Σ removed` holds by construction.

A row is a document: `id` (its row number in the raw pool, so every document can be traced and
each duplicate cluster keeps its lowest id), `text`, and the metadata columns below.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter, get_filter_result

# Columns carried as document metadata, with the value a fresh row has.
METADATA_COLUMNS: dict[str, Any] = {"url": "", "source": "", "format": "text", "domain": "", "language": "",
                                    "quality": float("nan")}
FEATURES = datasets.Features({
    "id": datasets.Value("int64"), "text": datasets.Value("string"), "url": datasets.Value("string"),
    "source": datasets.Value("string"), "format": datasets.Value("string"), "domain": datasets.Value("string"),
    "language": datasets.Value("string"), "quality": datasets.Value("float64"),
})
COUNTS = "_counts"  # metadata key where a block notes what it changed (e.g. e-mails replaced)
EXAMPLES_PER_REASON = 3
EXAMPLE_CHARS = 300


class Block(BaseFilter):
    """A datatrove filter with a short `name` for reports and a way to count what it rewrote."""

    name = "block"

    def count(self, doc: Document, what: str, n: int = 1) -> None:
        """Count `n` changes of kind `what` in this document: in datatrove's stats and, for the
        data stage's report, in the document itself (read back and cleared by `run_blocks`)."""
        if n:
            self.stat_update(what, value=n)
            counts = doc.metadata.setdefault(COUNTS, {})
            counts[what] = counts.get(what, 0) + n


def new_rows(rows: list[dict[str, Any]], first_id: int = 0) -> datasets.Dataset:
    """Rows `{"text", "url"?, "source"?, "format"?}` → a dataset with every column, ids from `first_id`."""
    full = [{**METADATA_COLUMNS, "id": first_id + i, **{k: v for k, v in r.items() if k in FEATURES}}
            for i, r in enumerate(rows)]
    return datasets.Dataset.from_list(full, features=FEATURES)


def to_document(row: dict[str, Any]) -> Document:
    metadata = {k: row.get(k, v) for k, v in METADATA_COLUMNS.items()}
    return Document(text=row["text"], id=str(row["id"]), metadata=metadata)


def from_document(doc: Document) -> dict[str, Any]:
    return {"id": int(doc.id), "text": doc.text, **{k: doc.metadata.get(k, v) for k, v in METADATA_COLUMNS.items()}}


@dataclass
class BlockReport:
    """What one block did: documents in, kept, removed by reason, modified (text rewritten), what
    it rewrote by kind, and a few removed documents per reason."""

    block: str
    docs_in: int = 0
    kept: int = 0
    removed: dict[str, int] = field(default_factory=dict)
    modified: int = 0
    changes: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"block": self.block, "in": self.docs_in, "kept": self.kept, "removed": self.removed,
                "modified": self.modified, "changes": self.changes, "examples": self.examples}

    @property
    def adds_up(self) -> bool:
        return self.docs_in == self.kept + sum(self.removed.values())


def _apply(batch: dict[str, list], *, blocks: list[BaseFilter]) -> dict[str, list]:
    """One batch of rows through the blocks in order; a document leaves at the block that removes it."""
    n = len(batch["id"])
    docs = [to_document({k: batch[k][i] for k in batch}) for i in range(n)]
    removed_by = [-1] * n
    reasons = [""] * n
    modified = [0] * n
    changes: list[list[dict[str, int]]] = [[{} for _ in blocks] for _ in range(n)]
    alive = list(range(n))
    for b, block in enumerate(blocks):
        if not alive:
            break
        before = [docs[i].text for i in alive]
        results = block.filter_batch([docs[i] for i in alive])
        still = []
        for i, text, result in zip(alive, before, results):
            keep, reason = get_filter_result(result)
            if docs[i].text != text:
                modified[i] |= 1 << b
            changes[i][b] = docs[i].metadata.pop(COUNTS, {})
            if keep:
                still.append(i)
            else:
                removed_by[i], reasons[i] = b, reason or "removed"
        alive = still
    out: dict[str, list] = {k: [] for k in FEATURES}
    for doc in docs:
        for k, v in from_document(doc).items():
            out[k].append(v)
    out["_removed_by"] = removed_by
    out["_reason"] = reasons
    out["_modified"] = modified
    out["_changes"] = [json.dumps(row) for row in changes]
    return out


def run_blocks(ds: datasets.Dataset, blocks: list[BaseFilter], *, num_proc: int | None = None,
               batch_size: int = 256) -> tuple[datasets.Dataset, list[BlockReport]]:
    """Run `blocks` in order over `ds` (`datasets.map`, `num_proc` processes); return the kept rows
    and one report per block."""
    if len(ds) == 0:
        return ds, [BlockReport(getattr(b, "name", type(b).__name__)) for b in blocks]
    num_proc = num_proc if num_proc and num_proc > 1 and len(ds) >= 2 * batch_size else None
    marked = ds.map(_apply, batched=True, batch_size=batch_size, num_proc=num_proc, fn_kwargs={"blocks": blocks},
                    features=datasets.Features({**FEATURES, "_removed_by": datasets.Value("int32"),
                                                "_reason": datasets.Value("string"),
                                                "_modified": datasets.Value("int64"),
                                                "_changes": datasets.Value("string")}),
                    desc="cleaning blocks")
    removed_by = np.asarray(marked["_removed_by"])
    reasons = np.asarray(marked["_reason"], dtype=object)
    modified = np.asarray(marked["_modified"], dtype=np.int64)
    changes = [json.loads(c) for c in marked["_changes"]]
    reports = []
    for b, block in enumerate(blocks):
        entered = (removed_by == -1) | (removed_by >= b)
        out_here = removed_by == b
        report = BlockReport(getattr(block, "name", type(block).__name__), docs_in=int(entered.sum()),
                             kept=int((entered & ~out_here).sum()),
                             removed=dict(sorted(Counter(reasons[out_here]).items())),
                             modified=int(((modified >> b) & 1).sum()))
        total: Counter[str] = Counter()
        for row in changes:
            total.update(row[b])
        report.changes = dict(sorted(total.items()))
        for reason in report.removed:
            rows = np.flatnonzero(out_here & (reasons == reason))[:EXAMPLES_PER_REASON]
            report.examples[reason] = [{"id": marked[int(i)]["id"], "url": marked[int(i)]["url"],
                                        "text": marked[int(i)]["text"][:EXAMPLE_CHARS]} for i in rows]
        reports.append(report)
    kept = marked.select(np.flatnonzero(removed_by == -1)).remove_columns(["_removed_by", "_reason", "_modified",
                                                                          "_changes"])
    return kept, reports
