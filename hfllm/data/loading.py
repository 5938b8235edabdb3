"""Loading text datasets (Hub id, local dataset dir, or json/jsonl/parquet/csv/txt file) and the
data stage, which writes a `DatasetDict` with `train`/`test` splits via `save_to_disk`."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pyarrow.compute as pc

from hfllm import corpus
from hfllm.data.split import is_held_out
from hfllm.errors import ConfigError, DataError
from hfllm.report import StageContext

_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}


@dataclass
class DataArguments:
    """Where the text comes from and how it is split. No `dataset_name`: the embedded corpus."""

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub dataset id, local `save_to_disk` dir, or a json/jsonl/parquet/csv/txt file. "
                  "Unset: the embedded offline corpus (hfllm.corpus)."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_test_split: str = field(default="test", metadata={"help": "Held-out split (made if missing)."})
    dataset_text_field: str = field(default="text", metadata={"help": "Column holding the document text."})
    dataset_streaming: bool = field(
        default=False, metadata={"help": "Stream the dataset and keep the first max_train_docs (no full download)."}
    )
    corpus_sources: list[str] = field(
        default_factory=lambda: list(corpus.SOURCES), metadata={"help": "Embedded corpus sources, in order."}
    )
    corpus_min_chars: int = field(default=200, metadata={"help": "Shortest document kept from the corpus."})
    corpus_max_bytes_per_source: int | None = field(
        default=None, metadata={"help": "Cap on UTF-8 bytes taken from each embedded source."}
    )
    test_fraction: float = field(default=0.05, metadata={"help": "Held-out fraction when no test split exists."})
    max_train_docs: int | None = field(default=None, metadata={"help": "Keep at most this many training docs."})
    output_dir: str = field(default="hfllm-data", metadata={"help": "Where the DatasetDict is saved."})


def _is_local_dataset_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists())


def load_text_dataset(
    name: str,
    split: str,
    *,
    text_field: str = "text",
    config: str | None = None,
    streaming: bool = False,
) -> datasets.Dataset | datasets.IterableDataset:
    """Load one split and check that `text_field` is there; errors name the dataset and field."""
    path = Path(name)
    try:
        if _is_local_dataset_dir(path):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise DataError(f"no split '{split}' (has: {', '.join(loaded)})", where=name)
                loaded = loaded[split]
            ds = loaded.to_iterable_dataset() if streaming else loaded
        elif path.is_file():
            builder = _FILE_BUILDERS.get(path.suffix)
            if builder is None:
                raise DataError(f"unsupported file type {path.suffix!r} (use {', '.join(_FILE_BUILDERS)})", where=name)
            if split != "train":  # one file is one split; held-out text comes from the hash split
                raise DataError(f"no split '{split}' (a single file is the 'train' split)", where=name)
            ds = datasets.load_dataset(builder, data_files={"train": str(path)}, split="train", streaming=streaming)
        elif path.suffix in _FILE_BUILDERS or name.startswith((".", "/")) or Path(path.parts[0]).is_dir():
            # Looks like a local path (e.g. runs/x/data before its stage ran), not a Hub id.
            raise DataError("file or directory not found (has its stage run?)", where=name)
        else:
            ds = datasets.load_dataset(name, config, split=split, streaming=streaming)
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 — any loader failure becomes one line naming the dataset
        raise DataError(f"cannot load split '{split}': {str(err).splitlines()[0]}", where=name) from None
    columns = ds.column_names
    if columns is not None and text_field not in columns:
        raise DataError(f"column not found (columns: {', '.join(columns)})", where=name, field=text_field)
    return ds


def check_texts(ds: datasets.Dataset, text_field: str, where: str) -> None:
    """Every row's text must be a string: name the first row that is not.

    A string column can only hold nulls, found with Arrow a batch at a time (no Python strings
    are made); any other column type is wrong from its first row.
    """
    feature = (ds.features or {}).get(text_field)
    if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
        kind = feature.dtype if isinstance(feature, datasets.Value) else type(feature).__name__
        raise DataError(f"row 0: text is {kind}, not a string", where=where, field=text_field)
    batch_size = 10_000
    for b, batch in enumerate(ds.select_columns([text_field]).with_format("arrow").iter(batch_size)):
        column = batch.column(text_field)
        if column.null_count:
            first = pc.index(column.is_null(), True).as_py()
            raise DataError(f"row {b * batch_size + first}: text is None, not a string", where=where, field=text_field)


_FEATURES = datasets.Features({"text": datasets.Value("string"), "source": datasets.Value("string")})


def _embedded(args: DataArguments, removed: Counter) -> datasets.DatasetDict:
    rows = list(corpus.iter_documents(args.corpus_sources, args.corpus_min_chars, args.corpus_max_bytes_per_source, removed))
    if not rows:
        raise DataError(f"no documents of at least {args.corpus_min_chars} characters (empty corpus)",
                        where="embedded corpus", field="corpus_sources")
    train = [r for r in rows if not is_held_out(r["text"], args.test_fraction)]
    test = [r for r in rows if is_held_out(r["text"], args.test_fraction)]
    return datasets.DatasetDict(
        {
            args.dataset_train_split: datasets.Dataset.from_list(train, features=_FEATURES),
            args.dataset_test_split: datasets.Dataset.from_list(test, features=_FEATURES),
        }
    )


def _from_dataset(args: DataArguments) -> datasets.DatasetDict:
    name = args.dataset_name
    assert name is not None
    if args.dataset_streaming:
        if args.max_train_docs is None:
            raise ConfigError("a streamed dataset needs max_train_docs (how many documents to keep)", field="max_train_docs")
        stream = load_text_dataset(name, args.dataset_train_split, text_field=args.dataset_text_field,
                                   config=args.dataset_config, streaming=True)
        train = datasets.Dataset.from_list([{"text": r.get(args.dataset_text_field)} for r in stream.take(args.max_train_docs)])
        check_texts(train, "text", name)
        return _split_by_hash(to_text_and_source_columns(train, "text", name), args)
    train = load_text_dataset(name, args.dataset_train_split, text_field=args.dataset_text_field, config=args.dataset_config)
    check_texts(train, args.dataset_text_field, name)
    try:
        test = load_text_dataset(name, args.dataset_test_split, text_field=args.dataset_text_field, config=args.dataset_config)
        check_texts(test, args.dataset_text_field, name)
    except DataError as err:
        if "no split" not in err.message and "cannot load split" not in err.message:
            raise
        return _split_by_hash(to_text_and_source_columns(train, args.dataset_text_field, name), args)
    return datasets.DatasetDict({
        args.dataset_train_split: to_text_and_source_columns(train, args.dataset_text_field, name),
        args.dataset_test_split: to_text_and_source_columns(test, args.dataset_text_field, name),
    })


def to_text_and_source_columns(ds: datasets.Dataset, text_field: str, source: str) -> datasets.Dataset:
    """Columns `text` and `source`, whatever the dataset called its text."""
    if text_field != "text":
        ds = ds.rename_column(text_field, "text")
    if "source" not in ds.column_names:
        ds = ds.add_column("source", [source] * len(ds))
    return ds.select_columns(["text", "source"])


def _split_by_hash(ds: datasets.Dataset, args: DataArguments) -> datasets.DatasetDict:
    """No held-out split given: take one by content hash, like the embedded corpus."""
    is_test = [is_held_out(t, args.test_fraction) for t in ds["text"]]
    return datasets.DatasetDict({
        args.dataset_train_split: ds.select([i for i, h in enumerate(is_test) if not h]),
        args.dataset_test_split: ds.select([i for i, h in enumerate(is_test) if h]),
    })


def _source_table(ds: datasets.Dataset) -> list[list[Any]]:
    docs: Counter[str] = Counter()
    nbytes: Counter[str] = Counter()
    for text, source in zip(ds["text"], ds["source"]):
        docs[source] += 1
        nbytes[source] += len(text.encode("utf-8"))
    return [[s, docs[s], nbytes[s]] for s in docs]


def run_data_stage(args: DataArguments, *, context: StageContext) -> dict[str, Any]:
    """Build train/test text splits and save them to `args.output_dir`."""
    removed: Counter[tuple[str, str]] = Counter()
    dd = _from_dataset(args) if args.dataset_name else _embedded(args, removed)
    train, test = dd[args.dataset_train_split], dd[args.dataset_test_split]
    if args.max_train_docs is not None:
        train = train.select(range(min(args.max_train_docs, len(train))))
        dd[args.dataset_train_split] = train
    where = args.dataset_name or "embedded corpus"
    if len(train) == 0:
        raise DataError("no training documents (empty corpus)", where=where)
    if len(test) == 0:
        raise DataError("no held-out documents: raise test_fraction or add a test split", where=where)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    dd.save_to_disk(args.output_dir)

    metrics: dict[str, Any] = {
        "train_docs": len(train),
        "test_docs": len(test),
        "train_bytes": sum(len(t.encode("utf-8")) for t in train["text"]),
        "test_bytes": sum(len(t.encode("utf-8")) for t in test["text"]),
        "content_hash": corpus.content_hash(list(train["text"]) + list(test["text"])),
    }
    section = context.section
    if args.dataset_name:
        section.text(f"Dataset `{args.dataset_name}`.")
    else:
        section.text(
            "Embedded offline corpus (Python's own docs and the installed packages' docstrings and "
            f"READMEs, Python {sys.version.split()[0]}). What is installed varies between machines, "
            "so the corpus does too: compare `content_hash` before comparing runs."
        )
    section.table(["source", "train docs", "train bytes"], _source_table(train))
    if removed:
        section.text("Documents left out, by reason:")
        section.table(["source", "reason", "documents"], [[s, r, n] for (s, r), n in sorted(removed.items())])
    metrics["removed"] = {f"{s}/{r}": n for (s, r), n in sorted(removed.items())}
    return metrics
