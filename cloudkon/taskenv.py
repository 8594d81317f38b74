"""The environment a task gets.

`cloudkon run` passes the user's own environment on (it is the user's shell, running the
user's commands). `cloudkon worker` runs commands that came through a queue, so its tasks
get an environment built from an allowlist instead: the base variables a program expects
(PATH, HOME, LANG, LANGUAGE, LC_*, TZ, USER, LOGNAME, TMPDIR, as the worker has them; PATH
has a default), the names given with ``--task-env``, and the CLOUDKON_JOB_ID,
CLOUDKON_TASK_ID and CLOUDKON_LINE of each task (set by the executor). Never anything
named AWS_*: the worker's credentials and settings are its own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from cloudkon.errors import UsageError

BASE_NAMES = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "USER", "LOGNAME", "TMPDIR")
BASE_PREFIXES = ("LC_",)  # the locale categories: LC_ALL, LC_CTYPE, ...
# Never passed, even when named: the worker's AWS credentials and settings.
FORBIDDEN_PREFIXES = ("AWS_",)
# What a task's PATH is when the worker has none (the default of most shells' login PATH).
DEFAULT_PATH = b"/usr/local/bin:/usr/bin:/bin"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_names(names: Iterable[str]) -> tuple[str, ...]:
    """The ``--task-env`` names, checked: UsageError names the first that is not a variable
    name or that may never be passed."""
    checked = []
    for name in names:
        if not _NAME.fullmatch(name):
            raise UsageError(f"--task-env {name!r}: not a variable name (letters, digits and"
                             " underscores, not starting with a digit)")
        if name.upper().startswith(FORBIDDEN_PREFIXES):
            raise UsageError(f"--task-env {name}: the worker's AWS settings and credentials are"
                             " never passed to tasks")
        checked.append(name)
    return tuple(dict.fromkeys(checked))


def task_environ(allowed: tuple[str, ...] | None,
                 source: Mapping[bytes, bytes] | None = None) -> dict[bytes, bytes]:
    """The environment of every task, encoded: with ``allowed`` None, all of ``source``
    (default: this process's environment); else the base variables and the ``allowed``
    names that ``source`` has, never an AWS_* one."""
    source = os.environb if source is None else source
    if allowed is None:
        return dict(source)
    wanted = {name.encode() for name in (*BASE_NAMES, *allowed)}
    prefixes = tuple(p.encode() for p in BASE_PREFIXES)
    forbidden = tuple(p.encode() for p in FORBIDDEN_PREFIXES)
    env = {name: value for name, value in source.items()
           if (name in wanted or name.startswith(prefixes))
           and not name.upper().startswith(forbidden)}
    env.setdefault(b"PATH", DEFAULT_PATH)
    return env
