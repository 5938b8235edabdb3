"""Domain classification, before any quality rule: which kind of text a document is, so that
prose rules are not applied to code (Gopher's alphabetic-word rule alone would drop most Python
source) and the mixture can weight each kind.

Domains: `code` (source files), `licence` (licence and legal boilerplate), `lists` (changelogs,
file lists, keyword and header lists), `reference` (API and reference documentation: prose mixed
with signatures, parameters and examples), `prose` (the rest). The rules read the text alone
(no file name or URL), line by line, so the same page classifies the same wherever it came from.
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
_TERMINAL = (".", "!", "?", ":", '"', "'", ")")


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
    sentences = sum(len(line.split()) >= 8 and line.rstrip().endswith(_TERMINAL) for line in lines) / n
    listy = sum(bool(_BULLET.match(line) or _KEY_VALUE.match(line) or _VERSION_HEADER.match(line))
                or (len(line.split()) <= 3 and not line.rstrip().endswith(_TERMINAL)) for line in lines) / n
    if listy >= 0.6 and sentences < 0.25:
        return "lists"
    reference = sum(bool(_REFERENCE_LINE.search(line)) for line in lines) / n
    if reference >= 0.05 or code >= 0.15 or indented >= 0.15:
        return "reference"
    return "prose"


class ClassifyDomain(Block):
    """Labels each document's `domain`; removes nothing (the rules and the mixture act on the label)."""

    name = "domains"

    def filter(self, doc: Document) -> bool:
        doc.metadata["domain"] = classify_domain(doc.text)
        self.stat_update(f"domain_{doc.metadata['domain']}")
        return True
