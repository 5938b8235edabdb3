"""Questions about Python generated from the embedded corpus's own text (`hfllm.corpus`).

Every machine has this text, so the questions need no network, and a model pretrained on the
embedded corpus has read what answers them. Two forms share the same facts:

- four-choice items (`multiple_choice_items`) for the MMLU-format task (`hfllm.evaluation.mmlu`);
- (question, answer) look-up facts (`lookup_facts`) for the post-training issue's verifiable task.

Subjects (facts, and where the corpus states them):
- `python_builtins`: the language reference's entries for built-in and special methods
  (`str.capitalize()`, `object.__len__()`, …) and the first sentence of each description, which
  follows its name in `pydoc_topics`; asked both ways, wrong choices from the entries around it;
- `python_language_reference`: how a sentence of the language reference's prose continues;
- `python_stdlib_docs`: how a sentence of a standard-library docstring continues; the wrong
  continuations are spans from the same or neighbouring documents, preferably ones that follow
  the same word there, so grammar alone does not give the answer away.
A fourth look-up kind, `module_of_function` (which stdlib module defines a function), comes from
the stdlib's source rather than its docstrings: the corpus does not state it, so only training
on the facts themselves teaches it.

Two rules keep evaluation honest:
- An item quotes at most `MAX_QUOTED_WORDS` (11) consecutive words of the corpus, counted as the
  contamination checks count them (`hfllm.evaluation.contamination.words`: runs of `\\w`, so
  `command-line` is two), so the data stage's 13-gram decontamination does not remove the
  documents an item tests: the item asks what the model learned from them without being a copy
  of them. (Twelve would not do: a question's last word can be the word before the quote in the
  corpus, as "continue" is in pdb's help; a test checks that no 13-gram of any item is in the
  corpus.)
- Each fact falls either into the MMLU pool or into the look-up pool by a hash of its key (the
  method's name, the sentence's text), so fine-tuning on look-up facts never teaches an MMLU
  answer.

Everything is seeded and depends only on the corpus text (the Python version's standard library),
so the same seed gives the same items on every machine with the same Python.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import random
import re
import sysconfig
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from hfllm import corpus
from hfllm.evaluation.contamination import count_words

SUBJECTS = ("python_builtins", "python_language_reference", "python_stdlib_docs")
SUBJECT_DESCRIPTIONS = {
    "python_builtins": "Python's built-in types and special methods",
    "python_language_reference": "the Python language reference",
    "python_stdlib_docs": "the documentation of Python's standard library",
}
FACT_KINDS = ("builtin_name", "next_word", "module_of_function")
LETTERS = "ABCD"
MAX_QUOTED_WORDS = 11  # two less than the data stage's decontamination n-gram
CONTINUATION_WORDS = 4  # words in each choice of a sentence-continuation item
DESCRIPTION_WORDS = 10  # words of a description quoted in a question or choice

_BUILTIN_NAMES = frozenset(dir(builtins))
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_PLAIN_WORD = re.compile(r"^[A-Za-z][a-z'-]*[,;:.]?$")
# An entry of the reference: `name(args)` (or `class name(args)`, or a dotted attribute) alone on a
# line, then a blank line, then its description indented three spaces further.
_ENTRY = re.compile(
    r"^(?P<indent> *)(?P<cls>class )?(?P<name>[A-Za-z_]\w*(?:\.\w+)*)(?P<call>\([^\n]*\))?\n\n"
    r"(?P=indent)   (?P<body>[^\n]+(?:\n(?P=indent)   [^\n]+)*)",
    re.M,
)


@dataclass(frozen=True)
class Definition:
    """One entry of the language reference: a qualified name and its description's first sentence."""

    name: str  # e.g. "str.capitalize()", "object.__dict__"
    description: str
    doc_index: int  # position of its document in the corpus (neighbours are close)
    position: int  # character offset within the document


@dataclass(frozen=True)
class Sentence:
    """A prose sentence of the corpus, as words."""

    words: tuple[str, ...]
    source: str
    doc_index: int

    @property
    def key(self) -> str:
        return " ".join(self.words)


@dataclass(frozen=True)
class MultipleChoiceItem:
    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer: int  # index of the right choice, as in `cais/mmlu`

    def to_row(self) -> dict:
        return {"subject": self.subject, "question": self.question, "choices": list(self.choices),
                "answer": self.answer}


@dataclass(frozen=True)
class Fact:
    """A look-up fact: a question with one short, exactly checkable answer."""

    kind: str
    question: str
    answer: str


def _pool(key: str) -> str:
    """`mmlu` or `lookup`, from the key's hash: the same fact lands in the same pool everywhere."""
    return "mmlu" if hashlib.sha1(key.encode("utf-8")).digest()[0] % 2 == 0 else "lookup"


def _clip(words: list[str] | tuple[str, ...], n: int) -> str:
    """The longest run of leading words that holds at most `n` counted words, with an ellipsis when
    words were left out."""
    k = len(words)
    while k and count_words(" ".join(words[:k])) > n:
        k -= 1
    return " ".join(words[:k]) + (" …" if k < len(words) else "")


def _cut_within_quote(rng: random.Random, words: tuple[str, ...], after: int) -> int | None:
    """A seeded cut (at least 5 words in) such that the words before it and the `after` words after it
    hold at most MAX_QUOTED_WORDS counted words; None if no cut does."""
    cut = rng.randint(5, MAX_QUOTED_WORDS - after)
    while cut >= 5 and count_words(" ".join(words[: cut + after])) > MAX_QUOTED_WORDS:
        cut -= 1
    return cut if cut >= 5 and len(words) >= cut + after else None


def _bare(text: str) -> str:
    """Comparison form of a choice: lower case, no surrounding punctuation."""
    return text.lower().strip(" ,;:.…\"'")


# ---------------------------------------------------------------------------------------------
# Reading the corpus


@lru_cache(maxsize=2)
def _documents(source: str) -> tuple[str, ...]:
    return tuple(row["text"] for row in corpus.iter_documents((source,)))


def definitions() -> list[Definition]:
    """The language reference's entries for built-in methods and attributes, in corpus order.

    Entries indented under a `class X(…)` entry are qualified with `X.` (`dict.get()`); a name is
    kept once (the special-method pages repeat each other).
    """
    found: dict[str, Definition] = {}
    for index, text in enumerate(_documents("pydoc_topics")):
        classes: list[tuple[int, str]] = []  # enclosing `class` entries as (indent, name)
        for m in _ENTRY.finditer(text):
            indent, name = len(m["indent"]), m["name"]
            while classes and classes[-1][0] >= indent:
                classes.pop()
            if m["cls"]:
                classes.append((indent, name))
                continue
            if len(name) < 3:
                continue  # the debugger's one-letter command abbreviations, `w(here)`
            # `len(d)` under `class dict`: a built-in function applied to the instance, not a method.
            applied = name in _BUILTIN_NAMES and bool(re.fullmatch(r"\(\w+\)", m["call"] or ""))
            if classes and "." not in name and not applied:
                name = f"{classes[-1][1]}.{name}"
            if m["call"] is None and "." not in name:
                continue  # a bare word over an indented block is a heading or an example, not an entry
            words = _SENTENCE_END.split(" ".join(m["body"].split()))[0].split()
            if len(words) < 4 or words[0].startswith(("*", ">>>")) or "::=" in words:
                continue  # too short to ask about, or a grammar rule
            shown = name + (m["call"] if applied else "()" if m["call"] is not None else "")
            found.setdefault(shown, Definition(shown, _clip(words, DESCRIPTION_WORDS), index, m.start()))
    # Entries sharing a description (`__add__`, `__sub__`, … under one text) cannot be told apart by it.
    counts = Counter(d.description for d in found.values())
    return sorted((d for d in found.values() if counts[d.description] == 1), key=lambda d: (d.doc_index, d.position))


class _WordIndex:
    """The corpus's words (bare forms) with the positions of every 5-word run, to ask whether a
    word sequence occurs anywhere in the corpus — a wrong choice that also continues the question's
    words somewhere would make an item ambiguous."""

    def __init__(self, sources: tuple[str, ...] = ("pydoc_topics", "stdlib_docstrings")):
        self.words = [_bare(w) for source in sources for text in _documents(source) for w in text.split()]
        self.starts: dict[int, list[int]] = defaultdict(list)
        for i in range(len(self.words) - 4):
            self.starts[hash(tuple(self.words[i : i + 5]))].append(i)

    def occurs(self, words: Iterable[str]) -> bool:
        seq = [_bare(w) for w in words]
        return any(self.words[p : p + len(seq)] == seq for p in self.starts.get(hash(tuple(seq[:5])), ()))

    def next_words(self, prefix: Iterable[str]) -> set[str]:
        """Every word that follows `prefix` (≥ 5 words) somewhere in the corpus."""
        seq = [_bare(w) for w in prefix]
        return {self.words[p + len(seq)] for p in self.starts.get(hash(tuple(seq[:5])), ())
                if self.words[p : p + len(seq)] == seq and p + len(seq) < len(self.words)}


@lru_cache(maxsize=1)
def _word_index() -> _WordIndex:
    return _WordIndex()


def _prose_paragraphs(text: str) -> Iterator[str]:
    for paragraph in re.split(r"\n\s*\n", text):
        lines = paragraph.splitlines()
        if lines and not any(line.startswith((" ", "\t", ">>>")) for line in lines):
            yield " ".join(paragraph.split())


def sentences(source: str) -> list[Sentence]:
    """Prose sentences of one corpus source (12–40 words, ≥ 90 % plain words; no code, no tables)."""
    found, seen = [], set()
    for index, text in enumerate(_documents(source)):
        for paragraph in _prose_paragraphs(text):
            for sentence in _SENTENCE_END.split(paragraph):
                words = tuple(sentence.split())
                plain = sum(bool(_PLAIN_WORD.match(w)) for w in words)
                if 12 <= len(words) <= 40 and plain >= 0.9 * len(words) and words not in seen:
                    seen.add(words)
                    found.append(Sentence(words, source, index))
    return found


def stdlib_functions() -> dict[str, str]:
    """Public top-level functions of the standard library whose name only one module defines: {name: module}."""
    root = Path(sysconfig.get_paths()["stdlib"])
    modules_of: dict[str, set[str]] = defaultdict(set)
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not parts or any(p.startswith("_") or p in ("site-packages", "idlelib", "lib2to3") or "test" in p
                            for p in parts):
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError, OSError, RecursionError):
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                modules_of[node.name].add(".".join(parts))
    return {name: next(iter(mods)) for name, mods in sorted(modules_of.items()) if len(mods) == 1}


# ---------------------------------------------------------------------------------------------
# Items


def _pick_distinct(rng: random.Random, candidates: Iterable[str], answer: str, k: int = 3,
                   allowed=lambda c: True) -> list[str] | None:
    """`k` candidates that differ from the answer and from each other (compared bare) and pass
    `allowed`, in a seeded order; None when there are fewer."""
    seen, out = {_bare(answer)}, []
    pool = list(dict.fromkeys(candidates))
    rng.shuffle(pool)
    for c in pool:
        if _bare(c) and _bare(c) not in seen and allowed(c):
            seen.add(_bare(c))
            out.append(c)
            if len(out) == k:
                return out
    return None


def _item(rng: random.Random, subject: str, question: str, answer: str, wrong: list[str]) -> MultipleChoiceItem:
    choices = [answer, *wrong]
    rng.shuffle(choices)
    return MultipleChoiceItem(subject, question, tuple(choices), choices.index(answer))  # type: ignore[arg-type]


def _builtin_items(rng: random.Random, defs: list[Definition]) -> list[MultipleChoiceItem]:
    items = []
    for i, d in enumerate(defs):
        if _pool(d.name) != "mmlu":
            continue
        # Neighbours: the entries nearest in the reference (same page first).
        near = [defs[j] for j in sorted((j for j in range(len(defs)) if j != i),
                                        key=lambda j: (defs[j].doc_index != d.doc_index, abs(j - i)))[:8]]
        names = _pick_distinct(rng, [e.name for e in near], d.name)
        if names:
            items.append(_item(rng, "python_builtins",
                               f'Which entry of the Python documentation begins "{d.description}"?', d.name, names))
        descriptions = _pick_distinct(rng, [e.description for e in near], d.description)
        if descriptions:
            items.append(_item(rng, "python_builtins",
                               f"What does `{d.name}` do, according to the Python documentation?", d.description,
                               descriptions))
    return items


def _continuation_items(rng: random.Random, subject: str, found: list[Sentence]) -> list[MultipleChoiceItem]:
    # Per document: every span of CONTINUATION_WORDS words, keyed by the (bare) word before it.
    spans_after: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    by_doc: dict[int, list[Sentence]] = defaultdict(list)
    for s in found:
        by_doc[s.doc_index].append(s)
        for j in range(len(s.words) - CONTINUATION_WORDS):
            span = " ".join(s.words[j + 1 : j + 1 + CONTINUATION_WORDS]).rstrip(",;:.")
            spans_after[s.doc_index][_bare(s.words[j])].append(span)
    items, index = [], _word_index()
    for s in found:
        if _pool(s.key) != "mmlu":
            continue
        cut = _cut_within_quote(rng, s.words, CONTINUATION_WORDS)
        if cut is None:
            continue
        prefix_words = s.words[:cut]
        answer = " ".join(s.words[cut : cut + CONTINUATION_WORDS]).rstrip(",;:.")
        # Wrong continuations: spans of the same and neighbouring documents, those after the same
        # word as the cut first (grammatical there too), then those at the same offset. A span
        # that also follows the question's words somewhere in the corpus would be a second right
        # answer, so it is not allowed.
        docs = range(s.doc_index - 2, s.doc_index + 3)
        after_same = [c for d in docs for c in spans_after[d].get(_bare(prefix_words[-1]), [])]
        same_offset = [" ".join(o.words[cut : cut + CONTINUATION_WORDS]).rstrip(",;:.")
                       for d in docs for o in by_doc.get(d, []) if len(o.words) >= cut + CONTINUATION_WORDS]

        def allowed(c: str) -> bool:
            return not index.occurs([*prefix_words, *c.split()])

        wrong = _pick_distinct(rng, after_same, answer, allowed=allowed)
        wrong = wrong or _pick_distinct(rng, after_same + same_offset, answer, allowed=allowed)
        if wrong:
            items.append(_item(rng, subject, "How does this sentence from the Python documentation continue? "
                                             f'"{" ".join(prefix_words)} …"', answer, wrong))
    return items


def multiple_choice_items(seed: int = 0, subjects: Iterable[str] = SUBJECTS) -> dict[str, list[MultipleChoiceItem]]:
    """All MMLU-pool items of each subject, in a seeded order (the caller takes dev and test from the front)."""
    makers = {
        "python_builtins": lambda rng: _builtin_items(rng, definitions()),
        "python_language_reference": lambda rng: _continuation_items(rng, "python_language_reference",
                                                                     sentences("pydoc_topics")),
        "python_stdlib_docs": lambda rng: _continuation_items(rng, "python_stdlib_docs",
                                                              sentences("stdlib_docstrings")),
    }
    out = {}
    for subject in subjects:
        if subject not in makers:
            raise ValueError(f"unknown subject {subject!r}; known: {', '.join(SUBJECTS)}")
        out[subject] = makers[subject](random.Random(f"{seed}:{subject}"))
        random.Random(f"{seed}:{subject}:order").shuffle(out[subject])
    return out


# ---------------------------------------------------------------------------------------------
# Look-up facts


def lookup_facts(kinds: Iterable[str] = FACT_KINDS, seed: int = 0) -> list[Fact]:
    """(question, answer) facts of the look-up pool, disjoint from every MMLU item's fact; seeded order.

    Kinds: `builtin_name` (description → `str.capitalize`), `next_word` (the word that continues a
    sentence of the documentation), `module_of_function` (function → the stdlib module defining it;
    not stated in the corpus's text). Answers are bare names or words, for exact-match checking.
    """
    kinds = list(kinds)
    unknown = sorted(set(kinds) - set(FACT_KINDS))
    if unknown:
        raise ValueError(f"unknown fact kind(s) {unknown}; known: {', '.join(FACT_KINDS)}")
    rng = random.Random(f"{seed}:lookup")
    facts: list[Fact] = []
    if "builtin_name" in kinds:
        facts += [Fact("builtin_name", f'Which entry of the Python documentation begins "{d.description}"? '
                                       "Answer with its name.", d.name.removesuffix("()"))
                  for d in definitions() if _pool(d.name) == "lookup"]
    if "next_word" in kinds:
        for source in ("pydoc_topics", "stdlib_docstrings"):
            for s in sentences(source):
                if _pool(s.key) != "lookup":
                    continue
                cut = _cut_within_quote(rng, s.words, 1)
                word = s.words[cut].strip(",;:.") if cut else ""
                if word and len(_word_index().next_words(s.words[:cut])) == 1:  # one right answer
                    facts.append(Fact("next_word", "Which word comes next in this sentence from the Python "
                                                   f'documentation? "{" ".join(s.words[:cut])} …"', word))
    if "module_of_function" in kinds:
        facts += [Fact("module_of_function", f"Which module of the Python standard library defines the function "
                                             f"`{name}`?", module)
                  for name, module in stdlib_functions().items()]
    rng.shuffle(facts)
    return facts
