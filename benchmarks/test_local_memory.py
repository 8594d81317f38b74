"""Group "local-memory": peak RSS of ``cloudkon run`` on 1,000,000 and 10,000 ``sleep 0`` lines.

Issue 2 asks the 1M-line peak to stay below 150 MB and within 1.5x of the 10k-line peak
(the workload is streamed, the queues are bounded: memory must not grow with the file).
The peak is the process's ru_maxrss, read by tools/peak_rss.py; a bare ``python -c pass``
through the same launcher gives the interpreter's floor for context. The benchmark's time
is the run's wall time; the figures are in extra_info and in the final table.
"""

from __future__ import annotations

import pytest

from benchmarks.conftest import with_before
from benchmarks.harness import (
    MEMORY_LARGE_TASKS,
    MEMORY_SMALL_TASKS,
    PYTHON,
    check_cloudkon_summary,
    cloudkon_argv,
    measure_peak_rss,
    scaled,
    write_workload,
)

GROUP = "local-memory"
WORKERS = 4
ROUNDS = 3


def _check_nothing(stdout: str, tasks: int) -> None:
    assert stdout == "", stdout


SIZES = {"python-floor": 0, "cloudkon-10k": MEMORY_SMALL_TASKS,
         "cloudkon-1M": MEMORY_LARGE_TASKS, "cloudkon-before-1M": MEMORY_LARGE_TASKS}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    with_before(metafunc, ["python-floor", "cloudkon-10k", "cloudkon-1M"],
                ["cloudkon-before-1M"])


@pytest.mark.benchmark(group=GROUP)
def test_local_memory(benchmark, figures, scale, before_checkout, tmp_path, name):
    size = SIZES[name]
    if size == 0:
        argv, n, check = [PYTHON, "-c", "pass"], 0, _check_nothing
    else:
        n = scaled(size, scale)
        workload = write_workload(tmp_path / f"sleep0-{n}.txt", "sleep 0", n)
        checkout = before_checkout if name.startswith("cloudkon-before") else None
        argv, check = cloudkon_argv(workload, WORKERS, checkout), check_cloudkon_summary
    measure_peak_rss(benchmark, figures, group=GROUP, name=name, tasks=n, argv=argv,
                     cwd=tmp_path, check=check, rounds=ROUNDS)
