"""Step-by-step progress on stderr for long work; silent with quiet=True (CI logs, --quiet). The libraries we call
are kept quiet meanwhile (`quiet_library`), so that these lines are what the user reads."""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import time
import warnings
from typing import Iterator


class Progress:
    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self._start = time.perf_counter()

    def step(self, message: str) -> None:
        if not self.quiet:
            print(f"[{time.perf_counter() - self._start:6.1f}s] {message}", file=sys.stderr, flush=True)

    @property
    def show_bars(self) -> bool:
        return not self.quiet and sys.stderr.isatty()


@contextlib.contextmanager
def quiet_library(logger: str) -> Iterator[None]:
    """Quiet a library while it works: its logger ("root" for one that logs through the root logger) down to
    errors, its warnings ignored, and what it prints to stdout/stderr (progress bars, per-pass chatter) dropped;
    our own progress lines say what runs."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with (warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()),
              contextlib.redirect_stderr(io.StringIO())):
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)
