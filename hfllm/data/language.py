"""Language identification offline with py3langid (its model ships in the wheel; nothing is
downloaded): documents not in `languages` with at least `min_score` probability are removed.
Code is not judged (identifiers and keywords say nothing about a natural language); its
`language` label is left empty. The identifier is loaded on first use, in each worker."""

from __future__ import annotations

from datatrove.data import Document

from hfllm.data.blocks import Block

SKIPPED_DOMAINS = ("code",)


class LanguageFilter(Block):
    name = "language"

    def __init__(self, languages: list[str] = ("en",), min_score: float = 0.5, max_chars: int = 2000,
                 exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.languages = tuple(languages)
        self.min_score = min_score
        self.max_chars = max_chars
        self._identifier = None

    def __getstate__(self):  # the identifier is rebuilt in each process rather than pickled
        return {**self.__dict__, "_identifier": None}

    def identify(self, text: str) -> tuple[str, float]:
        if self._identifier is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            self._identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        language, score = self._identifier.classify(text[: self.max_chars])
        return language, float(score)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if doc.metadata.get("domain") in SKIPPED_DOMAINS:
            return True
        language, score = self.identify(doc.text)
        doc.metadata["language"] = language
        if language not in self.languages:
            return False, f"language_{language}"
        if score < self.min_score:
            return False, "language_uncertain"
        return True
