"""pytest wiring of the local benchmarks: the ``--cloudkon-scale`` option, the session's
figures, and the table of ratios against the targets printed at the end of the session.

The machinery itself (whole-process runs, figures, ratios, targets) is in bench_harness.py.
"""

from __future__ import annotations

import os

import pytest
from bench_harness import Figures

_FIGURES_KEY = pytest.StashKey[Figures]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cloudkon", "CloudKon benchmarks")
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
def figures(pytestconfig: pytest.Config, scale: float) -> Figures:
    """Every figure measured in this session; the table at the end is made from it."""
    figs = Figures(scale)
    pytestconfig.stash[_FIGURES_KEY] = figs
    return figs


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    figs = config.stash.get(_FIGURES_KEY, None)
    lines = figs.table() if figs is not None else []
    if not lines:
        return
    terminalreporter.section("CloudKon benchmark ratios against the targets of issue 2")
    for line in lines:
        terminalreporter.write_line(line)
