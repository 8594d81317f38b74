"""The one harness of the benchmarks: whole processes run and timed from outside, their
peak RSS, the machine they ran on, and text tables of ratios. Serves both the
pytest-benchmark files (test_local_*.py, test_compare.py) and ``cloudkon bench``
(suite.py, contenders.py).

Every contender runs as a whole process, timed end to end from the outside. These
machines are shared and noisy, so every figure that matters is a ratio against a baseline
measured in the same run; nothing here asserts a timing.

The benchmarks of issue 2 (test_local_*.py) also keep their figures here (:class:`Figures`)
and end the session with one table of ratios against the issue's targets. Their sizes
scale with ``--cloudkon-scale`` (or the environment variable ``CLOUDKON_BENCH_SCALE``): 1
is the full size of the issue, 0.001 a smoke run of a few seconds
(``tests/test_benchmarks_smoke.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
BASELINES = BENCH_DIR / "baselines"
THREAD_POOL_PEER = BASELINES / "thread_pool_peer.py"
PEAK_RSS = BENCH_DIR / "tools" / "peak_rss.py"
PYTHON = sys.executable  # the interpreter running the benchmarks: the project's .venv
RUN_SECONDS = 3600.0  # a run that takes longer is stuck

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


def machine(**extra: str) -> dict:
    """What every table names under it: CPUs, Python, system (and ``extra``)."""
    return {"nproc": nproc(), "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}", **extra}


def scaled(n: int, factor: float, floor: int = 1) -> int:
    return max(floor, round(n * factor))


def write_workload(path: Path, line: str, n: int) -> Path:
    """A workload of ``n`` copies of ``line``, written 65,536 lines at a time."""
    one = (line + "\n").encode()
    with open(path, "wb") as f:
        for start in range(0, n, 65536):
            f.write(one * min(65536, n - start))
    return path


# --------------------------------------------------------------------------- processes


class ContenderFailed(Exception):
    """A benchmarked process did not run to a clean end; the message is one line."""


@dataclass(frozen=True)
class ProcessRun:
    """One whole-process run, timed from outside."""

    wall: float  # seconds, from the start of the process to its exit
    stdout: str
    peak_rss_kib: int | None = None  # its ru_maxrss, when run through the launcher


def child_env(aws: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every benchmarked process: this checkout importable (cloudkon,
    and ``python -m benchmarks...``), no PYTHONSTARTUP. ``aws``: the variables that point
    boto3 at a moto server; every other AWS_* and CLOUDKON_* variable (profiles,
    per-service endpoints) is dropped, so that nothing reaches real AWS."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop("PYTHONSTARTUP", None)
    if aws is not None:
        for name in list(env):
            if name.startswith(("AWS_", "CLOUDKON_")):
                del env[name]
        env.update(aws, AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    return env


def last_line(text: str) -> str:
    """The last line a failed process printed: what the one-line error shows of it."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(it printed nothing)"


def run_process(argv: Sequence[str], *, cwd: Path, log: Path, env: dict[str, str] | None = None,
                stdin_path: Path | None = None, peak_rss: bool = False,
                timeout: float = RUN_SECONDS) -> ProcessRun:
    """Run ``argv`` to its end and time it; its stderr goes to ``log``. A non-zero exit, or
    still running after ``timeout`` s, raises :class:`ContenderFailed`.

    ``peak_rss``: start it through tools/peak_rss.py, a bare interpreter that forks and
    execs it and reads its ru_maxrss with os.wait4. Started straight from this process it
    could not be measured: on Linux a child's ru_maxrss also counts the memory of the
    process that forked it (the old mm is folded in at exec), so it would report ours.
    """
    report = log.with_suffix(".rss")
    full = [PYTHON, "-S", str(PEAK_RSS), str(report), "--", *argv] if peak_rss else list(argv)
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        with open(log, "wb") as err:
            t0 = time.perf_counter()
            # A session of its own: stopped early (Ctrl-C, a timeout), the process and what
            # it started go together, launcher included.
            proc = subprocess.Popen(full, stdin=stdin, stdout=subprocess.PIPE, stderr=err,
                                    env=env if env is not None else child_env(), cwd=cwd,
                                    start_new_session=True)
            try:
                out, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise ContenderFailed(f"{' '.join(argv[:4])}... still running after"
                                      f" {timeout:g} s; see {log}") from None
            finally:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            wall = time.perf_counter() - t0
    finally:
        if stdin_path:
            stdin.close()
    if proc.returncode != 0:
        raise ContenderFailed(f"{' '.join(argv[:4])}... exited {proc.returncode}:"
                              f" {last_line(log.read_text(errors='replace'))}")
    rss = int(report.read_text().split()[0]) if peak_rss else None
    return ProcessRun(wall, out.decode(errors="replace"), rss)


def cloudkon_argv(workload: Path, workers: int, checkout: Path | None = None) -> list[str]:
    """``cloudkon run`` of this checkout, or of ``checkout`` (another revision's files, see
    :func:`export_revision`), first on the path, so that both run in one session."""
    run = ["run", str(workload), "--workers", str(workers), "--json"]
    if checkout is None:
        return [PYTHON, "-m", "cloudkon", *run]
    # That revision's own `python -m cloudkon`, whatever its entry point did then.
    boot = (f"import runpy, sys; sys.path.insert(0, {str(checkout)!r});"
            " sys.argv[0] = 'cloudkon'; runpy.run_module('cloudkon', run_name='__main__')")
    return [PYTHON, "-c", boot, *run]


def export_revision(rev: str, folder: Path) -> Path:
    """The files of git revision ``rev`` of this repository in ``folder``, byte-compiled
    (as the bootstrap does for the checkout), for a before/after comparison."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True)
    if archive.returncode != 0:
        raise ContenderFailed(f"git archive {rev}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(folder)], capture_output=True)
    return folder


def check_cloudkon_summary(stdout: str, tasks: int) -> dict:
    summary = json.loads(stdout)
    assert summary["tasks"] == summary["done"] == summary["succeeded"] == tasks, summary
    return summary


def check_baseline_output(stdout: str, tasks: int) -> dict:
    out = json.loads(stdout)
    assert out["tasks"] == out["succeeded"] == tasks, out
    return out


# --------------------------------------------------------------------------- tables


def text_table(rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset(),
               gap_column: int | None = None) -> list[str]:
    """``rows`` (the first is the head) as aligned lines, a rule under the head; columns in
    ``right`` are right-aligned; a blank line wherever ``gap_column``'s value changes."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        if gap_column is not None and n > 1 and row[gap_column] != rows[n - 1][gap_column]:
            lines.append("")
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                 for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def ratio(value: float, base: float) -> float:
    """``value`` against ``base``, to 4 significant digits: the figure every table shows."""
    return float(f"{value / base:.4g}")


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
            return ratio(a.tasks_per_s, b.tasks_per_s)
        if self.den is None:
            return a.peak_rss_mb
        return ratio(a.peak_rss_mb, b.peak_rss_mb)

    def median_value(self, entries: dict) -> float | None:
        """For throughput: the ratio of the median rounds (context for a noisy baseline)."""
        if self.metric != "throughput":
            return None
        a, b = self._measured(entries, self.num), self._measured(entries, self.den)
        if a is None or b is None:
            return None
        return ratio(a.tasks_per_s_median, b.tasks_per_s_median)

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
    Target("sleep0_vs_bare_loop", "local-sleep0", "cloudkon", "bare-loop", "throughput", ">=", 0.8),
    Target("sleep0_vs_before", "local-sleep0", "cloudkon", "cloudkon-before", "throughput",
           None, None),
    Target("sleep0_vs_queue_pipeline", "local-sleep0", "cloudkon", "queue-pipeline", "throughput",
           ">=", 5),
    Target("sleep0_vs_thread_pool_map", "local-sleep0", "cloudkon", "thread-pool-map",
           "throughput", None, None),
    Target("shell_nproc_vs_xargs", "local-shell", f"cloudkon-w{_SHELL_N}", f"xargs-P{_SHELL_N}",
           "throughput", ">=", 0.9),
    Target("shell_2nproc_vs_xargs", "local-shell", f"cloudkon-w{2 * _SHELL_N}",
           f"xargs-P{_SHELL_N}", "throughput", ">=", 0.9),
    Target("shell_vs_before", "local-shell", f"cloudkon-w{_SHELL_N}",
           f"cloudkon-before-w{_SHELL_N}", "throughput", None, None),
    Target("memory_1m_peak_mb", "local-memory", "cloudkon-1M", None, "rss", "<", 150),
    Target("memory_1m_vs_10k", "local-memory", "cloudkon-1M", "cloudkon-10k", "rss", "<=", 1.5),
    Target("memory_10k_vs_python", "local-memory", "cloudkon-10k", "python-floor", "rss",
           None, None),
    Target("memory_1m_vs_before", "local-memory", "cloudkon-1M", "cloudkon-before-1M", "rss",
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
        m = machine()
        info.update(contender=e.name, tasks=e.tasks, command=e.command, scale=self.scale,
                    rounds=len(e.walls), nproc=m["nproc"], python=m["python"])
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
        m = machine()
        head = (f"nproc {m['nproc']}, Python {m['python']}, scale {self.scale:g}; "
                "value: from the best round of each contender (median: the median rounds); "
                "met: value against target")
        if not full:
            head += "; targets are judged at scale 1 only"
        return [head, *text_table(rows)]


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
        run = run_process(argv, cwd=cwd, log=cwd / f"{name}.log", stdin_path=stdin_path)
        check(run.stdout, tasks)
        e.walls.append(run.wall)

    if warmup and not benchmark.disabled:
        once()
        e.walls.clear()
    benchmark.pedantic(once, rounds=rounds, iterations=1)
    figures.publish(e)
    return e


def measure_peak_rss(benchmark, figures: Figures, *, group: str, name: str, tasks: int,
                     argv: list[str], cwd: Path, check, rounds: int) -> Entry:
    """Run ``argv`` ``rounds`` times through tools/peak_rss.py (see :func:`run_process`);
    record its peak RSS."""
    e = figures.entry(benchmark, group, name, tasks, argv)

    def once() -> None:
        run = run_process(argv, cwd=cwd, log=cwd / f"peak-rss-{name}.log", peak_rss=True)
        check(run.stdout, tasks)
        e.walls.append(run.wall)
        e.peak_rss_kib.append(run.peak_rss_kib)

    benchmark.pedantic(once, rounds=rounds, iterations=1)
    figures.publish(e)
    return e
