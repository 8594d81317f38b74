"""Where log records go: set up once per command, at the edge.

Commands log ``cloudkon: LEVEL: message`` lines on stderr, warnings and up unless ``-v``.
The worker daemon logs what it does (INFO and up, with times, or JSON lines for CloudWatch
Logs); records carry their ids in ``extra=`` either way.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from cloudkon.jsonlog import JsonFormatter

# The loggers of the project's packages; everything else (boto3, urllib3) stays at WARNING.
PACKAGES = ("cloudkon", "local", "worker", "submitter")


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.levelname_lower = record.levelname.lower()
        return super().format(record)


def configure(verbose: int = 0, daemon: bool = False, as_json: bool = False) -> None:
    """Send every record to stderr: the project's at WARNING (INFO with ``verbose``, DEBUG
    with 2), or for a ``daemon`` at INFO with times (DEBUG with 2), as JSON if ``as_json``."""
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter())
    elif daemon:
        handler.setFormatter(_Formatter("%(asctime)s cloudkon: %(levelname_lower)s: %(message)s"))
    else:
        handler.setFormatter(_Formatter("cloudkon: %(levelname_lower)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    if verbose > 1:
        level = logging.DEBUG
    elif verbose or daemon:
        level = logging.INFO
    else:
        level = logging.WARNING
    for name in PACKAGES:
        logging.getLogger(name).setLevel(level)


def metrics_writer() -> Callable[[str], None]:
    """A function that writes one line as it is to stderr, beside the log records and under
    the same lock discipline (a logger of its own, never filtered by level)."""
    logger = logging.getLogger("cloudkon.metrics.emf")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.INFO)
    return lambda line: logger.info("%s", line)
