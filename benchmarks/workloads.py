"""The workloads of the comparison runs, written to files, in CloudKon's format and as
shell commands for the peers that run every line through a shell (xargs, GNU parallel).

A ``sleep N`` line is CloudKon's benchmark task: N milliseconds, slept inside the worker.
ThreadPoolExecutor and Celery run it the same way; for xargs and GNU parallel it becomes
``sleep N/1000`` run by /bin/sh (a shell and a sleep process per task: what those tools
cost for the same job).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cloudkon.workload import sleep_ms

# The mixed workload repeats these ten lines: in-process sleeps of 0 to 20 ms, and shell
# commands (a builtin, a pipe, output).
MIXED_CYCLE = ("sleep 0", "true", "sleep 5", "echo mixed", "sleep 0", "sleep 20",
               "printf '%s\\n' a b | wc -l", "sleep 1", "true", "sleep 10")


@dataclass(frozen=True)
class WorkloadSpec:
    """A workload of the comparison runs: its lines repeat ``cycle``."""

    name: str
    cycle: tuple[str, ...]
    default_tasks: int  # the size of a default run (the whole suite in minutes)
    large_tasks: int  # the size of issue 5, selected by --benchmark-large / cloudkon bench --large
    about: str

    def sleep_seconds(self, n: int) -> float | None:
        """The sum of the sleeps of ``n`` tasks, if every task is a sleep (else None)."""
        sleeps = [sleep_ms(line) for line in self.cycle]
        if None in sleeps:
            return None
        whole, rest = divmod(n, len(sleeps))
        return (whole * sum(sleeps) + sum(sleeps[:rest])) / 1000.0


SLEEP0 = WorkloadSpec("sleep0", ("sleep 0",), 10_000, 100_000,
                      "`sleep 0`: the cost of a task, nothing else")
SLEEP10 = WorkloadSpec("sleep10", ("sleep 10",), 1_000, 2_000,
                       "`sleep 10` (10 ms): tasks that wait")
TRUE = WorkloadSpec("true", ("true",), 1_000, 2_000, "shell `true`: a process per task")
MIXED = WorkloadSpec("mixed", MIXED_CYCLE, 1_000, 2_000,
                     "sleeps of 0-20 ms and shell commands, ten lines repeated")
COMPARISON_WORKLOADS = (SLEEP0, SLEEP10, TRUE, MIXED)


def sleep_workload(ms: int) -> WorkloadSpec:
    return WorkloadSpec(f"sleep{ms}", (f"sleep {ms}",), 0, 0, f"`sleep {ms}`")


def shell_line(line: str) -> str:
    """``line`` as a shell runs it: ``sleep N`` (milliseconds) becomes ``sleep N/1000``."""
    ms = sleep_ms(line)
    if ms is None:
        return line
    return f"sleep {ms / 1000:g}"


@dataclass(frozen=True)
class WorkloadFiles:
    """One workload written out: for CloudKon (and the Python peers) and for the shell."""

    spec: WorkloadSpec
    tasks: int
    path: Path  # CloudKon's format
    shell_path: Path  # the same tasks as shell commands

    @property
    def name(self) -> str:
        return self.spec.name


def write(spec: WorkloadSpec, tasks: int, folder: Path) -> WorkloadFiles:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.name}-{tasks}.txt"
    shell_path = folder / f"{spec.name}-{tasks}.sh.txt"
    _write_lines(path, spec.cycle, tasks)
    _write_lines(shell_path, tuple(map(shell_line, spec.cycle)), tasks)
    return WorkloadFiles(spec, tasks, path, shell_path)


def _write_lines(path: Path, cycle: tuple[str, ...], n: int) -> None:
    block = "".join(line + "\n" for line in cycle).encode()
    whole, rest = divmod(n, len(cycle))
    with open(path, "wb") as f:
        per_write = max(1, 65536 // len(cycle))
        for start in range(0, whole, per_write):
            f.write(block * min(per_write, whole - start))
        f.write("".join(line + "\n" for line in cycle[:rest]).encode())
