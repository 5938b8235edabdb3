"""Text extraction from HTML pages, boilerplate (navigation, sidebars, footers) removed, by a
maintained extractor: resiliparse (fast), trafilatura, or resiliparse with trafilatura as the
fallback where resiliparse finds too little. Which one is the default was chosen by measurement on
labelled pages (`benchmarks/extraction.py`, figures in benchmarks/RESULTS.md)."""

from __future__ import annotations

import re

from datatrove.data import Document

from hfllm.data.blocks import Block

EXTRACTORS = ("resiliparse", "trafilatura", "resiliparse+trafilatura")
_TRAILING_SPACE = re.compile(r"[ \t\xa0]+$", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n{3,}")


def tidy_whitespace(text: str) -> str:
    """Extracted text with non-breaking spaces as spaces (pydoc writes every space of a docstring as
    `&nbsp;`), no trailing spaces, and at most one blank line in a row: a line left holding only
    spaces is an empty line, not a repeated one for the repetition rules to count."""
    text = _TRAILING_SPACE.sub("", text.replace("\xa0", " "))
    return _BLANK_LINES.sub("\n\n", text).strip()


def _resiliparse(html: str) -> str:
    from resiliparse.extract.html2text import extract_plain_text

    return extract_plain_text(html, main_content=True, alt_texts=False, links=False, form_fields=False,
                              noscript=False, list_bullets=True, preserve_formatting=True)


def _trafilatura(html: str) -> str:
    import trafilatura

    return trafilatura.extract(html, include_comments=False, include_tables=True, favor_precision=False,
                               deduplicate=False) or ""


def extract_main_text(html: str, extractor: str = "resiliparse", fallback_below_chars: int = 200) -> str:
    """The main text of one HTML page. With `resiliparse+trafilatura`, a page where resiliparse
    keeps fewer than `fallback_below_chars` characters is extracted again by trafilatura."""
    if extractor == "resiliparse":
        return _resiliparse(html)
    if extractor == "trafilatura":
        return _trafilatura(html)
    if extractor == "resiliparse+trafilatura":
        text = _resiliparse(html)
        return text if len(text.strip()) >= fallback_below_chars else (_trafilatura(html) or text)
    raise ValueError(f"unknown extractor {extractor!r} (known: {', '.join(EXTRACTORS)})")


class ExtractText(Block):
    """HTML documents (`format` = html) → their main text; a page with no text left is removed."""

    name = "extract"

    def __init__(self, extractor: str = "resiliparse", exclusion_writer=None):
        super().__init__(exclusion_writer)
        if extractor not in EXTRACTORS:
            raise ValueError(f"unknown extractor {extractor!r} (known: {', '.join(EXTRACTORS)})")
        self.extractor = extractor

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if doc.metadata.get("format") != "html":
            return True
        doc.text = tidy_whitespace(extract_main_text(doc.text, self.extractor))
        doc.metadata["format"] = "text"
        return bool(doc.text) or (False, "no_text_extracted")
