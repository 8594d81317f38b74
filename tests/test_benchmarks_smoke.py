"""The benchmarks in benchmarks/ still run: every contender of every group, at a tiny
scale, once.

Timings are not checked here (the machine is shared and noisy; the figures are ratios
read from a full run, see BENCHMARKS.md and benchmarks/README.md). This keeps the
benchmarks from rotting: each contender runs, produces the output it should, and the
tables are printed.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import suite

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--benchmark-disable", "--cloudkon-scale=0.001", "-p", "no:cacheprovider", "-q"]


def test_local_benchmarks_run_at_a_tiny_scale():
    proc = subprocess.run(
        # The 1 s tasks' request counts run on the harness of the sleep 0 job's (and take
        # seconds of real time each): a benchmark run (`pytest benchmarks/`) runs them.
        [sys.executable, "-m", "pytest", "benchmarks/", "--ignore=benchmarks/test_compare.py",
         *TINY, "-k", "not one_second_tasks"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "CloudKon local benchmarks: ratios" in proc.stdout, proc.stdout[-4000:]
    for group in ("local-sleep0", "local-shell", "local-memory"):
        assert group in proc.stdout, proc.stdout[-4000:]


def test_before_after_compares_two_revisions_at_a_tiny_scale():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.before_after", "HEAD", "--rounds", "1",
         "--scale", "0.001"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    for line in ("after / bare loop", "after / xargs", "spawn floor: os.posix_spawn",
                 "mixed x1:", "peak RSS: 1M after"):
        assert line in proc.stdout, proc.stdout


# What the default run smokes of each group (a pytest -k expression; "" is all of it). The
# groups run together in one pytest process (a process and a moto server each cost more
# than their tiny runs), the local groups and one remote group by default; the other
# remote groups, whose contenders run on the same harness and fleet code
# (tests/test_bench.py runs every contender, remote ones included, on 8 tasks), in the
# slow run (`./scripts/test -m slow tests/test_benchmarks_smoke.py`).
SMOKE = {
    "compare-sleep0": "not remote and not celery",
    "compare-sleep10": "not remote and not celery",
    "compare-true": "not remote and not celery",
    "compare-mixed": "not remote-2x2 and not remote-4x1 and not remote-naive and not celery",
    "scale-local-tasks": "",
    "scale-remote-tasks": "remote-2 and not remote-2x",
    "scale-local-workers": "",
    "scale-remote-workers": "remote-1x1",
    "efficiency-local": "",
    "efficiency-remote": "sleep-0ms",
}
DEFAULT_RUN = ("compare-sleep0", "compare-sleep10", "compare-true", "compare-mixed",
               "scale-local-tasks", "scale-local-workers", "efficiency-local",
               "scale-remote-workers")


def test_the_smoke_run_covers_every_group():
    assert set(SMOKE) == set(suite.GROUPS)


@pytest.mark.parametrize("groups", [
    DEFAULT_RUN,
    pytest.param(tuple(g for g in SMOKE if g not in DEFAULT_RUN), marks=pytest.mark.slow),
], ids=["default", "other-remote"])
def test_every_comparison_group_runs_at_a_tiny_scale(tmp_path, groups):
    table = tmp_path / "runs.json"
    select = " or ".join(f"({group}/" + (f" and ({SMOKE[group]}))" if SMOKE[group] else ")")
                         for group in groups)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/test_compare.py", *TINY, "-k", select,
         f"--cloudkon-json={table}"],
        cwd=ROOT, capture_output=True, text=True, timeout=420,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "CloudKon comparison runs (issue 5)" in proc.stdout, proc.stdout[-4000:]
    every = json.loads(table.read_text())["runs"]
    assert {r["group"] for r in every} == set(groups)
    for group in groups:
        runs = [r for r in every if r["group"] == group]
        assert len(runs) >= (1 if "remote" in group else 2), runs  # a baseline and contenders
        for r in runs:
            if r["contender"] == "gnu-parallel" and r["note"].startswith("not run"):
                continue  # optional: "where installed"
            assert r["tasks"] > 0 and r["tasks_per_s"] > 0 and r["ratio"] is not None, r
        assert runs[0]["ratio"] == 1.0  # the group's baseline is its first row
    if "efficiency-local" in groups:
        efficiency = {r["contender"]: r for r in every if r["group"] == "efficiency-local"}
        assert efficiency["sleep-0ms"]["efficiency"] is None  # nothing to be efficient at
        assert 0 < efficiency["sleep-1000ms"]["efficiency"] <= 1.05
