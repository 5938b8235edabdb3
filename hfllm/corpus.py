"""The embedded offline corpus: real English text that every Python machine already has.

Sources, in a fixed order:
- `pydoc_topics`: the language reference pages shipped in `pydoc_data.topics` (help() text);
- `stdlib_docstrings`: module, class and function docstrings of the standard library, read
  with `ast` (nothing is imported, so no module runs);
- `package_docstrings`: the same for the installed packages in site-packages;
- `package_metadata`: the long descriptions (READMEs) in `*.dist-info/METADATA`.

What is installed differs between machines, so the corpus does too: its content hash goes into
the data stage's manifest and the report lists documents and bytes per source.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import sysconfig
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

SOURCES = ("pydoc_topics", "stdlib_docstrings", "package_docstrings", "package_metadata")


def _pydoc_topics() -> Iterator[str]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield topics[name]


def _docstrings_under(root: Path, skip: tuple[str, ...] = ()) -> Iterator[str]:
    """One document per source file: its docstrings, in source order, blank-line separated."""
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts
        if any(part in skip or part.startswith(".") for part in rel) or "test" in "/".join(rel):
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError, OSError, RecursionError):
            continue
        docs = []
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=True)
                if doc:
                    docs.append(doc)
        if docs:
            yield "\n\n".join(docs)


def _stdlib_docstrings() -> Iterator[str]:
    return _docstrings_under(Path(sysconfig.get_paths()["stdlib"]), skip=("site-packages", "idlelib", "lib2to3"))


def _package_docstrings() -> Iterator[str]:
    return _docstrings_under(Path(sysconfig.get_paths()["purelib"]))


def _package_metadata() -> Iterator[str]:
    seen = set()
    dists = sorted(importlib.metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower())
    for dist in dists:
        name = (dist.metadata["Name"] or "").lower()
        if name in seen:
            continue
        seen.add(name)
        body = dist.metadata.get_payload() or dist.metadata.get("Description") or ""  # type: ignore[attr-defined]
        if body.strip():
            yield body


_READERS = {
    "pydoc_topics": _pydoc_topics,
    "stdlib_docstrings": _stdlib_docstrings,
    "package_docstrings": _package_docstrings,
    "package_metadata": _package_metadata,
}


def iter_documents(
    sources: tuple[str, ...] | list[str] = SOURCES,
    min_chars: int = 200,
    max_bytes_per_source: int | None = None,
    removed: Counter | None = None,
) -> Iterator[dict[str, str]]:
    """Yield `{"text", "source"}` rows, exact duplicates dropped, each source capped in bytes.

    `removed`, if given, counts what was left out by `(source, reason)`: `too_short`,
    `duplicate`, `over_cap` (a document larger than the whole cap). Reading a source stops once
    its cap is reached; what lies beyond is not read, so not counted.
    """
    removed = removed if removed is not None else Counter()
    seen: set[bytes] = set()
    for source in sources:
        if source not in _READERS:
            raise ValueError(f"unknown corpus source {source!r}; known: {', '.join(SOURCES)}")
        used = 0
        for text in _READERS[source]():
            text = text.strip()
            if len(text) < min_chars:
                removed[(source, "too_short")] += 1
                continue
            digest = hashlib.sha1(text.encode("utf-8")).digest()
            if digest in seen:
                removed[(source, "duplicate")] += 1
                continue
            size = len(text.encode("utf-8"))
            if max_bytes_per_source is not None and used + size > max_bytes_per_source:
                if used:
                    break
                removed[(source, "over_cap")] += 1
                continue  # a single document larger than the whole cap
            seen.add(digest)
            used += size
            yield {"text": text, "source": source}


def content_hash(texts) -> str:
    """sha256 over the documents in order: equal hashes mean byte-identical corpora."""
    h = hashlib.sha256()
    for text in texts:
        h.update(hashlib.sha256(text.encode("utf-8")).digest())
    return h.hexdigest()
