"""Undesirable content and personal data.

A document containing a word from the configured unsafe-word list is removed (whole words,
case-insensitive). E-mail addresses, IP addresses and phone numbers are replaced by placeholders
(`<email>`, `<ip>`, `<phone>`), each replacement counted. The e-mail and IP patterns are
datatrove's (`PIIReplacer`, with its check that an IP is a public one); phone numbers are
international or North-American numbers written with separators (a bare run of digits is not
taken for one: versions, hashes and counts are not phone numbers).
"""

from __future__ import annotations

import re
from functools import partial

from datatrove.data import Document
from datatrove.pipeline.formatters.pii import PIIFormatter, PIIReplacer, public_ip_validator

from hfllm.data.blocks import Block

EMAIL = "<email>"
IP = "<ip>"
PHONE = "<phone>"
_PHONE = (r"(?<![\w.+-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w-]|\.\d)")


class CountingReplacer(PIIReplacer):
    """datatrove's replacer, which also says how many matches it replaced."""

    def replace_counting(self, text: str) -> tuple[str, int]:
        replaced = 0

        def one(match: re.Match) -> str:
            nonlocal replaced
            if self.validator and not self.validator(match.group(0)):
                return match.group(0)
            replaced += 1
            return self.replacements[0]

        return self.regex.sub(one, text), replaced


class UnsafeAndPII(Block):
    name = "unsafe+pii"

    def __init__(self, unsafe_words: list[str] = (), replace_emails: bool = True, replace_ips: bool = True,
                 replace_phones: bool = True, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.unsafe_words = tuple(w.lower() for w in unsafe_words)
        self._unsafe = re.compile(r"\b(?:" + "|".join(map(re.escape, self.unsafe_words)) + r")\b", re.IGNORECASE) \
            if self.unsafe_words else None
        patterns = PIIFormatter()  # datatrove's e-mail and IP patterns
        self.replacers: list[tuple[str, CountingReplacer]] = []
        if replace_emails:
            self.replacers.append(("emails", CountingReplacer(patterns.emails_replacer.regex.pattern, EMAIL)))
        if replace_ips:
            self.replacers.append(("ips", CountingReplacer(patterns.ip_replacer.regex.pattern, IP,
                                                           validator=partial(public_ip_validator, public_only=True))))
        if replace_phones:
            self.replacers.append(("phones", CountingReplacer(_PHONE, PHONE)))

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if self._unsafe is not None and self._unsafe.search(doc.text):
            return False, "unsafe_word"
        for what, replacer in self.replacers:
            doc.text, n = replacer.replace_counting(doc.text)
            self.count(doc, what, n)
        return True
