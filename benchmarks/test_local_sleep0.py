"""Group "local-sleep0": 300,000 ``sleep 0`` tasks end to end, as whole processes.

Issue 2 asks ``cloudkon run FILE --workers 4`` for at least 0.5x the tasks/s of the bare
single-threaded loop (the floor of per-task work in Python) and at least 5x the tasks/s
of the per-item ``queue.Queue`` pipeline with 4 threads; ``ThreadPoolExecutor(4).map``
is measured for context. Each contender reads the same file, executes every task and
records every result; each round is a fresh process, timed from outside.
"""

from __future__ import annotations

import pytest

from benchmarks.conftest import with_before
from benchmarks.harness import (
    BASELINES,
    PYTHON,
    SLEEP0_TASKS,
    check_baseline_output,
    check_cloudkon_summary,
    cloudkon_argv,
    measure_throughput,
    scaled,
    write_workload,
)

THREAD_POOL_PEER = BASELINES / "thread_pool_peer.py"
GROUP = "local-sleep0"
WORKERS = 4

# name: (argv for the workload file and the --cloudkon-before checkout, output check,
# measured rounds, warm-up round)
CONTENDERS = {
    "bare-loop": (lambda wl, _: [PYTHON, str(BASELINES / "bare_loop.py"), str(wl)],
                  check_baseline_output, 7, True),
    "queue-pipeline": (lambda wl, _: [PYTHON, str(BASELINES / "queue_pipeline.py"), str(wl),
                                      str(WORKERS)],
                       check_baseline_output, 5, False),
    "thread-pool-map": (lambda wl, _: [PYTHON, str(THREAD_POOL_PEER), str(wl),
                                       str(WORKERS)],
                        check_baseline_output, 1, False),
    "cloudkon": (lambda wl, _: cloudkon_argv(wl, WORKERS), check_cloudkon_summary, 7, True),
    "cloudkon-before": (lambda wl, before: cloudkon_argv(wl, WORKERS, before),
                        check_cloudkon_summary, 7, True),
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    with_before(metafunc, [n for n in CONTENDERS if n != "cloudkon-before"],
                ["cloudkon-before"])


@pytest.fixture(scope="module")
def sleep0_workload(tmp_path_factory, scale):
    n = scaled(SLEEP0_TASKS, scale)
    return write_workload(tmp_path_factory.mktemp("sleep0") / "sleep0.txt", "sleep 0", n), n


@pytest.mark.benchmark(group=GROUP)
def test_local_sleep0(benchmark, figures, sleep0_workload, before_checkout, tmp_path, name):
    workload, n = sleep0_workload
    argv, check, rounds, warmup = CONTENDERS[name]
    measure_throughput(benchmark, figures, group=GROUP, name=name, tasks=n,
                       argv=argv(workload, before_checkout),
                       cwd=tmp_path, check=check, rounds=rounds, warmup=warmup)
