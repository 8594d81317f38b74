"""The executor under pressure: no descriptor leaks when a start fails, none when a program
cannot be started, threads that share an executor, the fallbacks (os.posix_spawn, no
pidfd), a task after close(), and tasks that start together near ulimit -n."""
from __future__ import annotations

import os
import threading

import cloudkon.executor as ex
from cloudkon.executor import Executor
from cloudkon.model import FAILED, SUCCEEDED


def _fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def test_no_descriptor_leaks_when_the_second_pipe_cannot_be_made(monkeypatch):
    """EMFILE between the two os.pipe() calls of _spawn (a worker at ulimit -n)."""
    executor = Executor(timeout=None)
    try:
        assert executor.run("j", 1, "true")[2] == SUCCEEDED  # guardian, devnull, spawner
        before = _fds()
        real_pipe = os.pipe
        calls = []

        def pipe():
            calls.append(1)
            if len(calls) % 2 == 0:
                raise OSError(24, "Too many open files")
            return real_pipe()

        monkeypatch.setattr(ex.os, "pipe", pipe)
        monkeypatch.setattr(ex, "PIPE_RETRY_SECONDS", 0)  # fail at once: no waiting here
        result = executor.run("j", 2, "true")
        monkeypatch.setattr(ex.os, "pipe", real_pipe)
        assert result[2] == FAILED
        assert _fds() == before, f"leaked: {sorted(_fds() - before)}"
    finally:
        executor.close()


def test_no_descriptor_leaks_on_spawn_failures_and_lookups(tmp_path):
    script = tmp_path / "noshebang"
    script.write_text("echo hi\n")
    script.chmod(0o755)
    gone = tmp_path / "gone"
    gone.write_text("#!/bin/sh\necho gone\n")
    gone.chmod(0o755)
    executor = Executor(timeout=None)
    try:
        executor.run("j", 1, "true")
        before = _fds()
        assert executor.run("j", 2, str(script))[7] == "hi\n"
        assert executor.run("j", 3, "no-such-program-xyz")[3] == 127
        assert executor.run("j", 4, str(gone))[7] == "gone\n"
        gone.unlink()
        assert executor.run("j", 5, str(gone))[3] == 127
        assert _fds() == before
    finally:
        executor.close()


def test_threads_share_an_executor_without_mixing_environments():
    executor = Executor(timeout=None)
    errors = []

    def work(n):
        for i in range(40):
            r = executor.run(f"job{n}", i + 1, "printenv CLOUDKON_TASK_ID")
            if r[7] != f"job{n}:{i + 1}\n":
                errors.append((n, i, r[7], r[8]))

    try:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
    finally:
        executor.close()


def test_a_task_after_close_starts_no_second_guardian():
    executor = Executor(timeout=None)
    executor.run("j", 1, "true")
    executor.close()
    executor.run("j", 2, "true")
    assert executor._guardian._proc is None, "a new guardian was started after close()"


def test_fallbacks_os_posix_spawn_and_no_pidfd(monkeypatch, tmp_path):
    import cloudkon.spawn as sp
    monkeypatch.setattr(sp, "_spawner", sp._os_spawn)
    monkeypatch.setattr(ex, "_pidfd_open", lambda pid: None)
    script = tmp_path / "noshebang"
    script.write_text("echo hi\n")
    script.chmod(0o755)
    executor = Executor(timeout=1.0)
    try:
        executor.run("j", 1, "true")
        before = _fds()
        r = executor.run("j", 2, "printenv CLOUDKON_LINE")
        assert r[2] == SUCCEEDED and r[7] == "2\n"
        assert executor.run("j", 3, "no-such-program-xyz")[3] == 127
        assert executor.run("j", 4, str(script))[7] == "hi\n"
        assert executor.run("j", 5, "sh -c 'echo out; echo err >&2; exit 3'")[3] == 3
        r = executor.run("j", 6, "/bin/sleep 5")
        assert r[2] == "timed_out", r
        assert _fds() == before
    finally:
        executor.close()


def test_a_start_out_of_descriptors_waits_for_them_and_runs(monkeypatch):
    executor = Executor(timeout=None)
    try:
        real_pipe = os.pipe
        failures = [OSError(24, "Too many open files")] * 3  # then descriptors are free

        def pipe():
            if failures:
                raise failures.pop()
            return real_pipe()

        monkeypatch.setattr(ex.os, "pipe", pipe)
        result = executor.run("j", 1, "echo started")
        assert (result[2], result[7]) == (SUCCEEDED, "started\n")
    finally:
        executor.close()


def test_many_tasks_starting_together_near_ulimit_n_do_not_fail():
    # Each running task holds 3 descriptors, 5 for its first 10 ms (the pipes' write ends,
    # see _HOLD_WRITERS_SECONDS): with room for little more than 3 a task, tasks that start
    # together ran out.
    import subprocess
    import sys
    code = r'''
import os, resource, threading
from cloudkon.executor import Executor
N = 120
e = Executor(timeout=None)
e.run("j", 0, "true")
limit = len(os.listdir("/proc/self/fd")) + 3 * N + 8
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
bar = threading.Barrier(N); out = []
def w(i):
    bar.wait()
    out.append(e.run("j", i + 1, "/bin/sleep 0.3"))
ts = [threading.Thread(target=w, args=(i,)) for i in range(N)]
[t.start() for t in ts]; [t.join() for t in ts]
e.close()
print([r[8] for r in out if r[2] != "succeeded"])
'''
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout  # no task failed to start


def test_tasks_run_on_after_the_guardian_dies_and_it_is_said_once(caplog):
    executor = Executor(timeout=None)
    try:
        assert executor.run("j", 1, "true")[2] == SUCCEEDED
        guardian = executor._guardian._proc
        guardian.kill()
        guardian.wait(timeout=10)  # gone: its end of the pipe is closed

        with caplog.at_level("WARNING", logger="cloudkon.guardian"):
            results = [executor.run("j", n, "echo on") for n in range(2, 5)]

        assert [(r[2], r[7]) for r in results] == [(SUCCEEDED, "on\n")] * 3
        gone = [r.message for r in caplog.records if "guardian is gone" in r.message]
        assert len(gone) == 1, gone
    finally:
        executor.close()
