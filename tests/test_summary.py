"""The end-of-run summary: latency percentiles, counts, success, efficiency, its renderings."""

from __future__ import annotations

import math
import random

import pytest

from cloudkon.model import CANCELLED, FAILED, SUCCEEDED, TIMED_OUT, ResultBundle
from cloudkon.summary import Histogram, Summary

QUANTILES = (0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999)


def exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@pytest.mark.parametrize("values", [
    pytest.param([i / 1000 for i in range(1, 10_001)], id="uniform-1ms-to-10s"),
    pytest.param([random.Random(7).lognormvariate(-6, 2) for _ in range(50_000)], id="lognormal"),
    pytest.param([0.003] * 900 + [2.5] * 100, id="two-values"),
])
def test_histogram_quantiles_are_within_one_percent_of_exact(values):
    histogram = Histogram()
    for start in range(0, len(values), 256):  # in bundles, as results arrive
        histogram.add_many(values[start:start + 256])

    for q in QUANTILES:
        exact = exact_quantile(values, q)
        assert histogram.quantile(q) == pytest.approx(exact, rel=0.01), q


def test_histogram_of_one_value_reports_that_value():
    histogram = Histogram()
    histogram.add_many([0.0421])

    assert [histogram.quantile(q) for q in (0.5, 0.99)] == [0.0421, 0.0421]


def test_empty_histogram_has_no_quantiles():
    assert Histogram().quantile(0.5) is None


def result(line: int, status: str, start: float = 100.0, end: float = 100.01,
           command: str = "true") -> tuple:
    code = {SUCCEEDED: 0, FAILED: 1}.get(status)
    return (line, command, status, code, None, start, end, "", "")


def summary_of(results: list[tuple], tasks_read: int | None = None, workers: int = 2,
               wall_seconds: float = 1.0, **workload) -> Summary:
    summary = Summary("job-1", workers)
    summary.add(ResultBundle("job-1", 0, results, sent_at=100.0, worker="local-0"))
    summary.tasks_read = len(results) if tasks_read is None else tasks_read
    summary.wall_seconds = wall_seconds
    for name, value in workload.items():
        setattr(summary, name, value)
    return summary


def test_summary_counts_each_status():
    summary = summary_of([result(1, SUCCEEDED), result(2, FAILED), result(3, TIMED_OUT),
                          result(4, CANCELLED), result(5, SUCCEEDED)])

    d = summary.to_dict()
    assert (d["tasks"], d["done"], d["succeeded"], d["failed"], d["timed_out"],
            d["cancelled"], d["not_run"]) == (5, 4, 2, 1, 1, 1, 0)


def test_summary_is_ok_only_when_every_task_succeeded():
    assert summary_of([result(1, SUCCEEDED), result(2, SUCCEEDED)]).ok


@pytest.mark.parametrize("change", [
    pytest.param({"results": [result(1, SUCCEEDED), result(2, FAILED)]}, id="a-task-failed"),
    pytest.param({"results": [result(1, SUCCEEDED), result(2, TIMED_OUT)]}, id="a-task-timed-out"),
    pytest.param({"tasks_read": 3}, id="a-task-never-ran"),
    pytest.param({"bad_lines": 1}, id="a-line-was-bad"),
    pytest.param({"interrupted": True}, id="interrupted"),
])
def test_summary_is_not_ok_when_anything_went_wrong(change):
    change = dict(change)
    results = change.pop("results", [result(1, SUCCEEDED), result(2, SUCCEEDED)])

    assert not summary_of(results, **change).ok


def test_efficiency_of_an_all_sleep_workload_is_ideal_over_actual_time():
    # 4 tasks of 100 ms on 2 workers: ideal 0.2 s; the run took 0.25 s.
    summary = summary_of([result(n, SUCCEEDED, end=100.1, command="sleep 100")
                          for n in range(1, 5)], workers=2, wall_seconds=0.25)

    assert summary.efficiency() == pytest.approx(0.8)
    assert summary.to_dict()["efficiency"] == pytest.approx(0.8)


def test_efficiency_counts_a_sleep_cut_by_its_time_limit_only_until_then():
    # `sleep 5000` ended after 1 s by --task-timeout 1, in a run of 1.02 s on 1 worker:
    # it slept 1 s, not 5 (which made 490%).
    summary = summary_of([result(1, TIMED_OUT, start=100.0, end=101.0, command="sleep 5000")],
                         workers=1, wall_seconds=1.02)

    assert summary.efficiency() == pytest.approx(1 / 1.02)
    assert summary.efficiency() <= 1


def test_efficiency_counts_a_sleep_that_overran_as_its_nominal_time():
    summary = summary_of([result(1, SUCCEEDED, start=100.0, end=100.5, command="sleep 100")],
                         workers=1, wall_seconds=0.5)

    assert summary.efficiency() == pytest.approx(0.2)


def _sleeps(n: int = 4, command: str = "sleep 100") -> list[tuple]:
    return [result(line, SUCCEEDED, end=100.1, command=command) for line in range(1, n + 1)]


@pytest.mark.parametrize("change", [
    pytest.param({"results": _sleeps(3) + [result(4, SUCCEEDED, command="true")]},
                 id="not-all-sleep"),
    pytest.param({"results": _sleeps(command="sleep 0")}, id="all-sleep-0"),
    pytest.param({"results": [result(n, SUCCEEDED) for n in range(1, 5)]}, id="all-shell"),
    pytest.param({"interrupted": True}, id="interrupted"),
    pytest.param({"incomplete": True}, id="incomplete"),
    pytest.param({"tasks_read": 5}, id="a-task-without-result"),
])
def test_efficiency_is_none_unless_an_all_sleep_workload_with_time_to_sleep(change):
    summary = summary_of(change.pop("results", _sleeps()), **change)

    assert summary.efficiency() is None
    assert summary.to_dict()["efficiency"] is None


def test_to_dict_reports_counts_throughput_and_latency():
    results = [result(n, SUCCEEDED, start=100.0, end=100.0 + n / 1000, command="sleep 1")
               for n in range(1, 101)]
    summary = summary_of(results, workers=4, wall_seconds=2.0)

    d = summary.to_dict()

    assert d["job_id"] == "job-1" and d["workers"] == 4
    assert (d["tasks"], d["succeeded"], d["failed"], d["timed_out"]) == (100, 100, 0, 0)
    assert d["wall_seconds"] == 2.0
    assert d["tasks_per_second"] == 50.0
    assert set(d["latency_ms"]) == {"p50", "p95", "p99"}
    # Latency runs from the bundle entering the queue (100.0) to each task's end.
    assert d["latency_ms"]["p50"] == pytest.approx(50, rel=0.01)
    assert d["latency_ms"]["p95"] == pytest.approx(95, rel=0.01)
    assert d["latency_ms"]["p99"] == pytest.approx(99, rel=0.01)
    # 100 sleeps of 1 ms on 4 workers in 2 s.
    assert d["efficiency"] == pytest.approx(0.1 / 4 / 2.0)
    assert d["interrupted"] is False and d["bad_lines"] == 0


def test_to_text_names_the_failed_and_timed_out_lines_with_how_they_ended():
    summary = summary_of([
        result(1, SUCCEEDED),
        (7, "ls /nowhere", FAILED, 2, None, 100.0, 100.01, "", ""),
        (8, "kill -KILL $$", FAILED, None, "SIGKILL", 100.0, 100.01, "", ""),
        (9, "/bin/sleep 99", TIMED_OUT, None, "SIGTERM", 100.0, 100.5, "", ""),
        (10, "sleep 5000", TIMED_OUT, None, None, 100.0, 101.0, "", ""),
        (11, "./missing", FAILED, None, None, 100.0, 100.0, "", ""),
    ])

    listed = summary.to_text().splitlines()[-5:]

    assert listed == [
        "  failed: line 7 (exit 2): ls /nowhere",
        "  failed: line 8 (SIGKILL): kill -KILL $$",
        "  timed out: line 9 (after 0.50 s, SIGTERM): /bin/sleep 99",
        "  timed out: line 10 (after 1.00 s): sleep 5000",
        "  failed: line 11 (could not start): ./missing",
    ]


def test_failures_are_listed_in_line_order_whatever_order_they_finish_in():
    summary = Summary("job", 2)
    summary.tasks_read = 30
    # Bundles finish out of order: the later lines first.
    for seq, lines in enumerate([range(21, 31), range(11, 21), range(1, 11)]):
        summary.add(ResultBundle("job", seq, [result(n, FAILED, command=f"exit {n}")
                                              for n in reversed(lines)], 100.0))

    failed = [line for line in summary.to_text().splitlines() if "failed: line" in line]

    assert failed == [f"  failed: line {n} (exit 1): exit {n}" for n in range(1, 11)]
    assert [f["line"] for f in summary.to_dict()["first_failures"]] == list(range(1, 11))
    assert "20 more failed or timed out" in summary.to_text()


def test_a_long_command_is_cut_in_the_list_of_failures():
    summary = summary_of([result(1, FAILED, command="echo " + "x" * 200)])

    assert summary.to_text().splitlines()[-1] == (
        "  failed: line 1 (exit 1): echo " + "x" * 72 + "...")


def test_to_text_says_when_the_run_was_interrupted():
    assert "interrupted" in summary_of([result(1, CANCELLED)], interrupted=True).to_text()
    assert "interrupted" not in summary_of([result(1, SUCCEEDED)]).to_text()


def test_to_text_counts_failures_beyond_those_it_lists():
    summary = summary_of([result(n, FAILED) for n in range(1, 26)])

    text = summary.to_text()

    assert "line 10 " in text and "line 11 " not in text
    assert "15 more" in text


def test_a_collection_that_gave_up_says_incomplete_and_is_not_ok():
    summary = Summary("job", 2)
    summary.tasks_read = 1
    summary.add(ResultBundle("job", 0, [(1, "true", SUCCEEDED, 0, None, 1.0, 2.0, "", "")], 0.5))
    summary.incomplete = True

    assert summary.to_text().splitlines()[0] == "job job: incomplete"
    assert summary.to_dict()["incomplete"] is True
    assert not summary.ok


def test_cancelled_tasks_count_in_neither_latency_nor_duration():
    summary = Summary("job", 1)
    summary.add(ResultBundle("job", 0, [
        (1, "true", SUCCEEDED, 0, None, 1.0, 1.5, "", ""),
        (2, "sleep 9", CANCELLED, None, None, 1.0, 10.0, "", ""),
    ], 0.5))

    d = summary.to_dict()
    assert d["cancelled"] == 1 and d["done"] == 1
    assert d["mean_duration_ms"] == 500.0
    assert d["latency_ms"]["p99"] == pytest.approx(1000.0, rel=0.01)


def test_an_interrupted_summary_counts_the_tasks_never_read_so_the_counts_add_up():
    summary = summary_of([result(1, SUCCEEDED), result(2, FAILED)], tasks_read=5,
                         interrupted=True, not_read=995)

    d = summary.to_dict()
    text = summary.to_text().splitlines()

    assert (d["tasks"], d["not_run"], d["not_read"], d["not_read_at_least"]) == (1000, 3, 995, False)
    assert text[1].split()[:2] == ["tasks", "1,000"]
    assert text[2].split() == ["not", "finished", "3", "not", "read", "995"]


def test_tasks_not_read_past_the_counting_time_are_a_lower_bound():
    summary = summary_of([result(1, SUCCEEDED)], interrupted=True, not_read=1_500_000,
                         not_read_at_least=True)

    text = summary.to_text().splitlines()

    assert text[1].split()[:2] == ["tasks", "1,500,001+"]
    assert text[2].split() == ["not", "read", "1,500,000+"]
    assert summary.to_dict()["not_read_at_least"] is True


@pytest.mark.parametrize("statuses", [
    pytest.param([SUCCEEDED] * 6, id="all-succeeded"),
    pytest.param([SUCCEEDED, FAILED, CANCELLED, SUCCEEDED, TIMED_OUT, SUCCEEDED], id="mixed"),
])
def test_adding_bundles_together_summarises_as_adding_each(statuses):
    bundles = [ResultBundle("job", seq, [result(seq * 2 + i + 1, statuses[seq * 2 + i],
                                                end=100.0 + seq + i / 10, command="sleep 5")
                                         for i in range(2)], 99.0 - seq)
               for seq in range(3)]
    one_by_one, together = Summary("job", 2), Summary("job", 2)
    for summary in (one_by_one, together):
        summary.tasks_read, summary.wall_seconds = 6, 10.0
    for bundle in bundles:
        one_by_one.add(bundle)

    together.add_all(bundles)

    assert together.to_dict() == one_by_one.to_dict()
