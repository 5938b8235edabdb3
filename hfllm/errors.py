"""The one error type users see: a short line naming the file and the field (or row) at fault.

Everything hfllm rejects on purpose (bad config, bad data, mismatched artefacts) raises
`HfllmError`; the CLI and the recipes print it as one line and exit 2, instead of showing a
traceback from deep inside a library.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any


class HfllmError(Exception):
    """A user-facing error. `where` is the file (and row) and `field` the key at fault."""

    def __init__(self, message: str, *, where: str | None = None, field: str | None = None):
        self.message = message
        self.where = where
        self.field = field
        super().__init__(self.one_line())

    def one_line(self) -> str:
        parts = [p for p in (self.where, f"field '{self.field}'" if self.field else None) if p]
        return ": ".join(parts + [self.message])


class ConfigError(HfllmError):
    """A config file or command line that does not fit the stage's dataclasses."""


class DataError(HfllmError):
    """Input data that a stage cannot use (missing column, empty corpus, bad row)."""


class CheckFailed(HfllmError):
    """A stage that ran to the end but whose result failed a check its config asked for (e.g. the
    evaluation's `require_below_bigram`). Unlike refused input, its new output is the evidence:
    the runner keeps it instead of putting the earlier output back, and writes no manifest."""


def exit_on_error(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run `fn`; on `HfllmError` print `hfllm: error: …` on one line and exit with status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HfllmError as err:
            print(f"hfllm: error: {err.one_line()}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
