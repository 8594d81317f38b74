"""Shared machinery of the local benchmarks: sizes, whole-process runs, figures, ratios.

Every contender runs as a whole process (``subprocess``), timed end to end from the
outside. These machines are shared and noisy, so every figure that matters is a ratio
against a baseline measured in the same run; nothing here asserts a timing. The contenders
of a comparison share a pytest-benchmark group, and at the end of the session one table
of ratios against the targets of issue 2 is printed.

Sizes scale with ``--cloudkon-scale`` (or the environment variable
``CLOUDKON_BENCH_SCALE``): 1 is the full size of the issue, 0.001 a smoke run of a few
seconds (``tests/test_benchmarks_smoke.py``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
BASELINES = BENCH_DIR / "baselines"
PEAK_RSS = BENCH_DIR / "tools" / "peak_rss.py"
PYTHON = sys.executable  # the interpreter running pytest: the project's .venv

# Full sizes, from issue 2 ("Performance").
SLEEP0_TASKS = 300_000
SHELL_TASKS = 2_000
MEMORY_SMALL_TASKS = 10_000
MEMORY_LARGE_TASKS = 1_000_000


def nproc() -> int:
    """What `nproc` prints: the CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def scaled(n: int, factor: float) -> int:
    return max(1, round(n * factor))


def write_workload(path: Path, line: str, n: int) -> Path:
    """A workload of ``n`` copies of ``line``, written 65,536 lines at a time."""
    one = (line + "\n").encode()
    with open(path, "wb") as f:
        for start in range(0, n, 65536):
            f.write(one * min(65536, n - start))
    return path


# --------------------------------------------------------------------------- processes


def child_env() -> dict[str, str]:
    """The environment of every contender: the repository importable. (Its stderr is a
    pipe, so cloudkon shows no progress bar.)"""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop("PYTHONSTARTUP", None)
    return env


def cloudkon_argv(workload: Path, workers: int) -> list[str]:
    return [PYTHON, "-m", "cloudkon", "run", str(workload), "--workers", str(workers), "--json"]


def run_process(argv: list[str], cwd: Path, stdin_path: Path | None = None) -> tuple[float, str]:
    """Run ``argv`` to its end; return (wall seconds, stdout). A non-zero exit is an error."""
    stdin = open(stdin_path, "rb") if stdin_path is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=cwd, env=child_env(), stdin=stdin,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wall = time.perf_counter() - t0
    finally:
        if stdin_path is not None:
            stdin.close()
    if proc.returncode != 0:
        stderr = proc.stderr.decode(errors="replace")[-2000:]
        raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}: {stderr}")
    return wall, proc.stdout.decode()


def check_cloudkon_summary(stdout: str, tasks: int) -> dict:
    summary = json.loads(stdout)
    assert summary["tasks"] == summary["done"] == summary["succeeded"] == tasks, summary
    return summary


def check_baseline_output(stdout: str, tasks: int) -> dict:
    out = json.loads(stdout)
    assert out["tasks"] == out["succeeded"] == tasks, out
    return out


# --------------------------------------------------------------------------- figures


@dataclass
class Entry:
    """What one contender measured in this session."""

    group: str
    name: str
    tasks: int
    command: str
    walls: list[float] = field(default_factory=list)  # seconds, one per measured round
    peak_rss_kib: list[int] = field(default_factory=list)  # one per measured round (memory)
    extra_info: dict | None = None  # the benchmark's extra_info, kept up to date

    @property
    def best_wall(self) -> float:
        return min(self.walls)

    @property
    def tasks_per_s(self) -> float:
        """Throughput of the best round (the least disturbed by other load)."""
        return self.tasks / self.best_wall

    @property
    def tasks_per_s_median(self) -> float:
        return self.tasks / statistics.median(self.walls)

    @property
    def peak_rss_mb(self) -> float:
        """The highest peak over the rounds, in MB (MiB)."""
        return max(self.peak_rss_kib) / 1024.0


@dataclass(frozen=True)
class Target:
    """One line of the final table: ``num`` against ``den`` in ``group``."""

    key: str
    group: str
    num: str
    den: str | None  # None: an absolute figure of ``num`` (peak RSS in MB)
    metric: str  # "throughput" (ratio of tasks/s) or "rss" (ratio of peak RSS, or MB)
    op: str | None  # ">=", "<=", "<" or None (context only, no target)
    bound: float | None

    def _measured(self, entries: dict, name: str | None) -> Entry | None:
        e = entries.get((self.group, name))
        if e is None or not (e.walls if self.metric == "throughput" else e.peak_rss_kib):
            return None  # not run, or failed before its first measured round
        return e

    def value(self, entries: dict) -> float | None:
        a = self._measured(entries, self.num)
        b = self._measured(entries, self.den) if self.den else None
        if a is None or (self.den and b is None):
            return None
        if self.metric == "throughput":
            return a.tasks_per_s / b.tasks_per_s
        if self.den is None:
            return a.peak_rss_mb
        return a.peak_rss_mb / b.peak_rss_mb

    def median_value(self, entries: dict) -> float | None:
        """For throughput: the ratio of the median rounds (context for a noisy baseline)."""
        if self.metric != "throughput":
            return None
        a, b = self._measured(entries, self.num), self._measured(entries, self.den)
        if a is None or b is None:
            return None
        return a.tasks_per_s_median / b.tasks_per_s_median

    def met(self, value: float) -> bool | None:
        if self.op is None:
            return None
        ops = {">=": value >= self.bound, "<=": value <= self.bound, "<": value < self.bound}
        return ops[self.op]

    def label(self) -> str:
        if self.den is None:
            return f"{self.num} peak RSS (MB)"
        what = "tasks/s" if self.metric == "throughput" else "peak RSS"
        return f"{self.num} / {self.den} ({what})"

    def target_text(self) -> str:
        return "-" if self.op is None else f"{self.op} {self.bound:g}"


_SHELL_N = nproc()
TARGETS = [
    Target("sleep0_vs_bare_loop", "local-sleep0", "cloudkon", "bare-loop", "throughput", ">=", 0.5),
    Target("sleep0_vs_queue_pipeline", "local-sleep0", "cloudkon", "queue-pipeline", "throughput",
           ">=", 5),
    Target("sleep0_vs_thread_pool_map", "local-sleep0", "cloudkon", "thread-pool-map",
           "throughput", None, None),
    Target("shell_nproc_vs_xargs", "local-shell", f"cloudkon-w{_SHELL_N}", f"xargs-P{_SHELL_N}",
           "throughput", ">=", 0.9),
    Target("shell_2nproc_vs_xargs", "local-shell", f"cloudkon-w{2 * _SHELL_N}",
           f"xargs-P{_SHELL_N}", "throughput", ">=", 0.9),
    Target("memory_1m_peak_mb", "local-memory", "cloudkon-1M", None, "rss", "<", 150),
    Target("memory_1m_vs_10k", "local-memory", "cloudkon-1M", "cloudkon-10k", "rss", "<=", 1.5),
    Target("memory_10k_vs_python", "local-memory", "cloudkon-10k", "python-floor", "rss",
           None, None),
]


class Figures:
    """Everything measured in the session; keeps ratios in the benchmarks' extra_info."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.entries: dict[tuple[str, str], Entry] = {}

    def entry(self, benchmark, group: str, name: str, tasks: int,
              command: list[str] | str) -> Entry:
        cmd = command if isinstance(command, str) else " ".join(command)
        e = Entry(group, name, tasks, cmd, extra_info=benchmark.extra_info)
        self.entries[(group, name)] = e
        return e

    def publish(self, e: Entry) -> None:
        """Write ``e``'s figures and every ratio they take part in into extra_info."""
        info = e.extra_info
        info.update(contender=e.name, tasks=e.tasks, command=e.command, scale=self.scale,
                    rounds=len(e.walls), nproc=nproc(), python=platform.python_version())
        if e.walls:
            info.update(best_wall_s=round(e.best_wall, 4),
                        median_wall_s=round(statistics.median(e.walls), 4),
                        tasks_per_s=round(e.tasks_per_s, 1),
                        tasks_per_s_median=round(e.tasks_per_s_median, 1))
        if e.peak_rss_kib:
            info.update(peak_rss_mb=round(e.peak_rss_mb, 1),
                        peak_rss_mb_rounds=[round(k / 1024.0, 1) for k in e.peak_rss_kib])
        for t in TARGETS:
            if t.group != e.group:
                continue
            v = t.value(self.entries)
            if v is None:
                continue
            for side in {t.num, t.den} - {None}:
                other = self.entries.get((t.group, side))
                if other is not None and other.extra_info is not None:
                    prefix = "ratio." if t.den is not None else ""
                    other.extra_info[f"{prefix}{t.key}"] = round(v, 3)
                    mv = t.median_value(self.entries)
                    if mv is not None:
                        other.extra_info[f"ratio_median.{t.key}"] = round(mv, 3)
                    if t.op is not None:
                        other.extra_info[f"target.{t.key}"] = t.target_text()
                        other.extra_info[f"met.{t.key}"] = t.met(v)

    def table(self) -> list[str]:
        full = self.scale == 1
        rows = [("group", "comparison", "value", "median", "target", "met",
                 "figures (best rounds)")]
        for t in TARGETS:
            v = t.value(self.entries)
            if v is None:
                continue
            a = self.entries[(t.group, t.num)]
            if t.metric == "throughput":
                b = self.entries[(t.group, t.den)]
                figs = f"{a.tasks_per_s:,.0f} vs {b.tasks_per_s:,.0f} tasks/s ({a.tasks:,} tasks)"
                shown = f"{v:.2f}x"
            elif t.den is None:
                figs = f"{a.tasks:,} tasks"
                shown = f"{v:.1f}"
            else:
                b = self.entries[(t.group, t.den)]
                figs = f"{a.peak_rss_mb:.1f} vs {b.peak_rss_mb:.1f} MB peak RSS"
                shown = f"{v:.2f}x"
            met = t.met(v)
            met_text = "-" if met is None else ("yes" if met else "NO") if full else "n/a"
            mv = t.median_value(self.entries)
            median = "-" if mv is None else f"{mv:.2f}x"
            rows.append((t.group, t.label(), shown, median, t.target_text(), met_text, figs))
        if len(rows) == 1:
            return []
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        head = (f"nproc {nproc()}, Python {platform.python_version()}, scale {self.scale:g}; "
                "value: from the best round of each contender (median: the median rounds); "
                "met: value against target")
        if not full:
            head += "; targets are judged at scale 1 only"
        return [head, *lines]


# --------------------------------------------------------------------------- measuring


def measure_throughput(benchmark, figures: Figures, *, group: str, name: str, tasks: int,
                       argv: list[str], cwd: Path, check, rounds: int, warmup: bool = True,
                       stdin_path: Path | None = None) -> Entry:
    """Time ``argv`` as a whole process for ``rounds`` rounds and record its throughput.

    ``check(stdout, tasks)`` validates every round's output (all tasks done and
    succeeded). A warm-up round (page cache, .pyc files) runs first unless disabled, and
    is not recorded.
    """
    command = " ".join(argv) + (f" < {stdin_path.name}" if stdin_path else "")
    e = figures.entry(benchmark, group, name, tasks, command)

    def once() -> None:
        wall, out = run_process(argv, cwd, stdin_path)
        check(out, tasks)
        e.walls.append(wall)

    if warmup and not benchmark.disabled:
        once()
        e.walls.clear()
    benchmark.pedantic(once, rounds=rounds, iterations=1)
    figures.publish(e)
    return e


def measure_peak_rss(benchmark, figures: Figures, *, group: str, name: str, tasks: int,
                     argv: list[str], cwd: Path, check, rounds: int) -> Entry:
    """Run ``argv`` ``rounds`` times through tools/peak_rss.py; record its peak RSS.

    The command is started by a small launcher process that forks it and reads its
    ru_maxrss with os.wait4. Starting it straight from pytest would not do: on Linux a
    child's ru_maxrss also counts the memory of the process that forked it (the old mm is
    folded in at exec), so it would report pytest's own peak.
    """
    e = figures.entry(benchmark, group, name, tasks, argv)
    report = cwd / f"peak-rss-{name}.txt"

    def once() -> None:
        wall, out = run_process([PYTHON, "-S", str(PEAK_RSS), str(report), "--", *argv], cwd)
        check(out, tasks)
        e.walls.append(wall)
        e.peak_rss_kib.append(int(report.read_text().split()[0]))

    benchmark.pedantic(once, rounds=rounds, iterations=1)
    figures.publish(e)
    return e
