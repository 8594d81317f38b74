"""Baseline "spawn floor": what starting the processes alone costs from Python.

THREADS threads take the workload's lines in turn; each line is split on blanks and its
program (looked up on PATH once per name) started directly with posix_spawn in a session
of its own, then waited for. Nothing else: no shell, no output captured, no queue, no
results kept beyond a count. CloudKon's executor does this and more per task (two pipes
read to their end, a pidfd, the guardian's two lines, the bundle's round trip), so its
throughput on a `true` workload can approach this, not pass it. Prints
{"tasks": ..., "succeeded": ...} as JSON. A standalone script (stdlib only).

    python spawn_floor.py WORKLOAD THREADS {os,libc}

``os``: os.posix_spawn, which holds the GIL until the child has exec'd (the threads'
starts take turns). ``libc`` (glibc only): libc's posix_spawn through ctypes, which releases
the GIL for the call, as CloudKon's executor does (cloudkon/spawn.py).
"""

import ctypes
import json
import os
import shutil
import sys
import threading

_SETSID = 0x80  # glibc's POSIX_SPAWN_SETSID


def libc_spawner():
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(1024)
    libc.posix_spawnattr_init(attr)
    if libc.posix_spawnattr_setflags(attr, ctypes.c_short(_SETSID)):
        raise SystemExit("spawn_floor: this libc has no POSIX_SPAWN_SETSID")
    posix_spawn = libc.posix_spawn
    env = [f"{k}={v}".encode() for k, v in os.environ.items()]
    c_env = (ctypes.c_char_p * (len(env) + 1))(*env, None)

    def spawn(path, argv):
        c_argv = (ctypes.c_char_p * (len(argv) + 1))(*[a.encode() for a in argv], None)
        pid = ctypes.c_int()
        code = posix_spawn(ctypes.byref(pid), path.encode(), None, attr, c_argv, c_env)
        if code:
            raise OSError(code, os.strerror(code))
        return pid.value
    return spawn


def os_spawner():
    env = os.environ

    def spawn(path, argv):
        return os.posix_spawn(path, argv, env, setsid=True)
    return spawn


def main(path: str, threads: int, how: str) -> None:
    with open(path, "rb") as f:
        lines = [s for s in (raw.decode("utf-8").strip() for raw in f) if s and s[0] != "#"]
    spawn = libc_spawner() if how == "libc" else os_spawner()
    programs = {}
    succeeded = [0] * threads

    def work(me: int) -> None:
        ok = 0
        for line in lines[me::threads]:
            argv = line.split()
            program = programs.get(argv[0])
            if program is None:
                program = programs[argv[0]] = shutil.which(argv[0]) or argv[0]
            _, status = os.waitpid(spawn(program, argv), 0)
            ok += status == 0
        succeeded[me] = ok

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    print(json.dumps({"tasks": len(lines), "succeeded": sum(succeeded)}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "os")
