"""URL filtering: a configurable blocklist of domains and of words in the URL (the seed's
"blacklist"). A domain matches itself and its subdomains; a word matches anywhere in the
lower-cased URL (a path such as `/_vendor/` works too). Documents without a URL pass."""

from __future__ import annotations

from urllib.parse import urlsplit

from datatrove.data import Document

from hfllm.data.blocks import Block


class UrlBlocklist(Block):
    name = "urls"

    def __init__(self, domains: list[str] = (), words: list[str] = (), exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.domains = tuple(d.lower().lstrip(".") for d in domains)
        self.words = tuple(w.lower() for w in words)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        url = (doc.metadata.get("url") or "").lower()
        if not url:
            return True
        host = urlsplit(url).hostname or ""
        if any(host == d or host.endswith("." + d) for d in self.domains):
            return False, "blocked_domain"
        if any(w in url for w in self.words):
            return False, "blocked_url_word"
        return True
