"""The data stage: read the raw pool, fix the held-out split, run the cleaning blocks, and save the
cleaned `DatasetDict` (`train`, `test`, `final_phase`) with `report.json`, `quarantine.jsonl`,
`mixture.json` and the quality classifier beside it.

Order: extract → urls → domains → language → rules (per domain) → unsafe+pii → dedup → quality →
decontaminate. The held-out split is decided from each raw document's content before any block
runs (`hfllm.data.split.is_held_out`), then cleaned by the same blocks up to dedup (it is scored by
the quality classifier but not filtered by it, and it is what the training split is
decontaminated against). `blocks` picks which blocks run (the ablation's "raw" variant runs
extraction alone). `build_blocks` gives the same blocks to datatrove's executors
(`hfllm.data.distributed`). The embedded pool's sources and the reference set are read in
`num_proc` processes, one source each at a time (parsing docstrings and rendering pydoc pages is
most of the reading).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from hfllm import corpus
from hfllm.data.blocks import BlockReport, new_rows, run_blocks
from hfllm.data.decontaminate import Decontaminate, NGramIndex
from hfllm.data.dedup import DropDuplicates, MinHasher, find_duplicates, signature_batch
from hfllm.data.domains import ClassifyDomain
from hfllm.data.extract import EXTRACTORS, ExtractText
from hfllm.data.filters import QualityRules
from hfllm.data.language import LanguageFilter
from hfllm.data.loading import (
    Columns,
    Quarantine,
    _is_local_dataset_dir,
    admit,
    load_text_dataset,
    read_dataset_rows,
    read_local_files,
)
from hfllm.data.mixture import DEFAULT_WEIGHTS, domain_mixture, top_quality_subset
from hfllm.data.pii import UnsafeAndPII
from hfllm.data.quality import QualityClassifier, QualityFilter, train_quality_classifier
from hfllm.data.split import is_held_out
from hfllm.data.urls import UrlBlocklist
from hfllm.errors import ConfigError, DataError
from hfllm.report import TASKS_DIR, Section, StageContext

BLOCKS = ("extract", "urls", "domains", "language", "rules", "unsafe_pii", "dedup", "quality", "decontaminate")
PER_DOCUMENT = BLOCKS[:6]
REPORT = "report.json"
OUTPUT_COLUMNS = ["id", "text", "url", "source", "domain", "language", "quality"]
REFERENCE_SETS = {"python_reference": ("pydoc_topics", "stdlib_docstrings")}
REFERENCE_MAX_BYTES = 600_000  # per source: enough to train on (parsing every stdlib docstring takes ~10 s)


@dataclass
class DataArguments:
    """Where the text comes from, how it is split, and how it is cleaned. No `dataset_name`: the
    embedded offline pool (`corpus_sources`)."""

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub dataset id, local `save_to_disk` dir, a json/jsonl/parquet/csv/txt/html/warc file, "
                  "or a folder of HTML pages, WARC and JSONL files. Unset: the embedded offline pool."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_test_split: str = field(default="test", metadata={"help": "Held-out split (made if missing)."})
    dataset_text_field: str = field(default="text", metadata={"help": "Column holding the document text."})
    dataset_html_field: str | None = field(default="html", metadata={"help": "Column holding HTML, if any."})
    dataset_url_field: str | None = field(default="url", metadata={"help": "Column holding the URL, if any."})
    dataset_streaming: bool = field(
        default=False, metadata={"help": "Stream the dataset and keep the first max_train_docs (no full download)."}
    )
    corpus_sources: list[str] = field(
        default_factory=lambda: list(corpus.RAW_SOURCES),
        metadata={"help": "Embedded pool sources, in order (hfllm.corpus RAW_SOURCES and SOURCES)."},
    )
    corpus_max_bytes_per_source: int | None = field(
        default=None, metadata={"help": "Cap on UTF-8 bytes taken from each embedded source."}
    )
    test_fraction: float = field(default=0.05, metadata={"help": "Held-out fraction when no test split exists."})
    max_train_docs: int | None = field(default=None, metadata={"help": "Keep at most this many raw training docs."})
    max_doc_bytes: int = field(default=2_000_000, metadata={"help": "Larger documents are quarantined."})
    blocks: list[str] = field(default_factory=lambda: list(BLOCKS), metadata={"help": f"Blocks to run: {BLOCKS}."})
    extractor: str = field(default="resiliparse", metadata={"help": f"HTML text extractor: {EXTRACTORS}."})
    url_blocklist_domains: list[str] = field(default_factory=list, metadata={"help": "Blocked domains."})
    url_blocklist_words: list[str] = field(default_factory=list, metadata={"help": "Blocked words in URLs."})
    languages: list[str] = field(default_factory=lambda: ["en"], metadata={"help": "Languages kept."})
    language_min_score: float = field(default=0.5, metadata={"help": "Least language probability kept."})
    rules: str = field(default="domain", metadata={"help": "'domain' (rules per domain) or 'gopher_c4' (all docs)."})
    unsafe_words: list[str] = field(default_factory=list, metadata={"help": "Documents with these words go."})
    replace_pii: bool = field(default=True, metadata={"help": "Replace e-mails, public IPs, phone numbers."})
    minhash_ngrams: int = field(default=5, metadata={"help": "Words per MinHash shingle."})
    minhash_bands: int = field(default=14, metadata={"help": "LSH bands."})
    minhash_rows: int = field(default=11, metadata={"help": "MinHash values per band (14 × 11: Jaccard ≈ 0.79)."})
    quality_reference: str = field(
        default="python_reference",
        metadata={"help": "High-quality reference set: python_reference (offline) or a dataset name."},
    )
    quality_min_score: float | None = field(default=None, metadata={"help": "Least classifier score kept."})
    quality_drop_fraction: float = field(
        default=0.1, metadata={"help": "Without quality_min_score: drop this lowest-scoring fraction of judged docs."}
    )
    quality_domains: list[str] = field(default_factory=lambda: ["prose", "reference"],
                                       metadata={"help": "Domains the quality classifier filters."})
    mixture_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS),
                                              metadata={"help": "Sampling weight per domain."})
    final_phase_fraction: float = field(
        default=0.2, metadata={"help": "The final-phase split: the best-scoring judged training docs, this share of "
                                       "their bytes (pretraining's own final_phase_fraction is a share of its steps)."}
    )
    decontaminate_ngram: int = field(default=13, metadata={"help": "n of the shared n-grams that decontaminate."})
    decontaminate_max_train_docs: int = field(
        default=10, metadata={"help": "Evaluation n-grams in more training docs than this are boilerplate, ignored."}
    )
    decontaminate_datasets: list[str] = field(
        default_factory=list, metadata={"help": "More evaluation sets (files or dataset names with a text column)."}
    )
    decontaminate_mmlu: bool = field(
        default=False, metadata={"help": "Also against the run's MMLU-format task (its test and few-shot items, "
                                         "<tasks_dir>/hfllm_mmlu), written there first when absent: the copy every "
                                         "evaluation of the run then reads."})
    mmlu_test_items: int = field(
        default=100, metadata={"help": "Test items per subject when this stage writes that task (set it as the eval "
                                       "stage's field of the same name)."})
    tasks_dir: str | None = field(
        default=None, metadata={"help": "The run's lm-eval task directory (default: <run>/tasks; a recipe run alone: "
                                        "<output_dir>/tasks)."})
    num_proc: int | None = field(default=2, metadata={"help": "Processes for the blocks (datasets.map)."})
    ablation_results: str | None = field(
        default=None, metadata={"help": "Figures `benchmarks/data_ablation.py --record` wrote (raw pool against "
                                        "the cleaned mixture), quoted in the report with a plot."})
    seed: int = field(default=0, metadata={"help": "Seed of the MinHash permutations and classifier sample."})
    output_dir: str = field(default="hfllm-data", metadata={"help": "Where the DatasetDict is saved."})

    def __post_init__(self):
        unknown = [b for b in self.blocks if b not in BLOCKS]
        if unknown:
            raise ConfigError(f"unknown block {unknown[0]!r} (known: {', '.join(BLOCKS)})", field="blocks")
        if self.extractor not in EXTRACTORS:
            raise ConfigError(f"unknown extractor {self.extractor!r} (known: {', '.join(EXTRACTORS)})",
                              field="extractor")
        if self.rules not in ("domain", "gopher_c4"):
            raise ConfigError("must be 'domain' or 'gopher_c4'", field="rules")
        if not 0 < self.test_fraction < 1:
            raise ConfigError("must be between 0 and 1", field="test_fraction")


def build_blocks(args: DataArguments) -> list:
    """The per-document blocks `args.blocks` names, in pipeline order (datatrove filters)."""
    make = {
        "extract": lambda: ExtractText(args.extractor),
        "urls": lambda: UrlBlocklist(args.url_blocklist_domains, args.url_blocklist_words),
        "domains": ClassifyDomain,
        "language": lambda: LanguageFilter(args.languages, args.language_min_score),
        "rules": lambda: QualityRules(args.rules),
        "unsafe_pii": lambda: UnsafeAndPII(args.unsafe_words, replace_emails=args.replace_pii,
                                           replace_ips=args.replace_pii, replace_phones=args.replace_pii),
    }
    return [make[name]() for name in PER_DOCUMENT if name in args.blocks]


def minhasher(args: DataArguments) -> MinHasher:
    return MinHasher(args.minhash_ngrams, args.minhash_bands, args.minhash_rows, seed=args.seed + 1)


# ---------------------------------------------------------------------------------------------
# Input


class InProcess(Executor):
    """An executor that runs each job at once, in this process (`num_proc` 1)."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def reader_pool(args: DataArguments) -> Executor:
    """Where the embedded sources and the reference set are read: `num_proc` processes, one source
    at a time each (parsing docstrings and rendering pydoc pages is most of the reading time)."""
    return ProcessPoolExecutor(args.num_proc) if args.num_proc and args.num_proc > 1 else InProcess()


def _read_source(source: str, max_bytes: int | None) -> list[dict]:
    return list(corpus.iter_raw_documents([source], max_bytes))


def read_pool(args: DataArguments, quarantine: Quarantine,
              readers: Executor | None = None) -> tuple[list[dict], list[dict] | None]:
    """Raw training rows, and the dataset's own held-out rows if it has a test split (else None).
    The embedded pool's sources are read by `readers` (default: in this process), kept in order."""
    columns = Columns(args.dataset_text_field, args.dataset_html_field, args.dataset_url_field)
    name = args.dataset_name
    if name is None:
        readers = readers or InProcess()
        jobs = [readers.submit(_read_source, source, args.corpus_max_bytes_per_source)
                for source in args.corpus_sources]
        rows, i = [], 0
        for job in jobs:
            for row in job.result():
                kept = admit(row, f"embedded:{row['source']}", i, quarantine, args.max_doc_bytes)
                i += 1
                if kept is not None:
                    rows.append(kept)
        return rows, None
    if args.dataset_streaming:
        if args.max_train_docs is None:
            raise ConfigError("a streamed dataset needs max_train_docs (how many documents to keep)",
                              field="max_train_docs")
        stream = load_text_dataset(name, args.dataset_train_split, text_field=args.dataset_text_field,
                                   config=args.dataset_config, streaming=True)
        sample = datasets.Dataset.from_list(list(stream.take(args.max_train_docs)))
        return list(read_dataset_rows(sample, columns, name, quarantine, args.max_doc_bytes)), None
    path = Path(name)
    if path.exists() and not _is_local_dataset_dir(path) and (path.is_dir() or path.suffix.lower() in (
            ".jsonl", ".json", ".html", ".htm", ".warc", ".gz", ".txt", ".md")):
        return list(read_local_files(path, columns, quarantine, args.max_doc_bytes)), None
    train = load_text_dataset(name, args.dataset_train_split, text_field=args.dataset_text_field,
                              config=args.dataset_config)
    rows = list(read_dataset_rows(train, columns, name, quarantine, args.max_doc_bytes))
    try:
        test = load_text_dataset(name, args.dataset_test_split, text_field=args.dataset_text_field,
                                 config=args.dataset_config)
    except DataError as err:
        if "no split" not in err.message and "cannot load split" not in err.message:
            raise
        return rows, None
    return rows, list(read_dataset_rows(test, columns, f"{name}[{args.dataset_test_split}]", quarantine,
                                        args.max_doc_bytes))


def reference_texts(args: DataArguments) -> list[str]:
    """The quality classifier's reference set, minus every document the held-out rule holds out."""
    if args.quality_reference in REFERENCE_SETS:
        texts = [r["text"] for r in corpus.iter_documents(REFERENCE_SETS[args.quality_reference],
                                                          max_bytes_per_source=REFERENCE_MAX_BYTES)]
    else:
        ds = load_text_dataset(args.quality_reference, "train", text_field=args.dataset_text_field)
        texts = [t for t in ds[args.dataset_text_field] if isinstance(t, str)]
    return [t for t in texts if not is_held_out(t, args.test_fraction)]


def evaluation_sets(args: DataArguments, test: datasets.Dataset,
                    tasks_dir: Path | None = None) -> dict[str, list[str]]:
    """The texts training documents must not share an n-gram with: the held-out split, each of
    `decontaminate_datasets`, and with `decontaminate_mmlu` the run's MMLU-format items in
    `tasks_dir` (written there now when absent, seeded: the eval stage then reads this copy)."""
    sets = {"heldout": list(test["text"])}
    for name in args.decontaminate_datasets:
        ds = load_text_dataset(name, "train", text_field=args.dataset_text_field)
        sets[name] = [t for t in ds[args.dataset_text_field] if isinstance(t, str)]
    if args.decontaminate_mmlu:
        from hfllm.evaluation.mmlu import TASK_FOLDER, task_texts, write_mmlu_task

        if tasks_dir is None:
            raise ConfigError("decontaminate_mmlu needs the run's task directory", field="tasks_dir")
        if not (tasks_dir / TASK_FOLDER / "task.json").exists():
            write_mmlu_task(tasks_dir, n_test=args.mmlu_test_items)
        sets["mmlu_test"] = task_texts(tasks_dir, "test")
        sets["mmlu_dev"] = task_texts(tasks_dir, "dev")
    return sets


# ---------------------------------------------------------------------------------------------
# Cleaning


def deduplicate(ds: datasets.Dataset, args: DataArguments) -> tuple[datasets.Dataset, list[BlockReport]]:
    if len(ds) == 0:  # `map` adds no columns to an empty split
        return run_blocks(ds, [DropDuplicates({})], num_proc=args.num_proc)
    signed = ds.map(signature_batch, batched=True, batch_size=256, fn_kwargs={"hasher": minhasher(args)},
                    num_proc=args.num_proc if args.num_proc and len(ds) >= 512 else None, desc="dedup signatures")
    bands = [np.asarray(b, dtype=np.int64) if b else None for b in signed["_bands"]]
    duplicates = find_duplicates(np.asarray(signed["id"]), np.asarray(signed["_exact"], dtype=np.int64), bands)
    return run_blocks(ds, [DropDuplicates(duplicates)], num_proc=args.num_proc)


def quality_threshold(classifier: QualityClassifier, texts: list[str], domains: list[str],
                      args: DataArguments) -> float:
    """`quality_min_score`, or else the score under which `quality_drop_fraction` of the judged
    documents fall."""
    if args.quality_min_score is not None:
        return args.quality_min_score
    judged = [t for t, d in zip(texts, domains) if d in args.quality_domains]
    return float(np.quantile(classifier.score(judged), args.quality_drop_fraction)) if judged else 0.0


@dataclass
class Cleaned:
    train: datasets.Dataset
    test: datasets.Dataset
    reports: dict[str, list[BlockReport]]
    classifier: QualityClassifier | None = None
    quality_min_score: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def clean(train: datasets.Dataset, test: datasets.Dataset, args: DataArguments,
          reference: Callable[[], list[str]] | None = None, tasks_dir: Path | None = None) -> Cleaned:
    """Both splits through the blocks `args.blocks` names (see the module docstring). `reference`
    gives the quality classifier's reference texts (default: `reference_texts(args)`); `tasks_dir`
    holds the run's MMLU-format task (`decontaminate_mmlu`)."""
    out = Cleaned(train, test, {"train": [], "test": []})
    t = time.perf_counter()
    blocks = build_blocks(args)
    if blocks:
        out.train, reports = run_blocks(out.train, blocks, num_proc=args.num_proc)
        out.reports["train"] += reports
        out.test, reports = run_blocks(out.test, blocks, num_proc=args.num_proc)
        out.reports["test"] += reports
    out.seconds["per-document blocks"] = time.perf_counter() - t
    before_dedup = out.train["text"]  # where boilerplate is counted: dedup leaves one copy of each licence
    if "dedup" in args.blocks:
        t = time.perf_counter()
        out.train, reports = deduplicate(out.train, args)
        out.reports["train"] += reports
        out.test, reports = deduplicate(out.test, args)
        out.reports["test"] += reports
        out.seconds["dedup"] = time.perf_counter() - t
    index = None
    if "decontaminate" in args.blocks:  # built before quality: both execution modes count the same texts
        t = time.perf_counter()
        index = NGramIndex.build(evaluation_sets(args, out.test, tasks_dir), n=args.decontaminate_ngram)
        index = index.without_frequent(before_dedup, args.decontaminate_max_train_docs)
        out.seconds["decontaminate"] = time.perf_counter() - t
    if "quality" in args.blocks:
        t = time.perf_counter()
        texts = list(out.train["text"])
        reference_set = reference() if reference is not None else reference_texts(args)
        out.classifier = train_quality_classifier(reference_set, texts, name=args.quality_reference,
                                                  seed=args.seed)
        out.quality_min_score = quality_threshold(out.classifier, texts, out.train["domain"], args)
        out.train, reports = run_blocks(out.train, [QualityFilter(out.classifier, out.quality_min_score,
                                                                  args.quality_domains)], num_proc=args.num_proc)
        out.reports["train"] += reports
        out.test, reports = run_blocks(out.test, [QualityFilter(out.classifier, 0.0, [])], num_proc=args.num_proc)
        out.reports["test"] += reports
        out.seconds["quality"] = time.perf_counter() - t
    if index is not None:
        t = time.perf_counter()
        out.train, reports = run_blocks(out.train, [Decontaminate(index)], num_proc=args.num_proc)
        out.reports["train"] += reports
        out.seconds["decontaminate"] += time.perf_counter() - t
    return out


# ---------------------------------------------------------------------------------------------
# The stage


def _bytes(ds: datasets.Dataset) -> int:
    return sum(len(t.encode("utf-8")) for t in ds["text"])


def by_source(raw_rows: list[dict], train: datasets.Dataset) -> dict[str, dict[str, int]]:
    """Per source: raw documents and bytes (both splits), and what the training split kept."""
    out: dict[str, dict[str, int]] = {}
    for row in raw_rows:
        entry = out.setdefault(row.get("source") or "", {"raw_docs": 0, "raw_bytes": 0, "train_docs": 0,
                                                          "train_bytes": 0})
        entry["raw_docs"] += 1
        entry["raw_bytes"] += len(row["text"].encode("utf-8", "replace"))
    for source, text in zip(train["source"], train["text"]):
        entry = out.setdefault(source, {"raw_docs": 0, "raw_bytes": 0, "train_docs": 0, "train_bytes": 0})
        entry["train_docs"] += 1
        entry["train_bytes"] += len(text.encode("utf-8"))
    return out


def _removed_cell(removed: dict[str, int], limit: int = 4) -> str:
    top = sorted(removed.items(), key=lambda kv: -kv[1])
    cell = ", ".join(f"{r} {n}" for r, n in top[:limit])
    return cell + (f", … ({len(top) - limit} more)" if len(top) > limit else "") if top else "—"


def split_rows(rows: list[dict], test_rows: list[dict] | None, args: DataArguments,
               where: str) -> tuple[list[dict], list[dict]]:
    """The training and held-out rows: the dataset's own test split, else the held-out rule's."""
    if not rows:
        raise DataError("no usable documents (empty corpus)", where=where)
    if test_rows is None:
        held = [is_held_out(r["text"], args.test_fraction) for r in rows]
        test_rows = [r for r, h in zip(rows, held) if h]
        rows = [r for r, h in zip(rows, held) if not h]
    if args.max_train_docs is not None:
        rows = rows[: args.max_train_docs]
    if not rows:
        raise DataError("no training documents (empty corpus)", where=where)
    if not test_rows:
        raise DataError("no held-out documents: raise test_fraction or add a test split", where=where)
    return rows, test_rows


def run_data_stage(args: DataArguments, *, context: StageContext) -> dict[str, Any]:
    """Read, split, clean and save; the report section gets the per-block table."""
    started = time.perf_counter()
    where = args.dataset_name or "embedded pool"
    ablation = read_ablation(args.ablation_results) if args.ablation_results else None
    quarantine = Quarantine()
    with reader_pool(args) as readers:
        # the reference set is read beside the pool's sources, and waited for at the quality block
        reference = readers.submit(reference_texts, args) if "quality" in args.blocks else None
        rows, test_rows = read_pool(args, quarantine, readers)
        rows, test_rows = split_rows(rows, test_rows, args, where)
        read_s = time.perf_counter() - started
        train_raw, test_raw = new_rows(rows), new_rows(test_rows, first_id=len(rows))
        tasks_dir = Path(args.tasks_dir) if args.tasks_dir else Path(context.run_dir) / TASKS_DIR
        cleaned = clean(train_raw, test_raw, args, reference.result if reference else None, tasks_dir)
    for split, ds in (("train", cleaned.train), ("test", cleaned.test)):
        if len(ds) == 0:  # the blocks' counts say which rule removed them: written before failing
            Path(args.output_dir).mkdir(parents=True, exist_ok=True)
            (Path(args.output_dir) / REPORT).write_text(json.dumps(
                {"blocks": {k: [r.to_json() for r in v] for k, v in cleaned.reports.items()}}, indent=1))
            raise DataError(f"every {split} document was removed (see {Path(args.output_dir) / REPORT})",
                            where=where)
    final = top_quality_subset(cleaned.train, args.final_phase_fraction, tuple(args.quality_domains)) \
        if "quality" in args.blocks else cleaned.train.select([])
    mixture = domain_mixture(cleaned.train, args.mixture_weights)

    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dd = datasets.DatasetDict({
        args.dataset_train_split: cleaned.train.select_columns(OUTPUT_COLUMNS),
        args.dataset_test_split: cleaned.test.select_columns(OUTPUT_COLUMNS),
    })
    if len(final):  # datasets saves an empty split with no shard, which load_from_disk then cannot read
        dd["final_phase"] = final.select_columns(OUTPUT_COLUMNS)
    dd.save_to_disk(str(out_dir))
    quarantine.save(out_dir)
    (out_dir / "mixture.json").write_text(json.dumps({**mixture, "final_phase_split": "final_phase",
                                                      "final_phase_docs": len(final)}, indent=1))
    if cleaned.classifier is not None:
        cleaned.classifier.save(out_dir)
    report = {
        "input_rows": len(rows) + len(test_rows) + len(quarantine.rows),
        "quarantined": quarantine.counts(),
        "held_out_rows": len(test_rows),
        "train_rows": len(rows),
        "blocks": {split: [r.to_json() for r in reports] for split, reports in cleaned.reports.items()},
        "kept": {"train": len(cleaned.train), "test": len(cleaned.test), "final_phase": len(final)},
        "sources": by_source(rows + test_rows, cleaned.train),
        "quality_min_score": cleaned.quality_min_score,
        "seconds": {"read": round(read_s, 2), **{k: round(v, 2) for k, v in cleaned.seconds.items()}},
    }
    (out_dir / REPORT).write_text(json.dumps(report, indent=1, ensure_ascii=False))

    metrics: dict[str, Any] = {
        "train_docs": len(cleaned.train),
        "test_docs": len(cleaned.test),
        "final_phase_docs": len(final),
        "train_bytes": _bytes(cleaned.train),
        "test_bytes": _bytes(cleaned.test),
        "raw_docs": report["input_rows"],
        "quarantined_docs": len(quarantine.rows),
        "content_hash": corpus.content_hash(list(cleaned.train["text"]) + list(cleaned.test["text"])),
        "removed": {f"{r.block}/{reason}": n for r in cleaned.reports["train"] for reason, n in r.removed.items()},
    }
    _write_section(context, args, report, cleaned, mixture, len(final))
    if ablation is not None:
        quote_ablation(context.section, ablation, args.ablation_results)
    return metrics


ABLATION_SETS = {"text": "held-out text", "text_no_licence": "text without licences", "code": "held-out code"}


def read_ablation(path: str) -> dict[str, Any]:
    """The ablation's recorded figures, checked before the stage runs (one error naming the file)."""
    try:
        recorded = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: not readable as the ablation's JSON ({err})", field="ablation_results") from None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("bits_per_byte"), dict):
        raise ConfigError(f"{path}: no `bits_per_byte` table (write it with benchmarks/data_ablation.py --record)",
                          field="ablation_results")
    return recorded


def quote_ablation(section: Section, recorded: dict[str, Any], path: str) -> None:
    """Whether cleaning helped, as measured (not claimed): each variant's held-out bits per byte,
    mean ± seed sd, and the goal's verdict per held-out set, with a bar plot."""
    import statistics

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = recorded["bits_per_byte"]
    sets = [name for name in ABLATION_SETS if name in table] or list(table)
    variants = list(table[sets[0]])
    stats = {(n, v): (statistics.mean(table[n][v]), statistics.stdev(table[n][v]) if len(table[n][v]) > 1 else 0.0)
             for n in sets for v in variants}  # (mean, seed sd)
    labels = [ABLATION_SETS.get(n, n) for n in sets]

    section.text(f"Does cleaning help? `benchmarks/data_ablation.py` ({recorded.get('recorded', 'undated')}; "
                 f"{recorded.get('profile', '?')} model, seeds {recorded.get('seeds', '?')}): bits per byte on the "
                 f"cleaned run's held-out split, mean ± seed sd (`{path}`).")
    section.table(["variant", *labels],
                  [[v, *[f"{stats[n, v][0]:.3f} ± {stats[n, v][1]:.3f}" for n in sets]] for v in variants])
    verdicts = [f"{ABLATION_SETS.get(n, n)}: raw − cleaned {g['raw_minus_cleaned']:+.3f}, goal (> 2 sd = "
                f"{g['twice_sd']:.3f}) {'met' if g['met'] else 'NOT met'}"
                for n in sets if (g := recorded.get(f"{n}_goal"))]
    if verdicts:
        section.text("; ".join(verdicts) + ".")
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
        ax.bar([j + i * width for j in range(len(sets))], [stats[n, v][0] for n in sets], width,
               yerr=[stats[n, v][1] for n in sets], capsize=3, label=v)
    ax.set_xticks([j + width * (len(variants) - 1) / 2 for j in range(len(sets))], labels)
    ax.set_ylabel("bits per byte (lower is better)")
    ax.set_ylim(bottom=max(0.0, min(mean for mean, _ in stats.values()) - 0.3))
    ax.legend(fontsize=8)
    section.plot(fig, "ablation", "raw pool against the cleaned mixture, held-out bits per byte")


def _write_section(context: StageContext, args: DataArguments, report: dict[str, Any], cleaned: Cleaned,
                   mixture: dict[str, Any], final_docs: int) -> None:
    section = context.section
    if args.dataset_name:
        section.text(f"Dataset `{args.dataset_name}`.")
    else:
        section.text(
            "Embedded offline raw pool (pydoc HTML pages, METADATA and licence files, source code, package texts, "
            f"changelogs, file lists; Python {sys.version.split()[0]}). What is installed varies between machines, "
            "so the pool does too: compare `content_hash` before comparing runs."
        )
    section.text(f"{report['input_rows']} raw rows: {sum(report['quarantined'].values())} quarantined, "
                 f"{report['held_out_rows']} held out (chosen by content hash before any block ran), "
                 f"{report['train_rows']} for training. Every block: in = kept + removed.")
    if report["quarantined"]:
        section.table(["quarantined (quarantine.jsonl)", "rows"], [[k, v] for k, v in report["quarantined"].items()])
    section.table(["block (train)", "in", "kept", "removed", "modified", "removed by reason"],
                  [[r.block, r.docs_in, r.kept, sum(r.removed.values()), r.modified, _removed_cell(r.removed)]
                   for r in cleaned.reports["train"]])
    section.table(["source", "raw docs", "raw bytes", "train docs", "train bytes"],
                  [[k, v["raw_docs"], v["raw_bytes"], v["train_docs"], v["train_bytes"]]
                   for k, v in report["sources"].items()])
    section.table(["domain", "train docs", "train bytes", "weight", "sampling probability"],
                  [[d, mixture["docs"][d], mixture["bytes"][d], mixture["weights"][d], mixture["probabilities"][d]]
                   for d in mixture["docs"]])
    if cleaned.classifier is not None:
        section.text(f"Quality classifier trained against the `{cleaned.classifier.reference}` reference set; "
                     f"judged domains ({', '.join(args.quality_domains)}) kept at score ≥ "
                     f"{cleaned.quality_min_score:.3f}. Final-phase subset: {final_docs} documents "
                     f"(the best by score, {args.final_phase_fraction:.0%} of the judged bytes).")
    section.text("Seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report["seconds"].items()) + ".")
