"""The task and result model shared by the local and remote flavours.

A task is one line of a workload: its line number and its command. Its id is derived, not
stored: the job id plus the line number, so the same workload submitted twice yields the
same ids. Tasks travel in bundles (CloudKon's task bundling), results likewise.

Inside bundles, tasks and results are plain tuples laid out as :class:`Task` and
:class:`Result` (a named tuple costs six times as much to build, and a bundle holds
hundreds); ``Result._make(t)`` gives the named view where it is wanted.
"""

from __future__ import annotations

import base64
import os
import re
import time
from typing import NamedTuple

from cloudkon.errors import UsageError

SUCCEEDED = "succeeded"
FAILED = "failed"
TIMED_OUT = "timed_out"
CANCELLED = "cancelled"  # interrupted by Ctrl-C or shutdown before it could finish

STATUSES = (SUCCEEDED, FAILED, TIMED_OUT, CANCELLED)


def task_id(job_id: str, line: int) -> str:
    """The deterministic id of the task on ``line`` of job ``job_id``."""
    return f"{job_id}:{line}"


# A job id becomes part of task ids, S3 keys, lease keys and log lines: keep it plain.
JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_job_id(job_id: str) -> str:
    """``job_id`` if it is a usable job id; UsageError if not."""
    if not JOB_ID_PATTERN.fullmatch(job_id):
        raise UsageError(f"job id {job_id!r}: use 1 to 128 letters, digits, '.', '_' and '-',"
                         " starting with a letter or digit")
    return job_id


def new_job_id(prefix: str = "job") -> str:
    """A fresh job id: readable, sortable by time, unique enough to never collide."""
    return f"{prefix}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.urandom(3).hex()}"


def bundle_key(job_id: str, seq: int, attempt: int = 1) -> str:
    """The lease key of bundle ``seq`` of attempt ``attempt`` of job ``job_id``: the same
    for every copy of it, whoever sent it (docs/design.md, section 4, "Keys"). The first
    attempt's keys are ``JOB#SEQ``; a retry's are ``JOB#aN#SEQ``, so they never meet the
    first attempt's COMPLETED leases."""
    return f"{job_id}#{seq}" if attempt <= 1 else f"{job_id}#a{attempt}#{seq}"


def job_key(job_id: str) -> str:
    """The key of the job's record (its manifest) in the lease table: it cannot be a
    bundle key, which ends in a number."""
    return f"{job_id}#manifest"


class Task(NamedTuple):
    """One task: the workload line it came from and the command on it."""

    line: int
    command: str


class Result(NamedTuple):
    """What became of one task. Times are seconds since the epoch."""

    line: int
    command: str
    status: str
    exit_code: int | None  # None when the command never ran to an exit
    signal: str | None  # e.g. "SIGKILL" when a signal ended it
    start: float
    end: float
    stdout: str  # the last bytes of stdout; bytes that are not UTF-8 as surrogate escapes
    stderr: str

    def to_record(self, job_id: str, worker: str = "", queued: float = 0.0) -> dict:
        """The result as the JSON object written to a results file, one per line.

        ``queued`` is when the task's bundle was put on the input queue (0 when unknown):
        ``end - queued`` is the task's latency.
        """
        return {
            "task_id": task_id(job_id, self.line),
            "job_id": job_id,
            "line": self.line,
            "command": self.command,
            "status": self.status,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "start": round(self.start, 6),
            "end": round(self.end, 6),
            "duration": round(self.end - self.start, 6),
            "stdout": _readable(self.stdout),
            "stderr": _readable(self.stderr),
            "worker": worker,
            "queued": round(queued, 6),
            **_exact("stdout", self.stdout),
            **_exact("stderr", self.stderr),
        }


def is_utf8(text: str) -> bool:
    """Whether an output tail is text as it stands (no bytes kept as surrogate escapes)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _readable(text: str) -> str:
    """An output tail as text: bytes that are not UTF-8 as U+FFFD."""
    if is_utf8(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace") \
        if _escapes_only(text) else text.encode("utf-8", "replace").decode("utf-8")


def _escapes_only(text: str) -> bool:
    try:
        text.encode("utf-8", "surrogateescape")
        return True
    except UnicodeEncodeError:
        return False


def _exact(name: str, text: str) -> dict:
    """``{NAME_base64: ...}``, the tail's exact bytes, for a tail that is not UTF-8."""
    if text.isascii() or not _escapes_only(text):
        return {}
    data = text.encode("utf-8", "surrogateescape")
    try:
        data.decode("utf-8")
        return {}
    except UnicodeDecodeError:
        return {f"{name}_base64": base64.b64encode(data).decode("ascii")}


class Bundle:
    """Tasks of one job that travel through a queue together: (line, command) tuples."""

    __slots__ = ("job_id", "seq", "tasks", "sent_at", "attempt")

    def __init__(self, job_id: str, seq: int, tasks: list[tuple[int, str]],
                 sent_at: float = 0.0, attempt: int = 1) -> None:
        self.job_id = job_id
        self.seq = seq  # the bundle's number within its job's attempt, from 0
        self.tasks = tasks
        self.sent_at = sent_at  # when it was put on the input queue (time.time())
        self.attempt = attempt  # 1, or the retry (cloudkon retry) that sent it

    def __repr__(self) -> str:
        return f"Bundle({self.job_id!r}, seq={self.seq}, tasks={len(self.tasks)})"


class ResultBundle:
    """The results of one bundle's tasks (tuples laid out as Result), in the order they ran."""

    __slots__ = ("job_id", "seq", "results", "sent_at", "worker", "threads", "attempt",
                 "spilled")

    def __init__(self, job_id: str, seq: int, results: list[tuple], sent_at: float,
                 worker: str = "", threads: int = 0, attempt: int = 1) -> None:
        self.job_id = job_id
        self.seq = seq
        self.results = results
        self.sent_at = sent_at  # copied from the task bundle: latency = result end - sent_at
        self.worker = worker  # who ran the bundle
        self.threads = threads  # the bundle threads of that worker; 0 if not said
        self.attempt = attempt  # copied from the task bundle
        # The pointer to the results spilled to the bucket (cloudkon.spill), when a message
        # carried one instead of them; None for results carried inline.
        self.spilled: dict | None = None

    def records(self) -> list[dict]:
        """The results as results-file records (with ``attempt`` when it is a retry's)."""
        make, job_id, worker, queued = Result._make, self.job_id, self.worker, self.sent_at
        records = [make(r).to_record(job_id, worker, queued) for r in self.results]
        if self.attempt > 1:
            for record in records:
                record["attempt"] = self.attempt
        return records
