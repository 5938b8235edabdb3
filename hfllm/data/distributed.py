"""The data stage's cleaning blocks under datatrove's executors, unchanged: beyond one machine,
the same filters run as datatrove pipeline steps on Slurm or Ray (`SlurmPipelineExecutor`,
`RayPipelineExecutor` take the same step lists as the `LocalPipelineExecutor` used here).

Three passes, as datatrove's own MinHash dedup needs:
1. (N tasks) read JSONL → per-document blocks → `DedupSignatures` → write JSONL;
2. (1 task) `DedupClusters`: every task's signatures → duplicates.json (lowest id kept);
   then, once, the quality classifier is trained on what pass 1 kept (less the duplicates) and
   the decontamination index is built, exactly as the data stage does;
3. (N tasks) read pass 1's JSONL → `DropDuplicates` → `QualityFilter` → `Decontaminate` → write.

`clean_with_datatrove` runs the three passes with `LocalPipelineExecutor` and returns the kept
documents' ids; the tests check that they are the ones the data stage keeps.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from hfllm.data.decontaminate import Decontaminate, NGramIndex
from hfllm.data.dedup import DedupClusters, DedupSignatures, DropDuplicates
from hfllm.data.quality import FILE as CLASSIFIER_FILE
from hfllm.data.quality import QualityFilter, train_quality_classifier
from hfllm.data.stage import DataArguments, build_blocks, minhasher, quality_threshold, reference_texts


def _read_jsonl_folder(folder: Path) -> list[dict]:
    rows = []
    for path in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as f:
            rows += [json.loads(line) for line in f]
    return rows


def clean_with_datatrove(train_rows: list[dict], evaluation_sets: dict[str, list[str]], args: DataArguments,
                         work_dir: str | Path, tasks: int = 2) -> list[int]:
    """Ids of the training rows (`{"id", "text", "url", "source", "format"}`) that the blocks keep,
    run as datatrove pipelines with `tasks` tasks each (the rows are split into `tasks` input files
    in id order)."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    work = Path(work_dir)
    inputs = work / "input"
    inputs.mkdir(parents=True, exist_ok=True)
    for t, part in enumerate(np.array_split(np.arange(len(train_rows)), tasks)):
        with (inputs / f"{t:05d}.jsonl").open("w") as f:
            for i in part:
                row = train_rows[int(i)]
                metadata = {k: row.get(k, "") for k in ("url", "source", "format")}
                f.write(json.dumps({"id": str(row["id"]), "text": row["text"], "metadata": metadata}) + "\n")

    hasher = minhasher(args)
    blocks = [b for b in build_blocks(args)]
    passes = [
        [JsonlReader(str(inputs)), *blocks,
         *([DedupSignatures(str(work / "signatures"), hasher)] if "dedup" in args.blocks else []),
         JsonlWriter(str(work / "pass1"))],
    ]
    LocalPipelineExecutor(passes[0], tasks=tasks, workers=tasks, logging_dir=str(work / "logs1")).run()
    pass3 = [JsonlReader(str(work / "pass1"))]
    if "dedup" in args.blocks:
        LocalPipelineExecutor([DedupClusters(str(work / "signatures"), str(work / "duplicates"))], tasks=1,
                              logging_dir=str(work / "logs2")).run()
        pass3.append(DropDuplicates(duplicates_file=str(work / "duplicates")))
        duplicates = {int(k) for k in json.loads((work / "duplicates" / "duplicates.json").read_text())}
    else:
        duplicates = set()
    pass1 = sorted(_read_jsonl_folder(work / "pass1"), key=lambda r: int(r["id"]))
    survivors = [r for r in pass1 if int(r["id"]) not in duplicates]
    texts = [r["text"] for r in survivors]
    domains = [r["metadata"].get("domain", "") for r in survivors]
    if "decontaminate" in args.blocks:  # boilerplate counted before dedup, as the data stage does
        index = NGramIndex.build(evaluation_sets, n=args.decontaminate_ngram)
        index.without_frequent([r["text"] for r in pass1], args.decontaminate_max_train_docs).save(work / "ngrams.npz")
    if "quality" in args.blocks:
        classifier = train_quality_classifier(reference_texts(args), texts, name=args.quality_reference,
                                              seed=args.seed)
        classifier.save(work)
        min_score = quality_threshold(classifier, texts, domains, args)
        pass3.append(QualityFilter(classifier_file=str(work / CLASSIFIER_FILE), min_score=min_score,
                                   domains=args.quality_domains))
    if "decontaminate" in args.blocks:
        pass3.append(Decontaminate(index_file=str(work / "ngrams.npz")))
    pass3.append(JsonlWriter(str(work / "output")))
    LocalPipelineExecutor(pass3, tasks=tasks, workers=tasks, logging_dir=str(work / "logs3")).run()
    return sorted(int(r["id"]) for r in _read_jsonl_folder(work / "output"))
