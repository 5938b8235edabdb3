"""Domain classification, before any quality rule: which kind of text a document is, so that
prose rules are not applied to code (Gopher's alphabetic-word rule alone would drop most Python
source) and the mixture can weight each kind.

Domains: `code` (source files), `licence` (licence and legal boilerplate), `lists` (changelogs,
file lists, keyword and header lists), `reference` (API and reference documentation: prose mixed
with signatures, parameters and examples, or running text that names the code it documents),
`prose` (the rest). The rules read the text alone (no file name or URL), line by line, so the same
page classifies the same wherever it came from.

Why names from code make a text reference documentation: a docstring such as "Return the
StreamReader passed to create_connection() ..." is written in sentences, but its `foo()`,
`a.b`, `snake_case` and `` `quoted` `` words split into many punctuation tokens, and Gopher's
rule that 80 % of words hold a letter (a prose rule) removed most of the standard library's
docstrings. Licences and plain prose name almost no code (median under 1 % of their words,
against 3–8 % in docstrings and README files).
"""

from __future__ import annotations

import re

from datatrove.data import Document

from hfllm.data.blocks import Block

DOMAINS = ("code", "prose", "reference", "licence", "lists")

LICENCE_MARKERS = (
    "permission is hereby granted", 'provided "as is"', "provided ``as is''", "licensed under the apache license",
    "redistribution and use in source and binary forms", "gnu general public license",
    "gnu lesser general public license", "mozilla public license", "this program is free software",
    "without warranty of any kind", "all rights reserved", "warranties of merchantability",
    "the above copyright notice", "terms and conditions for use, reproduction", "python software foundation license",
    "liable for any claim, damages or other liability", "you may not use this file except in compliance",
    "apache license", "warranties or conditions of any kind", "mit license", "bsd 3-clause", "bsd 2-clause",
    '"licensor"', '"license" shall mean',
)
_CODE_LINE = re.compile(
    r"""^\s*(?:
        (?:async\s+)?def\s+\w+\s*\(|class\s+\w+[:(]|import\s+[\w.]+|from\s+[\w.]+\s+import\b|return\b|yield\b|raise\b|
        (?:el)?if\s.*:$|else\s*:$|for\s.*:$|while\s.*:$|try\s*:$|except\b.*:$|finally\s*:$|with\s.*:$|@[\w.]+|
        pass$|break$|continue$|assert\s|del\s|global\s|nonlocal\s|
        [\w.\[\]'"]+\s*(?:[+\-*/%|&^]|//|\*\*|>>|<<)?=\s*\S|
        [\w.]+\(.*\)\s*$|[)\]}],?\s*$|\#(?!\#)
    )""",
    re.VERBOSE,
)
_REFERENCE_LINE = re.compile(
    r"""(?:
        ^\s*(?:Parameters|Returns|Raises|Yields|Args|Arguments|Attributes|Examples?|Notes|See\ Also|Methods|
            Data\ and\ other\ attributes|Return\ type|Keyword\ arguments)\s*:?\s*$|
        ^\s*>>>|^\s*\.\.\ \w+::|::\s*$|^\s*[-=~^*]{3,}\s*$|
        ^\s*[\w.]+\(.*\)(?:\s*->\s*.+)?\s*$|^\s*:(?:param|type|returns?|rtype|raises)\b|``\w
    )""",
    re.VERBOSE,
)
_BULLET = re.compile(r"^\s*(?:[-*•+]|\d+[.)]|\[[ x]\])\s+")
_KEY_VALUE = re.compile(r"^\s*[\w .\-/]{1,40}:\s+\S")
_VERSION_HEADER = re.compile(r"^\s*(?:v(?:ersion)?\s*)?\d+(?:\.\d+)+\b|^\s*\w[\w.+-]* \([\w.:~+-]+\) [\w-]+;")
# A changelog's entry heading: "## 2.7.2", "Version 1.0.9 (April 24th, 2025)", "v1.8.0", "1.2.3 - 2024-01-02",
# Debian's "adduser (3.134) unstable; urgency=medium", GNU's "2022-04-15  Name  <e-mail>"; at the start of the
# line (a doctest's "0.75" is indented or has one dot and no prefix).
_RELEASE_HEADING = re.compile(
    r"""^(?:(?:\#+\s*\[?(?:v|version\s+|release\s+)?\d+(?:\.\d+)+     # a Markdown heading with a version
            |\*?\s*\[?(?:v|version\s+|release\s+)\d+(?:\.\d+)+          # v1.8.0, Version 1.0.9
            |\[?\d+\.\d+\.\d+)                                          # 1.2.3
           [\w.+-]*\]?(?:\s*[-–(:,]\s*.{0,40})?\s*$
        |\w[\w.+-]*\ \([\w.:~+-]+\)\ [\w-]+;                           # Debian: pkg (1.2-3) unstable;
        |(?:\d{4}-\d\d-\d\d|[A-Z][a-z]{2}\ [A-Z][a-z]{2}\ [\ \d]\d\ [\d:]{8}.*?)  # GNU ChangeLog: a date,
           \ \ \S.*<\S+@\S+>\s*$)                                          # two spaces, name <e-mail>""",
    re.VERBOSE | re.IGNORECASE,
)
_TERMINAL = (".", "!", "?", ":", '"', "'", ")")
# A word that names code: `quoted`, a.dotted.name, a call(), snake_case, camelCase or CamelCase,
# with any surrounding brackets, quotes or punctuation.
_CODE_NAME = re.compile(
    r"""^[(\[{"'<*]*(?:`[^`]+`|\w+(?:\.\w+)+(?:\(\))?|\w*_\w+|\w+\(\S*\)|[a-z]+[A-Z]\w*|[A-Z][a-z]+[A-Z]\w*)
        [)\]}"'>,.:;*]*$""",
    re.VERBOSE,
)
CODE_NAME_FRACTION = 0.015


def classify_domain(text: str) -> str:
    """The domain of one document (see the module docstring); reads at most the first 400 lines."""
    lines = [line for line in text.splitlines()[:400] if line.strip()]
    if not lines:
        return "prose"
    n = len(lines)
    code = sum(bool(_CODE_LINE.match(line)) for line in lines) / n
    indented = sum(line.startswith(("    ", "\t")) for line in lines) / n
    if code >= 0.45 or (code >= 0.3 and indented >= 0.4):
        return "code"  # before licences: a source file often opens with its licence header
    head = text[:6000].lower()
    if sum(marker in head for marker in LICENCE_MARKERS) >= 2:
        return "licence"
    releases = sum(bool(_RELEASE_HEADING.match(line)) for line in lines)
    if releases >= 3 and releases >= 0.02 * n:
        return "lists"  # a changelog, however its entries are written
    sentences = sum(len(line.split()) >= 8 and line.rstrip().endswith(_TERMINAL) for line in lines) / n
    listy = sum(bool(_BULLET.match(line) or _KEY_VALUE.match(line) or _VERSION_HEADER.match(line))
                or (len(line.split()) <= 3 and not line.rstrip().endswith(_TERMINAL)) for line in lines) / n
    if listy >= 0.6 and sentences < 0.25:
        return "lists"
    reference = sum(bool(_REFERENCE_LINE.search(line)) for line in lines) / n
    if reference >= 0.05 or code >= 0.15 or indented >= 0.15 or code_name_fraction(lines) >= CODE_NAME_FRACTION:
        return "reference"
    return "prose"


def code_name_fraction(lines: list[str]) -> float:
    """The share of whitespace-separated words that name code (`_CODE_NAME`)."""
    words = [w for line in lines for w in line.split()]
    return sum(bool(_CODE_NAME.match(w)) for w in words) / len(words) if words else 0.0


class ClassifyDomain(Block):
    """Labels each document's `domain`; removes nothing (the rules and the mixture act on the label)."""

    name = "domains"

    def filter(self, doc: Document) -> bool:
        doc.metadata["domain"] = classify_domain(doc.text)
        self.stat_update(f"domain_{doc.metadata['domain']}")
        return True
