"""Limits and defaults, each with where the number comes from.

AWS limits join these as the remote flavour uses them; nothing else in the code base
spells a limit as a bare number.
"""

# Linux MAX_ARG_STRLEN (32 pages of 4 KiB): the longest single argument execve() accepts,
# terminating NUL included. A longer line could never run as `/bin/sh -c LINE`.
MAX_LINE_BYTES = 131072 - 1

# Tasks per bundle. Large enough that queue traffic is noise next to task execution
# (CloudKon's task bundling), small enough that a bundle of results stays a few KiB.
DEFAULT_BUNDLE_SIZE = 256

# A bundle also closes once the milliseconds its sleep tasks ask for reach this budget, so
# that long tasks spread over the workers instead of queueing behind each other in one
# bundle. A shell command's cost is unknown; it is assumed to fill the budget alone.
DEFAULT_BUNDLE_MS = 20

# How much of the end of each of stdout and stderr a result keeps.
DEFAULT_TAIL_BYTES = 4096

# The time limit of one task, in seconds, unless --task-timeout says otherwise.
DEFAULT_TASK_TIMEOUT = 3600.0

# After a timed-out task's process group got SIGTERM, seconds before it gets SIGKILL
# (as `timeout --kill-after`).
KILL_GRACE_SECONDS = 2.0

# How many bad lines are printed one by one before the rest are only counted.
MAX_REPORTED_BAD_LINES = 20

# The first bytes of a workload that are inspected to tell text from binary data.
BINARY_SNIFF_BYTES = 65536
