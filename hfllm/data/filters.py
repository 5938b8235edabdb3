"""Heuristic quality rules per domain, in the spirit of Gopher, C4 and FineWeb.

Prose and reference documentation go through datatrove's own Gopher quality, Gopher repetition,
C4 and FineWeb filters (reference docs with the symbol and alphabetic-word limits loosened: API
pages are full of `name(args)` and `# comments`); code goes through code rules in the spirit of
the Stack's (line lengths, alphanumeric share, generated files, repeated lines), never through the
prose rules; licences only through the repetition rule (the dedup block removes their copies);
lists and changelogs through Gopher's word and stop-word rules without the bullet-line limit.

datatrove's word-based filters split words with spaCy's English tokenizer, which is most of their
time. `FastEnglishWords` is a `datatrove.utils.word_tokenizers.WordTokenizer` (the hook datatrove
offers for a language's tokenizer) that splits the same way with one regular expression: words
with their internal dots and digits, every punctuation mark a token of its own, "..." one token.
`benchmarks/data_throughput.py` measures its agreement with spaCy's on the filters' decisions.

`rules="gopher_c4"` applies datatrove's Gopher quality and C4 filters at their default thresholds
to every document whatever its domain (the benchmark's setting, to compare with datatrove's own).
"""

from __future__ import annotations

import re

import numpy as np
from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter, get_filter_result
from datatrove.pipeline.filters.c4_filters import C4QualityFilter
from datatrove.pipeline.filters.fineweb_quality_filter import FineWebQualityFilter
from datatrove.pipeline.filters.gopher_quality_filter import GopherQualityFilter
from datatrove.pipeline.filters.gopher_repetition_filter import GopherRepetitionFilter, find_duplicates
from datatrove.utils.text import split_into_words
from datatrove.utils.word_tokenizers import WordTokenizer

from hfllm.data.blocks import Block

_WORD = re.compile(
    r"""https?://[^\s()<>"']*[^\s()<>"'.,;:!?]   # a URL, trailing punctuation left out
    |\w+(?=n't\b)|n't\b                           # do|n't
    |'(?:s|re|ll|ve|d|m)\b                         # it|'s
    |\d+(?:[.,:]\d+)+                              # 1,000  3.14  12:30
    |(?:[A-Za-z]\.){2,}                            # U.S.  e.g.
    |\w+(?:\.\w+)*                                # words, os.path.join
    |\.\.\.|--+|[^\w\s]                            # "..." and "--" whole, other marks one by one""",
    re.VERBOSE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+")


class FastEnglishWords(WordTokenizer):
    """English words and sentences by regular expression, for datatrove's word-based filters."""

    def __init__(self):
        super().__init__("en")

    def word_tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        spans, start = [], 0
        for match in _SENTENCE_END.finditer(text):
            spans.append((start, match.start()))
            start = match.end()
        if start < len(text):
            spans.append((start, len(text)))
        return spans

    def __reduce__(self):  # one instance per process: datatrove caches splits per tokenizer object
        return (fast_english_words, ())


_FAST_WORDS: FastEnglishWords | None = None


def fast_english_words() -> FastEnglishWords:
    global _FAST_WORDS
    if _FAST_WORDS is None:
        _FAST_WORDS = FastEnglishWords()
    return _FAST_WORDS


class FastGopherRepetition(GopherRepetitionFilter):
    """datatrove's Gopher repetition filter (same thresholds, same reasons) with its n-gram counts
    done on integer word ids: its top n-gram and duplicated n-gram fractions joined every n-gram
    into a string, most of the data stage's time on long documents (a 1 MB changelog took seconds).

    One difference: datatrove compares the duplicated n-grams as their words glued together, so
    "ab c" repeats "a bc"; here n-grams are compared word by word (by a 64-bit key of their words'
    Python hashes). `tests/test_data_blocks.py` checks that both give the same verdicts on real
    documents."""

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        text = doc.text
        if not text:
            return False, "empty"
        paragraphs = self.paragraph_exp.split(text.strip())
        paragraphs_duplicates, char_duplicates = find_duplicates(paragraphs)
        if self.dup_para_frac and paragraphs_duplicates / len(paragraphs) > self.dup_para_frac:
            return False, "dup_para_frac"
        if self.dup_para_char_frac and char_duplicates / len(text) > self.dup_para_char_frac:
            return False, "dup_para_char_frac"
        lines = self._line_splitter.split(text)
        line_duplicates, char_duplicates = find_duplicates(lines)
        if self.dup_line_frac and line_duplicates / len(lines) > self.dup_line_frac:
            return False, "dup_line_frac"
        if self.dup_line_char_frac and char_duplicates / len(text) > self.dup_line_char_frac:
            return False, "dup_line_char_frac"
        words = split_into_words(text, self.language)
        ids = np.fromiter(map(hash, words), dtype=np.int64, count=len(words))  # a word's id within this document
        chars = np.zeros(len(words) + 1, dtype=np.int64)  # chars[i]: characters in the first i words
        np.cumsum(np.fromiter(map(len, words), dtype=np.int64, count=len(words)), out=chars[1:])
        for n, n_frac in self.top_n_grams:
            if len(words) >= n and top_ngram_chars(ids, chars, n) / len(text) > n_frac:
                return False, f"top_{n}_gram"
        for n, n_frac in self.dup_n_grams:
            if len(words) >= n and duplicated_ngram_chars(ids, chars, n, n_frac * len(text)) / len(text) > n_frac:
                return False, f"duplicated_{n}_n_grams"
        return True


_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd: each n-gram's key is a polynomial in its word ids, mod 2**64


def ngram_keys(ids: np.ndarray, n: int) -> np.ndarray:
    """One 64-bit key per n-gram of word ids (equal n-grams, equal keys; others collide with
    probability ~2**-64)."""
    keys = np.zeros(len(ids) - n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        words = ids.view(np.uint64) + np.uint64(1)
        for k in range(n):
            keys = keys * _MULTIPLIER + words[k:len(words) - n + 1 + k]
    return keys


def top_ngram_chars(ids: np.ndarray, chars: np.ndarray, n: int) -> int:
    """Characters (spaces between its words included) × count of the most frequent n-gram, the
    first to occur among equally frequent ones (as datatrove's `Counter.most_common(1)`)."""
    _, first, counts = np.unique(ngram_keys(ids, n), return_index=True, return_counts=True)
    top = counts.max()
    i = first[counts == top].min()
    return int((chars[i + n] - chars[i] + n - 1) * top)


def duplicated_ngram_chars(ids: np.ndarray, chars: np.ndarray, n: int, enough: float) -> int:
    """Characters in repeated n-grams, counted as datatrove's `find_all_duplicate` does (left to
    right, a repeat skips its n words); stops counting once past `enough`. Only the positions of
    n-grams that occur more than once are visited one by one: the others never repeat."""
    _, keys, counts = np.unique(ngram_keys(ids, n), return_inverse=True, return_counts=True)
    m = len(keys)
    if len(counts) == m:
        return 0
    repeats = np.flatnonzero(counts[keys] > 1)
    next_repeat = np.full(m + n + 1, m, dtype=np.int64)  # the first position ≥ i whose n-gram occurs twice
    next_repeat[:m][repeats] = repeats
    next_repeat = np.minimum.accumulate(next_repeat[::-1])[::-1].tolist()
    keys, seen, repeated, i = keys.tolist(), set(), 0, next_repeat[0]
    while i < m:
        if keys[i] in seen:
            repeated += int(chars[i + n] - chars[i])
            if repeated > enough:
                break
            i = next_repeat[i + n]
        else:
            seen.add(keys[i])
            i = next_repeat[i + 1]
    return repeated


class CodeRules(BaseFilter):
    """Source files: drop minified or data-blob files (a line over `max_line_chars`, mean line over
    `max_mean_line_chars`), files that are mostly symbols or numbers (alphanumeric share under
    `min_alnum_fraction` of non-space characters), generated files, and files whose lines repeat
    (more than `max_dup_line_fraction` of their characters in repeated lines)."""

    name = "code rules"
    GENERATED = ("auto-generated", "autogenerated", "automatically generated", "generated by", "do not edit")

    def __init__(self, max_line_chars: int = 1000, max_mean_line_chars: float = 100, min_alnum_fraction: float = 0.25,
                 max_dup_line_fraction: float = 0.5, min_lines: int = 5):
        super().__init__()
        self.max_line_chars = max_line_chars
        self.max_mean_line_chars = max_mean_line_chars
        self.min_alnum_fraction = min_alnum_fraction
        self.max_dup_line_fraction = max_dup_line_fraction
        self.min_lines = min_lines

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        lines = doc.text.splitlines()
        nonblank = [line for line in lines if line.strip()]
        if len(nonblank) < self.min_lines:
            return False, "code_too_few_lines"
        if max(len(line) for line in lines) > self.max_line_chars:
            return False, "code_long_line"
        if sum(len(line) for line in nonblank) / len(nonblank) > self.max_mean_line_chars:
            return False, "code_long_mean_line"
        chars = "".join(doc.text.split())
        if sum(c.isalpha() for c in chars) / max(len(chars), 1) < self.min_alnum_fraction:
            return False, "code_few_letters"
        head = doc.text[:600].lower()
        if any(marker in head for marker in self.GENERATED):
            return False, "code_generated"
        seen: set[str] = set()
        repeated = 0
        for line in nonblank:
            key = line.strip()
            if key in seen and len(key) > 10:
                repeated += len(key)
            seen.add(key)
        if repeated / max(len(chars), 1) > self.max_dup_line_fraction:
            return False, "code_repeated_lines"
        return True


class VerdictOnly(BaseFilter):
    """Another filter's keep/remove decision on a copy of the document, its text left as it was:
    C4's filter also rewrites what it keeps (drops lines under 3 words, strips indentation and
    blank lines), which would take the code examples and paragraphs out of reference pages."""

    def __init__(self, rule: BaseFilter):
        super().__init__()
        self.rule = rule
        self.name = f"{rule.name} (verdict only)"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.rule.filter(Document(text=doc.text, id=doc.id, metadata=dict(doc.metadata)))


# Reference documentation repeats itself by nature (each function's parameters, "Return self==value."
# in each class, a reST title's row of "*"): Gopher's repetition thresholds doubled, which ≥ 90 % of
# the standard library's docstrings and of the language reference pass (benchmarks/RESULTS.md).
REFERENCE_REPETITION = dict(dup_line_frac=0.5, dup_line_char_frac=0.4, top_n_grams=((2, 0.4), (3, 0.36), (4, 0.32)),
                            dup_n_grams=((5, 0.3), (6, 0.28), (7, 0.26), (8, 0.24), (9, 0.22), (10, 0.2)))


def domain_rules(words: WordTokenizer) -> dict[str, list[BaseFilter]]:
    """The rules each domain goes through, in order (see the module docstring)."""
    c4_docs = dict(filter_no_terminal_punct=False, filter_curly_bracket=False, language=words)
    return {
        "prose": [FastGopherRepetition(language=words), GopherQualityFilter(language=words),
                  C4QualityFilter(**c4_docs), FineWebQualityFilter(language=words)],
        "reference": [FastGopherRepetition(**REFERENCE_REPETITION, language=words),
                      GopherQualityFilter(max_symbol_word_ratio=0.3, max_non_alpha_words_ratio=0.4,
                                          max_avg_word_length=15, language=words),
                      VerdictOnly(C4QualityFilter(**c4_docs, min_num_sentences=2, filter_javascript=False))],
        "code": [CodeRules()],
        "licence": [FastGopherRepetition(language=words)],
        "lists": [FastGopherRepetition(language=words),
                  GopherQualityFilter(min_doc_words=20, max_bullet_lines_ratio=None, max_non_alpha_words_ratio=0.5,
                                      max_avg_word_length=15, language=words)],
    }


def gopher_c4_rules(words: WordTokenizer | str) -> list[BaseFilter]:
    """datatrove's Gopher quality and C4 filters at their default thresholds (domain rules off)."""
    return [GopherQualityFilter(language=words), C4QualityFilter(language=words)]


class QualityRules(Block):
    """Each document through its domain's rules; the reason names the domain and the rule."""

    name = "rules"

    def __init__(self, rules: str = "domain", exclusion_writer=None):
        super().__init__(exclusion_writer)
        if rules not in ("domain", "gopher_c4"):
            raise ValueError(f"unknown rules {rules!r} (known: domain, gopher_c4)")
        self.rules = rules
        words = fast_english_words()
        self.by_domain = domain_rules(words) if rules == "domain" else {}
        self.everywhere = gopher_c4_rules(words) if rules == "gopher_c4" else []

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        domain = doc.metadata.get("domain") or "prose"
        for rule in self.by_domain.get(domain, self.everywhere):
            if not doc.text.strip():
                return False, f"{domain}:empty"
            keep, reason = get_filter_result(rule.filter(doc))
            if not keep:
                return False, f"{domain}:{reason or type(rule).__name__}" if self.by_domain else reason
        return True
