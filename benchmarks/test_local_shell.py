"""Group "local-shell": 2,000 ``true`` tasks, each a process, against ``xargs -P``.

Issue 2 asks ``cloudkon run FILE --workers $(nproc)`` for at least 0.9x the tasks/s of
``xargs -P $(nproc) -I{} sh -c '{}' < FILE``. cloudkon also runs with twice as many
workers (a shell task spends part of its time waiting on fork/exec, so more workers than
CPUs can pay); the table reports both.
"""

from __future__ import annotations

import pytest

from benchmarks.conftest import with_before
from benchmarks.harness import (
    SHELL_TASKS,
    check_cloudkon_summary,
    cloudkon_argv,
    measure_throughput,
    nproc,
    scaled,
    write_workload,
)

GROUP = "local-shell"
N = nproc()
ROUNDS = 5


def _check_xargs(stdout: str, tasks: int) -> None:
    assert stdout == "", stdout  # `true` prints nothing; the exit code was checked


# name: (argv for the workload file and the --cloudkon-before checkout, stdin is the
# workload, output check)
CONTENDERS = {
    f"xargs-P{N}": (lambda wl, _: ["xargs", "-P", str(N), "-I{}", "sh", "-c", "{}"], True,
                    _check_xargs),
    f"cloudkon-w{N}": (lambda wl, _: cloudkon_argv(wl, N), False, check_cloudkon_summary),
    f"cloudkon-w{2 * N}": (lambda wl, _: cloudkon_argv(wl, 2 * N), False,
                           check_cloudkon_summary),
}
BEFORE = {f"cloudkon-before-w{N}": (lambda wl, before: cloudkon_argv(wl, N, before), False,
                                    check_cloudkon_summary)}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    with_before(metafunc, list(CONTENDERS), list(BEFORE))


@pytest.fixture(scope="module")
def shell_workload(tmp_path_factory, scale):
    n = scaled(SHELL_TASKS, scale)
    return write_workload(tmp_path_factory.mktemp("shell") / "true.txt", "true", n), n


@pytest.mark.benchmark(group=GROUP)
def test_local_shell(benchmark, figures, shell_workload, before_checkout, tmp_path, name):
    workload, n = shell_workload
    argv, from_stdin, check = {**CONTENDERS, **BEFORE}[name]
    measure_throughput(benchmark, figures, group=GROUP, name=name, tasks=n,
                       argv=argv(workload, before_checkout),
                       cwd=tmp_path, check=check, rounds=ROUNDS,
                       stdin_path=workload if from_stdin else None)
