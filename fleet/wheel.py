"""The wheel of this version of the project, built from its source checkout, for the fleet's
instances to install.

The build runs in a copy of the packages, pyproject.toml and README.md (so that no
``*.egg-info`` is left in the checkout) with ``SOURCE_DATE_EPOCH`` fixed, so the same
source always gives the same bytes: `fleet up` finds the wheel it uploaded before under the
same content hash and leaves it. A wheel built is kept in ``build/wheels/`` of the checkout
under the hash of its sources, so that the next `fleet up` of the same source builds nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cloudkon.errors import CloudKonError, UsageError

# The project's checkout: the folder above this package.
ROOT = Path(__file__).resolve().parent.parent
# Zip timestamps of the build (1980-01-01, the earliest a zip file can hold).
_SOURCE_DATE_EPOCH = "315532800"
_BUILD_SECONDS = 600  # pip may first fetch the build backend


@dataclass(frozen=True)
class Wheel:
    name: str  # the file name pip needs: cloudkon-VERSION-py3-none-any.whl
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def source_root() -> Path:
    """The checkout the fleet is built from; UsageError when cloudkon runs from an
    installed package."""
    if not (ROOT / "pyproject.toml").is_file() or not (ROOT / "deploy").is_dir():
        raise UsageError("cloudkon fleet up builds the workers' wheel and reads deploy/ from"
                         " a source checkout of cloudkon: run it there (./scripts/cloudkon"
                         " fleet up)")
    return ROOT


def _sources(root: Path) -> tuple[list[str], str]:
    """The top-level folders of the project's packages, and a hash of every file a build
    reads."""
    packages = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))[
        "tool"]["setuptools"]["packages"]
    folders = sorted({p.split(".")[0] for p in packages})
    digest = hashlib.sha256()
    files = [root / "pyproject.toml", root / "README.md"]
    for folder in folders:
        files += sorted(p for p in (root / folder).rglob("*")
                        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return folders, digest.hexdigest()[:24]


def build(root: Path) -> Wheel:
    """Build the project at ``root`` into a wheel (`pip wheel --no-deps`), or take the one
    built before from the same sources."""
    folders, sources = _sources(root)
    cache = root / "build" / "wheels" / sources
    kept = sorted(cache.glob("cloudkon-*.whl")) if cache.is_dir() else []
    if kept:
        return Wheel(kept[0].name, kept[0].read_bytes())
    with tempfile.TemporaryDirectory(prefix="cloudkon-wheel-") as tmp:
        source, out = Path(tmp) / "source", Path(tmp) / "out"
        for folder in folders:
            shutil.copytree(root / folder, source / folder,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(root / name, source / name)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out),
             str(source)],
            capture_output=True, text=True, timeout=_BUILD_SECONDS, stdin=subprocess.DEVNULL, check=False,
            env={**os.environ, "SOURCE_DATE_EPOCH": _SOURCE_DATE_EPOCH},
        )
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise CloudKonError(f"building the wheel failed (pip wheel exit {proc.returncode}):"
                                f" {tail[0]}")
        [path] = out.glob("cloudkon-*.whl")
        wheel = Wheel(path.name, path.read_bytes())
    try:
        cache.mkdir(parents=True, exist_ok=True)
        (cache / wheel.name).write_bytes(wheel.data)
    except OSError:  # a read-only checkout: the next fleet up builds again
        pass
    return wheel
