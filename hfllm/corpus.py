"""The embedded offline corpus: real text that every Python machine already has.

Docstring and README sources (mostly prose and reference text; the quality classifier's offline
reference set, and the first sources of the tiny and demo pools, where they still need cleaning:
near-copies of the same README, vendored copies of the same docstrings, foreign-language and
placeholder text), in a fixed order:
- `pydoc_topics`: the language reference pages shipped in `pydoc_data.topics` (help() text);
- `stdlib_docstrings`: module, class and function docstrings of the standard library, read
  with `ast` (nothing is imported, so no module runs);
- `package_docstrings`: the same for the installed packages in site-packages;
- `package_metadata`: the long descriptions (READMEs) in `*.dist-info/METADATA`.

Raw sources (`RAW_SOURCES`: the demo's raw pool, which needs every cleaning block): HTML pages
rendered by `pydoc.HTMLDoc` inside a site's navigation and footer; whole `METADATA` files (headers,
author e-mails, classifier lists, READMEs); licence files (hundreds of verbatim and near-verbatim
copies); Python source, vendored copies and tests included; text files shipped inside packages
(READMEs in several languages, stop-word lists); changelogs (packages' and, on Debian, the system's);
and `RECORD` file lists. Each row also names its `url` (a path or a page address) and its `format`
(`html` or `text`). Debian's `python3-doc` Sphinx pages (`debian_python_docs`) are read where apt
installed them; nothing requires them.

What is installed differs between machines, so the corpus does too: its content hash goes into
the data stage's manifest and the report lists documents and bytes per source.
"""

from __future__ import annotations

import ast
import functools
import gzip
import hashlib
import html
import importlib
import importlib.metadata
import os
import sysconfig
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

SOURCES = ("pydoc_topics", "stdlib_docstrings", "package_docstrings", "package_metadata")
RAW_SOURCES = ("pydoc_html", "metadata_files", "licence_files", "source_code", "package_texts", "changelogs",
               "record_lists")
OPTIONAL_SOURCES = ("debian_python_docs",)
DEBIAN_PYTHON_DOCS = Path("/usr/share/doc/python3-doc/html")


def _pydoc_topics() -> Iterator[str]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield topics[name]


_DEFINITIONS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_BLOCK_FIELDS = ("body", "orelse", "finalbody", "handlers", "cases")


def _docstrings_in(body: list[ast.stmt], found: list[str]) -> None:
    """Docstrings of the definitions in a statement list, in source order. Only statements are
    visited (a definition sits in a statement list, perhaps inside an `if` or `try`), never
    expressions: most of a module's nodes, and most of the time `ast.walk` took."""
    for node in body:
        if isinstance(node, _DEFINITIONS):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                found.append(doc)
        for name in _BLOCK_FIELDS:
            inner = getattr(node, name, None)
            if inner:
                _docstrings_in(inner, found)


def _python_files(root: Path, skip: tuple[str, ...] = ()) -> Iterator[Path]:
    """`*.py` under `root` in sorted order, never entering skipped, hidden or test folders."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip and not d.startswith((".", "__pycache__"))
                         and "test" not in d)
        for name in sorted(files):
            if name.endswith(".py") and "test" not in name:
                yield Path(folder, name)


def _docstrings_under(root: Path, skip: tuple[str, ...] = ()) -> Iterator[str]:
    """One document per source file: its docstrings (module's first), in source order, blank-line
    separated."""
    for path in _python_files(root, skip):
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError, OSError, RecursionError):
            continue
        found: list[str] = []
        module_doc = ast.get_docstring(tree, clean=True)
        if module_doc:
            found.append(module_doc)
        _docstrings_in(tree.body, found)
        if found:
            yield "\n\n".join(found)


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


# Standard-library modules whose import runs no code beyond definitions (pydoc imports what it
# documents); one HTML page each.
PYDOC_MODULES = (
    "abc argparse array ast base64 bisect calendar cmath codecs collections colorsys configparser contextlib "
    "copy csv dataclasses datetime decimal difflib dis enum filecmp fnmatch fractions functools getopt gettext "
    "glob graphlib gzip hashlib heapq hmac html inspect io ipaddress itertools json keyword linecache locale "
    "logging lzma math mimetypes numbers operator optparse os pathlib pickle pkgutil platform pprint queue quopri "
    "random re reprlib sched secrets selectors shelve shlex shutil signal socket sqlite3 ssl stat statistics "
    "string stringprep struct subprocess symtable sysconfig tabnanny tarfile tempfile textwrap threading timeit "
    "token tokenize tomllib trace traceback types typing unicodedata uuid warnings wave weakref zipfile zipimport "
    "zlib zoneinfo"
).split()

_SITE_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title} — Python module reference</title>
<link rel="stylesheet" href="/static/site.css"><script src="/static/menu.js"></script></head>
<body>
<header class="site-header"><a class="logo" href="/">Python module reference</a>
<nav class="top-nav"><ul><li><a href="/">Home</a></li><li><a href="/modules.html">Modules</a></li>
<li><a href="/search.html">Search</a></li><li><a href="/about.html">About</a></li>
<li><a href="/login">Log in</a></li></ul></nav>
<form class="search" action="/search.html"><input type="text" name="q" placeholder="Search modules">
<button>Go</button></form>
</header>
<div class="page">
<aside class="sidebar"><h3>Other modules</h3><ul>
{sidebar}
</ul><h3>This page</h3><ul><li><a href="#top">Top</a></li><li><a href="/report-bug">Report a bug</a></li>
<li><a href="/source/{title}.py">Show source</a></li></ul></aside>
<main id="content">
{content}
</main>
</div>
<footer class="site-footer"><p>Previous: <a href="/{prev}.html">{prev}</a> |
Next: <a href="/{next}.html">{next}</a></p>
<p>&copy; Copyright 2001 Python Software Foundation. All rights reserved. Page generated by pydoc.</p>
<p>This site uses cookies to remember your preferences.
By continuing you accept our terms of use and privacy policy.</p>
<p>Enable JavaScript to see the search results.</p></footer>
</body></html>
"""


def pydoc_page(module_name: str) -> str:
    """One stdlib module's `pydoc.HTMLDoc` documentation inside a site page: header, navigation,
    sidebar and footer around a `<main>` element that holds pydoc's own output (the main content
    that the extraction benchmark labels as the page's body)."""
    import pydoc

    i = PYDOC_MODULES.index(module_name) if module_name in PYDOC_MODULES else 0
    neighbours = [PYDOC_MODULES[(i + k) % len(PYDOC_MODULES)] for k in range(1, 13)]
    sidebar = "\n".join(f'<li><a href="/{n}.html">{n}</a></li>' for n in neighbours)
    content = pydoc.HTMLDoc().docmodule(importlib.import_module(module_name))
    return _SITE_PAGE.format(title=html.escape(module_name), sidebar=sidebar, content=content,
                             prev=PYDOC_MODULES[i - 1], next=neighbours[0])


def _pydoc_html() -> Iterator[dict[str, str]]:
    for name in PYDOC_MODULES:
        try:
            page = pydoc_page(name)
        except Exception:  # noqa: BLE001 — a module missing from this build of Python is skipped
            continue
        yield {"text": page, "url": f"https://modules.python.invalid/{name}.html", "format": "html"}


def _distributions() -> list:
    seen, out = set(), []
    for dist in sorted(importlib.metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower()):
        name = (dist.metadata["Name"] or "").lower()
        if name and name not in seen and getattr(dist, "_path", None) is not None:
            seen.add(name)
            out.append(dist)
    return out


def _read_text_file(path: Path) -> str | None:
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
        return None


def _text_files(paths) -> Iterator[dict[str, str]]:
    for path in paths:
        text = _read_text_file(path)
        if text is not None:
            yield {"text": text, "url": f"file://{path}", "format": "text"}


def _metadata_files() -> Iterator[dict[str, str]]:
    return _text_files(Path(d._path) / "METADATA" for d in _distributions())


_LICENCE_NAMES = ("LICENSE", "LICENCE", "COPYING", "NOTICE", "AUTHORS")


def _licence_files() -> Iterator[dict[str, str]]:
    def paths():
        for dist in _distributions():
            root = Path(dist._path)
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                rel = str(path.relative_to(root))
                if rel.startswith("licenses/") or path.name.upper().startswith(_LICENCE_NAMES):
                    yield path
    return _text_files(paths())


@functools.lru_cache(maxsize=1)
def _package_files() -> tuple[Path, ...]:
    """Every file under site-packages outside `*.dist-info`, sorted (one walk, shared by the sources)."""
    root = sysconfig.get_paths()["purelib"]
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.endswith(".dist-info") and d != "__pycache__"]
        found += [Path(folder, f) for f in files]
    return tuple(sorted(found))


def _source_code() -> Iterator[dict[str, str]]:
    return _text_files(p for p in _package_files() if p.suffix == ".py")


def _package_texts() -> Iterator[dict[str, str]]:
    return _text_files(p for p in _package_files() if p.suffix in (".md", ".rst", ".txt"))


def _changelogs() -> Iterator[dict[str, str]]:
    names = ("CHANGELOG", "CHANGES", "HISTORY", "NEWS")
    packaged = (p for p in _package_files()
                if p.name.upper().startswith(names) and p.suffix in ("", ".md", ".rst", ".txt"))
    debian = sorted(Path("/usr/share/doc").glob("*/changelog*.gz"))
    yield from _text_files(packaged)
    yield from _text_files(debian)


def _record_lists() -> Iterator[dict[str, str]]:
    return _text_files(Path(d._path) / "RECORD" for d in _distributions())


def _debian_python_docs() -> Iterator[dict[str, str]]:
    if not DEBIAN_PYTHON_DOCS.is_dir():
        return
    for path in sorted(DEBIAN_PYTHON_DOCS.rglob("*.html")):
        text = _read_text_file(path)
        if text is not None:
            rel = path.relative_to(DEBIAN_PYTHON_DOCS)
            yield {"text": text, "url": f"https://docs.python.invalid/3/{rel}", "format": "html"}


_RAW_READERS = {
    "pydoc_html": _pydoc_html,
    "metadata_files": _metadata_files,
    "licence_files": _licence_files,
    "source_code": _source_code,
    "package_texts": _package_texts,
    "changelogs": _changelogs,
    "record_lists": _record_lists,
    "debian_python_docs": _debian_python_docs,
}


def iter_raw_documents(
    sources: tuple[str, ...] | list[str] = RAW_SOURCES, max_bytes_per_source: int | None = None
) -> Iterator[dict[str, str]]:
    """Yield `{"text", "url", "source", "format"}` rows as they are on disk: nothing is cleaned,
    deduplicated or dropped here (that is the data stage's work, counted there). A clean source
    name (`SOURCES`) yields its documents as text. Each source stops once `max_bytes_per_source`
    UTF-8 bytes were yielded (the document that crosses the cap is the last one)."""
    for source in sources:
        if source in _RAW_READERS:
            rows = _RAW_READERS[source]()
        elif source in _READERS:
            rows = ({"text": t, "url": f"{source}:{i}", "format": "text"} for i, t in enumerate(_READERS[source]()))
        else:
            known = ", ".join(SOURCES + RAW_SOURCES + OPTIONAL_SOURCES)
            raise ValueError(f"unknown corpus source {source!r}; known: {known}")
        used = 0
        for row in rows:
            yield {**row, "source": source}
            used += len(row["text"].encode("utf-8", "replace"))
            if max_bytes_per_source is not None and used >= max_bytes_per_source:
                break


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
