"""Issue 5's comparison runs: the same workloads through the local flavour, the remote
flavour on a moto server this session starts itself (1, 2 and 4 worker processes), the
naive remote design and peers (ThreadPoolExecutor, xargs, GNU parallel where installed,
Celery with its SQS broker on the same moto server); then CloudKon alone as the workload
and the fleet grow, and its efficiency on sleep tasks of 0 to 1000 ms.

The machinery is benchmarks/suite.py (shared with `cloudkon bench`); each test is one row of
its table: one contender in one pytest-benchmark group, timed as a whole process (one
round: remote rows take seconds each). At the end of the session the table is printed,
every group with its ratios against its baseline (its first row), measured in this run.
Every row's figures (requests by operation, $ per million tasks, peak RSS, efficiency)
are also in the benchmark's extra_info.

Sizes: the default runs in minutes; --benchmark-large selects the sizes of issue 5
(100,000 `sleep 0`, 2,000 of the others, remote scaling to 10^5); --cloudkon-scale
multiplies them all (tests/test_benchmarks_smoke.py runs them tiny).
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from benchmarks import suite


def _ids(case: suite.Case) -> str:
    return f"{case.group}/{case.name}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        config = metafunc.config
        large = config.getoption("--benchmark-large")
        scale = config.getoption("--cloudkon-scale") or float(
            os.environ.get("CLOUDKON_BENCH_SCALE", "1"))
        cases = [case for group in suite.GROUPS
                 for case in suite.cases(group, large=large, scale=scale)]
        metafunc.parametrize("case", cases, ids=_ids)


@pytest.mark.timeout(3600)  # a large row takes minutes; the default 300 s is for tests
def test_run(benchmark, bench, case):
    """One row of the table: ``case``'s contender runs its workload to the end, once."""
    benchmark.group = case.group
    row = bench.run(case, timer=lambda fn: benchmark.pedantic(fn, rounds=1, iterations=1))
    benchmark.extra_info.update(dataclasses.asdict(row))
    if row.note.startswith("not run"):
        pytest.skip(row.note)
    assert row.tasks == min(case.tasks, case.contender.max_tasks or case.tasks)
    assert row.tasks_per_s
