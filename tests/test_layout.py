"""The package layout of docs/design.md, section 2, as rules the code keeps: who may import
whom, and what the worker loop and the local flavour never load."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def imported_packages(package: str) -> set[str]:
    """The top-level names the modules of ``package`` import; the CLI (cloudkon/cli.py),
    which stands above every package and wires them, aside."""
    names = set()
    for path in (REPO / package).rglob("*.py"):
        if path == REPO / "cloudkon" / "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(("package", "forbidden"), [
    ("worker", "submitter"),
    ("submitter", "worker"),
    ("submitter", "local"),
    ("cloudkon", "worker"),
    ("cloudkon", "submitter"),
    ("cloudkon", "local"),
    ("cloudkon", "benchmarks"),
    ("cloudkon", "fleet"),
    ("fleet", "worker"),
    ("fleet", "submitter"),
    ("fleet", "local"),
    ("worker", "fleet"),
    ("submitter", "fleet"),
])
def test_package_does_not_import(package, forbidden):
    assert forbidden not in imported_packages(package)


@pytest.mark.parametrize("module", ["worker.daemon", "local.runner"])
def test_the_worker_loop_and_the_local_flavour_never_load_boto3(module):
    code = f"import sys, {module}; print(sorted(m for m in ('boto3', 'botocore') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=60, check=True)
    assert proc.stdout.strip() == "[]"
