"""Starting a task's process: posix_spawn, with the GIL released while it runs.

A task's process starts in a session of its own (setsid: its own process group, no
controlling terminal), with the signals Python ignores (SIGPIPE, SIGXFSZ) back at their
defaults, as subprocess's ``restore_signals`` does, and three descriptors duplicated onto
its 0, 1 and 2, and no other descriptor of the worker (as subprocess's ``close_fds``): on
glibc 2.34+ the child closes every one from 3 up; elsewhere every descriptor the worker
has when the first task starts is made close-on-exec (those Python opens later are).

On glibc, libc's own posix_spawn is called through ctypes: glibc starts the child with
clone(CLONE_VM | CLONE_VFORK) and reports an execve error back in shared memory, and a
ctypes call releases the GIL for its whole length, so one bundle thread starting a task
does not stall the others. ``os.posix_spawn`` does the same work but holds the GIL until
the child has exec'd, so the bundle threads' starts would take turns; ``subprocess.Popen``
releases it but costs an error pipe, a /dev/null to open, a signal-handler reset loop and
much more Python per task. Measured on 2,000 `true` with 2 threads: this one is the fastest
of the three (``python -m benchmarks.before_after REV``: the spawn floor rows, and the
before/after of this change in README.md's Performance section). Elsewhere (or with a glibc older than 2.26, without
POSIX_SPAWN_SETSID) ``os.posix_spawn`` is used.
"""

from __future__ import annotations

import os
import signal
import threading

# Python ignores these; a task gets them at their defaults.
DEFAULT_SIGNALS = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ", "SIGXFZ")
                        if hasattr(signal, name))

# glibc's <spawn.h>.
_POSIX_SPAWN_SETSIGDEF = 0x04
_POSIX_SPAWN_SETSID = 0x80  # glibc 2.26+
# Room for glibc's opaque posix_spawn_file_actions_t (80 bytes on x86-64),
# posix_spawnattr_t (336) and sigset_t (128), with a margin for any architecture.
_OPAQUE_BYTES = 1024


class Environ:
    """A base environment shared by many starts: its b"NAME=value" items, checked once
    (a NUL byte would end a C string early: refused, as os.posix_spawn does); each start
    adds a few items of its own (a task's ids)."""

    __slots__ = ("items", "_local")

    def __init__(self, items: list[bytes]) -> None:
        _check_strings(items)
        self.items = tuple(items)
        self._local = threading.local()  # per thread: the C array, reused (see _Glibc)

    def with_own(self, own: list[bytes]) -> list[bytes]:
        return [*self.items, *own]


class _Glibc:
    """glibc's posix_spawn through ctypes, with one attributes object made at the start and
    only read afterwards (so shared by every thread). Only the spawn call itself releases
    the GIL: the file-action helpers only fill memory, and each release would hand the GIL
    to another bundle thread and wait to get it back."""

    def __init__(self) -> None:
        import ctypes  # here: a worker that runs only `sleep N` tasks never loads it

        self._ctypes = ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        held = ctypes.PyDLL(None)  # the same functions, called with the GIL held
        p = ctypes.c_void_p
        self._spawn = libc.posix_spawn
        self._spawn.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_char_p, p, p, p, p]
        self._spawn.restype = ctypes.c_int
        # No argtypes: these take only a buffer and ints, which ctypes passes as they are,
        # and return an int (ctypes' default); declared, each call would cost more.
        self._fa_init = held.posix_spawn_file_actions_init
        self._fa_destroy = held.posix_spawn_file_actions_destroy
        self._fa_dup2 = held.posix_spawn_file_actions_adddup2
        # glibc 2.34+: close every descriptor from 3 up in the child (subprocess's
        # close_fds); without it, only the close-on-exec ones close (see _close_on_exec).
        self._fa_closefrom = getattr(held, "posix_spawn_file_actions_addclosefrom_np", None)
        if self._fa_closefrom is None:
            _close_on_exec()
        self._attr = ctypes.create_string_buffer(_OPAQUE_BYTES)
        self._sigdef = ctypes.create_string_buffer(_OPAQUE_BYTES)
        _check(libc.posix_spawnattr_init(self._attr))
        _check(libc.sigemptyset(self._sigdef))
        for signum in DEFAULT_SIGNALS:
            _check(libc.sigaddset(self._sigdef, int(signum)))
        # The child (sharing this process's memory until its exec) must leave no handler of
        # ours in place: glibc (2.36, at least) asks each signal's disposition, then sets it
        # to the default, two calls per signal, 120 in all, while the starting thread waits;
        # a signal in this set costs one. So every signal this process does not ignore now
        # is in it: the task gets the same dispositions (what is ignored stays ignored, the
        # rest is at its default, as an exec leaves a handled signal), in half the calls.
        for signum in _not_ignored():
            libc.sigaddset(self._sigdef, signum)  # refused for glibc's internal signals: kept out
        _check(libc.posix_spawnattr_setsigdefault(self._attr, self._sigdef))
        # EINVAL from a glibc without POSIX_SPAWN_SETSID: then this class is not used.
        _check(libc.posix_spawnattr_setflags(
            self._attr, ctypes.c_short(_POSIX_SPAWN_SETSIGDEF | _POSIX_SPAWN_SETSID)))
        self._local = threading.local()  # per thread: a file-actions object, reused

    def spawn(self, path: bytes, argv: list[bytes], env: Environ, own: list[bytes],
              fds: tuple[int, int, int]) -> int:
        ctypes = self._ctypes
        _check_strings((path, *argv, *own))
        c_env = self._environ(env, own)
        try:
            actions = self._local.actions
        except AttributeError:
            actions = self._local.actions = ctypes.create_string_buffer(_OPAQUE_BYTES)
        _check(self._fa_init(actions))
        try:
            for target, fd in enumerate(fds):
                _check(self._fa_dup2(actions, fd, target))
            if self._fa_closefrom is not None:
                _check(self._fa_closefrom(actions, len(fds)))
            c_argv = (ctypes.c_char_p * (len(argv) + 1))(*argv, None)
            pid = ctypes.c_int()
            _check(self._spawn(ctypes.byref(pid), path, actions, self._attr, c_argv, c_env))
            return pid.value
        finally:
            self._fa_destroy(actions)

    def _environ(self, env: Environ, own: list[bytes]):
        """``env``'s items and then ``own`` as a NULL-ended C array: this thread's, made
        once per size; only ``own``'s slots change from one start to the next."""
        base = len(env.items)
        size = base + len(own) + 1
        c_env = getattr(env._local, "c_env", None)
        if c_env is None or len(c_env) != size:
            c_env = env._local.c_env = (self._ctypes.c_char_p * size)(*env.items)
        for index, item in enumerate(own, base):
            c_env[index] = item
        c_env[size - 1] = None
        return c_env


def _not_ignored() -> list[int]:
    """The signals this process does not ignore (SIG_IGN) now, that a process can catch."""
    uncatchable = {signal.SIGKILL, signal.SIGSTOP}
    found = []
    for signum in range(1, signal.NSIG):
        if signum in uncatchable:
            continue
        try:
            if signal.getsignal(signum) is signal.SIG_IGN:
                continue
        except ValueError:  # not a signal number here
            continue
        found.append(signum)
    return found


def _check_strings(items) -> None:
    if b"\0" in b"".join(items):  # a C string would end there: refused, as os.posix_spawn does
        raise ValueError("embedded null byte")


def _check(code: int) -> None:
    """posix_spawn and its helpers return an error number (0: done); sig*set return -1."""
    if code:
        import ctypes

        number = code if code > 0 else ctypes.get_errno()
        raise OSError(number, os.strerror(number))


def _os_spawn(path: bytes, argv: list[bytes], env: Environ, own: list[bytes],
              fds: tuple[int, int, int]) -> int:
    environ = dict(item.split(b"=", 1) for item in env.with_own(own))
    return os.posix_spawn(path, argv, environ, setsid=True, setsigdef=DEFAULT_SIGNALS,
                          file_actions=[(os.POSIX_SPAWN_DUP2, fd, target)
                                        for target, fd in enumerate(fds)])


def _close_on_exec() -> None:
    """Make every descriptor of this process from 3 up close-on-exec, so that no task
    inherits one: those Python opens are already, but not those the process was started
    with (``cloudkon run 3>file``, a test runner's pipes)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return  # no /proc: nothing more can be done cheaply
    for fd in fds:
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the listing's own descriptor, closed by now


_lock = threading.Lock()
_spawner = None


def spawner():
    """The function that starts a process: ``f(path, argv, env, own, (stdin, stdout,
    stderr))`` (``env`` an :class:`Environ`, ``own`` the items this start adds to it)
    returns its pid, or raises OSError (execve's error: not found, not executable, no
    #!)."""
    global _spawner
    if _spawner is None:
        with _lock:
            if _spawner is None:
                _spawner = _choose()
    return _spawner


def _choose():
    try:
        if os.confstr("CS_GNU_LIBC_VERSION"):
            return _Glibc().spawn
    except (ImportError, AttributeError, OSError, ValueError):  # no ctypes, not glibc, too old
        pass
    _close_on_exec()
    return _os_spawn
