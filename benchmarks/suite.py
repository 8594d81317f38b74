"""The comparison runs, their groups and their table: shared by ``cloudkon bench`` and
benchmarks/test_compare.py (pytest-benchmark).

A group is one question: the same workload through every contender (``compare-*``), one
contender as the workload or the fleet grows (``scale-*``), or sleep tasks of growing
length (``efficiency-*``). Every group ends with ratios against its baseline, measured in
the same run: these machines are shared and noisy, so absolute times say little.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks import contenders as c
from benchmarks import harness, prices
from benchmarks import workloads as w
from benchmarks.harness import ContenderFailed
from benchmarks.moto_server import MotoServer

SLOTS = 4  # tasks at once, for every contender of the comparison groups
# Contenders too slow on the moto server for a whole workload run its first tasks only
# (moto answers ~150 requests/s, and the naive design makes 8 per task; its SQS receive is
# linear in the queue's length, so one message per task also grows quadratically there,
# unlike on AWS). Their ratios compare throughput; the table marks them.
# (default run, --large)
NAIVE_MAX_TASKS = (300, 1_000)
CELERY_MAX_TASKS = (500, 2_000)
PARALLEL_MAX_TASKS = (2_000, 10_000)
EFFICIENCY_MS = (0, 1, 10, 100, 1000)
EFFICIENCY_IDEAL_SECONDS = 2.0  # each efficiency run sleeps this long in all, ideally
EFFICIENCY_SLEEP0_TASKS = 10_000
SCALE_LOCAL_TASKS = (1_000, 10_000, 100_000, 1_000_000)
SCALE_REMOTE_TASKS = (1_000, 10_000)
SCALE_REMOTE_TASKS_LARGE = (1_000, 10_000, 100_000)
SCALE_WORKERS = (1, 2, 4)
SCALE_WORKERS_TASKS = 400  # `sleep 10` tasks: 4 s of sleep, so that more workers pay


def comparison_contenders(large: bool = False, scale: float = 1.0) -> list[c.Contender]:
    """Every contender of a compare-* group, the baseline (ThreadPoolExecutor) first, then
    the other local ones, then those on the moto server."""

    def cap(caps: tuple[int, int]) -> int:
        return _scaled(caps[large], scale)

    return [
        c.ThreadPoolPeer(SLOTS),
        c.LocalCloudKon(SLOTS),
        c.XargsPeer(SLOTS),
        c.ParallelPeer(SLOTS, max_tasks=cap(PARALLEL_MAX_TASKS)),
        c.RemoteCloudKon(1, SLOTS),
        c.RemoteCloudKon(2, SLOTS // 2),
        c.RemoteCloudKon(SLOTS, 1),
        c.RemoteCloudKon(1, SLOTS, naive=True, max_tasks=cap(NAIVE_MAX_TASKS)),
        c.CeleryPeer(SLOTS, max_tasks=cap(CELERY_MAX_TASKS)),
    ]


@dataclass
class Run:
    """One line of the table: one contender in one group."""

    group: str
    contender: str
    what: str  # how it ran
    tasks: int = 0
    wall_s: float | None = None
    tasks_per_s: float | None = None
    ratio: float | None = None  # tasks/s against the group's baseline (first run)
    us_per_task: float | None = None  # wall time x slots / tasks: the cost of one task
    efficiency: float | None = None  # ideal time / whole-process time, for sleep workloads
    # The same as CloudKon's summary reports it: its clock starts once the interpreter has
    # started (at the submit, remotely) and stops at the last result.
    efficiency_reported: float | None = None
    peak_rss_mb: float | None = None  # of the client process
    requests: dict[str, int] = field(default_factory=dict)  # AWS requests by operation
    requests_per_1000: float | None = None
    dollars_per_million: float | None = None  # at prices.PRICES_CHECKED's prices
    note: str = ""  # why it did not run, or that it ran part of the workload
    baseline: str = ""


@dataclass(frozen=True)
class Case:
    """What a group runs: a contender on a workload of a given size."""

    group: str
    contender: c.Contender
    spec: w.WorkloadSpec
    tasks: int
    label: str = ""  # the row's name, when the contender's own is not enough

    @property
    def name(self) -> str:
        return self.label or self.contender.name


def _scaled(n: int, scale: float, floor: int = 2) -> int:
    return harness.scaled(n, scale, floor)


def cases(group: str, *, large: bool = False, scale: float = 1.0,
          tasks: int | None = None) -> list[Case]:
    """The cases of ``group``. ``tasks`` sets the size of the compare-* workloads;
    ``scale`` multiplies every size (0.001 is a smoke run)."""
    if group.startswith("compare-"):
        spec = {s.name: s for s in w.COMPARISON_WORKLOADS}[group.removeprefix("compare-")]
        n = tasks or _scaled(spec.large_tasks if large else spec.default_tasks, scale)
        return [Case(group, k, spec, n) for k in comparison_contenders(large, scale)]
    if group == "scale-local-tasks":
        return [Case(group, c.LocalCloudKon(SLOTS), w.SLEEP0, n, f"local-{n:,}")
                for n in (_scaled(n, scale) for n in SCALE_LOCAL_TASKS)]
    if group == "scale-remote-tasks":
        sizes = SCALE_REMOTE_TASKS_LARGE if large else SCALE_REMOTE_TASKS
        return [Case(group, c.RemoteCloudKon(2, SLOTS // 2), w.SLEEP0, n, f"remote-{n:,}")
                for n in (_scaled(n, scale) for n in sizes)]
    sleep10 = w.sleep_workload(10)
    if group == "scale-local-workers":
        n = _scaled(SCALE_WORKERS_TASKS, scale)
        return [Case(group, c.LocalCloudKon(k), sleep10, n, f"local-w{k}") for k in SCALE_WORKERS]
    if group == "scale-remote-workers":
        n = _scaled(SCALE_WORKERS_TASKS, scale)
        return [Case(group, c.RemoteCloudKon(k, 1), sleep10, n, f"remote-{k}x1")
                for k in SCALE_WORKERS]
    if group in ("efficiency-local", "efficiency-remote"):
        ideal = EFFICIENCY_IDEAL_SECONDS * (5 if large else 1)
        out = []
        for ms in EFFICIENCY_MS:
            n = (EFFICIENCY_SLEEP0_TASKS if ms == 0
                 else max(SLOTS, round(ideal * SLOTS * 1000 / ms)))
            k = (c.LocalCloudKon(SLOTS) if group == "efficiency-local"
                 else c.RemoteCloudKon(2, SLOTS // 2))
            out.append(Case(group, k, w.sleep_workload(ms), _scaled(n, scale, SLOTS),
                            f"sleep-{ms}ms"))
        return out
    raise KeyError(group)


COMPARE_GROUPS = tuple(f"compare-{s.name}" for s in w.COMPARISON_WORKLOADS)
SCALE_GROUPS = ("scale-local-tasks", "scale-remote-tasks", "scale-local-workers",
                "scale-remote-workers")
EFFICIENCY_GROUPS = ("efficiency-local", "efficiency-remote")
GROUPS = COMPARE_GROUPS + SCALE_GROUPS + EFFICIENCY_GROUPS


class Bench:
    """One session of comparison runs: a scratch folder, the moto server when a remote
    contender needs it, and every run so far."""

    def __init__(self, folder: Path | None = None) -> None:
        self._own_folder = folder is None
        self.folder = Path(folder or tempfile.mkdtemp(prefix="cloudkon-bench-"))
        self.moto: MotoServer | None = None
        self.runs: list[Run] = []
        self._files: dict[tuple[str, int], w.WorkloadFiles] = {}

    def context(self, remote: bool) -> c.Context:
        if remote and self.moto is None:
            self.moto = MotoServer(str(self.folder / "moto.log")).start()
        return c.Context(self.folder, self.moto)

    def files(self, spec: w.WorkloadSpec, tasks: int) -> w.WorkloadFiles:
        key = (spec.name, tasks)
        if key not in self._files:
            self._files[key] = w.write(spec, tasks, self.folder / "workloads")
        return self._files[key]

    def run(self, case: Case, timer: Callable[[Callable[[], c.Outcome]], c.Outcome] | None = None
            ) -> Run:
        """Run ``case`` (through ``timer``, e.g. pytest-benchmark's, if given) and record it."""
        k = case.contender
        row = Run(case.group, case.name, k.describe())
        self.runs.append(row)
        why_not = k.available()
        if why_not:
            row.note = f"not run: {why_not}"
            return row
        tasks = case.tasks
        if k.max_tasks is not None and tasks > k.max_tasks:
            tasks = k.max_tasks
            row.note = f"first {tasks:,} tasks only ({k.slow_because})"
        files = self.files(case.spec, tasks)
        ctx = self.context(k.remote)
        k.start(files, ctx)
        try:
            outcome = timer(lambda: k.run(files, ctx)) if timer else k.run(files, ctx)
        finally:
            k.stop()
        if outcome.succeeded != outcome.tasks or outcome.tasks != tasks:
            raise ContenderFailed(f"{case.name} on {case.spec.name}: {outcome.succeeded:,} of"
                                    f" {tasks:,} tasks succeeded")
        row.tasks = tasks
        row.wall_s = round(outcome.wall, 4)
        row.tasks_per_s = float(f"{outcome.tasks_per_s:.4g}")
        row.us_per_task = round(outcome.wall * k.slots / tasks * 1e6, 1)
        sleep_s = case.spec.sleep_seconds(tasks)
        if sleep_s:
            row.efficiency = round(sleep_s / k.slots / outcome.wall, 4)
            own_wall = outcome.summary.get("wall_seconds")  # CloudKon's own clock
            if own_wall:
                row.efficiency_reported = round(sleep_s / k.slots / own_wall, 4)
        if outcome.peak_rss_kib:
            row.peak_rss_mb = round(outcome.peak_rss_kib / 1024, 1)
        if outcome.requests is not None:
            row.requests = dict(sorted(outcome.requests.requests.items(), key=lambda kv: -kv[1]))
            row.requests_per_1000 = round(outcome.requests.total * 1000 / tasks, 1)
            row.dollars_per_million = round(outcome.requests.dollars * 1e6 / tasks, 4)
        self._ratios(case.group)
        return row

    def _ratios(self, group: str) -> None:
        rows = [r for r in self.runs if r.group == group]
        base = next((r for r in rows if r.tasks_per_s), None)
        if base is None:
            return
        for r in rows:
            r.baseline = base.contender
            if r.tasks_per_s:
                r.ratio = harness.ratio(r.tasks_per_s, base.tasks_per_s)

    def run_groups(self, groups: list[str], *, large: bool = False, scale: float = 1.0,
                   tasks: int | None = None, on_run: Callable[[Run], None] | None = None
                   ) -> list[Run]:
        for group in groups:
            for case in cases(group, large=large, scale=scale, tasks=tasks):
                row = self.run(case)
                if on_run is not None:
                    on_run(row)
        return self.runs

    def close(self) -> None:
        if self.moto is not None:
            self.moto.stop()
            self.moto = None
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- the table


def machine() -> dict:
    return harness.machine(prices=f"{prices.PRICES_REGION}, checked {prices.PRICES_CHECKED}")


def _fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


def _ratio_text(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.2f}x" if ratio >= 0.095 else f"{ratio:.2g}x"


def table(runs: list[Run]) -> str:
    """The runs as one text table, group by group, each with ratios to its baseline."""
    head = ("group", "contender", "tasks", "wall s", "tasks/s", "x base", "us/task",
            "effic.", "RSS MB", "req/1k", "$/M tasks", "note")
    rows = [head]
    for r in runs:
        rows.append((r.group, r.contender, f"{r.tasks:,}" if r.tasks else "-",
                     _fmt(r.wall_s, ".2f"), _fmt(r.tasks_per_s, ",.0f"),
                     _ratio_text(r.ratio),
                     _fmt(r.us_per_task, ",.0f"),
                     _fmt(None if r.efficiency is None else r.efficiency * 100, ".1f")
                     + ("%" if r.efficiency is not None else ""),
                     _fmt(r.peak_rss_mb, ".1f"), _fmt(r.requests_per_1000, ",.1f"),
                     _fmt(r.dollars_per_million, ",.2f"),
                     r.note + (f" (baseline {r.baseline})" if r.baseline == r.contender else "")))
    lines = harness.text_table(rows, right=frozenset(range(2, 11)), gap_column=0)
    by_operation = [r for r in runs if r.requests and r.tasks]
    if by_operation:
        lines += ["", "AWS requests per 1000 tasks, by operation (counted at the moto server):"]
        width = max(len(f"{r.group} {r.contender}") for r in by_operation)
        for r in by_operation:
            ops = ", ".join(f"{op.partition(':')[2]} {n * 1000 / r.tasks:,.1f}"
                            for op, n in r.requests.items())
            lines.append(f"{r.group} {r.contender}".ljust(width) + f"  {ops}")
    m = machine()
    lines.append("")
    lines.append(f"nproc {m['nproc']}, Python {m['python']}, {m['system']}. x base: tasks/s against"
                 " the group's first row, in this run. us/task: wall time x slots / tasks."
                 f" $/M tasks: AWS request prices ({m['prices']}), counted at the moto server.")
    return "\n".join(lines)


def to_json(runs: list[Run]) -> str:
    return json.dumps({"machine": machine(), "runs": [asdict(r) for r in runs]}, indent=1)


def iter_groups(names: list[str]) -> Iterator[str]:
    for name in names:
        if name == "all":
            yield from GROUPS
        elif name in ("compare", "scale", "efficiency"):
            yield from (g for g in GROUPS if g.startswith(name))
        elif name in GROUPS:
            yield name
        else:
            raise KeyError(name)


