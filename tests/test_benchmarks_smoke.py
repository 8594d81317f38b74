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

from benchmarks import suite

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--benchmark-disable", "--cloudkon-scale=0.001", "-p", "no:cacheprovider", "-q"]


def test_local_benchmarks_run_at_a_tiny_scale():
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/", "--ignore=benchmarks/test_compare.py",
         *TINY],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "CloudKon benchmark ratios" in proc.stdout, proc.stdout[-4000:]
    for group in ("local-sleep0", "local-shell", "local-memory"):
        assert group in proc.stdout, proc.stdout[-4000:]


def test_every_comparison_group_runs_at_a_tiny_scale(tmp_path):
    table = tmp_path / "runs.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/test_compare.py", *TINY,
         f"--cloudkon-json={table}"],
        cwd=ROOT, capture_output=True, text=True, timeout=420,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "CloudKon comparison runs (issue 5)" in proc.stdout, proc.stdout[-4000:]
    runs = json.loads(table.read_text())["runs"]
    assert {r["group"] for r in runs} == set(suite.GROUPS)
    for r in runs:
        if r["contender"] == "gnu-parallel" and r["note"].startswith("not run"):
            continue  # optional: "where installed"
        assert r["tasks"] > 0 and r["tasks_per_s"] > 0 and r["ratio"] is not None, r
    by_group = {}
    for r in runs:
        by_group.setdefault(r["group"], []).append(r)
    for group, rows in by_group.items():
        assert rows[0]["ratio"] == 1.0, group  # each group's baseline is its first row
    efficiency = {r["contender"]: r for r in by_group["efficiency-local"]}
    assert efficiency["sleep-0ms"]["efficiency"] is None  # nothing to be efficient at
    assert 0 < efficiency["sleep-1000ms"]["efficiency"] <= 1.05
