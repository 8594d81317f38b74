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


class _Glibc:
    """glibc's posix_spawn through ctypes, with one attributes object made at the start and
    only read afterwards (so shared by every thread)."""

    def __init__(self) -> None:
        import ctypes  # here: a worker that runs only `sleep N` tasks never loads it

        self._ctypes = ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        p = ctypes.c_void_p
        self._spawn, self._spawnp = libc.posix_spawn, libc.posix_spawnp
        for fn in (self._spawn, self._spawnp):
            fn.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_char_p, p, p, p, p]
            fn.restype = ctypes.c_int
        self._fa_init = libc.posix_spawn_file_actions_init
        self._fa_destroy = libc.posix_spawn_file_actions_destroy
        self._fa_dup2 = libc.posix_spawn_file_actions_adddup2
        for fn in (self._fa_init, self._fa_destroy):
            fn.argtypes, fn.restype = [p], ctypes.c_int
        self._fa_dup2.argtypes = [p, ctypes.c_int, ctypes.c_int]
        self._fa_dup2.restype = ctypes.c_int
        # glibc 2.34+: close every descriptor from 3 up in the child (subprocess's
        # close_fds); without it, only the close-on-exec ones close (see _close_on_exec).
        self._fa_closefrom = getattr(libc, "posix_spawn_file_actions_addclosefrom_np", None)
        if self._fa_closefrom is not None:
            self._fa_closefrom.argtypes = [p, ctypes.c_int]
            self._fa_closefrom.restype = ctypes.c_int
        else:
            _close_on_exec()
        self._attr = ctypes.create_string_buffer(_OPAQUE_BYTES)
        self._sigdef = ctypes.create_string_buffer(_OPAQUE_BYTES)
        _check(libc.posix_spawnattr_init(self._attr))
        _check(libc.sigemptyset(self._sigdef))
        for signum in DEFAULT_SIGNALS:
            _check(libc.sigaddset(self._sigdef, int(signum)))
        _check(libc.posix_spawnattr_setsigdefault(self._attr, self._sigdef))
        # EINVAL from a glibc without POSIX_SPAWN_SETSID: then this class is not used.
        _check(libc.posix_spawnattr_setflags(
            self._attr, ctypes.c_short(_POSIX_SPAWN_SETSIGDEF | _POSIX_SPAWN_SETSID)))

    def spawn(self, path: bytes, argv: list[bytes], env: list[bytes],
              fds: tuple[int, int, int], search: bool = False) -> int:
        ctypes = self._ctypes
        for arg in (path, *argv, *env):
            if b"\0" in arg:  # a C string would end there: refused, as os.posix_spawn does
                raise ValueError("embedded null byte")
        actions = ctypes.create_string_buffer(_OPAQUE_BYTES)
        _check(self._fa_init(actions))
        try:
            for target, fd in enumerate(fds):
                _check(self._fa_dup2(actions, fd, target))
            if self._fa_closefrom is not None:
                _check(self._fa_closefrom(actions, len(fds)))
            c_argv = (ctypes.c_char_p * (len(argv) + 1))(*argv, None)
            c_env = (ctypes.c_char_p * (len(env) + 1))(*env, None)
            pid = ctypes.c_int()
            call = self._spawnp if search else self._spawn
            _check(call(ctypes.byref(pid), path, actions, self._attr, c_argv, c_env))
            return pid.value
        finally:
            self._fa_destroy(actions)


def _check(code: int) -> None:
    """posix_spawn and its helpers return an error number (0: done); sig*set return -1."""
    if code:
        import ctypes

        number = code if code > 0 else ctypes.get_errno()
        raise OSError(number, os.strerror(number))


def _os_spawn(path: bytes, argv: list[bytes], env: list[bytes], fds: tuple[int, int, int],
              search: bool = False) -> int:
    environ = dict(item.split(b"=", 1) for item in env)
    call = os.posix_spawnp if search else os.posix_spawn
    return call(path, argv, environ, setsid=True, setsigdef=DEFAULT_SIGNALS,
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
    """The function that starts a process: ``f(path, argv, env, (stdin, stdout, stderr),
    search=False)`` returns its pid, or raises OSError (execve's error: not found, not
    executable, no #!). With ``search``, a ``path`` without a slash is looked for in the
    directories of *this process's* PATH (posix_spawnp), in the child, which tries each in
    turn with execve as the shell does."""
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
