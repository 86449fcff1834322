"""Stage logging: one line when a stage starts, one when it ends, with sizes and wall time."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def get_logger(name: str) -> logging.Logger:
    root = logging.getLogger("pipeline")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
    return logging.getLogger(f"pipeline.{name}" if not name.startswith("pipeline") else name)


def _fmt(fields: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in fields.items())


@contextmanager
def stage_run(log: logging.Logger, what: str, **inputs: Any) -> Iterator[dict[str, Any]]:
    """Log `what` with its inputs, run the body, then log the outputs it recorded and wall time.

    The body fills the yielded dict with what it wrote (paths, rows, throughput).
    """
    log.info("start %s %s", what, _fmt(inputs))
    summary: dict[str, Any] = {}
    started = time.perf_counter()
    yield summary
    summary["wall_s"] = f"{time.perf_counter() - started:.1f}"
    log.info("done %s %s", what, _fmt(summary))
