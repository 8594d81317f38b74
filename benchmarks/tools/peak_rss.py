"""Run a command and write its peak resident set size (ru_maxrss, KiB) to a file.

    python -S benchmarks/tools/peak_rss.py REPORT -- COMMAND [ARG...]

The command inherits stdin, stdout and stderr; this process exits with its exit code (or
128 + the signal that ended it) and writes "KIB\\n" to REPORT.

Why a launcher: on Linux a process's ru_maxrss includes the memory of the address space
it had before exec, which for a child of vfork()/fork() is its parent's. Measured from a
large parent (pytest holding its results), the figure would be the parent's peak. This
launcher is a bare interpreter (run it with -S, about 8 MiB), so what it passes on is
less than any Python command's own peak and the figure is the command's.
"""

import os
import sys


def main() -> int:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.stderr.write(__doc__)
        return 2
    report, argv = sys.argv[1], sys.argv[3:]
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    with open(report, "w") as f:
        f.write(f"{usage.ru_maxrss}\n")
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
