"""`cloudkon report` as a user meets it: the summary of a results file, its numbers, its
charts, and one clear line for a file that is not a results file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cloudkon.model import Result

T0 = 1_795_638_000.0  # the epoch seconds the hand-made results start from
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHART_FILES = {"completed.png", "throughput.png", "latency_cdf.png", "durations.png"}


def record(line: int, start: float, end: float, queued: float = 0.0, status: str = "succeeded",
           job_id: str = "job-a", worker: str = "local-1") -> dict:
    """One line of a results file, as `cloudkon run --output` writes it."""
    result = Result(line, f"sleep {line}", status, 0 if status == "succeeded" else 1, None,
                    start, end, "", "")
    return result.to_record(job_id, worker, queued)


def write_results(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


@pytest.fixture
def known_results(tmp_path):
    """100 tasks queued together at T0, task i running from T0 + i/10 for 50 ms: latency
    i/10 + 0.05 s; the last ends at T0 + 9.95."""
    path = tmp_path / "results.jsonl"
    write_results(path, [
        record(i + 1, T0 + i / 10, T0 + i / 10 + 0.05, queued=T0, worker=f"local-{i % 4}")
        for i in range(100)])
    return path


def report_json(cloudkon, *args) -> dict:
    proc = cloudkon("report", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# The summary


def test_report_of_a_run_counts_its_tasks_by_status(cloudkon, write_workload, tmp_path):
    workload = write_workload("echo one\nexit 3\ntrue\nsleep 5\n# not a task\nsleep 1\n")
    run = cloudkon("run", workload, "--workers", "2", "--output", "results.jsonl",
                   "--job-id", "demo")
    assert run.returncode == 1, run.stderr

    proc = cloudkon("report", "results.jsonl")

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("results.jsonl: 5 results of job demo\n")
    assert "succeeded 4  failed 1  timed out 0" in proc.stdout
    assert "(queued to done)" in proc.stdout
    assert proc.stderr == ""
    summary = report_json(cloudkon, "results.jsonl")
    assert (summary["tasks"], summary["succeeded"], summary["failed"]) == (5, 4, 1)
    assert summary["jobs"] == ["demo"]
    assert 1 <= summary["workers"] <= 2
    assert summary["latency_ms"]["p50"] > 0


def test_latency_throughput_and_durations_come_from_the_recorded_times(cloudkon, known_results):
    summary = report_json(cloudkon, known_results)

    assert summary["tasks"] == summary["succeeded"] == 100
    assert summary["span_seconds"] == pytest.approx(9.95, abs=1e-5)
    assert summary["tasks_per_second"] == pytest.approx(100 / 9.95, abs=0.05)
    # No one second holds more than 10 ends; the whole span, a little longer, holds more.
    assert summary["peak_tasks_per_second"] == summary["tasks_per_second"] == 10.1
    # Nearest rank, as the run summary takes it: the 50th, 95th and 99th of 100.
    assert summary["latency_ms"] == pytest.approx({"p50": 4950.0, "p95": 9450.0, "p99": 9850.0},
                                                  abs=0.01)
    assert summary["duration_ms"] == pytest.approx(
        {"p50": 50.0, "p95": 50.0, "p99": 50.0, "mean": 50.0, "max": 50.0}, abs=0.01)
    assert summary["workers"] == 4
    assert summary["tasks_per_worker"] == {"min": 25, "max": 25}


def test_text_summary_states_the_same_numbers(cloudkon, known_results):
    proc = cloudkon("report", known_results)

    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"{known_results}: 100 results of job job-a"
    assert "  span            9.950 s" in proc.stdout
    assert "throughput       10.1 tasks/s   peak 10.1 tasks/s" in proc.stdout
    assert "latency    p50 4950.000 ms  p95 9450.000 ms  p99 9850.000 ms" in proc.stdout
    assert "mean 50.000 ms  max 50.000 ms" in proc.stdout
    assert "workers             4   tasks per worker min 25  max 25" in proc.stdout


def test_peak_throughput_is_the_busiest_second_wherever_it_starts(cloudkon, tmp_path):
    ends = [0.9] * 20 + [1.1] * 20 + [2.5]  # seconds after the first start
    path = tmp_path / "results.jsonl"
    write_results(path, [record(i + 1, T0, T0 + end, queued=T0) for i, end in enumerate(ends)])

    summary = report_json(cloudkon, path)

    assert summary["peak_tasks_per_second"] == 40
    assert summary["tasks_per_second"] == pytest.approx(41 / 2.5, abs=0.05)


def test_peak_throughput_is_never_below_the_mean(cloudkon, tmp_path):
    # Two bunches 1.1 s apart: no one-second window holds both.
    ends = [0.1] * 20 + [1.2] * 20
    path = tmp_path / "results.jsonl"
    write_results(path, [record(i + 1, T0, T0 + end, queued=T0) for i, end in enumerate(ends)])

    summary = report_json(cloudkon, path)

    assert summary["tasks_per_second"] == pytest.approx(40 / 1.2, abs=0.05)
    assert summary["peak_tasks_per_second"] == summary["tasks_per_second"]


def test_text_report_lists_the_first_failed_tasks_as_run_does(cloudkon, write_workload):
    lines = ["true", "exit 3", "kill -KILL $$", "/bin/sleep 5", "sleep 5000"] + [
        f"exit {n}" for n in range(10, 22)]
    workload = write_workload("\n".join(lines) + "\n")
    run = cloudkon("run", workload, "--workers", "4", "--task-timeout", "0.5",
                   "--output", "results.jsonl")
    assert run.returncode == 1, run.stderr

    proc = cloudkon("report", "results.jsonl")

    assert proc.returncode == 0, proc.stderr
    listed = [line for line in proc.stdout.splitlines()
              if line.startswith(("  failed: ", "  timed out: ", "  ... and "))]
    assert listed[0] == "  failed: line 2 (exit 3): exit 3"
    assert listed[1] == "  failed: line 3 (SIGKILL): kill -KILL $$"
    assert listed[2].startswith("  timed out: line 4 (after 0.5")
    assert listed[-1] == "  ... and 6 more failed or timed out"
    assert listed == run.stdout.splitlines()[-len(listed):-1] + [listed[-1]]
    first = report_json(cloudkon, "results.jsonl")["first_failures"]
    assert [(f["line"], f["status"], f["exit_code"], f["signal"]) for f in first[:4]] == [
        (2, "failed", 3, None), (3, "failed", None, "SIGKILL"), (4, "timed_out", None, "SIGTERM"),
        (5, "timed_out", None, None)]


def test_report_of_several_jobs_names_the_job_of_each_failure(cloudkon, tmp_path):
    path = tmp_path / "both.jsonl"
    write_results(path, [record(2, T0, T0 + 1, job_id="job-b", status="failed"),
                         record(9, T0, T0 + 1, job_id="job-a", status="failed"),
                         record(1, T0, T0 + 1, job_id="job-b", status="failed")])

    proc = cloudkon("report", path)

    assert proc.stdout.splitlines()[-3:] == [
        "  job-b: failed: line 1 (exit 1): sleep 1",
        "  job-b: failed: line 2 (exit 1): sleep 2",
        "  job-a: failed: line 9 (exit 1): sleep 9",
    ]


def test_results_without_queued_times_have_unknown_latency(cloudkon, tmp_path):
    path = tmp_path / "old.jsonl"
    records = [record(i, T0 + i, T0 + i + 0.25, worker="") for i in range(1, 4)]
    for r in records[1:]:
        del r["queued"], r["worker"]  # written before results named them
    write_results(path, records)

    proc = cloudkon("report", path)

    assert proc.returncode == 0, proc.stderr
    assert "latency    unknown" in proc.stdout
    assert "workers    not named in the results" in proc.stdout
    summary = report_json(cloudkon, path)
    assert summary["latency_ms"] == {"p50": None, "p95": None, "p99": None}
    assert summary["duration_ms"]["max"] == pytest.approx(250.0, abs=0.01)
    assert (summary["workers"], summary["tasks_per_worker"]) == (0, None)


def test_results_of_two_jobs_are_summarised_together(cloudkon, tmp_path):
    path = tmp_path / "both.jsonl"
    write_results(path, [record(i, T0, T0 + 1, queued=T0, job_id=job, status=status)
                         for job, status in (("job-a", "succeeded"), ("job-b", "failed"))
                         for i in range(1, 6)])

    proc = cloudkon("report", path)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{path}: 10 results of 2 jobs: job-a, job-b\n")
    summary = report_json(cloudkon, path)
    assert summary["jobs"] == ["job-a", "job-b"]
    assert (summary["tasks"], summary["succeeded"], summary["failed"]) == (10, 5, 5)


def test_results_can_come_from_stdin(known_results, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cloudkon", "report", "-", "--json"],
                          input=known_results.read_text(), capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)

    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["file"], summary["tasks"]) == ("<stdin>", 100)


def test_a_large_file_is_summarised(cloudkon, tmp_path):
    n = 200_000
    path = tmp_path / "large.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(large_file_line(line) for line in range(1, n + 1))

    summary = report_json(cloudkon, path)

    assert summary["tasks"] == n
    assert (summary["succeeded"], summary["failed"]) == (n - n // 100, n // 100)
    assert summary["workers"] == 8
    assert summary["tasks_per_worker"] == {"min": n // 8, "max": n // 8}
    assert summary["span_seconds"] == pytest.approx((n - 1) / 10_000 + 0.002, abs=1e-5)
    assert summary["latency_ms"]["p99"] == pytest.approx(2.0, abs=0.01)


def large_file_line(line: int) -> str:
    """Task `line` of a large results file, as `cloudkon run --output` writes it (without
    json.dumps, which would take longer than the report): it runs 2 ms from T0 + line/10,000 s
    on one of eight workers; every hundredth fails."""
    start = T0 + line / 10_000
    status, code = ("failed", 1) if line % 100 == 0 else ("succeeded", 0)
    return (f'{{"task_id": "job-a:{line}", "job_id": "job-a", "line": {line}, "command":'
            f' "sleep {line}", "status": "{status}", "exit_code": {code}, "signal": null,'
            f' "start": {start:.6f}, "end": {start + 0.002:.6f}, "duration": 0.002,'
            f' "stdout": "", "stderr": "", "worker": "w-{line % 8}", "queued": {start:.6f}}}\n')


def test_large_file_line_is_what_run_writes():
    start = T0 + 7 / 10_000
    assert json.loads(large_file_line(7)) == record(7, start, start + 0.002, queued=start,
                                                    worker="w-7")


def test_a_bad_line_far_into_a_file_is_named_by_its_number(cloudkon, tmp_path):
    lines = [large_file_line(line) for line in range(1, 5_001)]
    lines[999] = "\n"  # blank lines are skipped, and counted
    lines[3_999] = lines[3_999].replace('"end": ', '"end": "', 1)

    path = tmp_path / "results.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    proc = cloudkon("report", path)

    assert proc.returncode == 2
    assert proc.stderr.startswith(f"cloudkon: error: {path}:4000: not a JSON object (")


# The charts


def test_plot_draws_every_chart_into_one_png(cloudkon, known_results, tmp_path):
    proc = cloudkon("report", known_results, "--plot", "report.png")

    assert proc.returncode == 0, proc.stderr
    assert "results of job job-a" in proc.stdout
    png = tmp_path / "report.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    import matplotlib.image

    height, width = matplotlib.image.imread(png).shape[:2]
    assert width >= 800 and height >= 800  # five panels, readable


FAILED_RED = (0xd6, 0x27, 0x28)  # matplotlib's tab:red


def _has_colour(axes, rgb) -> bool:
    """Whether the drawn chart of ``axes`` (see _drawn) shows colour ``rgb`` anywhere."""
    import numpy as np

    pixels = np.asarray(axes.figure.canvas.buffer_rgba())[..., :3].astype(int)
    return bool((np.abs(pixels - rgb).max(axis=-1) <= 2).any())


@pytest.mark.parametrize("status", ["failed", "timed_out"])
def test_plot_draws_failed_tasks_in_a_colour_of_their_own(tmp_path, status):
    # The charts as `report --plot-dir` draws them (the PNG files themselves: see
    # test_plot_dir_writes_one_png_per_chart), drawn here rather than in two processes
    # that each load matplotlib.
    path = tmp_path / "results.jsonl"
    write_results(path, [record(i, T0 + i / 10, T0 + i / 10 + 0.05, queued=T0,
                                status=status if i % 5 == 0 else "succeeded")
                         for i in range(1, 41)])
    clean = tmp_path / "clean.jsonl"
    write_results(clean, [record(i, T0 + i / 10, T0 + i / 10 + 0.05, queued=T0)
                          for i in range(1, 41)])

    failing, succeeding = _drawn(path), _drawn(clean)

    for chart in ("completed", "throughput", "durations", "workers"):
        assert _has_colour(failing[chart], FAILED_RED), chart
        assert not _has_colour(succeeding[chart], FAILED_RED), chart


def _drawn(results_path):
    """Each chart of a report drawn on axes of its own, by file name: what the PNGs show."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cloudkon import report

    drawn = {}
    for name, _, draw in report._Charts(report.Report(report.load(str(results_path)))).charts():
        figure = Figure()
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        draw(axes)
        figure.canvas.draw()
        drawn[name] = axes
    return drawn


def test_a_small_run_has_whole_numbers_of_tasks_on_its_axes(tmp_path):
    path = tmp_path / "results.jsonl"
    write_results(path, [record(i, T0, T0 + 0.01 * i, queued=T0, worker=f"w-{i % 2}")
                         for i in range(1, 4)])

    drawn = _drawn(path)

    for name in ("completed", "durations", "workers"):
        labels = [t.get_text() for t in drawn[name].get_yticklabels() if t.get_text()]
        assert labels and all(label.isdigit() for label in labels), (name, labels)


def test_equal_percentiles_are_labelled_apart(tmp_path):
    path = tmp_path / "results.jsonl"
    write_results(path, [record(i, T0, T0 + 0.01, queued=T0) for i in range(1, 4)]
                  + [record(4, T0, T0 + 0.3, queued=T0)])  # p95 = p99 = 300 ms

    legend = _drawn(path)["latency_cdf"].get_legend()

    assert [t.get_text() for t in legend.get_texts()] == [
        "p50 10 ms", "p95 300 ms", "p99 300 ms"]


def test_worker_bars_are_sorted_busiest_first(tmp_path):
    path = tmp_path / "results.jsonl"
    loads = {"w-b": 2, "w-a": 5, "w-d": 1, "w-c": 2}
    write_results(path, [record(i, T0, T0 + 0.01, queued=T0, worker=w)
                         for w, n in loads.items() for i in range(n)])

    axes = _drawn(path)["workers"]

    assert [t.get_text() for t in axes.get_xticklabels()] == ["w-a", "w-b", "w-c", "w-d"]
    assert [round(bar.get_height()) for bar in axes.patches[:4]] == [5, 2, 2, 1]


@pytest.mark.parametrize(("worker", "files"), [
    pytest.param("local-1", CHART_FILES | {"workers.png"}, id="workers-named"),
    pytest.param("", CHART_FILES, id="no-worker-named"),
])
def test_plot_dir_writes_one_png_per_chart(cloudkon, tmp_path, worker, files):
    path = tmp_path / "results.jsonl"
    write_results(path, [record(i, T0 + i, T0 + i + 0.1 * i, queued=T0, worker=worker)
                         for i in range(1, 30)])

    proc = cloudkon("report", path, "--plot-dir", "charts/run-1")

    assert proc.returncode == 0, proc.stderr
    written = {p.name: p for p in (tmp_path / "charts" / "run-1").iterdir()}
    assert set(written) == files
    for chart in written.values():
        assert chart.read_bytes()[:8] == PNG_SIGNATURE


def test_plot_without_matplotlib_says_how_to_install_it(cloudkon, known_results, tmp_path):
    hidden = tmp_path / "hide"
    (hidden / "matplotlib").mkdir(parents=True)
    (hidden / "matplotlib" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")

    proc = cloudkon("report", known_results, "--plot", "report.png",
                    env={**os.environ, "PYTHONPATH": str(hidden)})

    assert proc.returncode == 2
    assert proc.stderr == ("cloudkon: error: --plot needs matplotlib:"
                           " pip install 'cloudkon[plot]'\n")


def test_plot_into_a_missing_folder_is_a_usage_error(cloudkon, known_results):
    proc = cloudkon("report", known_results, "--plot", "no/such/folder/report.png")

    assert proc.returncode == 2
    assert proc.stderr.startswith("cloudkon: error: --plot no/such/folder/report.png: ")
    assert proc.stdout == ""


# Files that are not results files: one line, exit 2


GOOD = json.dumps(record(1, T0, T0 + 1, queued=T0))


@pytest.mark.parametrize(("bad_line", "message"), [
    pytest.param(GOOD[:-1] + ' "extra"}',
                 f"not a JSON object (Expecting ',' delimiter: column {len(GOOD) + 1})",
                 id="not-json"),
    pytest.param(GOOD.replace('"end": ', '"ending": '), "field 'end' is missing",
                 id="missing-field"),
    pytest.param(GOOD.replace('"start": ', '"start": "').replace(', "end"', '", "end"'),
                 "field 'start' should be a number, not \"", id="wrong-type"),
    pytest.param('["a", "list"]', "not a JSON object but [", id="not-an-object"),
])
def test_a_bad_line_is_named_by_file_and_number(cloudkon, tmp_path, bad_line, message):
    path = tmp_path / "results.jsonl"
    path.write_text(f"{GOOD}\n\n{GOOD}\n{bad_line}\n{GOOD}\n", encoding="utf-8")

    proc = cloudkon("report", "results.jsonl")

    assert proc.returncode == 2
    assert proc.stderr.startswith(f"cloudkon: error: results.jsonl:4: {message}")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize(("setup", "message"), [
    pytest.param(None, "results.jsonl: no such file", id="missing"),
    pytest.param(lambda p: p.mkdir(), "results.jsonl: is a directory", id="directory"),
    pytest.param(lambda p: p.write_bytes(b""), "results.jsonl: holds no results", id="empty"),
    pytest.param(lambda p: p.write_bytes(b"\n \n"), "results.jsonl: holds no results",
                 id="blank-lines"),
])
def test_a_file_that_holds_no_results_is_a_usage_error(cloudkon, tmp_path, setup, message):
    if setup is not None:
        setup(tmp_path / "results.jsonl")

    proc = cloudkon("report", "results.jsonl")

    assert proc.returncode == 2
    assert proc.stderr.startswith(f"cloudkon: error: {message}")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
