"""The benchmarks in benchmarks/ still run: every contender, at a tiny scale, once.

Timings are not checked here (the machine is shared and noisy; the figures are ratios
read from a full run, see benchmarks/README.md). This only keeps the benchmarks from
rotting: each contender runs, produces the output it should, and the table of ratios is
printed.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmarks_run_at_a_tiny_scale():
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/", "--benchmark-disable",
         "--cloudkon-scale=0.001", "-p", "no:cacheprovider", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "CloudKon benchmark ratios" in proc.stdout, proc.stdout[-4000:]
    for group in ("local-sleep0", "local-shell", "local-memory"):
        assert group in proc.stdout, proc.stdout[-4000:]
