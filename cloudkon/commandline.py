"""Which task lines need a shell, and how the shell would run the others.

As GNU make does (job.c, ``construct_command_argv_internal``): a line with no shell
metacharacters whose first word is no shell builtin or keyword is executed directly, its
words split on blanks, without ``/bin/sh -c``; every other line goes to the shell. Most
lines of real workloads (``./simulate --seed 7``, ``python3 analyse.py input.csv``) need
no shell, and starting one costs more than many short tasks themselves.

The results are those of ``/bin/sh -c LINE`` (dash, the shell of Debian and Ubuntu): the
same program with the same arguments and environment (the shell adds ``PWD``); a program
that cannot be started is handed to the shell after all, which reports it in its own
words (exit 127 "not found", 126 "Permission denied", a script without ``#!`` run as a
shell script); a program killed by a signal ends, as under the shell, with exit status
128 + the signal's number and the shell's line on stderr ("Segmentation fault").
"""

from __future__ import annotations

import os
import re
import signal
import stat

# Characters that make a line the shell's business: quoting, expansion, redirection,
# pipes, lists, subshells, globs, comments, history and tilde expansion.
_METACHARACTERS = re.compile(r"""[|&;<>()$`\\"'*?\[\]#~!{}\n\r\v\f]""")

# dash's builtins and reserved words (dash(1), "Builtins" and "Reserved Words"). `true`
# and `false` without arguments are the only ones whose external twins behave the same.
_SHELL_WORDS = frozenset("""
    . : [ alias bg break case cd chdir command continue do done echo elif else esac eval
    exec exit export false fc fg fi for getopts hash if in jobs kill local login logout
    printf pwd read readonly return set shift source test then time times trap true type
    ulimit umask unalias unset until wait while function select
    """.split())
_SAME_OUTSIDE = frozenset({"true", "false"})

# The shell says nothing when these end a command (dash, jobs.c).
_QUIET_SIGNALS = frozenset({signal.SIGINT, signal.SIGPIPE})

_BLANKS = re.compile(r"[ \t]+")


def direct_argv(command: str) -> list[str] | None:
    """The program and arguments to execute ``command`` with, without a shell; None if
    it needs the shell."""
    if _METACHARACTERS.search(command):
        return None
    words = _BLANKS.split(command.strip(" \t"))
    if not words[0] or "=" in words[0]:  # empty, or a variable assignment
        return None
    if words[0] in _SHELL_WORDS and not (words[0] in _SAME_OUTSIDE and len(words) == 1):
        return None
    return words


def find_program(name: str, environ: dict[bytes, bytes]) -> bytes | None:
    """Where the shell would find program ``name``: ``name`` itself if it holds a slash,
    else the first regular file with an execute bit in the directories of ``environ``'s
    PATH (an empty entry is the current directory); None if there is none, or no PATH.
    One stat per directory tried, in the executor rather than failed execve calls in the
    child."""
    program = os.fsencode(name)
    if b"/" in program:
        return program
    search = environ.get(b"PATH")
    if search is None:
        return None
    for folder in search.split(b":"):
        path = folder + b"/" + program if folder else program
        try:
            mode = os.stat(path).st_mode
        except (OSError, ValueError):
            continue
        if stat.S_ISREG(mode) and mode & 0o111:
            return path
    return None


def shell_pwd(environ: dict[bytes, bytes]) -> bytes:
    """The PWD the shell exports to its commands: the inherited one if it names the
    current directory by an absolute path, else the current directory's physical path."""
    inherited = environ.get(b"PWD")
    if inherited and inherited.startswith(b"/"):
        try:
            if os.path.samestat(os.stat(inherited), os.stat(".")):
                return inherited
        except OSError:
            pass
    return os.getcwdb()


def signal_line(signum: int, core_dumped: bool) -> bytes:
    """What the shell prints on stderr when its command was ended by ``signum``."""
    if signum in _QUIET_SIGNALS:
        return b""
    try:
        text = signal.strsignal(signum) or f"Signal {signum}"
    except ValueError:
        text = f"Signal {signum}"
    return (text + (" (core dumped)" if core_dumped else "") + "\n").encode()
