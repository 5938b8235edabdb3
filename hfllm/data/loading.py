"""Reading what the data stage cleans: a Hub id, a local `save_to_disk` dir, a json/jsonl/parquet/
csv/txt file, an HTML page or WARC file, or a folder of them (HTML pages, WARC files, JSONL), and
the embedded raw pool. Rows that cannot be used (bytes that are not UTF-8, a JSONL line that is not
JSON, a page that is not HTML, an empty or huge document, a row without the text column) go to the
quarantine with their file, row and reason; nothing is dropped silently. A file whose rows lack
the text column altogether is one error naming the file and the column.

`load_text_dataset` and `check_texts` are also what the tokenizer and pretraining stages read with."""

from __future__ import annotations

import codecs
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pyarrow.compute as pc

from hfllm.errors import DataError

_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}


def _is_local_dataset_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists())


def load_saved_split(path: Path, split: str, name: str) -> datasets.Dataset:
    """One split of a dataset saved with `save_to_disk` (a stage's directory); a missing split
    names the ones there are."""
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(f"no split '{split}' (has: {', '.join(loaded)})", where=name)
        loaded = loaded[split]
    return loaded


def load_split(
    name: str,
    split: str,
    *,
    config: str | None = None,
    streaming: bool = False,
    file_types: tuple[str, ...] = tuple(_FILE_BUILDERS),
) -> datasets.Dataset | datasets.IterableDataset:
    """One split of a stage dir (`save_to_disk`), a local file of one of `file_types`, or a Hub
    dataset. Any failure is one `DataError` naming the dataset, and for a local file the first line
    that cannot be read (datasets names only the file, or for an empty file nothing at all)."""
    path = Path(name)
    try:
        if _is_local_dataset_dir(path):
            loaded = load_saved_split(path, split, name)
            return loaded.to_iterable_dataset() if streaming else loaded
        if path.is_file():
            if path.suffix not in file_types:
                raise DataError(f"unsupported file type {path.suffix!r} (use {', '.join(file_types)})", where=name)
            if split != "train":  # one file is one split; held-out text comes from the hash split
                raise DataError(f"no split '{split}' (a single file is the 'train' split)", where=name)
            if path.suffix != ".parquet" and (problem := _first_non_utf8_line(path)):
                raise DataError(problem, where=name)
            return datasets.load_dataset(_FILE_BUILDERS[path.suffix], data_files={"train": str(path)}, split="train",
                                         streaming=streaming)
        if path.suffix in _FILE_BUILDERS or name.startswith((".", "/")) or Path(path.parts[0]).is_dir():
            # Looks like a local path (e.g. runs/x/data before its stage ran), not a Hub id.
            raise DataError("file or directory not found (has its stage run?)", where=name)
        return datasets.load_dataset(name, config, split=split, streaming=streaming)
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 — any loader failure becomes one line naming the dataset
        problem = _first_unreadable_line(path) if path.is_file() else None
        first = str(err).strip().splitlines()
        raise DataError(problem or f"cannot load split '{split}': {first[0] if first else type(err).__name__}",
                        where=name) from None


def load_text_dataset(
    name: str,
    split: str,
    *,
    text_field: str = "text",
    config: str | None = None,
    streaming: bool = False,
) -> datasets.Dataset | datasets.IterableDataset:
    """Load one split and check that `text_field` is there; errors name the dataset and field."""
    ds = load_split(name, split, config=config, streaming=streaming)
    columns = ds.column_names
    if columns is not None and text_field not in columns:
        raise DataError(f"column not found (columns: {', '.join(columns)})", where=name, field=text_field)
    return ds


def _first_non_utf8_line(path: Path, chunk_bytes: int = 1 << 24) -> str | None:
    """The first line (1-based) of a text file that is not UTF-8. Checked before loading: datasets'
    JSON reader replaces such bytes with U+FFFD and loads the row, altered and unannounced. The
    file is decoded in 16 MiB chunks (C speed); lines are read one by one only when it is not UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with path.open("rb") as f:
            while chunk := f.read(chunk_bytes):
                decoder.decode(chunk)
        decoder.decode(b"", final=True)  # a multi-byte character cut off at the end of the file
        return None
    except UnicodeDecodeError:
        pass
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return f"line {number}: not UTF-8 text"
    return None


def _first_unreadable_line(path: Path) -> str | None:
    """Why a text or JSON Lines file cannot be read, naming its first bad line (1-based): a line
    that is not UTF-8, a JSONL line that is not JSON, or no content at all. Called only after the
    loader failed, so a good file is never parsed twice."""
    has_content = False
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                return f"line {number}: not UTF-8 text"
            if not line.strip():
                continue
            has_content = True
            if path.suffix == ".jsonl":
                try:
                    json.loads(line.strip())
                except ValueError as err:
                    return f"line {number}: not JSON ({err})"
    return None if has_content else "the file is empty"


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


def to_text_and_source_columns(ds: datasets.Dataset, text_field: str, source: str) -> datasets.Dataset:
    """Columns `text` and `source`, whatever the dataset called its text."""
    if text_field != "text":
        ds = ds.rename_column(text_field, "text")
    if "source" not in ds.column_names:
        ds = ds.add_column("source", [source] * len(ds))
    return ds.select_columns(["text", "source"])


QUARANTINE = "quarantine.jsonl"
HTML_SUFFIXES = (".html", ".htm", ".xhtml")
WARC_SUFFIXES = (".warc", ".warc.gz")
_LOOKS_LIKE_HTML = re.compile(rb"<\s*(?:!doctype\s+html|html|head|body|div|p|title|table|article|main)\b",
                              re.IGNORECASE)


@dataclass
class Quarantine:
    """Rows that could not be used, each with its file, row (0-based; a line for JSONL) and reason."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, file: str, row: int | None, reason: str, excerpt: bytes | str = b"") -> None:
        if isinstance(excerpt, bytes):
            excerpt = excerpt[:200].decode("utf-8", "replace")
        self.rows.append({"file": file, "row": row, "reason": reason, "excerpt": excerpt[:200]})

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r["reason"] for r in self.rows).items()))

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / QUARANTINE
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows))
        return path


@dataclass
class Columns:
    """Which fields of a row hold the text, the HTML and the URL."""

    text: str = "text"
    html: str | None = "html"
    url: str | None = "url"


def admit(row: dict[str, Any], file: str, index: int, quarantine: Quarantine, max_bytes: int) -> dict[str, Any] | None:
    """The row if it can be cleaned; else None, and the row is in the quarantine."""
    text = row["text"]
    size = len(text.encode("utf-8", "replace"))
    if not text.strip():
        quarantine.add(file, index, "empty")
    elif size > max_bytes:
        quarantine.add(file, index, "too_large", text)
    elif row.get("format") == "html" and not _LOOKS_LIKE_HTML.search(text[:20_000].encode("utf-8", "replace")):
        quarantine.add(file, index, "not_html", text)
    else:
        return row
    return None


def _row_from_record(record: Any, columns: Columns, file: str, index: int, quarantine: Quarantine,
                     source: str) -> dict[str, Any] | None:
    if not isinstance(record, dict):
        quarantine.add(file, index, "not_an_object", json.dumps(record)[:200])
        return None
    html = record.get(columns.html) if columns.html else None
    text = record.get(columns.text)
    value, kind = (html, "html") if isinstance(html, str) and html.strip() else (text, "text")
    if value is None and columns.text not in record and not (columns.html and columns.html in record):
        quarantine.add(file, index, "missing_field", json.dumps(record)[:200])
        return None
    if not isinstance(value, str):
        quarantine.add(file, index, "not_a_string", json.dumps(record, default=str)[:200])
        return None
    url = record.get(columns.url) if columns.url else None
    return {"text": value, "format": kind, "url": url if isinstance(url, str) else "", "source": source}


def _missing_column(file: str, record: dict[str, Any], columns: Columns) -> DataError:
    return DataError(f"column not found (columns: {', '.join(map(str, record))})", where=file, field=columns.text)


def read_jsonl(path: Path, columns: Columns, quarantine: Quarantine, source: str) -> Iterator[tuple[int, dict]]:
    """(line number, row) for each usable line; the first object without the text (or HTML) field
    means the file has no such column: an error naming the file."""
    file = str(path)
    checked = False
    with path.open("rb") as f:
        for index, raw in enumerate(f):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                quarantine.add(file, index, "not_utf8", raw)
                continue
            except ValueError:
                quarantine.add(file, index, "malformed_json", raw)
                continue
            if not checked and isinstance(record, dict):
                if columns.text not in record and not (columns.html and columns.html in record):
                    raise _missing_column(file, record, columns)
                checked = True
            row = _row_from_record(record, columns, file, index, quarantine, source)
            if row is not None:
                yield index, row


def read_html(path: Path, quarantine: Quarantine, source: str) -> Iterator[tuple[int, dict]]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        quarantine.add(str(path), 0, "not_utf8", data)
        return
    yield 0, {"text": text, "format": "html", "url": path.resolve().as_uri(), "source": source}


def read_warc(path: Path, quarantine: Quarantine, source: str) -> Iterator[tuple[int, dict]]:
    """HTML responses of a WARC file (resiliparse's FastWARC reader); other records are skipped."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    with path.open("rb") as stream:
        for index, record in enumerate(ArchiveIterator(stream, record_types=WarcRecordType.response)):
            content_type = (record.http_headers.get("Content-Type", "") if record.http_headers else "").lower()
            body = record.reader.read()
            if "html" not in content_type:
                continue
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                quarantine.add(str(path), index, "not_utf8", body)
                continue
            yield index, {"text": text, "format": "html", "url": record.headers.get("WARC-Target-URI", ""),
                          "source": source}


def read_text_file(path: Path, quarantine: Quarantine, source: str) -> Iterator[tuple[int, dict]]:
    data = path.read_bytes()
    try:
        yield 0, {"text": data.decode("utf-8"), "format": "text", "url": path.resolve().as_uri(), "source": source}
    except UnicodeDecodeError:
        quarantine.add(str(path), 0, "not_utf8", data)


def read_local_files(root: Path, columns: Columns, quarantine: Quarantine, max_bytes: int) -> Iterator[dict]:
    """Every usable row of a file or of a folder's files (sorted, recursively): HTML pages, WARC
    files, JSONL, plain text. Any other file is quarantined as unsupported."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for path in files:
        name, file = path.name.lower(), str(path)
        if name.endswith(HTML_SUFFIXES):
            rows = read_html(path, quarantine, root.name)
        elif name.endswith(WARC_SUFFIXES):
            rows = read_warc(path, quarantine, root.name)
        elif name.endswith((".jsonl", ".json")):
            rows = read_jsonl(path, columns, quarantine, root.name)
        elif name.endswith((".txt", ".md", ".rst")):
            rows = read_text_file(path, quarantine, root.name)
        else:
            quarantine.add(file, None, "unsupported_file")
            continue
        for index, row in rows:
            kept = admit(row, file, index, quarantine, max_bytes)
            if kept is not None:
                yield kept


def read_dataset_rows(ds: datasets.Dataset, columns: Columns, where: str, quarantine: Quarantine,
                      max_bytes: int) -> Iterator[dict]:
    """Rows of a loaded dataset (Hub, parquet, csv, saved dir): a missing text column is an error."""
    names = ds.column_names or []
    has_html = bool(columns.html) and columns.html in names
    if columns.text not in names and not has_html:
        raise DataError(f"column not found (columns: {', '.join(names)})", where=where, field=columns.text)
    for index, record in enumerate(ds):
        row = _row_from_record(record, columns, where, index, quarantine, where)
        if row is not None:
            kept = admit(row, where, index, quarantine, max_bytes)
            if kept is not None:
                yield kept
