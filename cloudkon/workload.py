"""Workload files: one task per line, read as a stream.

The rules (README.md, "The workload format"): UTF-8 text; blank lines and lines starting with
``#`` are not tasks; a trailing ``\\r`` is dropped; ``sleep N`` is CloudKon's benchmark
task, N milliseconds slept inside the worker; every other line is a shell command. A line
that cannot be a task is reported with its file and line number and skipped. Memory does
not grow with the length of the file: lines are read one at a time, and a line longer than
the limit is skipped without being held.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import stat
import sys
from bisect import bisect_left
from collections.abc import Callable, Container, Generator, Iterator
from itertools import accumulate, compress, repeat
from operator import is_
from typing import BinaryIO
from typing import NamedTuple

from cloudkon.errors import WorkloadError
from cloudkon.limits import (
    BINARY_ODD_BYTES_SHARE,
    BINARY_SNIFF_BYTES,
    MAX_LINE_BYTES,
    SHELL_TASK_MS,
    TAIL_HELD_BUNDLES,
    TAIL_PARTS_MAX,
    TAIL_PARTS_MIN,
)
from cloudkon.model import Bundle, Task

log = logging.getLogger(__name__)

SLEEP = "sleep"
STDIN = "-"  # the workload path that means stdin
STDIN_NAME = "<stdin>"  # how messages name it
_COPY_BYTES = 1 << 20
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")  # ASCII digits only: not "sleep ٣"
_UTF8_BOM = b"\xef\xbb\xbf"


class BadLine(NamedTuple):
    """A line that cannot be a task, and why."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


def sleep_ms(command: str) -> float | None:
    """Milliseconds to sleep if ``command`` is CloudKon's ``sleep N`` task, else None.

    Raises ValueError for a line whose first word is ``sleep`` but which is not
    ``sleep N`` with N a non-negative number: such a line is almost always a mistake
    (``sleep 1s``), and running it through the shell would sleep in seconds.
    """
    ms = SLEEP_CACHE.get(command)
    if ms is not None or not command.startswith(SLEEP):
        return ms
    parts = command.split()
    if parts[0] != SLEEP:
        return None  # "sleepy", "sleep.sh": an ordinary command
    if len(parts) == 2 and _DECIMAL.fullmatch(parts[1]):
        ms = float(parts[1])
        if ms == math.inf:  # it would stop the sums of milliseconds
            raise ValueError(f"'{SLEEP} {parts[1][:16]}...': more milliseconds than a number"
                             " holds (about 1.8e308)")
        if parts[1].isdigit():
            ms = int(parts[1])
        if len(SLEEP_CACHE) >= SLEEP_CACHE_SIZE:
            SLEEP_CACHE.clear()
        SLEEP_CACHE[command] = ms
        return ms
    if len(parts) == 2 and parts[1].startswith("-") and _DECIMAL.fullmatch(parts[1][1:]):
        raise ValueError(f"'{SLEEP} {parts[1]}': a negative number of milliseconds; 'sleep N'"
                         " takes N >= 0")
    if len(parts) == 1:
        raise ValueError("'sleep' without a number; 'sleep N' sleeps N milliseconds")
    raise ValueError(
        "'sleep N' is CloudKon's task that sleeps N milliseconds and takes one number;"
        " write '/bin/sleep ...' for the shell's sleep"
    )


# Workloads repeat their sleep lines ("sleep 0" a million times): parse each once.
SLEEP_CACHE: dict[str, float] = {}
SLEEP_CACHE_SIZE = 4096
# Bytes read at a time: large enough that per-block work vanishes, small enough that a
# block's line strings (about 32,000 of `sleep 0`) stay a few MB.
BLOCK_BYTES = 1 << 18
# A block of `sleep N` lines with more distinct ones the sleep cache does not know yet is
# taken line by line (which parses each once), rather than parsed first and bundled after.
_MOST_NEW_SLEEPS = 64


class Workload:
    """A workload file, read as a stream of tasks; bad lines go to ``on_bad_line``.

    After a complete pass, ``tasks``, ``sleep_tasks``, ``sleep_ms`` and ``bad_lines``
    describe what was read.
    """

    def __init__(
        self,
        path: str,
        on_bad_line: Callable[[BadLine], None] | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
        opener: Callable[[], BinaryIO] | None = None,
        skip: Container[int] | None = None,
    ) -> None:
        """``path`` names the workload in messages; ``opener``, if given, opens it as a binary
        stream (an S3 object's body, say) instead of the local file at ``path``. Lines
        whose numbers are in ``skip`` are passed over as if blank (they already have a
        result: ``run --resume``; or are not retried: ``cloudkon retry``)."""
        self.path = path
        self._opener = opener
        self.skip = skip
        self.skipped = 0  # lines passed over because they are in ``skip``
        self.on_bad_line = on_bad_line
        self.max_line_bytes = max_line_bytes
        self.tasks = 0
        self.sleep_tasks = 0
        self.sleep_ms = 0.0
        self.bad_lines = 0
        # The SHA-256 of the bytes the last complete pass read (hex); None until one did.
        self.digest: str | None = None
        # Lines a block's decoding found bad, by number: reported when the reader reaches
        # them, so that bad lines are reported in line order.
        self._undecodable: dict[int, str] = {}
        self._after_line = 0  # bundles() continues after this line: those before are not told
        self.ending = False  # bundles(ramp=True) has come to the small end of the workload

    def check(self) -> None:
        """Raise WorkloadError unless the workload exists, is a readable file and is text."""
        if self._opener is None:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                raise WorkloadError(self.path, "no such file") from None
            except OSError as exc:
                raise WorkloadError(self.path, exc.strerror or str(exc)) from None
            if stat.S_ISDIR(st.st_mode):
                raise WorkloadError(self.path, "is a directory, not a workload file")
            if not stat.S_ISREG(st.st_mode):
                # A FIFO or a device: it cannot be read twice (sniffed, then streamed), and
                # opening a FIFO with no writer would block.
                raise WorkloadError(self.path, "is not a regular file (a FIFO, socket or"
                                               " device); write the workload to a file")
        try:
            with self._open() as f:
                sample = f.read(BINARY_SNIFF_BYTES)
        except OSError as exc:
            raise WorkloadError(self.path, exc.strerror or str(exc)) from None
        if not sample:
            raise WorkloadError(self.path, "is empty: no tasks to run")
        reason = _binary_reason(sample)
        if reason is not None:
            raise WorkloadError(self.path, reason)

    def line_count(self) -> int:
        """An upper bound on the tasks of the file (its line count), read fast, for an ETA."""
        n = 0
        last = b"\n"
        with self._open() as f:
            while chunk := f.read(1 << 20):
                n += chunk.count(b"\n")
                last = chunk[-1:]
        return n + (last != b"\n")

    def sha256(self) -> str:
        """The SHA-256 of the workload's bytes (hex), read as a stream: its identity."""
        h = hashlib.sha256()
        try:
            with self._open() as f:
                while block := f.read(BLOCK_BYTES):
                    h.update(block)
        except OSError as exc:
            raise WorkloadError(self.path, exc.strerror or str(exc)) from None
        return h.hexdigest()

    def _open(self) -> BinaryIO:
        if self._opener is not None:
            return self._opener()
        return open(self.path, "rb")  # noqa: SIM115 - the caller closes it

    def __iter__(self) -> Iterator[Task]:
        """Yield the tasks of the file in order, as (line, command) tuples."""
        for bundle in self.bundles("", 1024, math.inf):
            yield from bundle.tasks

    def validate(self) -> int:
        """Read the whole file without running anything; return the number of bad lines."""
        for _ in self.bundles("", 1024, math.inf):
            pass
        return self.bad_lines

    def bundles(self, job_id: str, size: int, budget_ms: float, ramp: bool = False,
                after_line: int = 0, first_seq: int = 0) -> Generator[Bundle, None, None]:
        """Yield the tasks in bundles of at most ``size`` tasks and about ``budget_ms`` work.

        A sleep task costs its milliseconds; a shell command is assumed to cost
        SHELL_TASK_MS, so with the local default budget commands travel alone. With
        ``ramp``, the workload's end travels in ever smaller bundles (see
        :func:`_ending_small`; ``ending`` is True from the first of them on): the last
        bundles finish together on every worker thread instead of one full bundle running
        on while the others idle, and a short workload spreads over many threads. Bundles
        depend only on the file, never on timing: the same file always makes the same
        bundles.

        To continue bundling where an earlier pass stopped after bundle ``first_seq - 1``,
        whose last line was ``after_line`` (a bundle before the small end): the lines up to
        it are read (and hashed) but not looked at, and the bundles that follow are those
        the earlier pass would have made (counts and bad lines are then those of the lines
        after it).
        """
        if ramp:
            self.ending = False

            def at_end() -> None:
                self.ending = True

            yield from _ending_small(self.bundles(job_id, size, budget_ms, False, after_line,
                                                  first_seq), job_id, size, budget_ms,
                                     first_seq, at_end)
            return
        limit = budget_ms
        self.tasks = self.sleep_tasks = self.bad_lines = 0
        self.sleep_ms = 0.0
        undecodable = self._undecodable = {}
        cache_get = SLEEP_CACHE.get
        tasks: list[tuple[int, str]] = []
        append = tasks.append
        cost = total_sleep = 0.0
        seq = first_seq
        self._after_line = after_line
        skip = self.skip
        self.skipped = 0
        for first, lines in self._blocks():
            if first <= after_line:  # before where an earlier pass stopped
                if first + len(lines) <= after_line + 1:
                    continue
                lines = lines[after_line + 1 - first:]
                first = after_line + 1
            if skip is not None:
                # Blank lines are no tasks: the loop below stays as fast as without a skip.
                kept = [("" if n in skip else text) for n, text in enumerate(lines, first)]
                self.skipped += sum(1 for a, b in zip(kept, lines) if a is not b)
                lines = kept
            stripped = list(map(str.strip, lines))
            mss = self._sleeps_of(stripped)
            if mss is not None:  # sleep tasks only, each of a known length
                self.sleep_tasks += len(mss)
                total_sleep = sum(mss, total_sleep)
                count = len(stripped)
                free = limit > 0 and not any(mss)  # `sleep 0` only: bundles cut by size
                i = 0
                while i < count:
                    end = min(i + size - len(tasks), count)
                    spent = False
                    if not free:
                        # The tasks up to the first whose cost reaches the budget (costs never
                        # fall, so a bisection finds it), and no more than fit the bundle.
                        costs = list(accumulate(mss[i:end], initial=cost))
                        reached = bisect_left(costs, limit, 1)
                        spent = reached < len(costs)
                        end = min(end, i + reached)
                        cost = costs[end - i]
                    # Made as the bundles are: a block's tasks all at once would add MBs.
                    tasks += zip(range(first + i, first + end), stripped[i:end])
                    i = end
                    if spent or len(tasks) >= size:
                        self.tasks += len(tasks)
                        yield Bundle(job_id, seq, tasks)
                        seq += 1
                        tasks = []
                        cost = 0.0
                self.sleep_ms = total_sleep
                continue
            append = tasks.append
            n = first - 1
            for s in stripped:
                n += 1
                if not s or s[0] == "#":
                    if undecodable and n in undecodable:
                        self._bad(n, undecodable.pop(n))
                    continue
                ms = cache_get(s)
                if ms is None:
                    try:
                        ms = sleep_ms(s)
                    except ValueError as exc:
                        self._bad(n, str(exc))
                        continue
                if ms is None:  # a shell command
                    cost += SHELL_TASK_MS
                else:
                    self.sleep_tasks += 1
                    total_sleep += ms
                    cost += ms
                append((n, s))
                if len(tasks) >= size or cost >= limit:
                    self.tasks += len(tasks)
                    yield Bundle(job_id, seq, tasks)
                    seq += 1
                    tasks = []
                    append = tasks.append
                    cost = 0.0
            self.sleep_ms = total_sleep
        if tasks:
            self.tasks += len(tasks)
            yield Bundle(job_id, seq, tasks)
        self.sleep_ms = total_sleep

    def _blocks(self) -> Iterator[tuple[int, list[str]]]:
        """Yield the file as (number of the first line, decoded lines) per block of bytes.

        A bad line is reported and stands as an empty line, so numbering holds. A line
        longer than the limit is skipped as it streams by, never held whole.
        """
        limit = self.max_line_bytes
        self.digest = None
        digest = hashlib.sha256()
        try:
            f = self._open()
        except OSError as exc:
            raise WorkloadError(self.path, exc.strerror or str(exc)) from None
        with f:
            done = 0  # lines completed so far
            carry = b""
            skipping = False  # inside an over-long line, its start already dropped
            first = True
            while True:
                try:
                    block = f.read(BLOCK_BYTES)
                except OSError as exc:
                    raise WorkloadError(self.path, f"line {done + 1}: {exc.strerror or exc}") from None
                digest.update(block)
                if first:
                    first = False
                    # A stream may serve fewer bytes than asked (S3): have the BOM whole.
                    while block and len(block) < len(_UTF8_BOM) and _UTF8_BOM.startswith(block):
                        more = f.read(BLOCK_BYTES)
                        if not more:
                            break
                        digest.update(more)
                        block += more
                    if block.startswith(_UTF8_BOM):
                        block = block[len(_UTF8_BOM):]
                        if not block:
                            continue  # the BOM alone: the end is the next read's to tell
                if not block:
                    self.digest = digest.hexdigest()
                    if skipping:
                        self._bad(done + 1, f"longer than {limit} bytes")
                    elif carry:
                        yield done + 1, self._decode(done + 1, carry)
                    return
                if skipping:
                    nl = block.find(b"\n")
                    if nl < 0:
                        continue
                    done += 1
                    self._bad(done, f"longer than {limit} bytes")
                    skipping = False
                    block = block[nl + 1:]
                data = carry + block if carry else block
                cut = data.rfind(b"\n")
                if cut < 0:
                    carry = data
                else:
                    carry = data[cut + 1:]
                    lines = self._decode(done + 1, data[:cut])
                    yield done + 1, lines
                    done += len(lines)
                if len(carry) > limit + 1:  # +1: room for a "\r" that is not counted
                    carry = b""
                    skipping = True

    def _decode(self, first: int, body: bytes) -> list[str]:
        """The lines of ``body`` as text; bad lines replaced by '' and kept for reporting."""
        limit = self.max_line_bytes
        if b"\0" not in body:
            try:
                lines = body.decode("utf-8").split("\n")
            except UnicodeDecodeError:
                pass
            else:
                # A line of L characters has at most 4 L bytes: measure only the suspects.
                if len(body) <= limit or 4 * max(map(len, lines)) <= limit or all(
                    len(line.rstrip("\r").encode()) <= limit
                    for line in lines if 4 * len(line) > limit
                ):
                    return lines
        raws = body.split(b"\n")
        lines = []
        bad = self._undecodable
        for n, raw in enumerate(raws, first):
            if len(raw.rstrip(b"\r")) > limit:
                bad[n] = f"longer than {limit} bytes"
            elif b"\0" in raw:
                bad[n] = "contains a NUL byte"
            else:
                try:
                    lines.append(raw.decode("utf-8"))
                    continue
                except UnicodeDecodeError as exc:
                    bad[n] = f"is not valid UTF-8 (byte {exc.start + 1})"
            lines.append("")
        return lines

    @staticmethod
    def _sleeps_of(lines: list[str]) -> list[float] | None:
        """The milliseconds of each of ``lines`` (stripped) when every one is a `sleep N`
        task, else None. A block of them is then bundled without a step per line: a
        workload of `sleep 0` is read at the speed of the queue, not of the parser."""
        mss = list(map(SLEEP_CACHE.get, lines))
        try:
            first = mss.index(None)
        except ValueError:
            return mss
        if not _new_sleep(lines[first]):  # a shell command, most likely: line by line
            return None
        new = set(compress(lines, map(is_, mss, repeat(None))))
        if len(new) > _MOST_NEW_SLEEPS or not all(map(_new_sleep, new)):
            return None
        mss = list(map(SLEEP_CACHE.get, lines))
        return mss if None not in mss else None  # else the cache was full and cleared

    def _bad(self, line: int, reason: str) -> None:
        if line <= self._after_line:  # reported by the pass that read it first
            return
        self.bad_lines += 1
        if self.on_bad_line is not None:
            self.on_bad_line(BadLine(self.path, line, reason))


Opener = Callable[[], BinaryIO]


def _new_sleep(line: str) -> bool:
    """Whether ``line`` (stripped) is a valid `sleep N` task, parsed (and cached) now; a bad
    one is not: the line-by-line path reports it."""
    try:
        return bool(line) and line[0] != "#" and sleep_ms(line) is not None
    except ValueError:
        return False


def _task_ms(command: str) -> float:
    """The estimated milliseconds of a task that is known to be valid."""
    ms = SLEEP_CACHE.get(command)
    if ms is None:
        ms = sleep_ms(command)
    return SHELL_TASK_MS if ms is None else ms


def _ending_small(bundles: Iterator[Bundle], job_id: str, size: int, budget_ms: float,
                  first_seq: int = 0,
                  at_end: Callable[[], None] | None = None) -> Generator[Bundle, None, None]:
    """``bundles`` (full ones, in file order), with the workload's end cut again: the last
    TAIL_HELD_BUNDLES bundles are held back, and at the end of the file their tasks go out
    in bundles that each hold half of the work left (never more than ``budget_ms`` or
    1/TAIL_PARTS_MIN of the work held back, nor less than 1/TAIL_PARTS_MAX of it or one
    shell command's SHELL_TASK_MS, at most ``size`` tasks). So the end of a job spreads over every thread: the last
    bundles are short, the longest ones first. Bundles are numbered anew from
    ``first_seq``; ``at_end`` is called before the first of the small end's; memory stays
    within TAIL_HELD_BUNDLES bundles."""
    held: list[Bundle] = []
    seq = first_seq
    for bundle in bundles:
        held.append(bundle)
        if len(held) > TAIL_HELD_BUNDLES:
            first = held.pop(0)
            yield Bundle(job_id, seq, first.tasks)
            seq += 1
    if at_end is not None:
        at_end()
    tasks = [t for b in held for t in b.tasks]
    costs = [_task_ms(command) for _, command in tasks]
    left = sum(costs)
    least = max(left / TAIL_PARTS_MAX, SHELL_TASK_MS)
    most = min(budget_ms, max(left / TAIL_PARTS_MIN, least))
    i = 0
    while i < len(tasks):
        limit = min(most, max(left / 2, least))
        start, cost = i, 0.0
        while i < len(tasks) and i - start < size and (i == start or cost + costs[i] <= limit):
            cost += costs[i]
            i += 1
        if left - cost < least and len(tasks) - start <= size:  # no crumb left to go alone
            cost, i = left, len(tasks)
        left -= cost
        yield Bundle(job_id, seq, tasks[start:i])
        seq += 1


@contextlib.contextmanager
def local_source(path: str, stdin: BinaryIO | None = None) -> Iterator[tuple[str, Opener | None]]:
    """The name and opener of the workload at ``path`` (None: open the file itself).

    ``-`` is stdin, copied to a temporary file first: a workload is read more than once
    (looked at, checked with --strict, counted for the progress bar, then streamed), which
    a pipe cannot be. The copy is removed on the way out.
    """
    if path != STDIN:
        yield path, None
        return
    import shutil  # here: only a workload read from stdin needs them (5 ms of start-up)
    import tempfile

    source = sys.stdin.buffer if stdin is None else stdin
    fd, spool = tempfile.mkstemp(prefix="cloudkon-stdin-", suffix=".txt")
    try:
        try:
            with open(fd, "wb") as f:
                shutil.copyfileobj(source, f, _COPY_BYTES)
        except OSError as exc:
            raise WorkloadError(STDIN_NAME, f"could not be copied to {spool}:"
                                            f" {exc.strerror or exc}") from None
        yield STDIN_NAME, lambda: open(spool, "rb")  # noqa: SIM115 - the reader closes it
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(spool)


# Bytes that no text holds: the C0 controls but tab, LF, VT, FF, CR and ESC (terminal
# colours), and DEL.
_ODD_CONTROLS = bytes(set(range(32)) - set(b"\t\n\v\f\r\x1b")) + b"\x7f"
_ESCAPED = re.compile("[\udc80-\udcff]")  # a byte that is not UTF-8, as surrogateescape decodes it
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _binary_reason(sample: bytes) -> str | None:
    """Why the first bytes of a file show it is not text (None when they are text).

    Decided by the content as a whole, the share of bytes that cannot be in text: a text
    file with a NUL byte on one line and a line too long on another is text with two bad
    lines, while an executable, an image, an archive or UTF-16 text is not a workload.
    """
    if sample.startswith(_UTF16_BOMS):
        return "is UTF-16 text; a workload is UTF-8 (iconv -f UTF-16 -t UTF-8 converts it)"
    odd = len(sample) - len(sample.translate(None, _ODD_CONTROLS))
    if not sample.isascii():  # count the bytes that are not UTF-8
        odd += len(_ESCAPED.findall(sample.decode("utf-8", "surrogateescape")))
    if odd >= BINARY_ODD_BYTES_SHARE * len(sample):
        return "is not a text workload (binary data); a workload is UTF-8 text, one task per line"
    return None
