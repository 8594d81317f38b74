"""The README's first command, as a user runs it."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bundled_example_runs_every_task_and_exits_0():
    proc = subprocess.run(
        [sys.executable, "-m", "cloudkon", "run", str(ROOT / "examples" / "sleep.txt"),
         "--workers", "4", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    import json

    summary = json.loads(proc.stdout)
    assert summary["tasks"] == summary["succeeded"] == 1000
    assert 0 < summary["efficiency"] <= 1.0
