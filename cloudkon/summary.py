"""The end-of-run summary: counts, wall time, throughput, latency percentiles, efficiency.

Percentiles come from a log-bucketed histogram (relative error under 1%), so a summary of
ten million tasks takes the same few kilobytes as one of ten.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from collections import Counter
from itertools import repeat
from math import log
from operator import itemgetter, sub
from typing import NamedTuple

from cloudkon.limits import MAX_LISTED_FAILURES
from cloudkon.model import CANCELLED, FAILED, SUCCEEDED, TIMED_OUT, ResultBundle
from cloudkon.workload import SLEEP_CACHE, sleep_ms

# Bucket i holds values in [MIN * GROWTH**i, MIN * GROWTH**(i+1)); values below MIN count as MIN.
_MIN = 1e-6  # one microsecond
_GROWTH = 1.01
_SCALE = 1.0 / math.log(_GROWTH)
_OFFSET = -math.log(_MIN) * _SCALE


class Histogram:
    """Counts of non-negative values in log-spaced buckets; quantiles within 1%.

    Values are added a batch at a time: a result bundle's latencies cost a fraction of a
    microsecond each.
    """

    __slots__ = ("counts", "n", "min", "max")

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.n = 0
        self.min = math.inf
        self.max = 0.0

    def add_many(self, values: list[float]) -> None:
        """Add a batch of values (the list is sorted in place).

        Sorted, a batch is counted one bucket at a time with bisect: the results of one
        bundle fall into a handful of buckets, so this costs little more than the sort.
        """
        if not values:
            return
        values.sort()
        n = len(values)
        self.n += n
        if values[0] < self.min:
            self.min = values[0]
        if values[-1] > self.max:
            self.max = values[-1]
        counts = self.counts
        i = 0
        while i < n:
            x = values[i]
            b = int(log(x) * _SCALE + _OFFSET) if x > _MIN else 0
            j = bisect_left(values, _MIN * _GROWTH ** (b + 1), i + 1)
            counts[b] += j - i
            i = j

    def quantile(self, q: float) -> float | None:
        """The value below which a fraction ``q`` of the values lie (None if empty)."""
        if not self.n:
            return None
        rank = max(1, math.ceil(q * self.n))
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= rank:
                mid = _MIN * _GROWTH ** (i + 0.5)  # the bucket's geometric middle
                return min(max(mid, self.min), self.max)
        return self.max


# Fields of Result.
_COMMAND, _STATUS, _START, _END = itemgetter(1), itemgetter(2), itemgetter(5), itemgetter(6)


class Failure(NamedTuple):
    """A task that failed or timed out, as a summary lists it."""

    line: int
    status: str
    exit_code: int | None
    signal: str | None
    seconds: float  # how long it ran
    command: str

    def __str__(self) -> str:
        return describe_failure(*self)


def describe_failure(line: int, status: str, exit_code: int | None, signal: str | None,
                     seconds: float, command: str, width: int = 80) -> str:
    """One line for a failed or timed-out task: its line, how it ended, its command
    (e.g. ``failed: line 7 (exit 3): make test``)."""
    if status == TIMED_OUT:
        how = f"after {_seconds(seconds)}" + (f", {signal}" if signal else "")
    elif signal:
        how = signal
    elif exit_code is not None:
        how = f"exit {exit_code}"
    else:
        how = "could not start"
    if len(command) > width:
        command = command[:width - 3] + "..."
    return f"{status.replace('_', ' ')}: line {line} ({how}): {command}"


def _seconds(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:,.0f} s"


def _sleep_ms(command: str) -> float | None:
    """Milliseconds a ``sleep N`` task sleeps; None for any other command."""
    try:
        return sleep_ms(command)
    except ValueError:  # never a task: a result of one cannot exist
        return None


class Summary:
    """Accumulates results as they are collected; reports them at the end."""

    def __init__(self, job_id: str, workers: int) -> None:
        self.job_id = job_id
        self.workers = workers
        self.threads = 0  # of the workers together, when they are processes of several threads
        self.counts = {SUCCEEDED: 0, FAILED: 0, TIMED_OUT: 0, CANCELLED: 0}
        self.latency = Histogram()  # from the bundle entering the queue to the task's end
        self.busy_seconds = 0.0  # the tasks' own run time, added up
        self.tasks_read = 0  # tasks the workload held, once fully read
        self.not_read = 0  # tasks of the file never read (the run was interrupted first)
        self.not_read_at_least = False  # not_read is a lower bound: counting them stopped
        self.bad_lines = 0
        self.dropped_results = 0  # results for lines that are no task of the job (collect)
        self.bad_signatures = 0  # results messages or stored results refused (collect)
        self._only_sleeps = True  # every result so far was of a `sleep N` task
        self.slept_seconds = 0.0  # the time they slept: their durations, at most N ms each
        self.wall_seconds = 0.0
        self.interrupted = False
        self.incomplete = False  # collection gave up (--timeout) before every task had a result
        self.job_cancelled = False  # the job was cancelled (`cloudkon cancel`)
        self.failures: list[Failure] = []  # those of the lowest line numbers, in line order

    def add(self, bundle: ResultBundle, keep_failures: int = MAX_LISTED_FAILURES) -> None:
        results = bundle.results
        column = list(map(_STATUS, results))
        succeeded = column.count(SUCCEEDED)
        cancelled = 0
        if succeeded == len(column):  # the common case, without a Counter
            self.counts[SUCCEEDED] += succeeded
        else:
            for status, n in Counter(column).items():
                self.counts[status] += n
            cancelled = column.count(CANCELLED)
        if cancelled:  # ended by Ctrl-C: neither latency nor duration of a task
            results = [r for r in results if r[2] != CANCELLED]
        ends = list(map(_END, results))
        self.latency.add_many(list(map(sub, ends, repeat(bundle.sent_at))))
        self.busy_seconds += sum(ends) - sum(map(_START, results))
        self._add_sleeps(results, timed_out=succeeded + cancelled < len(column))
        if succeeded + cancelled < len(column):
            self._add_failures(results, keep_failures)

    def add_all(self, bundles: list[ResultBundle]) -> None:
        """Add several result bundles: the same as :meth:`add` of each, in one pass when
        every task succeeded (bundles of one task each then cost a few list steps)."""
        if len(bundles) == 1:
            self.add(bundles[0])
            return
        results: list[tuple] = []
        latencies: list[float] = []
        for bundle in bundles:
            sent_at, rs = bundle.sent_at, bundle.results
            results += rs
            latencies += [r[6] - sent_at for r in rs]
        if list(map(_STATUS, results)).count(SUCCEEDED) != len(results):
            for bundle in bundles:
                self.add(bundle)
            return
        self.counts[SUCCEEDED] += len(results)
        self.latency.add_many(latencies)
        self.busy_seconds += sum(map(_END, results)) - sum(map(_START, results))
        self._add_sleeps(results, timed_out=False)

    def _add_sleeps(self, results: list[tuple], timed_out: bool) -> None:
        """Add the time the sleep tasks slept: N ms for one that succeeded (the executor
        waits at least that long), its duration for one cut short by its time limit (when
        ``timed_out`` says a result may be). Once a result is not a sleep, there is no
        efficiency to report, and nothing to count."""
        if not self._only_sleeps:
            return
        mss = list(map(SLEEP_CACHE.get, map(_COMMAND, results)))
        if None in mss:  # not a sleep, or one not parsed in this process (a remote job)
            mss = [_sleep_ms(r[1]) if ms is None else ms for r, ms in zip(results, mss)]
            if None in mss:
                self._only_sleeps = False
                return
        if not timed_out:  # each slept its N ms
            self.slept_seconds += sum(mss) / 1000.0
            return
        for r, ms in zip(results, mss):
            self.slept_seconds += min(ms / 1000.0, r[6] - r[5])

    def _add_failures(self, results: list[tuple], keep: int) -> None:
        """Keep the failures of the lowest line numbers, whatever order they finish in."""
        failures = self.failures
        highest = failures[-1].line if len(failures) >= keep else math.inf
        fresh = [Failure(r[0], r[2], r[3], r[4], r[6] - r[5], r[1]) for r in results
                 if r[2] in (FAILED, TIMED_OUT) and r[0] < highest]
        if fresh:
            failures.extend(fresh)
            failures.sort()
            del failures[keep:]

    @property
    def done(self) -> int:
        return self.counts[SUCCEEDED] + self.counts[FAILED] + self.counts[TIMED_OUT]

    @property
    def ok(self) -> bool:
        """True when every line of the workload became a task that succeeded."""
        return (self.counts[SUCCEEDED] == self.tasks_read and not self.bad_lines
                and not self.interrupted and not self.incomplete and not self.job_cancelled)

    def efficiency(self) -> float | None:
        """Ideal time / actual time for an all-sleep workload, as CloudKon reports it: the
        time the sleeps took (each at most its N ms: one cut short by --task-timeout counts
        until then), spread over the workers, over the wall time. None unless every task of
        the workload ran and was a sleep, with time to sleep."""
        ran = self.done
        if not ran or ran != self.tasks_read or not self._only_sleeps:
            return None
        if self.interrupted or self.incomplete or not self.wall_seconds or not self.workers:
            return None
        if not self.slept_seconds:
            return None
        return self.slept_seconds / (self.threads or self.workers) / self.wall_seconds

    def to_dict(self) -> dict:
        def ms(h: Histogram, q: float) -> float | None:
            v = h.quantile(q)
            return None if v is None else round(v * 1000.0, 3)

        eff = self.efficiency()
        n_ran = self.done
        threads = {"threads": self.threads} if self.threads else {}
        dropped = {"dropped_results": self.dropped_results} if self.dropped_results else {}
        if self.bad_signatures:
            dropped["bad_signatures"] = self.bad_signatures
        return {
            "job_id": self.job_id,
            "workers": self.workers,
            **threads,
            "tasks": self.tasks_read + self.not_read,
            "done": self.done,
            "succeeded": self.counts[SUCCEEDED],
            "failed": self.counts[FAILED],
            "timed_out": self.counts[TIMED_OUT],
            "cancelled": self.counts[CANCELLED],
            "not_run": max(self.tasks_read - sum(self.counts.values()), 0),
            "not_read": self.not_read,
            "not_read_at_least": self.not_read_at_least,
            "bad_lines": self.bad_lines,
            **dropped,
            "interrupted": self.interrupted,
            "incomplete": self.incomplete,
            "job_cancelled": self.job_cancelled,
            "wall_seconds": round(self.wall_seconds, 6),
            "tasks_per_second": round(self.done / self.wall_seconds, 1) if self.wall_seconds else None,
            "latency_ms": {f"p{p}": ms(self.latency, p / 100) for p in (50, 95, 99)},
            "mean_duration_ms": round(self.busy_seconds / n_ran * 1000.0, 3) if n_ran else None,
            "efficiency": None if eff is None else round(eff, 4),
            "first_failures": [f._asdict() | {"seconds": round(f.seconds, 6)}
                               for f in self.failures],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def to_text(self) -> str:
        d = self.to_dict()
        state = ("interrupted" if d["interrupted"] else "cancelled" if d["job_cancelled"]
                 else "incomplete" if d["incomplete"] else "finished")
        lines = [f"job {d['job_id']}: {state}"]
        plus = "+" if d["not_read_at_least"] else ""
        tasks = f"{d['tasks']:,}{plus}"
        lines.append(
            f"  tasks      {tasks:>10}   succeeded {d['succeeded']:,}  failed {d['failed']:,}"
            f"  timed out {d['timed_out']:,}"
        )
        extra = []
        if d["bad_lines"]:
            extra.append(f"bad lines {d['bad_lines']:,} (not run)")
        if d.get("dropped_results"):
            extra.append(f"dropped results {d['dropped_results']:,} (no task of the job)")
        if d.get("bad_signatures"):
            extra.append(f"bad signatures {d['bad_signatures']:,} (results dropped)")
        if d["cancelled"]:
            extra.append(f"cancelled {d['cancelled']:,}")
        if d["not_run"]:
            extra.append(f"not finished {d['not_run']:,}")
        if d["not_read"] or plus:
            extra.append(f"not read {d['not_read']:,}{plus}")
        if extra:
            lines.append("  " + " " * 26 + "  ".join(extra))
        rate = d["tasks_per_second"]
        lines.append(
            f"  wall time  {d['wall_seconds']:>10.3f} s   throughput "
            f"{rate if rate is not None else 0:,.1f} tasks/s with {d['workers']}"
            f" worker{'' if d['workers'] == 1 else 's'}"
            + (f", {self.threads} threads" if self.threads else "")
        )
        lat = d["latency_ms"]
        if lat["p50"] is not None:
            lines.append(
                f"  latency    p50 {lat['p50']:.3f} ms  p95 {lat['p95']:.3f} ms  p99 {lat['p99']:.3f} ms"
                "  (queued to done)"
            )
            lines.append(f"  mean task duration {d['mean_duration_ms']:.3f} ms")
        if d["efficiency"] is not None:
            lines.append(f"  efficiency {d['efficiency']:.1%}  (ideal time / actual time)")
        for failure in self.failures:
            lines.append(f"  {failure}")
        shown = len(self.failures)
        bad = self.counts[FAILED] + self.counts[TIMED_OUT]
        if bad > shown:
            lines.append(f"  ... and {bad - shown:,} more failed or timed out (see --output)")
        return "\n".join(lines)
