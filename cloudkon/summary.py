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

from cloudkon.model import CANCELLED, FAILED, SUCCEEDED, TIMED_OUT, ResultBundle

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


_STATUS, _START, _END = itemgetter(2), itemgetter(5), itemgetter(6)  # fields of Result


class Summary:
    """Accumulates results as they are collected; reports them at the end."""

    def __init__(self, job_id: str, workers: int) -> None:
        self.job_id = job_id
        self.workers = workers
        self.counts = {SUCCEEDED: 0, FAILED: 0, TIMED_OUT: 0, CANCELLED: 0}
        self.latency = Histogram()  # from the bundle entering the queue to the task's end
        self.busy_seconds = 0.0  # the tasks' own run time, added up
        self.tasks_read = 0  # tasks the workload held, once fully read
        self.bad_lines = 0
        self.sleep_tasks = 0
        self.sleep_ms = 0.0
        self.wall_seconds = 0.0
        self.interrupted = False
        self.incomplete = False  # collection gave up (--timeout) before every task had a result
        self.job_cancelled = False  # the job was cancelled (`cloudkon cancel`)
        self.failures: list[tuple[int, str, str]] = []  # (line, status, command) of the first few

    def add(self, bundle: ResultBundle, keep_failures: int = 10) -> None:
        results = bundle.results
        statuses = Counter(map(_STATUS, results))
        for status, n in statuses.items():
            self.counts[status] += n
        if statuses[CANCELLED]:  # ended by Ctrl-C: neither latency nor duration of a task
            results = [r for r in results if r[2] != CANCELLED]
        ends = list(map(_END, results))
        self.latency.add_many(list(map(sub, ends, repeat(bundle.sent_at))))
        self.busy_seconds += sum(ends) - sum(map(_START, results))
        if statuses[SUCCEEDED] + statuses[CANCELLED] < len(results):
            for r in results:
                if r[2] in (FAILED, TIMED_OUT) and len(self.failures) < keep_failures:
                    self.failures.append((r[0], r[2], r[1]))

    @property
    def done(self) -> int:
        return self.counts[SUCCEEDED] + self.counts[FAILED] + self.counts[TIMED_OUT]

    @property
    def ok(self) -> bool:
        """True when every line of the workload became a task that succeeded."""
        return (self.counts[SUCCEEDED] == self.tasks_read and not self.bad_lines
                and not self.interrupted and not self.incomplete and not self.job_cancelled)

    def efficiency(self) -> float | None:
        """Ideal time / actual time for an all-sleep workload, as CloudKon reports it."""
        if not self.tasks_read or self.sleep_tasks != self.tasks_read or not self.sleep_ms:
            return None
        if self.interrupted or not self.wall_seconds:
            return None
        ideal = self.sleep_ms / 1000.0 / self.workers
        return ideal / self.wall_seconds

    def to_dict(self) -> dict:
        def ms(h: Histogram, q: float) -> float | None:
            v = h.quantile(q)
            return None if v is None else round(v * 1000.0, 3)

        eff = self.efficiency()
        n_ran = self.done
        return {
            "job_id": self.job_id,
            "workers": self.workers,
            "tasks": self.tasks_read,
            "done": self.done,
            "succeeded": self.counts[SUCCEEDED],
            "failed": self.counts[FAILED],
            "timed_out": self.counts[TIMED_OUT],
            "cancelled": self.counts[CANCELLED],
            "not_run": max(self.tasks_read - sum(self.counts.values()), 0),
            "bad_lines": self.bad_lines,
            "interrupted": self.interrupted,
            "incomplete": self.incomplete,
            "job_cancelled": self.job_cancelled,
            "wall_seconds": round(self.wall_seconds, 6),
            "tasks_per_second": round(self.done / self.wall_seconds, 1) if self.wall_seconds else None,
            "latency_ms": {f"p{p}": ms(self.latency, p / 100) for p in (50, 95, 99)},
            "mean_duration_ms": round(self.busy_seconds / n_ran * 1000.0, 3) if n_ran else None,
            "efficiency": None if eff is None else round(eff, 4),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def to_text(self) -> str:
        d = self.to_dict()
        state = ("interrupted" if d["interrupted"] else "cancelled" if d["job_cancelled"]
                 else "incomplete" if d["incomplete"] else "finished")
        lines = [f"job {d['job_id']}: {state}"]
        lines.append(
            f"  tasks      {d['tasks']:>10,}   succeeded {d['succeeded']:,}  failed {d['failed']:,}"
            f"  timed out {d['timed_out']:,}"
        )
        extra = []
        if d["bad_lines"]:
            extra.append(f"bad lines {d['bad_lines']:,} (not run)")
        if d["cancelled"]:
            extra.append(f"cancelled {d['cancelled']:,}")
        if d["not_run"]:
            extra.append(f"not started {d['not_run']:,}")
        if extra:
            lines.append("  " + " " * 26 + "  ".join(extra))
        rate = d["tasks_per_second"]
        lines.append(
            f"  wall time  {d['wall_seconds']:>10.3f} s   throughput "
            f"{rate if rate is not None else 0:,.1f} tasks/s with {d['workers']}"
            f" worker{'' if d['workers'] == 1 else 's'}"
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
        for line, status, command in self.failures:
            lines.append(f"  {status.replace('_', ' ')}: line {line}: {command[:80]}")
        shown = len(self.failures)
        bad = self.counts[FAILED] + self.counts[TIMED_OUT]
        if bad > shown:
            lines.append(f"  ... and {bad - shown:,} more failed or timed out (see --output)")
        return "\n".join(lines)
