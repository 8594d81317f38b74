"""Configuration, read once at the edge (CLI flags, then environment, then defaults) and
passed down frozen."""

from __future__ import annotations

from dataclasses import dataclass

from cloudkon.limits import (
    DEFAULT_BUNDLE_MS,
    DEFAULT_BUNDLE_SIZE,
    DEFAULT_TAIL_BYTES,
    DEFAULT_TASK_TIMEOUT,
)


@dataclass(frozen=True)
class RunConfig:
    """How to run one workload locally."""

    workload: str
    job_id: str
    workers: int = 4
    task_timeout: float | None = DEFAULT_TASK_TIMEOUT  # seconds; None: no limit
    bundle_size: int = DEFAULT_BUNDLE_SIZE
    bundle_ms: float = DEFAULT_BUNDLE_MS
    tail_bytes: int = DEFAULT_TAIL_BYTES
    strict: bool = False
