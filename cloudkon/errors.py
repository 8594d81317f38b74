"""The project's exceptions: one base class, specific subclasses.

Every error a user can cause is a :class:`CloudKonError`; the CLI prints its message on
one line and exits with its ``exit_code``. Foreign exceptions are translated into these at
the boundary where they are raised (``raise ... from``).
"""

from __future__ import annotations


class CloudKonError(Exception):
    """Base class of every error CloudKon raises on purpose."""

    exit_code = 1


class UsageError(CloudKonError):
    """The command line asks for something that cannot be done."""

    exit_code = 2


class WorkloadError(UsageError):
    """The workload file as a whole cannot be used (missing, a directory, binary, empty)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class BadLinesError(WorkloadError):
    """``--strict`` found lines that cannot be tasks; nothing was run."""

    def __init__(self, path: str, count: int) -> None:
        noun = "line" if count == 1 else "lines"
        super().__init__(path, f"{count} bad {noun}; nothing was run (--strict)")
        self.count = count
