"""Running one task: CloudKon's ``sleep N`` in-process, anything else as ``/bin/sh -c``
would, started directly when the line needs no shell (:mod:`cloudkon.commandline`).

A task that fails, times out or cannot start becomes a result saying so; nothing a task
does stops the run. Each shell task runs in a session (process group) of its own, so a
time-out or a cancel ends the whole tree it started, not only the shell; and a guardian
process (:mod:`cloudkon.guardian`) ends the groups still running if the executor's
process dies. Tasks get the environment :mod:`cloudkon.taskenv` builds.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from operator import itemgetter

from cloudkon.commandline import direct_argv, find_program, shell_pwd, signal_line
from cloudkon.guardian import Guardian
from cloudkon.limits import DEFAULT_TAIL_BYTES, KILL_GRACE_SECONDS
from cloudkon.model import CANCELLED, FAILED, SUCCEEDED, TIMED_OUT, task_id
from cloudkon.spawn import Environ, spawner
from cloudkon.taskenv import task_environ
from cloudkon.workload import SLEEP_CACHE, sleep_ms

SHELL = "/bin/sh"
_SHELL_PATH = os.fsencode(SHELL)
_TASK_IDS = (b"CLOUDKON_JOB_ID", b"CLOUDKON_TASK_ID", b"CLOUDKON_LINE")
_READ_CHUNK = 65536
_COMMAND = itemgetter(1)  # of a (line, command) task
_POLLIN = select.POLLIN
# How long close() waits for tasks being started to be watched by the guardian: a spawn
# takes milliseconds; a thread stuck longer is not waited for.
CLOSE_WAIT_SECONDS = 5.0
# The longest a wait for a task's output goes without looking at the clock (and, where
# there is no pidfd, whether the task has exited).
_POLL_SECONDS = 0.25
# How long a task's start waits, in all, for descriptors to be free when there are none
# (ulimit -n) before it fails (see _pipes).
PIPE_RETRY_SECONDS = 2.0
# How long a program's place on the PATH is taken as known (see Executor._where), and
# how many programs' places are kept.
PROGRAM_LOOKUP_SECONDS = 1.0
_PROGRAMS_KEPT = 1024
# The lateness of a timed wait assumed at first and the most assumed (see _sleep_until):
# at most this long a sleep task yields in a loop instead of waiting, so that a loaded
# machine, whose waits wake later, does not have many threads spinning.
_FIRST_LATE_SECONDS = 0.0002
_MOST_LATE_SECONDS = 0.0005
# After a task has exited, how long to keep reading what it left in its pipes, when
# something it started in the background keeps them open.
_DRAIN_SECONDS = 0.1
# How long the worker keeps its own copies of a task's pipes' write ends, so that the
# task's exit, not its pipes' ends of file just before, wakes the waiting thread, once.
# Short tasks, the ones whose wake-ups count, end within it; a longer one holds only its
# own three descriptors (two read ends, a pidfd) after it, so that about as many tasks run
# at once under a descriptor limit (ulimit -n) as without the hold: short, so that few
# starts overlap in it even when many threads start long tasks together.
_HOLD_WRITERS_SECONDS = 0.01


class TaskHandle:
    """What :meth:`Executor.end` ends: the tasks run under it (one bundle's), and no more
    of them start. Made by the caller, passed to ``run_bundle``."""

    __slots__ = ("ended",)

    def __init__(self) -> None:
        self.ended = False


class Executor:
    """Runs tasks; safe to share between threads. ``cancel()`` ends every running task,
    ``cancel_job(job_id)`` those of one job, ``end(handle)`` those of one bundle.
    ``task_env``: the names of the variables tasks get besides the base ones
    (:func:`cloudkon.taskenv.task_environ`); None: this process's whole environment.
    ``close()`` when done (it ends the guardian)."""

    def __init__(self, timeout: float | None, tail_bytes: int = DEFAULT_TAIL_BYTES,
                 task_env: tuple[str, ...] | None = None) -> None:
        self.timeout = timeout if timeout else None  # 0 or None: no time limit
        self.tail_bytes = tail_bytes
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._starting = 0  # tasks between their spawn and their guardian's watch
        self._started = threading.Condition(self._lock)
        # pid (= process group id) -> (job id, handle), of running tasks
        self._running: dict[int, tuple[str, TaskHandle | None]] = {}
        self._cancelled_jobs: set[str] = set()
        # Encoded once, not again for every task.
        self._env: dict[bytes, bytes] = task_environ(task_env)
        # What a command started without the shell gets: what the shell would pass on.
        self._direct_env = {**self._env, b"PWD": shell_pwd(self._env)}
        # The same as b"NAME=value" items, laid out once; each task adds its own ids.
        self._environ = Environ(_env_items(self._env))
        self._direct_environ = Environ(_env_items(self._direct_env))
        self._guardian = Guardian()  # started at the first shell task
        self._programs: dict[str, tuple[bytes | None, float]] = {}  # see _where
        self._late = _FIRST_LATE_SECONDS  # how late a timed wait wakes (see _sleep_until)

    def close(self) -> None:
        """End the guardian process (it kills any task group still running), once the tasks
        being started are watched (a task that starts after it is killed at once)."""
        with self._started:
            self._started.wait_for(lambda: not self._starting, timeout=CLOSE_WAIT_SECONDS)
        self._guardian.close()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop every running task now (SIGKILL to its process group); start no more."""
        self._cancelled.set()
        with self._lock:  # held while signalling: a pid leaves the set before it is reaped
            for pid in self._running:
                _kill_group(pid, signal.SIGKILL)

    def cancel_job(self, job_id: str) -> None:
        """Stop the running tasks of job ``job_id`` now (SIGKILL to their process groups);
        a task of the job ended so, or started later, is ``cancelled`` (not a result)."""
        with self._lock:
            self._cancelled_jobs.add(job_id)
            for pid, (job, _) in self._running.items():
                if job == job_id:
                    _kill_group(pid, signal.SIGKILL)

    def end(self, handle: TaskHandle) -> None:
        """Stop the running task run under ``handle`` now (SIGKILL to its process group);
        it has no result (``cancelled``), and no task starts under ``handle`` any more."""
        with self._lock:
            handle.ended = True
            for pid, (_, h) in self._running.items():
                if h is handle:
                    _kill_group(pid, signal.SIGKILL)

    def _ended(self, job_id: str, handle: TaskHandle | None = None) -> bool:
        return (self._cancelled.is_set() or job_id in self._cancelled_jobs
                or (handle is not None and handle.ended))

    def run_bundle(self, job_id: str, tasks: list[tuple[int, str]], results: list[tuple],
                   stop: Callable[[], bool], handle: TaskHandle | None = None) -> bool:
        """Run a bundle's (line, command) tasks in order, appending each result (a tuple
        laid out as Result) to ``results`` as it finishes, so another thread sees it at once.
        Before each task that takes time ``stop()`` is asked; a task ended by ``cancel()``
        (or by ``end(handle)``) has no result. True if every task ran."""
        append = results.append
        cached_ms = SLEEP_CACHE.get
        clock = time.time
        if list(map(cached_ms, map(_COMMAND, tasks))).count(0) == len(tasks):
            # `sleep 0` only (a benchmark's): nothing to execute, each task starts and ends
            # at once; their cost is the framework's own.
            results += [(line, command, SUCCEEDED, 0, None, (now := clock()), now, "", "")
                        for line, command in tasks]
            return True
        cancelled = self._cancelled.is_set
        run = self.run
        for line, command in tasks:
            if cached_ms(command) == 0:
                # `sleep 0`: nothing to execute; its cost is the framework's own.
                start = clock()
                append((line, command, SUCCEEDED, 0, None, start, clock(), "", ""))
                continue
            if cancelled() or stop():
                return False
            result = run(job_id, line, command, handle)
            if result[2] == CANCELLED:
                return False  # not a result: the task runs again, here or elsewhere
            append(result)
        return True

    def run(self, job_id: str, line: int, command: str,
            handle: TaskHandle | None = None) -> tuple:
        """Run one task to its end; return its result as a tuple laid out as Result."""
        ms = sleep_ms(command)
        if ms is not None:
            return self._sleep(job_id, line, command, ms, handle)
        return self._shell(job_id, line, command, handle)

    def _sleep(self, job_id: str, line: int, command: str, ms: float,
               handle: TaskHandle | None = None) -> tuple:
        start = time.time()
        status = SUCCEEDED
        if ms:
            seconds = ms / 1000.0
            if self.timeout is not None and seconds > self.timeout:
                seconds, status = self.timeout, TIMED_OUT
            if not self._sleep_until(time.monotonic() + seconds, job_id, handle):
                status = CANCELLED
        elif self._ended(job_id, handle):
            status = CANCELLED
        return (line, command, status, 0 if status == SUCCEEDED else None, None,
                start, time.time(), "", "")

    def _sleep_until(self, until: float, job_id: str, handle: TaskHandle | None) -> bool:
        """Wait until monotonic time ``until``; False if the task was ended first.

        In slices, so that a cancel of the job (no event of its own) is seen too. A timed
        wait wakes late (timer slack and scheduling: about 0.2 ms here, 2% of a 10 ms task,
        paid again by each task of a bundle), so the last slice ends early by the lateness
        the waits of this executor have shown, and what is left of the sleep passes in
        yields (the GIL let go each time): a sleep lasts at least its time, and about no more.
        """
        while (left := until - time.monotonic()) > 0:
            late = self._late
            if left > _POLL_SECONDS + late:
                if self._cancelled.wait(_POLL_SECONDS) or self._ended(job_id, handle):
                    return False
            elif left > late:
                target = until - late
                if self._cancelled.wait(left - late) or self._ended(job_id, handle):
                    return False
                woke = time.monotonic() - target
                self._late = min(max(late + (woke - late) / 8, 0.0), _MOST_LATE_SECONDS)
            else:
                time.sleep(0)
        return True

    def _where(self, program: str) -> bytes | None:
        """Where the shell would find ``program`` on the tasks' PATH (None: nowhere), as
        looked up at most PROGRAM_LOOKUP_SECONDS ago. Not a search in each task's child:
        every directory before the program's costs a failed execve there (8 of them, about
        20 us a task, on a PATH that starts with a few tool folders). A program that
        appears earlier on the PATH is found within PROGRAM_LOOKUP_SECONDS, as a shell's
        command hash would after ``hash -r``; one that is not found goes to the shell."""
        now = time.monotonic()
        found = self._programs.get(program)
        if found is not None and found[1] > now:
            return found[0]
        path = find_program(program, self._direct_env)
        if len(self._programs) >= _PROGRAMS_KEPT:
            self._programs.clear()
        self._programs[program] = (path, now + PROGRAM_LOOKUP_SECONDS)
        return path

    def _shell(self, job_id: str, line: int, command: str,
               handle: TaskHandle | None = None) -> tuple:
        start = time.time()
        if self._ended(job_id, handle):
            return (line, command, CANCELLED, None, None, start, start, "", "")
        ids = [b"CLOUDKON_JOB_ID=" + job_id.encode(),
               b"CLOUDKON_TASK_ID=" + task_id(job_id, line).encode(),
               b"CLOUDKON_LINE=%d" % line]
        guarded = None  # until the guardian watches it
        with self._lock:  # close() waits for starts in progress: none is left unwatched
            self._starting += 1
        try:
            self._guardian.start()  # once, before the first task (after that, a no-op)
            started = None
            argv = direct_argv(command)
            if argv is not None:
                program = argv[0]
                path = self._where(program)
                if path is not None:
                    try:
                        started = _spawn(path, [os.fsencode(a) for a in argv],
                                         self._direct_environ, ids)
                    except OSError:
                        self._programs.pop(program, None)  # gone, or not a program: look again
                if started is None:
                    # Not found, not executable, a script without #!: the shell says it in its
                    # own words (or runs the script), as it would have.
                    argv = None
            if started is None:
                try:
                    started = _spawn(_SHELL_PATH, [_SHELL_PATH, b"-c", os.fsencode(command)],
                                     self._environ, ids)
                except OSError as exc:
                    return (line, command, FAILED, None, None, start, time.time(), "",
                            f"cloudkon: could not start {SHELL}: {exc.strerror or exc}")
            pid, out_fd, err_fd, writers = started
            guarded = self._guardian.watch(pid)
        finally:
            with self._lock:
                self._starting -= 1
                if guarded is not None:
                    self._running[pid] = (job_id, handle)
                if not self._starting:
                    self._started.notify_all()
        if self._ended(job_id, handle) or not guarded:
            # A cancel came while it started, and missed it; or the executor closed.
            _kill_group(pid, signal.SIGKILL)
        try:
            stdout, stderr, timed_out = self._wait(pid, out_fd, err_fd, writers)
        finally:
            with self._lock:
                self._running.pop(pid, None)
            self._guardian.release(pid)  # before the reap: the group id is still this task's
            # Reaped only now, after leaving _running: cancel() never signals a reused pid.
            code, core_dumped = _reap(pid)
        end = time.time()
        sig = None
        if code < 0 and argv is not None and not timed_out and not self._cancelled.is_set():
            # Under the shell, a command ended by a signal is an exit status and a line.
            stderr += signal_line(-code, core_dumped)
            code = 128 - code
        elif code < 0:  # ended by a signal: no exit status, the signal says what happened
            sig = signal_name(-code)
            code = None
        if timed_out:
            status = TIMED_OUT
        elif self._ended(job_id, handle) and code != 0:
            status = CANCELLED
        else:
            status = SUCCEEDED if code == 0 else FAILED
        return (line, command, status, code, sig, start, end,
                _decode_tail(stdout, self.tail_bytes), _decode_tail(stderr, self.tail_bytes))

    def _wait(self, pid: int, out_fd: int, err_fd: int, writers: tuple[int, int]
              ) -> tuple[bytearray, bytearray, bool]:
        """Read the ends of stdout and stderr (and close them) until the task has exited,
        enforcing the time limit; the task is left unreaped (a zombie at most), so its pid
        stays its own. ``writers``, this process's copies of the pipes' write ends, are
        closed once the task has exited (or after _HOLD_WRITERS_SECONDS): its pipes' ends
        of file, which come a moment before its exit, do not wake this thread on their
        own; the exit does, once."""
        keep = self.tail_bytes
        tails = {out_fd: bytearray(), err_fd: bytearray()}
        timeout = self.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        kill_at = None  # when a timed-out task's group gets SIGKILL
        drain_until = None  # once it has exited: how long to read what it left in the pipes
        timed_out = False
        pidfd = _pidfd_open(pid)
        if pidfd is None:  # its pipes' end of file is the first sign of its exit
            _close_all(writers)
            writers = ()
        hold_until = time.monotonic() + _HOLD_WRITERS_SECONDS if writers else None
        # Without a pidfd, once both pipes have ended (the task is exiting, or closed them):
        # how long until its exit is asked again, doubling from 1 ms.
        pause = 0.001
        poller = select.poll()  # select.poll, not selectors: this loop runs for every task
        watched = {out_fd, err_fd} if pidfd is None else {out_fd, err_fd, pidfd}
        for fd in watched:
            poller.register(fd, _POLLIN)
        try:
            while True:
                now = time.monotonic()
                if drain_until is None and pidfd is None and _has_exited(pid):
                    drain_until = now + _DRAIN_SECONDS
                if drain_until is not None and (not watched or now >= drain_until):
                    break
                if deadline is not None and now >= deadline and not timed_out:
                    timed_out = True
                    _kill_group(pid, signal.SIGTERM)
                    kill_at = now + KILL_GRACE_SECONDS
                if kill_at is not None and now >= kill_at:
                    _kill_group(pid, signal.SIGKILL)
                    kill_at = None
                if hold_until is not None and now >= hold_until:
                    _close_all(writers)  # a longer task: its pipes' ends wake this thread
                    writers, hold_until = (), None
                wait = _POLL_SECONDS
                for limit in (None if timed_out else deadline, kill_at, drain_until,
                              hold_until):
                    if limit is not None:
                        wait = min(wait, max(limit - now, 0.0))
                if not watched and pidfd is None:  # nothing to wake it: ask again soon
                    wait, pause = min(wait, pause), min(pause * 2, _POLL_SECONDS)
                events = poller.poll(wait * 1000.0)
                if not events and drain_until is not None:
                    break  # exited, and whatever it started holds the pipes open: done
                for fd, event in events:
                    if fd == pidfd:
                        drain_until = time.monotonic() + _DRAIN_SECONDS
                        _close_all(writers)  # now the pipes end when nothing else holds them
                        writers, hold_until = (), None
                        chunk = b""
                    elif event & _POLLIN:
                        chunk = os.read(fd, _READ_CHUNK)
                    else:
                        chunk = b""  # a hang-up alone: end of file, nothing left to read
                    if not chunk:  # end of file, or the task exited
                        poller.unregister(fd)
                        watched.discard(fd)
                        continue
                    tail = tails[fd]
                    tail += chunk
                    if len(tail) > 2 * keep:
                        del tail[: len(tail) - keep]
        finally:
            _close_all(writers)
            os.close(out_fd)
            os.close(err_fd)
            if pidfd is not None:
                os.close(pidfd)
            if drain_until is None:  # left early (an error): do not leave the task behind
                _kill_group(pid, signal.SIGKILL)
        if timed_out:
            # What the shell started may still live (ignoring SIGTERM, or holding the pipes
            # open): a timed-out task ends with its whole group.
            _kill_group(pid, signal.SIGKILL)
        return tails[out_fd], tails[err_fd], timed_out


def _spawn(path: bytes, argv: list[bytes], env: Environ, own: list[bytes]
           ) -> tuple[int, int, int, tuple[int, int]]:
    """Start program ``path`` with ``argv`` and ``env`` plus ``own`` (b"NAME=value" items)
    in a new session (its own process group), stdin from /dev/null, stdout and stderr to
    pipes; return its pid, the read ends of the pipes and (for the caller to close) their
    write ends. OSError if it cannot be started (an execve error: not found, not
    executable, no #!). How: :mod:`cloudkon.spawn`."""
    out_r, out_w, err_r, err_w = _pipes()
    try:
        pid = spawner()(path, argv, env, own, (_devnull(), out_w, err_w))
    except BaseException:
        _close_all((out_r, out_w, err_r, err_w))
        raise
    return pid, out_r, err_r, (out_w, err_w)


def _pipes() -> tuple[int, int, int, int]:
    """Two pipes (both ends close-on-exec; dup2 onto 1 and 2 clears it). Out of descriptors
    (ulimit -n), wait and try again, for up to PIPE_RETRY_SECONDS: the write ends other
    threads hold for _HOLD_WRITERS_SECONDS, and the descriptors of tasks that end, are
    closed by then, and a task that merely started at the same time as many others must
    not fail with "Too many open files"."""
    pause, waited = _HOLD_WRITERS_SECONDS, 0.0
    while True:
        try:
            out_r, out_w = os.pipe()
            try:
                err_r, err_w = os.pipe()
            except BaseException:  # the first pipe must not leak
                _close_all((out_r, out_w))
                raise
            return out_r, out_w, err_r, err_w
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE) or waited >= PIPE_RETRY_SECONDS:
                raise
            time.sleep(pause)
            waited += pause
            pause = min(pause * 2, 0.25)


def _close_all(fds: tuple[int, ...]) -> None:
    for fd in fds:
        os.close(fd)


_DEVNULL: int | None = None


def _devnull() -> int:
    """One descriptor of /dev/null (close-on-exec) for every task's stdin, opened once."""
    global _DEVNULL
    if _DEVNULL is None:
        fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        with _DEVNULL_LOCK:
            if _DEVNULL is None:
                _DEVNULL, fd = fd, None
        if fd is not None:
            os.close(fd)
    return _DEVNULL


_DEVNULL_LOCK = threading.Lock()


def _env_items(env: dict[bytes, bytes]) -> list[bytes]:
    """``env`` as b"NAME=value" items, without the ids each task sets."""
    return [name + b"=" + value for name, value in env.items() if name not in _TASK_IDS]


def _reap(pid: int) -> tuple[int, bool]:
    """Wait for ``pid``; return its exit code (-N: ended by signal N) and whether it
    dumped core."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): as subprocess does, 0
        return 0, False
    return os.waitstatus_to_exitcode(status), os.WIFSIGNALED(status) and os.WCOREDUMP(status)


def _pidfd_open(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits (Linux 5.3+), or None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None  # elsewhere: _has_exited() is asked every _POLL_SECONDS instead


def _has_exited(pid: int) -> bool:
    """Whether ``pid`` has exited, without reaping it."""
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    return info is not None


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # already gone (a zombie's group may refuse signals on some systems)


def signal_name(number: int) -> str:
    """The name of signal ``number`` ("SIGKILL"), or "signal N" for one without a name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _decode_tail(data: bytearray, keep: int) -> str:
    if not data:
        return ""
    if len(data) > keep:
        data = data[len(data) - keep:]
        # A cut inside a UTF-8 character of text: its leftover continuation bytes are
        # dropped, so that the tail of a text output stays text.
        skip = 0
        while skip < 3 and skip < len(data) and 0x80 <= data[skip] <= 0xBF:
            skip += 1
        if skip:
            try:
                return bytes(data[skip:]).decode("utf-8")
            except UnicodeDecodeError:
                pass
    # Bytes that are not UTF-8 are kept as surrogate escapes: the codec carries them exactly
    # (base64), a results file shows them as U+FFFD with the exact bytes beside.
    return data.decode("utf-8", "surrogateescape")
