"""HTML text extraction: precision, recall, F1 and pages/s of each extractor on labelled pages.

Pages from two generators: `pydoc.HTMLDoc` pages inside a site template (hfllm.corpus.pydoc_page,
main content in `<main>`), and Debian's `python3-doc` Sphinx pages (main content in
`div[role=main]`; `apt-get install python3-doc`; skipped if absent). Each page's labels come
from its DOM alone: the words inside the main-content element are the body, every other word is
boilerplate — no extractor under test labels anything. Scores are over word multisets: precision
= body words the extractor kept / words it kept, recall = body words kept / body words.

    python benchmarks/extraction.py --pages 120
"""

from __future__ import annotations

import argparse
import re
import time
from collections import Counter

from hfllm import corpus
from hfllm.data.extract import EXTRACTORS, extract_main_text

_WORD = re.compile(r"\w+")


def words(text: str) -> Counter:
    return Counter(w.lower() for w in _WORD.findall(text))


def main_content_words(html: str, xpath: str) -> Counter:
    """Words of the page's main-content element, read with lxml (script and style left out)."""
    import lxml.html

    tree = lxml.html.fromstring(html)
    for bad in tree.xpath("//script|//style"):
        bad.drop_tree()
    (main,) = tree.xpath(xpath)[:1] or (None,)
    return words(main.text_content()) if main is not None else Counter()


def labelled_pages(n: int) -> list[tuple[str, str, Counter]]:
    """(generator, html, body words) for up to n pages, half from each generator where both exist."""
    pages = []
    for name in corpus.PYDOC_MODULES[: n // 2 if corpus.DEBIAN_PYTHON_DOCS.is_dir() else n]:
        html = corpus.pydoc_page(name)
        pages.append(("pydoc", html, main_content_words(html, "//main")))
    if corpus.DEBIAN_PYTHON_DOCS.is_dir():
        paths = sorted(corpus.DEBIAN_PYTHON_DOCS.rglob("library/*.html"))
        for path in paths[: n - len(pages)]:
            html = path.read_text(encoding="utf-8", errors="replace")
            body = main_content_words(html, "//div[@role='main']")
            if body:
                pages.append(("sphinx", html, body))
    return pages


def score(extracted: Counter, body: Counter) -> tuple[float, float]:
    overlap = sum((extracted & body).values())
    return overlap / max(sum(extracted.values()), 1), overlap / max(sum(body.values()), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=120)
    args = parser.parse_args()
    pages = labelled_pages(args.pages)
    generators = sorted({g for g, _, _ in pages})
    print(f"{len(pages)} pages ({', '.join(f'{g}: {sum(p[0] == g for p in pages)}' for g in generators)})")
    print("| extractor | generator | precision | recall | F1 | pages/s (1 core) |")
    print("|---|---|---:|---:|---:|---:|")
    for extractor in EXTRACTORS:
        for generator in generators + ["all"]:
            chosen = [p for p in pages if generator in ("all", p[0])]
            t0 = time.process_time()  # CPU time of this process: one core, less sensitive to the shared load
            outputs = [extract_main_text(html, extractor) for _, html, _ in chosen]
            seconds = time.process_time() - t0
            pr = [score(words(o), body) for o, (_, _, body) in zip(outputs, chosen)]
            p = sum(x for x, _ in pr) / len(pr)
            r = sum(y for _, y in pr) / len(pr)
            f1 = 2 * p * r / (p + r) if p + r else 0.0
            print(f"| {extractor} | {generator} | {p:.3f} | {r:.3f} | {f1:.3f} | {len(chosen) / seconds:.0f} |")


if __name__ == "__main__":
    main()
