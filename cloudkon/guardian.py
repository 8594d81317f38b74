"""The guardian: a tiny process that ends an executor's tasks when the executor's process
dies, however it dies (kill -9 included).

Each task runs in a process group (a session) of its own, so nothing that happens to the
worker reaches it, and a killed worker can act no more. The guardian is started once per
executor, at its first shell task, as ``python -I -S guardian.py`` (stdlib only: it
imports nothing of CloudKon), in a session of its own, with a pipe for its stdin. The
executor writes one short line per task start and end:

    + PGID      a task's process group started: end it if the executor dies
    - PGID      the task has exited (sent before it is reaped, while its pid is still
                its own): forget it

When the pipe reaches its end, the executor's process has exited or closed it: the
guardian sends SIGKILL to every group still registered, and exits. A clean executor has
none left by then, so there is no goodbye message: every end of the pipe means the same.

Not PR_SET_PDEATHSIG on the tasks: it fires when the *thread* that started the child
ends, not the process (a bundle thread of the worker may end any time), and setting it
needs a preexec_fn, which costs the fast vfork start of every task.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger(__name__)

_START = b"+"
_END = b"-"
_READ_CHUNK = 65536  # a pipe's whole buffer on Linux
# Between two reads, the guardian sleeps this long, so that it wakes up at most 50 times a
# second however many tasks start (the pipe holds thousands of lines meanwhile; a writer
# would wait, never lose a line), and notices the executor's end at most this much later.
_BATCH_SECONDS = 0.02


# --- the guardian process --------------------------------------------------------------------


def serve(fd: int, pause: float = _BATCH_SECONDS) -> set[int]:
    """Read registrations from ``fd`` until its end; return the groups still registered."""
    groups: set[int] = set()
    pending = b""
    while True:
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except InterruptedError:  # pragma: no cover - retried by Python itself since 3.5
            continue
        if not chunk:
            return groups
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            op, _, value = line.partition(b" ")
            try:
                pgid = int(value)
            except ValueError:
                continue  # not ours: ignored, the pipe is only the executor's
            if pgid <= 1:
                continue  # never signal every process (-1) or init's group
            if op == _START:
                groups.add(pgid)
            elif op == _END:
                groups.discard(pgid)
        time.sleep(pause)


def kill_groups(groups: set[int]) -> None:
    """SIGKILL each process group of ``groups``; one already gone is no error."""
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def main() -> int:
    # Its own session already; a terminal's Ctrl-C or hang-up is the executor's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    kill_groups(serve(sys.stdin.fileno()))
    return 0


# --- the executor's side ---------------------------------------------------------------------


class Guardian:
    """The executor's handle on its guardian process, started by ``start()``.
    ``watch(pgid)`` and ``release(pgid)`` cost one short write each (atomic on a pipe);
    ``close()`` ends the guardian, killing what is still watched, and a ``watch`` after it
    says so, for the caller to end the group itself."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the start, and a watch against the close
        self._proc: subprocess.Popen | None = None
        self._fd: int | None = None
        self._failed = False  # could not start, or died: tasks run on unguarded
        self._closed = False
        self._watched: set[int] = set()  # groups watched and not yet released

    def start(self) -> None:
        """Start the guardian process unless it runs: before the first task starts, so that
        only the moment between a task's start and its ``watch()`` is unguarded."""
        if self._fd is None:
            self._start()

    def watch(self, pgid: int) -> bool:
        """From now until ``release(pgid)``, group ``pgid`` is killed if this process dies;
        False if the guardian was closed first (a task that started while its executor
        closed): the caller ends the group itself."""
        with self._lock:  # either in the pipe before the close's end of file, or refused
            if self._closed:
                return False
            self._watched.add(pgid)
            error = self._write(b"+ %d\n" % pgid)
        if error is not None:
            self._gone(error)
        return True

    def release(self, pgid: int) -> None:
        """Forget group ``pgid``: call it before its leader is reaped."""
        with self._lock:  # never a write to a descriptor close() has closed (and maybe reused)
            self._watched.discard(pgid)
            error = self._write(b"- %d\n" % pgid)
        if error is not None:
            self._gone(error)

    def close(self) -> None:
        """Close the pipe: the guardian kills what is still watched, and exits. With groups
        still watched, wait for it, so that they are ended on return; with none (a clean
        end: the usual case), do not wait out its next pause (up to _BATCH_SECONDS, or its
        start-up): a thread reaps it."""
        with self._lock:
            proc, self._proc, self._fd = self._proc, None, None
            self._closed = True
        if proc is not None:
            proc.stdin.close()
            if self._watched:
                proc.wait()
            else:
                threading.Thread(target=proc.wait, name="cloudkon-guardian-reaper",
                                 daemon=True).start()

    @property
    def pid(self) -> int | None:
        """The guardian's pid, None before it starts."""
        return self._proc.pid if self._proc is not None else None

    def _start(self) -> None:
        with self._lock:
            if self._fd is not None or self._failed or self._closed:
                return
            try:
                # -I -S: no user site, no PYTHON* variables, nothing imported but the stdlib.
                self._proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", os.path.abspath(__file__)],
                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                    start_new_session=True, cwd="/",
                )
            except OSError as exc:
                self._failed = True
                log.warning("could not start the task guardian (%s): tasks will outlive a"
                            " killed worker", exc.strerror or exc)
                return
            self._fd = self._proc.stdin.fileno()
            log.debug("task guardian started: pid %d", self._proc.pid)

    def _write(self, line: bytes) -> OSError | None:
        """Under ``_lock``: write ``line`` to the guardian, if it runs. The error of the
        write that found it gone (it died: BrokenPipeError), once; None otherwise."""
        fd = self._fd
        if fd is None:
            return None
        try:
            os.write(fd, line)
            return None
        except OSError as exc:
            self._fd = None
            if self._failed:
                return None
            self._failed = True
            return exc

    @staticmethod
    def _gone(exc: OSError) -> None:
        log.warning("the task guardian is gone (%s): tasks will outlive a killed worker",
                    exc.strerror or exc)


if __name__ == "__main__":
    sys.exit(main())
