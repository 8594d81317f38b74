"""pytest wiring of the local benchmarks: the ``--cloudkon-scale`` option, the session's
figures, and the table of ratios against the targets printed at the end of the session.

The machinery itself (whole-process runs, figures, ratios, targets) is in harness.py.
"""

from __future__ import annotations

import os

import pytest

from benchmarks import suite
from benchmarks.harness import Figures, export_revision

_FIGURES_KEY = pytest.StashKey[Figures]()
_BENCH_KEY = pytest.StashKey[suite.Bench]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cloudkon", "CloudKon benchmarks")
    group.addoption(
        "--benchmark-large", action="store_true",
        help="Run the comparison runs (test_compare.py) at the sizes of issue 5: 100,000"
             " `sleep 0` tasks, 2,000 of the other workloads, remote scaling to 10^5.",
    )
    group.addoption(
        "--cloudkon-json", metavar="FILE", default=None,
        help="Write the comparison runs' table (every row and figure) to FILE as JSON.",
    )
    group.addoption(
        "--cloudkon-before", metavar="REV", default=None,
        help="Also run the local benchmarks with cloudkon as of git revision REV (e.g. a"
             " commit before a change), in the same session: rows named cloudkon-before.",
    )
    group.addoption(
        "--cloudkon-scale", type=float, default=None, metavar="FACTOR",
        help="Multiply every workload size by FACTOR (default: $CLOUDKON_BENCH_SCALE, or 1: "
             "the sizes of issue 2). Targets are judged only at scale 1.",
    )


@pytest.fixture(scope="session")
def scale(pytestconfig: pytest.Config) -> float:
    value = pytestconfig.getoption("--cloudkon-scale")
    if value is None:
        value = float(os.environ.get("CLOUDKON_BENCH_SCALE", "1"))
    if not value > 0:
        raise pytest.UsageError("--cloudkon-scale must be > 0")
    return value


@pytest.fixture(scope="session")
def before_checkout(pytestconfig: pytest.Config, tmp_path_factory):
    """The files of the --cloudkon-before revision, or None."""
    rev = pytestconfig.getoption("--cloudkon-before")
    if rev is None:
        return None
    return export_revision(rev, tmp_path_factory.mktemp("before"))


def with_before(metafunc: pytest.Metafunc, names: list[str], before: list[str]) -> None:
    """Parametrize ``name`` with ``names``, and ``before`` too under --cloudkon-before."""
    if metafunc.config.getoption("--cloudkon-before") is not None:
        names = names + before
    metafunc.parametrize("name", names)


@pytest.fixture(scope="session")
def figures(pytestconfig: pytest.Config, scale: float) -> Figures:
    """Every figure measured in this session; the table at the end is made from it."""
    figs = Figures(scale)
    pytestconfig.stash[_FIGURES_KEY] = figs
    return figs


@pytest.fixture(scope="session")
def bench(pytestconfig: pytest.Config, tmp_path_factory):
    """The comparison runs' session (benchmarks/suite.py): its own moto server, started
    when the first remote row needs it, and every row so far."""
    with suite.Bench(tmp_path_factory.mktemp("compare")) as b:
        pytestconfig.stash[_BENCH_KEY] = b
        yield b


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    figs = config.stash.get(_FIGURES_KEY, None)
    lines = figs.table() if figs is not None else []
    if lines:
        terminalreporter.section("CloudKon local benchmarks: ratios against their targets")
        for line in lines:
            terminalreporter.write_line(line)
    bench = config.stash.get(_BENCH_KEY, None)
    if bench is not None and bench.runs:
        terminalreporter.section("CloudKon comparison runs (issue 5)")
        for line in suite.table(bench.runs).splitlines():
            terminalreporter.write_line(line)
        path = config.getoption("--cloudkon-json")
        if path:
            with open(path, "w", encoding="utf-8") as f:
                f.write(suite.to_json(bench.runs))
