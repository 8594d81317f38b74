"""Property-based tests (hypothesis) of what reads untrusted input: the workload reader
(any bytes in: tasks, or bad lines named by number, nothing lost, nothing but
WorkloadError escapes), the codec (any body: a bundle, results or CodecError; encode then
decode gives back what went in) and the collector (any sequence of result messages,
duplicates and stray lines among them: complete only when every task line has a result)."""

from __future__ import annotations

import hashlib
import io
import json
import math
import zlib
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clock import FakeClock

from cloudkon.backends.memory import MemoryBroker
from cloudkon.codec import (
    decode_bundle,
    decode_results,
    encode_bundle,
    encode_results,
    pack_results,
    unpack_results,
)
from cloudkon.errors import CodecError, WorkloadError
from cloudkon.limits import SHELL_TASK_MS
from cloudkon.model import STATUSES, Bundle, ResultBundle
from cloudkon.workload import Workload
from submitter.collect import Collector
from submitter.manifest import SUBMITTED, Manifest, MemoryManifests

FAST = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
MAX_LINE = 24  # a small line limit, so that over-long lines are common


# --- The workload reader ---------------------------------------------------------------------

class _Trickle(io.RawIOBase):
    """``data`` served at most ``step`` bytes a read, as a network stream may serve it."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step, self.at = data, step, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.step if n < 0 else min(n, self.step)
        chunk = self.data[self.at:self.at + n]
        self.at += len(chunk)
        return chunk


_LINES = st.one_of(
    st.sampled_from(["", "# a comment", "  ", "sleep 0", "sleep 12.5", "sleep", "sleep -1",
                     "sleep 1s", "echo hi\r", "\ufeffecho bom", "true", "x" * (MAX_LINE + 3)]),
    st.text(max_size=MAX_LINE + 4),
    st.binary(max_size=MAX_LINE + 4),
).map(lambda v: v if isinstance(v, bytes) else v.encode("utf-8", "surrogatepass"))
_WORKLOADS = st.one_of(
    st.binary(max_size=400),
    st.lists(_LINES, max_size=30).map(b"\n".join),
    st.tuples(st.lists(_LINES, max_size=30).map(b"\n".join), st.booleans()).map(
        lambda t: (b"\xef\xbb\xbf" if t[1] else b"") + t[0] + b"\n"),
)


def _expected(data: bytes) -> dict[int, str | None]:
    """Each line's fate by the format's rules: its command if it is a task, None if it is
    blank or a comment, "bad" if it is to be reported."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    raws = data.split(b"\n")
    if raws and raws[-1] == b"":
        raws.pop()
    fates: dict[int, str | None] = {}
    for n, raw in enumerate(raws, 1):
        if len(raw.rstrip(b"\r")) > MAX_LINE or b"\0" in raw:
            fates[n] = "bad"
            continue
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            fates[n] = "bad"
            continue
        fates[n] = None if not text or text[0] == "#" else text
    return fates


@FAST
@given(_WORKLOADS, st.integers(1, 64))
def test_the_reader_turns_any_bytes_into_tasks_and_numbered_bad_lines(data, step):
    bad = []
    workload = Workload("w.txt", on_bad_line=bad.append, max_line_bytes=MAX_LINE,
                        opener=lambda: _Trickle(data, step))
    try:
        tasks = list(workload)
    except WorkloadError:  # only for a workload as a whole; never for any bytes here
        raise AssertionError("a stream of bytes is never a WorkloadError") from None
    expected = _expected(data)
    found = {line: command for line, command in tasks}
    assert [line for line, _ in tasks] == sorted(found)  # in order, each line once
    bad_lines = [b.line for b in bad]
    assert bad_lines == sorted(set(bad_lines)) and not set(bad_lines) & set(found)
    for n, fate in expected.items():
        if fate is None:
            assert n not in found and n not in bad_lines, n
        elif fate == "bad":
            assert n in bad_lines, (n, found.get(n))
        else:  # a task, or a bad `sleep` line
            assert found.get(n) == fate or n in bad_lines, (n, fate)
    assert set(found) | set(bad_lines) <= set(expected)  # nothing invented
    assert workload.tasks == len(tasks) and workload.bad_lines == len(bad)
    assert workload.digest == hashlib.sha256(data).hexdigest() == workload.sha256()


@FAST
@given(st.binary(max_size=600))
def test_checking_any_bytes_passes_or_says_why_in_a_workload_error(data):
    workload = Workload("w.txt", opener=lambda: io.BytesIO(data))
    try:
        workload.check()
    except WorkloadError as exc:
        assert str(exc).startswith("w.txt: ") and "\n" not in str(exc)


_SLEEPS = ["sleep 0", "sleep 0", "sleep 0", "sleep 3", "sleep 0.5", "sleep 250", " sleep 7 "]
_BUNDLED = st.one_of(st.lists(st.sampled_from(_SLEEPS), max_size=120),
                     st.lists(st.sampled_from([*_SLEEPS, "", "# note", "true", "sleep 1s"]),
                              max_size=120))


@FAST
@given(_BUNDLED, st.integers(1, 9),
       st.sampled_from([0, 1, 4, 20, 40, 2000, math.inf]), st.integers(8, 64))
def test_bundles_close_at_the_first_task_that_fills_them_by_count_or_by_work(
        lines, size, budget, block):
    # Each task costs its milliseconds (a shell command SHELL_TASK_MS); a bundle closes
    # after the task that brings it to `size` tasks or to `budget` ms. Read in blocks of a
    # few bytes, so that bundles span blocks and blocks of `sleep` lines only (read without
    # a step per line) sit between others.
    data = "".join(line + "\n" for line in lines).encode()
    expected, tasks, cost = [], [], 0.0
    for n, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#") or text == "sleep 1s":
            continue
        tasks.append((n, text))
        cost += float(text.split()[1]) if text.startswith("sleep ") else SHELL_TASK_MS
        if len(tasks) >= size or cost >= budget:
            expected.append(tasks)
            tasks, cost = [], 0.0
    if tasks:
        expected.append(tasks)
    workload = Workload("w.txt", opener=lambda: io.BytesIO(data))
    with mock.patch("cloudkon.workload.BLOCK_BYTES", block):
        bundles = list(workload.bundles("job-b", size, budget))
        assert [list(b.tasks) for b in bundles] == expected
        assert [b.seq for b in bundles] == list(range(len(expected)))
        # Continued after any bundle (a resumed split): the bundles that follow, the same.
        for k in range(len(bundles) - 1):
            after = Workload("w.txt", opener=lambda: io.BytesIO(data)).bundles(
                "job-b", size, budget, after_line=bundles[k].tasks[-1][0], first_seq=k + 1)
            assert [(b.seq, list(b.tasks)) for b in after] == [
                (b.seq, list(b.tasks)) for b in bundles[k + 1:]]
    assert workload.tasks == sum(map(len, expected))
    assert workload.sleep_tasks == sum(1 for b in expected for _, c in b if c.startswith("sleep"))


# --- The codec -------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                               max_size=4),
    max_leaves=12)
_TEXT = st.text(max_size=20)
_COMMAND = st.text(min_size=1, max_size=20).filter(lambda s: "\0" not in s)
_LINE_NUMBERS = st.lists(st.integers(1, 10 ** 9), min_size=1, max_size=12, unique=True)
_JOB = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
_TIME = st.floats(0, 4e9, allow_nan=False)


@st.composite
def _result_bundles(draw) -> ResultBundle:
    results = []
    t0 = draw(_TIME)
    for line in draw(_LINE_NUMBERS):
        start = t0 + draw(st.floats(0, 1e6))  # a bundle's tasks start within days
        end = start + draw(st.floats(0, 1e5))
        results.append((line, draw(_TEXT), draw(st.sampled_from(STATUSES)),
                        draw(st.none() | st.integers(-255, 255)),
                        draw(st.none() | st.sampled_from(["SIGKILL", "SIGTERM"])),
                        start, end, draw(_TEXT), draw(_TEXT)))
    return ResultBundle(draw(_JOB), draw(st.integers(0, 10 ** 6)), results, draw(_TIME),
                        draw(_TEXT), draw(st.integers(0, 1024)), draw(st.integers(1, 9)))


@st.composite
def _mutated(draw, encode) -> str:
    """A valid body with one field, or one entry of one column, replaced by any JSON."""
    doc = json.loads(encode(draw(_result_bundles())))
    target = doc
    if draw(st.booleans()) and isinstance(doc.get("results"), dict):
        target = doc["results"]
    key = draw(st.sampled_from(sorted(target)))
    value = draw(_JSON)
    if isinstance(target[key], list) and target[key] and draw(st.booleans()):
        target[key][draw(st.integers(0, len(target[key]) - 1))] = value
    else:
        target[key] = value
    return json.dumps(doc)


def _decodes_or_codec_error(decode, body) -> None:
    try:
        decode(body)
    except CodecError:
        pass


@FAST
@given(st.one_of(st.binary(max_size=300), _JSON.map(json.dumps),
                 _mutated(encode_results)))
def test_any_body_is_results_or_a_codec_error(body):
    try:
        bundle = decode_results(body)
    except CodecError:
        return
    assert all(isinstance(r[0], int) and r[0] >= 1 for r in bundle.results)


@FAST
@given(st.one_of(st.binary(max_size=300), _JSON.map(json.dumps),
                 _mutated(lambda b: encode_bundle(Bundle(b.job_id, b.seq, [
                     (r[0], r[1] or "x") for r in b.results], b.sent_at, b.attempt), "q"))))
def test_any_body_is_a_bundle_or_a_codec_error(body):
    try:
        bundle, _ = decode_bundle(body)
    except CodecError:
        return
    assert bundle.tasks and all(line >= 1 for line, _ in bundle.tasks)


@FAST
@given(st.one_of(st.binary(max_size=300),
                 _JSON.map(lambda d: zlib.compress(json.dumps(d).encode()))))
def test_any_stored_results_unpack_or_raise_a_codec_error(data):
    _decodes_or_codec_error(unpack_results, data)


def _same_result(a: tuple, b: tuple) -> bool:
    return (a[:5] == b[:5] and a[7:] == b[7:] and math.isclose(a[5], b[5], abs_tol=1e-5)
            and math.isclose(a[6], b[6], abs_tol=1e-5))


@FAST
@given(_result_bundles())
def test_results_encoded_then_decoded_are_what_went_in(bundle):
    back = decode_results(encode_results(bundle))
    assert (back.job_id, back.seq, back.worker, back.attempt) == (
        bundle.job_id, bundle.seq, bundle.worker, bundle.attempt)
    assert math.isclose(back.sent_at, bundle.sent_at)
    assert all(_same_result(a, b) for a, b in zip(back.results, bundle.results, strict=True))
    packed, kept = pack_results(bundle.results, 1 << 20)
    tasks = [(r[0], r[1]) for r in bundle.results]
    assert all(_same_result(a, b) for a, b in zip(unpack_results(packed, tasks), kept,
                                                 strict=True))


@FAST
@given(_JOB, st.integers(0, 10 ** 6), st.lists(st.tuples(st.integers(1, 10 ** 9), _COMMAND),
                                              min_size=1, max_size=12,
                                              unique_by=lambda t: t[0]),
       _TIME, st.integers(1, 9))
def test_a_bundle_encoded_then_decoded_is_what_went_in(job_id, seq, tasks, sent_at, attempt):
    bundle, reply_to = decode_bundle(encode_bundle(Bundle(job_id, seq, tasks, sent_at, attempt),
                                                   "https://queue/url"))
    assert (bundle.job_id, bundle.seq, bundle.tasks, bundle.attempt, reply_to) == (
        job_id, seq, tasks, attempt, "https://queue/url")


# --- The collector ---------------------------------------------------------------------------

def _result(line: int) -> tuple:
    return (line, f"echo {line}", STATUSES[0], 0, None, 10.0, 10.5, "", "")


@st.composite
def _jobs(draw):
    """A job's task lines (last_line, skipped runs) and the result messages that come:
    of its lines, duplicates, lines beyond it or in its gaps, forged lines below 1, and
    another job's results."""
    last_line = draw(st.integers(1, 30))
    skipped, line = [], 1
    while line < last_line:
        if draw(st.integers(0, 3)) == 0:
            end = min(line + draw(st.integers(0, 3)), last_line - 1)
            skipped.append([line, end])
            line = end + 2
        else:
            line += 1
    messages = draw(st.lists(st.tuples(
        st.sampled_from(["job-p", "job-p", "job-p", "other", "forged"]),
        st.lists(st.integers(1, last_line + 5), min_size=1, max_size=8)), max_size=12))
    return last_line, skipped, messages


def _forged(lines: list[int]) -> str:
    doc = json.loads(encode_results(ResultBundle("job-p", 0, [_result(1)] * len(lines), 9.0)))
    doc["results"]["line"] = [-n for n in lines]
    return json.dumps(doc)


class _Drained:
    """The output queue as the collector sees it, never waiting: a receive that finds
    nothing moves the collector's clock past the wait it asked for instead, and any other
    a tick (messages of other jobs are given back and come round again)."""

    def __init__(self, queue, clock: FakeClock) -> None:
        self.queue = queue
        self.clock = clock

    def __getattr__(self, name):
        return getattr(self.queue, name)

    def receive(self, n: int, wait_seconds: float, visibility_seconds: int):
        got = self.queue.receive(n, 0, visibility_seconds)
        self.clock.advance(0.01 if got else max(wait_seconds, 0.01))
        return got


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_jobs())
def test_the_collector_is_complete_only_when_every_task_line_has_a_result(job):
    last_line, skipped, messages = job
    manifest = Manifest("job-p", SUBMITTED, "w.txt", 9.0, bundles=1, last_line=last_line,
                        skipped=skipped)
    task_lines = {n for n in range(1, last_line + 1)
                  if not any(a <= n <= b for a, b in skipped)}
    manifests = MemoryManifests()
    manifests.save(manifest.done(tasks=len(task_lines)))
    broker = MemoryBroker(FakeClock())
    broker.create("output")
    out = broker.queue("output")
    for seq, (job_id, lines) in enumerate(messages):
        body = (_forged(lines) if job_id == "forged" else
                encode_results(ResultBundle(job_id, seq, [_result(n) for n in lines], 9.0)))
        out.send_batch([body])
    written = []
    # The collector's own clock moves only when the queue has nothing more to give, so that
    # its timeout ends the collection after every message was read, however loaded the
    # machine (the queue has a clock of its own).
    clock = FakeClock()
    with mock.patch("submitter.collect.time.monotonic", clock):
        collection = Collector("job-p", _Drained(out, clock), manifests,
                               on_results=written.append).run(timeout=1.0)

    posted = [n for job_id, lines in messages if job_id == "job-p" for n in lines]
    have = set(posted) & task_lines
    assert collection.complete == (have == task_lines)
    assert collection.missing_count == len(task_lines - have)
    handed_on = [r[0] for b in written for r in b.results]
    assert sorted(handed_on) == sorted(have)  # each task line once, no stray line
    if collection.complete:
        # It stops at the last result it needs: the strays it took are counted, none more.
        assert collection.dropped <= sum(1 for n in posted if n not in task_lines)
    else:
        assert collection.dropped == sum(1 for n in posted if n not in task_lines)
