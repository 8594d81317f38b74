"""Fixtures shared by the tests: workload files, `cloudkon` as a subprocess, waiting on
conditions with a deadline, and telling whether a process is gone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from aws_fixtures import *  # noqa: F403 - the moto server and AWS fixtures

# Generous: the machines are shared and small; a deadline is only there to end a hang.
DEADLINE_SECONDS = 30.0


def wait_until(condition: Callable[[], object], timeout: float = DEADLINE_SECONDS,
               interval: float = 0.02, what: str = "condition"):
    """Poll ``condition`` until it returns something truthy and return that; fail the test
    if the deadline passes first."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"{what} not met within {timeout} s")
        time.sleep(interval)


def process_gone(pid: int) -> bool:
    """True if no process ``pid`` runs any more. A zombie counts as gone: it has exited and
    only waits for its parent (here often PID 1, which reaps slowly) to collect it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state in ("Z", "X")


@pytest.fixture(name="wait_until")
def wait_until_fixture():
    return wait_until


@pytest.fixture(name="process_gone")
def process_gone_fixture():
    return process_gone


@pytest.fixture
def write_workload(tmp_path):
    """Write a workload file into the test's folder; text is written as UTF-8, bytes as is."""

    def write(content: str | bytes, name: str = "workload.txt") -> Path:
        path = tmp_path / name
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path

    return write


def _command(*args: object) -> list[str]:
    return [sys.executable, "-m", "cloudkon", *map(str, args)]


def _text(output: bytes) -> str:
    """Output as text mode reads it: decoded, with universal newlines."""
    return output.decode().replace("\r\n", "\n").replace("\r", "\n")


@pytest.fixture
def cloudkon(tmp_path):
    """Run `python -m cloudkon ARGS...` in the test's folder to its end; return the
    CompletedProcess (text). stdin is /dev/null unless ``input=`` gives what to write to
    it (text, or bytes as they are). The timeout only ends a hang."""

    def run(*args: object, timeout: float = 120.0, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("cwd", tmp_path)
        if "input" not in kwargs:
            kwargs.setdefault("stdin", subprocess.DEVNULL)
        elif isinstance(kwargs["input"], str):
            kwargs["input"] = kwargs["input"].encode()
        proc = subprocess.run(_command(*args), capture_output=True, timeout=timeout, **kwargs)
        proc.stdout, proc.stderr = _text(proc.stdout), _text(proc.stderr)
        return proc

    return run


@pytest.fixture
def start_cloudkon(tmp_path):
    """Start `python -m cloudkon ARGS...` in the test's folder and return the Popen; a
    process still running when the test ends is killed."""
    started = []

    def start(*args: object, **kwargs) -> subprocess.Popen:
        kwargs.setdefault("cwd", tmp_path)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        started.append(subprocess.Popen(_command(*args), **kwargs))
        return started[-1]

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
