"""The held-out split rule shared by every stage: a document's split follows from its text alone.

Why by content hash and not by position: the same document lands in the same split on every
machine and in every run, whatever order a dataset or a stream yields it in — so a streamed
pretraining run can skip the documents that the data stage held out for evaluation
(`exclude_held_out_fraction`) without keeping a list of them.
"""

from __future__ import annotations

import hashlib


def is_held_out(text: str, test_fraction: float) -> bool:
    """True for the `test_fraction` of documents whose text hashes into the held-out buckets."""
    bucket = int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:4], "big") % 10_000
    return bucket < test_fraction * 10_000
