"""Running one task: CloudKon's ``sleep N`` in-process, anything else with ``/bin/sh -c``.

A task that fails, times out or cannot start becomes a result saying so; nothing a task
does stops the run. Each shell task runs in a session (process group) of its own, so a
time-out or a cancel ends the whole tree it started, not only the shell.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import threading
import time

from cloudkon.limits import DEFAULT_TAIL_BYTES, KILL_GRACE_SECONDS
from cloudkon.model import CANCELLED, FAILED, SUCCEEDED, TIMED_OUT, task_id
from cloudkon.workload import SLEEP_CACHE, sleep_ms

SHELL = "/bin/sh"
_READ_CHUNK = 65536
# While a task's pipes stay open, how often to look whether it has exited or was cancelled.
_POLL_SECONDS = 0.25


class Executor:
    """Runs tasks; safe to share between threads. ``cancel()`` ends every running task."""

    def __init__(self, timeout: float | None, tail_bytes: int = DEFAULT_TAIL_BYTES) -> None:
        self.timeout = timeout if timeout else None  # 0 or None: no time limit
        self.tail_bytes = tail_bytes
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._running: dict[int, subprocess.Popen] = {}
        self._env = dict(os.environ)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop every running task now (SIGKILL to its process group); start no more."""
        self._cancelled.set()
        with self._lock:
            running = list(self._running.values())
        for proc in running:
            _kill_group(proc, signal.SIGKILL)

    def run_bundle(self, job_id: str, tasks: list[tuple[int, str]]) -> list[tuple]:
        """Run a bundle's (line, command) tasks in order; return their results as tuples
        laid out as Result. Tasks not started because of ``cancel()`` have no result."""
        results = []
        append = results.append
        cached_ms = SLEEP_CACHE.get
        clock = time.time
        cancelled = self._cancelled.is_set
        for line, command in tasks:
            if cached_ms(command) == 0:
                # `sleep 0`: nothing to execute; its cost is the framework's own.
                start = clock()
                append((line, command, SUCCEEDED, 0, None, start, clock(), "", ""))
            elif cancelled():
                break
            else:
                append(self.run(job_id, line, command))
        return results

    def run(self, job_id: str, line: int, command: str) -> tuple:
        """Run one task to its end; return its result as a tuple laid out as Result."""
        ms = sleep_ms(command)
        if ms is not None:
            return self._sleep(line, command, ms)
        return self._shell(job_id, line, command)

    def _sleep(self, line: int, command: str, ms: float) -> tuple:
        start = time.time()
        status = SUCCEEDED
        if ms:
            seconds = ms / 1000.0
            if self.timeout is not None and seconds > self.timeout:
                seconds, status = self.timeout, TIMED_OUT
            if self._cancelled.wait(seconds):
                status = CANCELLED
        elif self._cancelled.is_set():
            status = CANCELLED
        return (line, command, status, 0 if status == SUCCEEDED else None, None,
                start, time.time(), "", "")

    def _shell(self, job_id: str, line: int, command: str) -> tuple:
        start = time.time()
        if self._cancelled.is_set():
            return (line, command, CANCELLED, None, None, start, start, "", "")
        env = self._env.copy()
        env["CLOUDKON_JOB_ID"] = job_id
        env["CLOUDKON_TASK_ID"] = task_id(job_id, line)
        env["CLOUDKON_LINE"] = str(line)
        try:
            proc = subprocess.Popen(
                [SHELL, "-c", command],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                env=env,
            )
        except OSError as exc:
            return (line, command, FAILED, None, None, start, time.time(), "",
                    f"cloudkon: could not start {SHELL}: {exc}")
        with self._lock:
            self._running[proc.pid] = proc
        if self._cancelled.is_set():  # cancel() came while it started, and missed it
            _kill_group(proc, signal.SIGKILL)
        try:
            stdout, stderr, timed_out = self._wait(proc)
        finally:
            with self._lock:
                self._running.pop(proc.pid, None)
        end = time.time()
        code = proc.returncode
        sig = None
        if code < 0:  # ended by a signal: no exit status, the signal says what happened
            sig = _signal_name(-code)
            code = None
        if timed_out:
            status = TIMED_OUT
        elif self._cancelled.is_set() and code != 0:
            status = CANCELLED
        else:
            status = SUCCEEDED if code == 0 else FAILED
        return (line, command, status, code, sig, start, end,
                _decode_tail(stdout, self.tail_bytes), _decode_tail(stderr, self.tail_bytes))

    def _wait(self, proc: subprocess.Popen) -> tuple[bytearray, bytearray, bool]:
        """Read the ends of stdout and stderr until both close, enforcing the time limit."""
        keep = self.tail_bytes
        tails = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        kill_at = None
        timed_out = False
        sel = selectors.PollSelector()
        try:
            for fd in tails:
                sel.register(fd, selectors.EVENT_READ)
            while sel.get_map():
                now = time.monotonic()
                if deadline is not None and now >= deadline and not timed_out:
                    timed_out = True
                    _kill_group(proc, signal.SIGTERM)
                    kill_at = now + KILL_GRACE_SECONDS
                if kill_at is not None and now >= kill_at:
                    _kill_group(proc, signal.SIGKILL)
                    kill_at = None
                wait = _POLL_SECONDS
                for limit in (deadline if not timed_out else None, kill_at):
                    if limit is not None:
                        wait = min(wait, max(limit - now, 0.0))
                events = sel.select(wait)
                if not events and kill_at is None and proc.poll() is not None:
                    # The shell has exited but something it started holds the pipes open:
                    # keep what was read, do not wait for that background process (after
                    # a timeout, it gets the grace period, then the SIGKILL).
                    break
                for key, _ in events:
                    chunk = os.read(key.fd, _READ_CHUNK)
                    if not chunk:
                        sel.unregister(key.fd)
                        continue
                    tail = tails[key.fd]
                    tail += chunk
                    if len(tail) > 2 * keep:
                        del tail[: len(tail) - keep]
        finally:
            sel.close()
            proc.stdout.close()
            proc.stderr.close()
        while True:
            try:
                remaining = None
                if deadline is not None and not timed_out:
                    remaining = max(deadline - time.monotonic(), 0.0)
                proc.wait(remaining)
                break
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc, signal.SIGKILL)
        if timed_out:
            # The shell is gone; what it started may still live (ignoring SIGTERM, or
            # holding the pipes open): a timed-out task ends with its whole group.
            _kill_group(proc, signal.SIGKILL)
        out, err = tails.values()
        return out, err, timed_out


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # already gone (a zombie's group may refuse signals on some systems)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _decode_tail(data: bytearray, keep: int) -> str:
    if not data:
        return ""
    if len(data) > keep:
        data = data[len(data) - keep:]
    return data.decode("utf-8", "replace")
