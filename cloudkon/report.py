"""`cloudkon report`: a results file read back, summarised, and drawn.

A results file (`cloudkon run --output`, `cloudkon submit --wait --output`, `cloudkon collect
--output`) holds one JSON object per task. Only the columns the report needs are kept, as
numpy arrays (29 bytes a result), so a file of a million results loads in a few seconds.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from operator import itemgetter
from typing import BinaryIO

import numpy as np

from cloudkon.errors import UsageError
from cloudkon.limits import MAX_LISTED_FAILURES
from cloudkon.model import CANCELLED, FAILED, STATUSES, SUCCEEDED, TIMED_OUT
from cloudkon.summary import Failure

STDIN = "-"
_READ_BUFFER = 1 << 20  # bytes read from the file at a time
# Lines parsed per batch: few enough that the batch's dicts are still in the CPU cache when
# their fields are picked out (with batches of 4 MiB, loading takes twice as long).
_BATCH_BYTES = 1 << 16
_JSON_SPACE = " \t\r\n"  # JSON's white space; str.strip() would also take \x1c, \u2028 ...
_STATUS_CODE = {status: code for code, status in enumerate(STATUSES)}
_CANCELLED = _STATUS_CODE[CANCELLED]
_FAILED_CODES = (_STATUS_CODE[FAILED], _STATUS_CODE[TIMED_OUT])
_NUMBER_TYPES = {int, float}
_STRING_TYPES = {str}
_decode = json.JSONDecoder().raw_decode
_value, _end = itemgetter(0), itemgetter(1)


class Results:
    """The columns of a results file: one entry per result, in file order."""

    def __init__(self, name: str, jobs: list[str], start: np.ndarray, end: np.ndarray,
                 queued: np.ndarray, status: np.ndarray, worker: np.ndarray,
                 workers: list[str], failures: list[tuple[str, Failure]] | None = None) -> None:
        self.name = name  # the path as given, or "<stdin>"
        # (job id, failure) of the first failed or timed-out tasks: by job, then line.
        self.failures = failures or []
        self.jobs = jobs  # job ids, in order of first appearance
        self.start = start  # seconds since the epoch (float64)
        self.end = end
        self.queued = queued  # when the task's bundle was queued; 0 when unknown
        self.status = status  # index into STATUSES (uint8)
        self.worker = worker  # index into workers (int32); -1 when the result names none
        self.workers = workers

    def __len__(self) -> int:
        return len(self.status)


def load(path: str) -> Results:
    """Read the results file at ``path`` ('-' for stdin); UsageError naming the file and the
    line for anything that is not a results file."""
    name = "<stdin>" if path == STDIN else path
    batches: list[tuple[np.ndarray, ...]] = []
    jobs: dict[str, None] = {}
    workers: dict[str, int] = {}
    failures = _FirstFailures(jobs)
    with _open(path) as f:
        first = 1  # the number of the batch's first line
        try:
            while lines := f.readlines(_BATCH_BYTES):
                batch = _read_fast(lines, jobs, workers, failures)
                if batch is None:
                    batch = _read_slow(lines, first, name, jobs, workers, failures)
                batches.append(batch)
                first += len(lines)
        except OSError as exc:
            raise UsageError(f"{name}: {exc.strerror or exc}") from None
    if not jobs:
        raise UsageError(f"{name}: holds no results"
                         + (" (only blank lines)" if first > 1 else " (the file is empty)"))
    start, end, queued, status, worker = (np.concatenate(column) for column in zip(*batches))
    return Results(name, list(jobs), start, end, queued, status, worker, list(workers),
                   failures.listed())


class _FirstFailures:
    """The failed and timed-out tasks of the lowest line numbers (jobs in the order they
    first appear), whatever their order in the file."""

    def __init__(self, jobs: dict[str, None], keep: int = MAX_LISTED_FAILURES) -> None:
        self.jobs = jobs
        self.keep = keep
        self.kept: list[tuple[int, int, str, Failure]] = []  # (job rank, line, job id, ...)

    def add(self, records: list[dict], codes, indices) -> None:
        """Consider ``records[i]`` for each i in ``indices`` (failed or timed out, of
        status code ``codes[i]``); the records are already checked as results."""
        rank = {job: i for i, job in enumerate(self.jobs)}
        kept = self.kept
        for i in indices:
            r = records[i]
            line = r.get("line")
            failure = Failure(
                line if type(line) is int else 0, STATUSES[codes[i]],
                r.get("exit_code") if type(r.get("exit_code")) is int else None,
                r.get("signal") if type(r.get("signal")) is str else None,
                float(r["end"]) - float(r["start"]),
                r.get("command") if type(r.get("command")) is str else "",
            )
            kept.append((rank[r["job_id"]], failure.line, r["job_id"], failure))
        kept.sort(key=itemgetter(0, 1))
        del kept[self.keep:]

    def listed(self) -> list[tuple[str, Failure]]:
        return [(job, failure) for _, _, job, failure in self.kept]


def _open(path: str) -> BinaryIO:
    if path == STDIN:
        return open(sys.stdin.fileno(), "rb", buffering=_READ_BUFFER, closefd=False)
    try:
        return open(path, "rb", buffering=_READ_BUFFER)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not a results file") from None
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None


def _read_fast(lines: list[bytes], jobs: dict, workers: dict,
               failures: _FirstFailures) -> tuple[np.ndarray, ...] | None:
    """The columns of a batch of lines, or None if any line is not a well-formed result
    (then ``_read_slow`` finds which). Whole-batch operations only: no loop per line in
    Python beyond the parsing itself."""
    try:
        texts = [text for text in (line.decode().strip(_JSON_SPACE) for line in lines) if text]
        parsed = list(map(_decode, texts))
    except ValueError:  # not UTF-8, not JSON
        return None
    if list(map(_end, parsed)) != list(map(len, texts)):  # something after the value
        return None
    records = list(map(_value, parsed))
    try:
        rows = [(r["job_id"], r["status"], r["start"], r["end"], r.get("queued", 0),
                 r.get("worker", "")) for r in records]
    except (KeyError, TypeError, AttributeError):  # a field missing; not an object
        return None
    if not rows:
        return _columns([], [], [], [], [], workers)
    job_ids, statuses, starts, ends, queued, names = zip(*rows)
    if not (set(map(type, starts)) | set(map(type, ends)) | set(map(type, queued))
            <= _NUMBER_TYPES and set(map(type, job_ids)) | set(map(type, names))
            <= _STRING_TYPES):
        return None
    try:
        codes = list(map(_STATUS_CODE.__getitem__, statuses))
        times = np.array((starts, ends, queued), dtype=np.float64)
    except (KeyError, TypeError, OverflowError):  # an unknown status; an int beyond float
        return None
    if not np.isfinite(times).all():
        return None
    jobs.update(dict.fromkeys(job_ids))
    columns = _columns(times[0], times[1], times[2], codes, names, workers)
    _add_failures(failures, records, columns[3])
    return columns


def _add_failures(failures: _FirstFailures, records: list[dict], codes: np.ndarray) -> None:
    failed = np.flatnonzero((codes == _FAILED_CODES[0]) | (codes == _FAILED_CODES[1]))
    if len(failed):
        failures.add(records, codes, failed)


def _read_slow(lines: list[bytes], first: int, name: str, jobs: dict, workers: dict,
               failures: _FirstFailures) -> tuple[np.ndarray, ...]:
    """The columns of a batch of lines, checked line by line: UsageError for the first
    line that is not a result."""
    rows = []
    records = []
    for number, line in enumerate(lines, first):
        parsed = _parse_line(line, f"{name}:{number}")
        if parsed is not None:
            rows.append(parsed[0])
            records.append(parsed[1])
    if not rows:
        return _columns([], [], [], [], [], workers)
    job_ids, codes, starts, ends, queued, names = zip(*rows)
    jobs.update(dict.fromkeys(job_ids))
    columns = _columns(starts, ends, queued, codes, names, workers)
    _add_failures(failures, records, columns[3])
    return columns


def _columns(starts, ends, queued, codes, names, workers: dict) -> tuple[np.ndarray, ...]:
    index = workers.setdefault
    return (np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64),
            np.asarray(queued, dtype=np.float64), np.array(codes, dtype=np.uint8),
            np.array([index(w, len(workers)) if w else -1 for w in names], dtype=np.int32))


def _parse_line(line: bytes, where: str) -> tuple[tuple, dict] | None:
    """(job_id, status code, start, end, queued, worker) of one line, and the line's record;
    None for a blank line; UsageError saying what is wrong with it."""
    try:
        text = line.decode()
    except UnicodeDecodeError as exc:
        raise UsageError(f"{where}: not UTF-8 text (column {exc.start + 1})") from None
    if not text.strip(_JSON_SPACE):
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: not a JSON object ({exc.msg}: column {exc.colno})") from None
    if not isinstance(record, dict):
        raise UsageError(f"{where}: not a JSON object but {_show(record)}")
    job_id = _string(record, "job_id", where)
    status = _string(record, "status", where)
    if status not in _STATUS_CODE:
        raise UsageError(f"{where}: field 'status' is {_show(status)}, not one of"
                         f" {', '.join(STATUSES)}")
    return (job_id, _STATUS_CODE[status], _number(record, "start", where),
            _number(record, "end", where), _number(record, "queued", where, 0.0),
            _string(record, "worker", where, "")), record


_MISSING = object()


def _field(record: dict, key: str, where: str, types: set, kind: str, default=_MISSING):
    """The field ``key`` of a record, or ``default``; UsageError if it is missing or not of
    one of ``types`` (``kind`` says which, to the user)."""
    value = record.get(key, default)
    if value is _MISSING:
        raise UsageError(f"{where}: field {key!r} is missing")
    if type(value) not in types:
        raise UsageError(f"{where}: field {key!r} should be {kind}, not {_show(value)}")
    return value


def _string(record: dict, key: str, where: str, default=_MISSING) -> str:
    return _field(record, key, where, _STRING_TYPES, "a string", default)


def _number(record: dict, key: str, where: str, default=_MISSING) -> float:
    value = _field(record, key, where, _NUMBER_TYPES, "a number", default)
    try:
        value = float(value)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise UsageError(f"{where}: field {key!r} should be a finite number, not {_show(value)}")
    return value


def _show(value: object, width: int = 40) -> str:
    """A JSON value as it appears in the file, cut short."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[:width - 3] + "..."


# --- The summary -----------------------------------------------------------------------------

PEAK_WINDOW_SECONDS = 1.0


class Report:
    """What a results file says about its jobs: counts, span, throughput, latency, durations,
    the load of each worker."""

    def __init__(self, results: Results) -> None:
        self.results = results
        status = results.status
        self.counts = np.bincount(status, minlength=len(STATUSES))
        ran = status != _CANCELLED  # a cancelled task has neither latency nor duration
        if not ran.any():
            ran = np.ones(len(status), dtype=bool)
        self.done = int(self.counts.sum() - self.counts[_CANCELLED])
        self.ends = results.end[ran]
        # Of the tasks that ran (as ends), those that failed or timed out.
        self.failed = np.isin(status[ran], _FAILED_CODES)
        self.first_start = float(results.start[ran].min())
        self.last_end = float(self.ends.max())
        self.span = max(self.last_end - self.first_start, 0.0)
        durations = self.ends - results.start[ran]
        self.durations = np.sort(durations)
        self.failed_durations = np.sort(durations[self.failed])
        queued = results.queued[ran]
        known = queued > 0
        self.latencies = np.sort(self.ends[known] - queued[known])
        worker = results.worker[ran]
        named = worker >= 0
        self.tasks_per_worker = np.bincount(worker[named], minlength=len(results.workers))
        self.failed_per_worker = np.bincount(worker[named & self.failed],
                                             minlength=len(results.workers))

    @property
    def label(self) -> str:
        """The job id(s) and the task count, as the charts' titles say them."""
        return f"{_name_jobs(self.results.jobs)}: {len(self.results):,} tasks"

    def peak(self) -> float | None:
        """The highest throughput (tasks/s) over any stretch of at least PEAK_WINDOW_SECONDS:
        the most tasks ending within one window, or the mean over the whole span when that
        is higher (tasks bunched at both ends of a span a little over one window); None when
        the results span less than one window."""
        if self.span < PEAK_WINDOW_SECONDS:
            return None
        ends = np.sort(self.ends)
        # For each end, the tasks ending from it to a window later.
        within = np.searchsorted(ends, ends + PEAK_WINDOW_SECONDS) - np.arange(len(ends))
        return max(int(within.max()) / PEAK_WINDOW_SECONDS, self.done / self.span)

    def to_dict(self) -> dict:
        def ms(seconds: np.ndarray, p: int) -> float | None:
            return None if not len(seconds) else round(_percentile(seconds, p) * 1000.0, 3)

        counts = dict(zip(STATUSES, map(int, self.counts)))
        durations = self.durations
        per_worker = self.tasks_per_worker
        peak = self.peak()
        return {
            "file": self.results.name,
            "jobs": self.results.jobs,
            "tasks": len(self.results),
            "succeeded": counts[SUCCEEDED],
            "failed": counts[FAILED],
            "timed_out": counts[TIMED_OUT],
            "cancelled": counts[CANCELLED],
            "first_start": round(self.first_start, 6),
            "last_end": round(self.last_end, 6),
            "span_seconds": round(self.span, 6),
            "tasks_per_second": round(self.done / self.span, 1) if self.span else None,
            "peak_tasks_per_second": None if peak is None else round(peak, 1),
            "latency_ms": {f"p{p}": ms(self.latencies, p) for p in (50, 95, 99)},
            "latency_known": len(self.latencies),
            "duration_ms": {
                **{f"p{p}": ms(durations, p) for p in (50, 95, 99)},
                "mean": round(float(durations.mean()) * 1000.0, 3),
                "max": round(float(durations[-1]) * 1000.0, 3),
            },
            "workers": len(per_worker),
            "tasks_per_worker": ({"min": int(per_worker.min()), "max": int(per_worker.max())}
                                 if len(per_worker) else None),
            "first_failures": [{"job_id": job, **failure._asdict(),
                                "seconds": round(failure.seconds, 6)}
                               for job, failure in self.results.failures],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def to_text(self) -> str:
        d = self.to_dict()
        lines = [f"{d['file']}: {d['tasks']:,} results of {_name_jobs(d['jobs'])}"]
        lines.append(
            f"  tasks      {d['tasks']:>10,}   succeeded {d['succeeded']:,}  failed {d['failed']:,}"
            f"  timed out {d['timed_out']:,}"
            + (f"  cancelled {d['cancelled']:,}" if d["cancelled"] else "")
        )
        lines.append(f"  span       {d['span_seconds']:>10.3f} s   from {_utc(d['first_start'])}"
                     f" to {_utc(d['last_end'], d['first_start'])} UTC")
        rate, peak = d["tasks_per_second"], d["peak_tasks_per_second"]
        lines.append(
            f"  throughput {rate if rate is not None else 0:>10,.1f} tasks/s   "
            + (f"peak {peak:,.1f} tasks/s (busiest {PEAK_WINDOW_SECONDS:g} s or longer)"
               if peak is not None else f"(no peak: under {PEAK_WINDOW_SECONDS:g} s in all)")
        )
        lat = d["latency_ms"]
        if lat["p50"] is None:
            lines.append("  latency    unknown (the results have no 'queued' times)")
        else:
            ran = d["tasks"] - d["cancelled"] or d["tasks"]
            part = "" if d["latency_known"] == ran else f", {d['latency_known']:,} tasks"
            lines.append(f"  latency    p50 {lat['p50']:.3f} ms  p95 {lat['p95']:.3f} ms"
                         f"  p99 {lat['p99']:.3f} ms  (queued to done{part})")
        dur = d["duration_ms"]
        lines.append(f"  duration   p50 {dur['p50']:.3f} ms  p95 {dur['p95']:.3f} ms"
                     f"  p99 {dur['p99']:.3f} ms  mean {dur['mean']:.3f} ms"
                     f"  max {dur['max']:.3f} ms")
        if d["workers"]:
            per = d["tasks_per_worker"]
            lines.append(f"  workers    {d['workers']:>10,}   tasks per worker min {per['min']:,}"
                         f"  max {per['max']:,}")
        else:
            lines.append("  workers    not named in the results")
        several = len(d["jobs"]) > 1
        for job, failure in self.results.failures:
            lines.append(f"  {job}: {failure}" if several else f"  {failure}")
        unlisted = d["failed"] + d["timed_out"] - len(self.results.failures)
        if unlisted > 0:
            lines.append(f"  ... and {unlisted:,} more failed or timed out")
        return "\n".join(lines)


def _name_jobs(jobs: list[str], shown: int = 3) -> str:
    if len(jobs) == 1:
        return f"job {jobs[0]}"
    more = f" and {len(jobs) - shown:,} more" if len(jobs) > shown else ""
    return f"{len(jobs)} jobs: {', '.join(jobs[:shown])}{more}"


def _percentile(values: np.ndarray, p: int) -> float:
    """The nearest-rank ``p``th percentile: the smallest value that ``p``% of the values do
    not exceed (what the run summary's histogram estimates within 1%)."""
    return float(np.percentile(values, p, method="inverted_cdf"))


def _utc(epoch: float, since: float | None = None) -> str:
    """A time of day in UTC, with the date unless it is that of ``since``."""
    day = time.strftime("%Y-%m-%d ", time.gmtime(epoch))
    if since is not None and day == time.strftime("%Y-%m-%d ", time.gmtime(since)):
        day = ""
    return f"{day}{time.strftime('%H:%M:%S', time.gmtime(epoch))}.{int(epoch % 1 * 1000):03d}"


# --- The charts ------------------------------------------------------------------------------
# matplotlib is imported only here, when charts are asked for, and drawn on its Agg canvas:
# no window ever opens, and pyplot's global state is never touched.

PLOT_EXTRA = "pip install 'cloudkon[plot]'"
_CURVE_POINTS = 2000  # points drawn of a curve: more than the chart has pixels across
_THROUGHPUT_BINS = 100  # about this many bars, each a round number of seconds wide
_HISTOGRAM_BINS = 60
_LABELLED_WORKERS = 40  # up to this many workers, a bar each with its name; then a histogram
_LOG_SCALE_RATIO = 100.0  # values spanning more than two decades are drawn on a log axis
_DPI = 100
_COLOUR = "tab:blue"
_FAILED_COLOUR = "tab:red"
_FAILED_LABEL = "failed or timed out"


def check_plotting(png: str | None, plot_dir: str | None) -> None:
    """UsageError if the charts asked for cannot be drawn or written (no matplotlib, no such
    folder): said before a long load, not after."""
    option = "--plot" if png else "--plot-dir"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(f"{option} needs matplotlib: {PLOT_EXTRA}") from None
    if png:
        folder = os.path.dirname(os.path.abspath(png))
        if not os.path.isdir(folder):
            raise UsageError(f"--plot {png}: folder {folder} does not exist")
        if os.path.isdir(png):
            raise UsageError(f"--plot {png}: is a directory")
    if plot_dir and os.path.exists(plot_dir) and not os.path.isdir(plot_dir):
        raise UsageError(f"--plot-dir {plot_dir}: is not a directory")


def plot(report: Report, png: str | None = None, plot_dir: str | None = None) -> list[str]:
    """Draw the charts: as the panels of one PNG file ``png``, and as one PNG file each
    (completed.png, throughput.png, ...) in ``plot_dir``, created if missing. Returns the
    paths written; UsageError naming the path one cannot be written to."""
    from matplotlib.figure import Figure

    charts = _Charts(report).charts()
    written = []
    if png:
        rows = (len(charts) + 1) // 2
        figure = Figure(figsize=(13, 4.2 * rows), layout="constrained")
        grid = figure.add_gridspec(rows, 2)
        for i, (name, title, draw) in enumerate(charts):
            # The workers' chart, fifth, takes a row of its own: room for their names.
            axes = figure.add_subplot(grid[i // 2, :] if i == 4 else grid[i // 2, i % 2])
            draw(axes)
            axes.set_title(title)
        figure.suptitle(f"{report.label}  ({report.results.name})")
        written.append(_save(figure, png, "--plot"))
    if plot_dir:
        try:
            os.makedirs(plot_dir, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--plot-dir {plot_dir}: {exc.strerror or exc}") from None
        for name, title, draw in charts:
            figure = Figure(figsize=(8, 4.5), layout="constrained")
            axes = figure.add_subplot()
            draw(axes)
            axes.set_title(f"{title}\n{report.label}")
            written.append(_save(figure, os.path.join(plot_dir, f"{name}.png"), "--plot-dir"))
    return written


def _save(figure, path: str, option: str) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    try:
        figure.savefig(path, format="png", dpi=_DPI)
    except OSError as exc:
        raise UsageError(f"{option} {path}: {exc.strerror or exc}") from None
    return path


class _Charts:
    """The charts of a report, each drawn on the axes it is given from a few thousand
    numbers at most: the histograms and samples are taken with numpy beforehand. Tasks that
    failed or timed out are drawn in a colour of their own, over the others."""

    def __init__(self, report: Report) -> None:
        self.report = report
        # Seconds from the first start to each task's end.
        self.elapsed = np.clip(report.ends - report.first_start, 0.0, None)
        self.span = max(report.span, float(self.elapsed.max()), 1e-3)
        self.any_failed = bool(report.failed.any())

    def charts(self) -> list[tuple[str, str, object]]:
        """(file name, title, draw) of each chart that the results have data for."""
        charts = [
            ("completed", "Tasks completed over time", self.completed),
            ("throughput", "Throughput over time", self.throughput),
            ("latency_cdf", "Latency CDF (queued to done)" if len(self.report.latencies)
             else "Duration CDF (latency unknown: no 'queued' times)", self.latency_cdf),
            ("durations", "Task durations", self.durations),
        ]
        if len(self.report.tasks_per_worker):
            charts.append(("workers", "Tasks per worker", self.workers))
        return charts

    def completed(self, axes) -> None:
        edges = np.linspace(0.0, self.span, _CURVE_POINTS + 1)
        counts, _ = np.histogram(self.elapsed, bins=edges)
        axes.plot(edges, np.concatenate(([0], np.cumsum(counts))), color=_COLOUR,
                  label="all tasks")
        if self.any_failed:
            failed, _ = np.histogram(self.elapsed[self.report.failed], bins=edges)
            axes.plot(edges, np.concatenate(([0], np.cumsum(failed))), color=_FAILED_COLOUR,
                      label=_FAILED_LABEL)
            axes.legend(loc="upper left")
        axes.set_xlim(0.0, self.span)
        axes.set_ylim(0, None)
        axes.set_xlabel("seconds since the first start")
        axes.set_ylabel("tasks completed")
        _counts(axes.yaxis)

    def throughput(self, axes) -> None:
        width = _round_width(self.span / _THROUGHPUT_BINS)
        edges = np.arange(math.ceil(self.span / width) + 1) * width
        elapsed = np.minimum(self.elapsed, edges[-1])
        counts, _ = np.histogram(elapsed, bins=edges)
        axes.stairs(counts / width, edges, fill=True, alpha=0.7, color=_COLOUR)
        if self.any_failed:  # the failed part of each bar, at its foot
            failed, _ = np.histogram(elapsed[self.report.failed], bins=edges)
            axes.stairs(failed / width, edges, fill=True, color=_FAILED_COLOUR,
                        label=_FAILED_LABEL)
        if self.report.span:
            mean = self.report.done / self.report.span
            axes.axhline(mean, color="black", linestyle="--", linewidth=1,
                         label=f"mean {mean:,.1f} tasks/s")
        if self.report.span or self.any_failed:
            axes.legend(loc="best")
        axes.set_xlim(0.0, edges[-1])
        axes.set_xlabel("seconds since the first start")
        axes.set_ylabel(f"tasks/s (bins of {width:g} s)")
        _thousands(axes.yaxis)

    def latency_cdf(self, axes) -> None:
        known = len(self.report.latencies)
        values = (self.report.latencies if known else self.report.durations) * 1000.0
        n = len(values)
        ranks = np.unique(np.linspace(0, n - 1, min(n, _CURVE_POINTS)).astype(np.int64))
        axes.plot(values[ranks], (ranks + 1) / n, drawstyle="steps-post", color=_COLOUR)
        # The percentiles' values go in a legend: labels beside their lines would overlap
        # where two percentiles are (nearly) the same.
        for p, style in zip((50, 95, 99), (":", "--", "-.")):
            x = _percentile(values, p)
            axes.axvline(x, color="grey", linestyle=style, linewidth=1,
                         label=f"p{p} {_round_ms(x)} ms")
        axes.legend(loc="lower right", fontsize="small")
        if _spans_decades(values):
            axes.set_xscale("log")
        axes.set_ylim(0.0, 1.0)
        axes.set_xlabel("latency, queued to done (ms)" if known else "duration (ms)")
        axes.set_ylabel("fraction of tasks")

    def durations(self, axes) -> None:
        values = self.report.durations * 1000.0  # sorted
        label = "task duration (ms)"
        if _spans_decades(values):
            positive = values[values > 0]
            edges = np.geomspace(positive[0], positive[-1], _HISTOGRAM_BINS + 1)
            counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
            axes.set_xscale("log")
            if values[0] < edges[0]:
                label += f"; {_round_ms(edges[0])} ms or less in the first bar"
        else:
            counts, edges = np.histogram(values, bins=_HISTOGRAM_BINS)
        axes.stairs(counts, edges, fill=True, alpha=0.7, color=_COLOUR)
        if self.any_failed:
            failed, _ = np.histogram(
                np.clip(self.report.failed_durations * 1000.0, edges[0], edges[-1]), bins=edges)
            axes.stairs(failed, edges, fill=True, color=_FAILED_COLOUR, label=_FAILED_LABEL)
            axes.legend(loc="upper right")
        axes.set_xlabel(label)
        axes.set_ylabel("tasks")
        _counts(axes.yaxis)

    def workers(self, axes) -> None:
        counts = self.report.tasks_per_worker
        failed = self.report.failed_per_worker
        names = self.report.results.workers
        if len(counts) <= _LABELLED_WORKERS:
            # Busiest first; workers of the same load by name.
            order = sorted(range(len(counts)), key=lambda i: (-counts[i], names[i]))
            x = np.arange(len(counts))
            axes.bar(x, counts[order], color=_COLOUR)
            if self.any_failed:
                axes.bar(x, failed[order], color=_FAILED_COLOUR, label=_FAILED_LABEL)
            axes.set_xticks(x, [_cut(names[i]) for i in order],
                            rotation=90 if len(counts) > 8 else 0, fontsize="small")
            axes.axhline(counts.mean(), color="black", linestyle="--", linewidth=1,
                         label=f"mean {counts.mean():,.1f}")
            axes.set_ylim(0, max(int(counts.max()), 1) * 1.2)  # room for the legend
            axes.legend(loc="upper right", ncols=2)
            axes.set_xlabel("workers, busiest first")
            axes.set_ylabel("tasks")
        else:
            low, high = int(counts.min()), int(counts.max())
            bins = (np.arange(low, high + 2) - 0.5 if high - low < _HISTOGRAM_BINS
                    else _HISTOGRAM_BINS)  # a bar per count, while they are few
            axes.hist(counts, bins=bins, color=_COLOUR)
            _counts(axes.xaxis)
            axes.set_xlabel("tasks per worker")
            axes.set_ylabel("workers")
            busiest, idlest = int(counts.argmax()), int(counts.argmin())
            axes.text(0.99, 0.97, f"{len(counts):,} workers\nbusiest {_cut(names[busiest])}:"
                      f" {counts[busiest]:,}\nidlest {_cut(names[idlest])}: {counts[idlest]:,}",
                      transform=axes.transAxes, ha="right", va="top", fontsize="small")
        _counts(axes.yaxis)


def _round_width(seconds: float) -> float:
    """The smallest of 1, 2, 5 times a power of ten that is at least ``seconds`` (>= 1 ms)."""
    seconds = max(seconds, 1e-3)
    power = 10.0 ** math.floor(math.log10(seconds))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= seconds * (1 - 1e-9))


def _round_ms(ms: float) -> str:
    return f"{ms:,.0f}" if abs(ms) >= 100 else f"{ms:.3g}"


def _spans_decades(sorted_values: np.ndarray) -> bool:
    positive = sorted_values[sorted_values > 0]
    return bool(len(positive)) and positive[-1] / positive[0] > _LOG_SCALE_RATIO


def _counts(axis) -> None:
    """Ticks at whole numbers on an axis of counts (no "1.25 tasks"), with thousands."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))
    _thousands(axis)


def _thousands(axis) -> None:
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}" if abs(x) >= 10 else f"{x:g}"))


def _cut(name: str, width: int = 32) -> str:
    return name if len(name) <= width else name[:width - 3] + "..."
