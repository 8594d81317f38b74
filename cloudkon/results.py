"""Results files: one JSON object per task and line (JSON Lines)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import IO

from cloudkon.errors import OutputClosed, OutputError, UsageError
from cloudkon.model import CANCELLED, STATUSES, ResultBundle

_FIELDS = ("line", "command", "status", "exit_code", "signal", "start", "end", "stdout",
           "stderr")


@dataclass
class Resumed:
    """What a results file already holds, for resuming into it."""

    path: str
    job_id: str | None = None  # of the first record; None for an empty file
    bundles: list[ResultBundle] = field(default_factory=list)  # the results, as bundles
    lines: set[int] = field(default_factory=set)  # lines with a result (not cancelled)
    attempts: dict[int, int] = field(default_factory=dict)  # line -> attempt of its result
    cut: int = 0  # bytes of a last line cut short (an interrupted write), dropped on resume


def read_for_resume(path: str, job_id: str | None = None) -> Resumed:
    """The results ``path`` holds (of job ``job_id``, if given; else of the job of its first
    record): a missing file holds none. A last line cut short by an interruption is
    noted, to be dropped; any other line that is not a result is a UsageError naming it.
    A ``cancelled`` result is no result: that task runs again."""
    resumed = Resumed(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return resumed
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    groups: dict[tuple, list[tuple]] = {}
    with f:
        data = f.read()
    end = data.rfind(b"\n") + 1
    resumed.cut = len(data) - end
    for number, raw in enumerate(data[:end].split(b"\n")[:-1], 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            row = tuple(record[name] for name in _FIELDS)
            rid = record["job_id"]
            if not isinstance(row[0], int) or row[2] not in STATUSES or not isinstance(rid, str):
                raise ValueError("bad line, status or job_id")
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{path}:{number}: not a result ({exc}); resume into another"
                             " file") from None
        if job_id is None:
            job_id = rid
        if rid != job_id:
            raise UsageError(f"{path}:{number}: a result of job {rid}, not of {job_id}; resume"
                             " into another file")
        if row[2] == CANCELLED:
            continue
        attempt = record.get("attempt", 1)
        resumed.lines.add(row[0])
        resumed.attempts[row[0]] = max(attempt, resumed.attempts.get(row[0], 1))
        groups.setdefault((record.get("queued", 0.0), record.get("worker", ""), attempt),
                          []).append(row)
    resumed.job_id = job_id
    resumed.bundles = [ResultBundle(job_id, 0, rows, queued, worker, attempt=attempt)
                       for (queued, worker, attempt), rows in groups.items()]
    return resumed


class ResultsWriter:
    """Writes each result as it arrives, so an interrupted run keeps what finished."""

    def __init__(self, path: str, resume: Resumed | None = None) -> None:
        """Write to ``path`` (a new file), or append to it after what ``resume`` read from
        it (a last line cut short is dropped first)."""
        self.path = path
        if path == "-":
            self._file: IO[str] = sys.stdout
            return
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise UsageError(f"--output {path}: folder {parent} does not exist")
        if os.path.isdir(path):
            raise UsageError(f"--output {path}: is a directory")
        try:
            if resume is not None and resume.cut:
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) - resume.cut)
            self._file = open(path, "a" if resume is not None else "w", encoding="utf-8",
                              buffering=1 << 20)
        except OSError as exc:
            raise UsageError(f"--output {path}: {exc.strerror or exc}") from None

    def write(self, bundle: ResultBundle) -> None:
        dumps = json.dumps
        text = "".join(dumps(rec, ensure_ascii=False) + "\n" for rec in bundle.records())
        try:
            self._file.write(text)
        except BrokenPipeError:
            raise OutputClosed(f"--output {self.path}: the reader has gone") from None
        except OSError as exc:
            raise OutputError(f"--output {self.path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        try:
            if self._file is sys.stdout:
                self._file.flush()
            else:
                self._file.close()
        except BrokenPipeError:
            raise OutputClosed(f"--output {self.path}: the reader has gone") from None
        except OSError as exc:
            raise OutputError(f"--output {self.path}: {exc.strerror or exc}") from None
