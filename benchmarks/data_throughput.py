"""Data-stage throughput.

(a) hfllm's blocks set to datatrove's Gopher and C4 thresholds (`rules="gopher_c4"`, domain rules
    off) plus MinHash dedup (datatrove's 5-gram, 14 × 8 setting), run through `datasets.map` with 2
    processes, against datatrove's own pipeline (GopherQualityFilter, C4QualityFilter with spaCy
    words, then its four MinHash steps) under `LocalPipelineExecutor` with 2 workers, on the same
    documents in one run: per-document agreement (kept/removed) and docs/s of each.
(b) dedup alone (signatures + clusters) on 10k and on 100k documents drawn from this machine's
    files: time should grow no faster than ≈ linearly (10× documents ≤ 12× time).

    python benchmarks/data_throughput.py --docs 2000          # (a)
    python benchmarks/data_throughput.py --dedup 10000 100000  # (b), minutes: not for CI
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from hfllm import corpus
from hfllm.data.blocks import new_rows, run_blocks
from hfllm.data.dedup import DropDuplicates, MinHasher, find_duplicates, signature_batch
from hfllm.data.filters import QualityRules


def pool(n: int) -> list[dict]:
    """n text documents: the raw pool's text sources, then Python's files, cut into pieces."""
    rows = [r for r in corpus.iter_raw_documents(["package_texts", "metadata_files", "licence_files", "changelogs",
                                                  "pydoc_topics", "stdlib_docstrings"]) if r["format"] == "text"]
    pieces = []
    for r in rows:
        paras = r["text"].split("\n\n")
        for i in range(0, len(paras), 8):
            pieces.append({"text": "\n\n".join(paras[i:i + 8]), "url": r["url"], "source": r["source"]})
            if len(pieces) >= n:
                return pieces
    return (pieces * (n // max(len(pieces), 1) + 1))[:n]


def hfllm_run(rows: list[dict], hasher: MinHasher) -> tuple[set[int], float]:
    t = time.perf_counter()
    ds, _ = run_blocks(new_rows(rows), [QualityRules("gopher_c4")], num_proc=2)
    signed = ds.map(signature_batch, batched=True, batch_size=256, fn_kwargs={"hasher": hasher}, num_proc=2)
    dups = find_duplicates(np.asarray(signed["id"]), np.asarray(signed["_exact"]),
                           [np.asarray(b) if b else None for b in signed["_bands"]])
    kept, _ = run_blocks(ds, [DropDuplicates(dups)], num_proc=2)
    return set(kept["id"]), time.perf_counter() - t


def datatrove_run(rows: list[dict], work: Path) -> tuple[set[int], float]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    (work / "in").mkdir(parents=True)
    for t, part in enumerate(np.array_split(np.arange(len(rows)), 2)):
        with (work / "in" / f"{t}.jsonl").open("w") as f:
            f.writelines(json.dumps({"id": str(i), "text": rows[i]["text"]}) + "\n" for i in part)
    from datatrove.utils.hashing import HashConfig

    # datatrove's xxhash path needs xxhash<4 (its "processing" extra pins it); datasets has xxhash 4: sha1
    config = MinhashConfig(hash_config=HashConfig(hash_fc="sha1"))
    start = time.perf_counter()
    LocalPipelineExecutor([JsonlReader(str(work / "in")), GopherQualityFilter(), C4QualityFilter(),
                           JsonlWriter(str(work / "filtered")), MinhashDedupSignature(str(work / "sigs"), config)],
                          tasks=2, logging_dir=str(work / "l1")).run()
    LocalPipelineExecutor([MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=config)],
                          tasks=config.num_buckets, workers=2, logging_dir=str(work / "l2")).run()
    LocalPipelineExecutor([MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=config)],
                          tasks=1, logging_dir=str(work / "l3")).run()
    LocalPipelineExecutor([JsonlReader(str(work / "filtered")), MinhashDedupFilter(str(work / "remove")),
                           JsonlWriter(str(work / "out"))], tasks=2, logging_dir=str(work / "l4")).run()
    seconds = time.perf_counter() - start
    kept = set()
    for path in (work / "out").glob("*.jsonl.gz"):
        with gzip.open(path, "rt") as f:
            kept |= {int(json.loads(line)["id"]) for line in f}
    return kept, seconds


def compare(n: int) -> None:
    rows = pool(n)
    hasher = MinHasher(n_grams=5, bands=14, rows=8)  # datatrove's MinhashConfig defaults
    ours, our_s = hfllm_run(rows, hasher)
    with tempfile.TemporaryDirectory() as tmp:
        theirs, their_s = datatrove_run(rows, Path(tmp))
    agree = sum((i in ours) == (i in theirs) for i in range(len(rows))) / len(rows)
    print(f"(a) {len(rows)} docs: agreement {agree:.2%} (hfllm keeps {len(ours)}, datatrove {len(theirs)}); "
          f"hfllm {len(rows) / our_s:.0f} docs/s, datatrove {len(rows) / their_s:.0f} docs/s, "
          f"{their_s / our_s:.2f}×")


def dedup_scaling(sizes: list[int]) -> None:
    hasher = MinHasher()
    times = {}
    for n in sizes:
        ds = new_rows(pool(n))
        t = time.perf_counter()
        signed = ds.map(signature_batch, batched=True, batch_size=256, fn_kwargs={"hasher": hasher}, num_proc=2)
        dups = find_duplicates(np.asarray(signed["id"]), np.asarray(signed["_exact"]),
                               [np.asarray(b) if b else None for b in signed["_bands"]])
        times[n] = time.perf_counter() - t
        print(f"(b) dedup {n} docs: {times[n]:.1f} s, {len(dups)} duplicates")
    if len(sizes) == 2:
        a, b = sizes
        print(f"(b) {b / a:.0f}× documents: {times[b] / times[a]:.1f}× time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--dedup", type=int, nargs="*", default=[])
    args = parser.parse_args()
    if args.dedup:
        dedup_scaling(args.dedup)
    else:
        compare(args.docs)


if __name__ == "__main__":
    main()
