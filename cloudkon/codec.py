"""Message bodies and stored results: versioned, validated, compact JSON.

A task bundle, on the input queue::

    {"v": 1, "kind": "tasks", "job": "job-20250101T000000-a1b2c3", "seq": 3,
     "reply_to": "<queue URL or name>", "sent_at": 1735689600.25,
     "tasks": [[12, "sleep 10"], [13, "echo hi"]]}

A result bundle, on the queue the task bundle names in ``reply_to``; the results are in
columns (one list per field of :class:`~cloudkon.model.Result`, times as microseconds
after ``t0``), which keeps a bundle of hundreds of results a few KiB::

    {"v": 1, "kind": "results", "job": "...", "seq": 3, "worker": "ip-10-0-0-7:4242",
     "sent_at": 1735689600.25, "results": {"t0": 1735689601.5, "line": [12, 13],
     "command": [...], "status": [...], "exit": [...], "signal": [...],
     "start_us": [...], "dur_us": [...], "stdout": [...], "stderr": [...]}}

A bundle of a retry (``cloudkon retry``, attempt 2 and later) is version 2 and carries
``"attempt": N``, as do its results; attempt-1 messages are version 1, without it. A
worker that reads only version 1 dead-letters a retry's bundle instead of running it under
the first attempt's lease key.

Stored results (the lease store's copy, for replay and takeover) are the same columns
without the commands, which the bundle holds, compressed with zlib.

A deployment with a signing key signs bodies and seals stored results
(:mod:`cloudkon.signing`, through :class:`WireCodec`): a signed body is the body above with
a last field ``"sig"`` appended, which readers without a key ignore. Anything that does
not decode and validate raises :class:`~cloudkon.errors.CodecError`.

Output that is not UTF-8 (binary) is carried exactly and compactly: an entry of the
``stdout`` or ``stderr`` column is then ``{"b64": "<base64 of the bytes>"}`` instead of a
string (a reader that knows only strings refuses the message rather than misreading it).

Spilling (docs/design.md, "Large results"): a results body over RESULTS_INLINE_MAX_BYTES
goes to the workload bucket, and the message carries ``"spill": {pointer}`` instead of
``"results"``; packed stored results over the lease store's room go there too, and the
item holds the pointer as JSON (``{"spill": {...}}``, told from zlib data by its first
byte). Only a :class:`WireCodec` given a spill store writes or follows pointers.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import zlib
from collections.abc import Iterable

from cloudkon.errors import CloudKonError, CodecError
from cloudkon.limits import (
    MAX_BUNDLE_TASKS,
    RESULTS_INLINE_MAX_BYTES,
    SQS_DEFAULT_MAX_MESSAGE_BYTES,
)
from cloudkon.model import STATUSES, Bundle, ResultBundle, bundle_key, is_utf8
from cloudkon.signing import SEAL_BYTES, SIGNATURE_CHARS, Signer, split_signed, unseal
from cloudkon.spill import SpillStore, check_pointer, job_folder

log = logging.getLogger(__name__)

VERSION = 1
RETRY_VERSION = 2  # a message of attempt 2 or later: it carries "attempt"
_VERSIONS = (VERSION, RETRY_VERSION)
TASKS = "tasks"
RESULTS = "results"
_MAX_ID_CHARS = 256  # job ids, worker ids
_MAX_REPLY_TO_CHARS = 1024  # an SQS queue URL is well under this
_MAX_JSON_NUMBER = 2 ** 63  # larger integers are no time, count or exit code of ours
_MAX_MICROSECONDS = 10 ** 15  # about 31 years: a start offset or duration beyond is garbage
_B64 = "b64"  # an output entry of bytes that are not UTF-8: {"b64": "..."}
SPILL = "spill"  # a results message's, or stored results', pointer to a spilled payload
_SPILLED_PREFIX = b"{"  # stored results that are a pointer (zlib data starts with 0x78)

# ensure_ascii: SQS refuses some characters (U+FFFE, U+FFFF, most controls) in bodies;
# escaped, every string travels.
_dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode


def encode_bundle(bundle: Bundle, reply_to: str) -> str:
    """The body of a message carrying ``bundle``; results are to go to ``reply_to``."""
    return _dumps({
        **_version(bundle.attempt), "kind": TASKS, "job": bundle.job_id, "seq": bundle.seq,
        "reply_to": reply_to, "sent_at": bundle.sent_at,
        "tasks": [[line, command] for line, command in bundle.tasks],
    })


def _version(attempt: int) -> dict:
    return {"v": VERSION} if attempt <= 1 else {"v": RETRY_VERSION, "attempt": attempt}


def _attempt(doc: dict) -> int:
    if doc["v"] == VERSION:
        return 1
    value = doc.get("attempt")
    if not _is_int(value) or value < 2:
        raise CodecError("'attempt' must be an integer >= 2 in a version 2 message")
    return value


def decode_bundle(body: str | bytes) -> tuple[Bundle, str]:
    """The bundle in a task message body and where its results go; CodecError if invalid."""
    doc = _load(body, TASKS)
    job_id = _string(doc, "job", _MAX_ID_CHARS)
    seq = _count(doc, "seq")
    reply_to = _string(doc, "reply_to", _MAX_REPLY_TO_CHARS)
    sent_at = _time(doc, "sent_at")
    attempt = _attempt(doc)
    tasks = doc.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise CodecError("'tasks' must be a non-empty list of [line, command]")
    if len(tasks) > MAX_BUNDLE_TASKS:
        raise CodecError(f"'tasks' holds {len(tasks)} tasks; a bundle holds at most"
                         f" {MAX_BUNDLE_TASKS}")
    seen = set()
    checked = []
    for item in tasks:
        if (not isinstance(item, list) or len(item) != 2 or not _is_int(item[0]) or item[0] < 1
                or not isinstance(item[1], str) or not item[1] or "\0" in item[1]):
            raise CodecError(f"'tasks' entry {str(item)[:80]} is not [line >= 1, command]")
        if item[0] in seen:
            raise CodecError(f"'tasks' names line {item[0]} twice")
        seen.add(item[0])
        checked.append((item[0], item[1]))
    return Bundle(job_id, seq, checked, sent_at, attempt), reply_to


def encode_results(bundle: ResultBundle) -> str:
    """The body of a message carrying a bundle's results."""
    doc = {
        **_version(bundle.attempt), "kind": RESULTS, "job": bundle.job_id, "seq": bundle.seq,
        "worker": bundle.worker, "sent_at": bundle.sent_at,
        "results": _columns(bundle.results, with_commands=True),
    }
    if bundle.threads:
        doc["threads"] = bundle.threads
    return _dumps(doc)


def decode_results(body: str | bytes) -> ResultBundle:
    """The result bundle in a results message body; CodecError if invalid."""
    doc = _load(body, RESULTS)
    if SPILL in doc:
        raise CodecError("the results were spilled to the workload bucket; this reader has"
                         " no bucket to read them from")
    job_id = _string(doc, "job", _MAX_ID_CHARS)
    seq = _count(doc, "seq")
    worker = doc.get("worker", "")
    if not isinstance(worker, str):
        raise CodecError("'worker' must be a string")
    threads = doc.get("threads", 0)
    if not _is_int(threads) or threads < 0:
        raise CodecError("'threads' must be a non-negative integer")
    results = _rows(doc.get("results"), commands=None)
    return ResultBundle(job_id, seq, results, _time(doc, "sent_at"), worker, threads,
                        _attempt(doc))


def decode_pointer(body: str | bytes) -> ResultBundle:
    """The results message in ``body``: a ResultBundle whose ``spilled`` is the pointer to
    its results (then ``results`` is empty) if they were spilled; CodecError if invalid."""
    doc = _load(body, RESULTS)
    if SPILL not in doc:
        return decode_results(body)
    pointer = check_pointer(doc[SPILL])
    job_id = _string(doc, "job", _MAX_ID_CHARS)
    if not pointer["key"].startswith(job_folder(job_id)):
        raise CodecError(f"spill pointer {pointer['key'][:200]} is outside job {job_id}'s"
                         " folder")
    bundle = ResultBundle(job_id, _count(doc, "seq"), [], _time(doc, "sent_at"),
                          attempt=_attempt(doc))
    bundle.spilled = pointer
    return bundle


def results_bodies(bundle: ResultBundle,
                   max_bytes: int = SQS_DEFAULT_MAX_MESSAGE_BYTES) -> list[str]:
    """The bundle's results as message bodies of at most ``max_bytes`` each: one body
    unless its output tails make it larger, then the results split over several."""
    body = encode_results(bundle)
    if len(body) <= max_bytes or len(bundle.results) <= 1:
        return [body]
    half = len(bundle.results) // 2
    parts = []
    for chunk in (bundle.results[:half], bundle.results[half:]):
        part = ResultBundle(bundle.job_id, bundle.seq, chunk, bundle.sent_at, bundle.worker,
                            bundle.threads, bundle.attempt)
        parts += results_bodies(part, max_bytes)
    return parts


def pack_results(results: list[tuple], max_bytes: int) -> tuple[bytes, list[tuple]]:
    """Results, laid out as Result, packed for the lease store in at most ``max_bytes``;
    also returns the results as packed. When the output tails make them too large, every
    tail is cut to the same length, halved until they fit; CodecError if even empty tails
    do not fit."""
    while True:
        packed = zlib.compress(_dumps(_columns(results, with_commands=False)).encode("ascii"))
        if len(packed) <= max_bytes:
            return packed, results
        longest = max((max(len(r[7]), len(r[8])) for r in results), default=0)
        if longest == 0:
            raise CodecError(
                f"the results of {len(results)} tasks take {len(packed)} bytes packed even"
                f" without their output; the store holds {max_bytes}"
            )
        results = [_cut_tails(r, longest // 2) for r in results]


def unpack_results(data: bytes, tasks: Iterable[tuple[int, str]] | None = None) -> list[tuple]:
    """Stored results as tuples laid out as Result, their commands taken from ``tasks``
    (the bundle's), or '' for a reader that does not have the bundle (a collector reading
    them back); CodecError if they are not valid or name a line not in ``tasks``. A seal
    (signed results, cloudkon/signing.py) is cut off unchecked: WireCodec checks it."""
    data = unseal(data)
    if data[:1] == _SPILLED_PREFIX:
        raise CodecError("stored results were spilled to the workload bucket; this reader"
                         " has no bucket to read them from")
    try:
        doc = json.loads(zlib.decompress(data))
    except (zlib.error, ValueError, TypeError, RecursionError) as exc:
        raise CodecError(f"stored results do not unpack: {str(exc)[:200]}") from None
    if tasks is None:
        lines = doc.get("line") if isinstance(doc, dict) else None
        if not isinstance(lines, list):
            raise CodecError("stored results have no 'line' column")
        tasks = ((line, "") for line in lines if _is_int(line))
    return _rows(doc, commands=dict(tasks))


def _cut_tails(result: tuple, keep: int) -> tuple:
    out, err = result[7], result[8]
    if len(out) <= keep and len(err) <= keep:
        return result
    return result[:7] + (out[len(out) - keep:] if keep else "",
                         err[len(err) - keep:] if keep else "")


def _columns(results: list[tuple], with_commands: bool) -> dict:
    """Results as columns; times as integer microseconds after the earliest start."""
    t0 = min((r[5] for r in results), default=0.0)
    cols = {
        "t0": round(t0, 6),
        "line": [r[0] for r in results],
        "status": [r[2] for r in results],
        "exit": [r[3] for r in results],
        "signal": [r[4] for r in results],
        "start_us": [round((r[5] - t0) * 1e6) for r in results],
        "dur_us": [max(round((r[6] - r[5]) * 1e6), 0) for r in results],
        "stdout": [_wire_text(r[7]) for r in results],
        "stderr": [_wire_text(r[8]) for r in results],
    }
    if with_commands:
        cols["command"] = [r[1] for r in results]
    return cols


def _rows(cols: object, commands: dict[int, str] | None) -> list[tuple]:
    """Columns back into Result tuples; commands from ``commands`` if given, else a column."""
    if not isinstance(cols, dict):
        raise CodecError("'results' must be an object of columns")
    names = ("line", "status", "exit", "signal", "start_us", "dur_us", "stdout", "stderr")
    if commands is None:
        names += ("command",)
    columns = []
    for name in names:
        column = cols.get(name)
        if not isinstance(column, list):
            raise CodecError(f"results column {name!r} is missing")
        columns.append(column)
    n = len(columns[0])
    if any(len(c) != n for c in columns):
        raise CodecError("results columns differ in length")
    t0 = cols.get("t0")
    if not _is_number(t0):
        raise CodecError("results 't0' must be a number")
    rows = []
    for i in range(n):
        line, status, code, sig, start_us, dur_us, out, err = (c[i] for c in columns[:8])
        out, err = _text(out), _text(err)
        if not _is_int(line) or line < 1:
            raise CodecError(f"result {i}: line {str(line)[:40]} is not a line number >= 1")
        if status not in STATUSES:
            raise CodecError(f"result {i}: unknown status {str(status)[:40]!r}")
        if not (code is None or _is_int(code)) or not (sig is None or isinstance(sig, str)):
            raise CodecError(f"result {i}: bad exit code or signal")
        if not _is_microseconds(start_us) or not _is_microseconds(dur_us) \
                or not isinstance(out, str) or not isinstance(err, str):
            raise CodecError(f"result {i}: bad times or output")
        if commands is None:
            command = columns[8][i]
            if not isinstance(command, str):
                raise CodecError(f"result {i}: bad command")
        else:
            command = commands.get(line)
            if command is None:
                raise CodecError(f"stored result for line {line}, which is not in the bundle")
        start = t0 + start_us / 1e6
        rows.append((line, command, status, code, sig, start, start + dur_us / 1e6, out, err))
    return rows


def _wire_text(text: str) -> str | dict:
    """An output tail as it travels: the string if it is UTF-8, else its bytes (kept by the
    executor as surrogate escapes) in base64, 4/3 of their size rather than the 6 bytes of
    a JSON escape per byte."""
    if is_utf8(text):
        return text
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate no executor makes (a forged message's)
        data = text.encode("utf-8", "replace")
    return {_B64: base64.b64encode(data).decode("ascii")}


def _text(value: object) -> object:
    """An output entry back as a string (bytes as surrogate escapes); anything else is
    returned as it is, for the caller to refuse."""
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get(_B64), str):
        try:
            return base64.b64decode(value[_B64], validate=True).decode("utf-8",
                                                                       "surrogateescape")
        except (binascii.Error, ValueError):
            return value
    return value


def _load(body: str | bytes, kind: str) -> dict:
    try:
        doc = json.loads(body)
    except (ValueError, TypeError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise CodecError(f"not JSON: {str(exc)[:200]}") from None
    if not isinstance(doc, dict):
        raise CodecError("not a JSON object")
    if doc.get("v") not in _VERSIONS or isinstance(doc.get("v"), bool):
        raise CodecError(f"unknown version {doc.get('v')!r}; this worker reads versions"
                         f" {VERSION} and {RETRY_VERSION}")
    if doc.get("kind") != kind:
        raise CodecError(f"kind is {doc.get('kind')!r}, expected {kind!r}")
    return doc


def _string(doc: dict, key: str, max_chars: int) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value or len(value) > max_chars:
        raise CodecError(f"{key!r} must be a string of 1 to {max_chars} characters")
    return value


def _count(doc: dict, key: str) -> int:
    value = doc.get(key)
    if not _is_int(value) or value < 0:
        raise CodecError(f"{key!r} must be an integer >= 0")
    return value


def _time(doc: dict, key: str) -> float:
    value = doc.get(key, 0.0)
    if not _is_number(value) or value < 0:
        raise CodecError(f"{key!r} must be a number >= 0")
    return float(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) <= _MAX_JSON_NUMBER  # math.isfinite overflows on a huge int
    return isinstance(value, float) and math.isfinite(value)


def _is_microseconds(value: object) -> bool:
    return _is_int(value) and 0 <= value <= _MAX_MICROSECONDS


class WireCodec:
    """Bodies and stored results as they cross SQS and DynamoDB: the JSON and packed
    columns above. The worker loop reaches the codec only through this interface.
    ``worker_threads``, if given, is said in every results message (the collector's
    summary counts the threads of the workers). With a ``signer`` (cloudkon/signing.py),
    bundles and results are signed as they are encoded and checked as they are decoded,
    stored results sealed for their lease key and checked as they are unpacked: anything
    unsigned, forged or (a bundle) too old raises SignatureError, a CodecError. With a
    ``spill`` store, results that do not fit a message or the lease store are spilled
    there and pointed to (the pointer is what is signed or sealed), and pointers are
    followed; without, results are split over messages and stored tails cut."""

    def __init__(self, worker_threads: int = 0, signer: Signer | None = None,
                 spill: SpillStore | None = None) -> None:
        self.worker_threads = worker_threads
        self.signer = signer
        self.spill = spill

    @property
    def bundle_overhead(self) -> int:
        """How many characters the encoding adds to a bundle's unsigned body, at most."""
        return SIGNATURE_CHARS if self.signer is not None else 0

    def encode_bundle(self, bundle: Bundle, reply_to: str) -> str:
        body = encode_bundle(bundle, reply_to)
        return body if self.signer is None else self.signer.sign(body, TASKS, bundle.job_id)

    def decode_bundle(self, body: str | bytes) -> tuple[Bundle, str]:
        if self.signer is None:
            return decode_bundle(body)
        signed, token = split_signed(body)
        bundle, reply_to = decode_bundle(signed)
        self.signer.check(signed, token, TASKS, bundle.job_id, replay_window=True)
        return bundle, reply_to

    def results_bodies(self, bundle: ResultBundle) -> list[str]:
        if self.worker_threads and not bundle.threads:
            bundle = ResultBundle(bundle.job_id, bundle.seq, bundle.results, bundle.sent_at,
                                  bundle.worker, self.worker_threads, bundle.attempt)
        bodies = self._unsigned_results_bodies(bundle)
        if self.signer is None:
            return bodies
        return [self.signer.sign(body, RESULTS, bundle.job_id) for body in bodies]

    def _unsigned_results_bodies(self, bundle: ResultBundle) -> list[str]:
        """The results split over messages where they do not fit one (cheaper than S3: a
        batch sends ten); a single result that does not fit alone (tails full of characters
        JSON escapes) is spilled, when a spill store is at hand, and pointed to."""
        room = SQS_DEFAULT_MAX_MESSAGE_BYTES - (SIGNATURE_CHARS if self.signer else 0)
        if self.spill is None:
            return results_bodies(bundle, room)
        limit = min(room, RESULTS_INLINE_MAX_BYTES)
        bodies = []
        for body in results_bodies(bundle, limit):
            if len(body) > limit:
                what = f"results-{bundle_key(bundle.job_id, bundle.seq, bundle.attempt)}"
                pointer = self.spill.put(bundle.job_id, what.replace("#", "-"),
                                         body.encode("ascii"))
                body = _dumps({**_version(bundle.attempt), "kind": RESULTS,
                               "job": bundle.job_id, "seq": bundle.seq,
                               "worker": bundle.worker, "sent_at": bundle.sent_at,
                               SPILL: pointer})
            bodies.append(body)
        return bodies

    def decode_results(self, body: str | bytes) -> ResultBundle:
        """The results in a results message body, its signature checked if this reader
        has a key, fetched from the spill store if spilled (SpillError if they are gone or
        not what the pointer says; the pointer's SHA-256 is what the signature covers)."""
        if self.signer is not None:
            signed, _ = split_signed(body)
            bundle = decode_pointer(signed)
            self.verify_results(body, bundle.job_id)
        else:
            bundle = decode_pointer(body)
        return self.fetch(bundle) if bundle.spilled is not None else bundle

    def verify_results(self, body: str | bytes, job_id: str) -> None:
        """Check the signature of a results message of job ``job_id`` (SignatureError if it
        fails; nothing without a key), without reading what it may point to."""
        if self.signer is not None:
            signed, token = split_signed(body)
            self.signer.check(signed, token, RESULTS, job_id, replay_window=False)

    def fetch(self, bundle: ResultBundle) -> ResultBundle:
        """The spilled results ``bundle`` (from :func:`decode_pointer`) points to."""
        if self.spill is None:
            raise CodecError(f"results spilled to s3://{bundle.spilled['bucket']}/"
                             f"{bundle.spilled['key']}; this reader has no bucket to read")
        fetched = decode_results(self.spill.get(bundle.spilled))
        if (fetched.job_id, fetched.seq, fetched.attempt) != \
                (bundle.job_id, bundle.seq, bundle.attempt):
            raise CodecError(f"spilled results s3://{bundle.spilled['bucket']}/"
                             f"{bundle.spilled['key']} are of job {fetched.job_id} bundle"
                             f" {fetched.seq}, not of the message's")
        fetched.spilled = bundle.spilled
        return fetched

    def pack_results(self, results: list[tuple], max_bytes: int,
                     key: str = "") -> tuple[bytes, list[tuple]]:
        """Results packed for the lease store of bundle ``key``: spilled, with the pointer
        stored instead, when they do not fit ``max_bytes`` and a spill store is at hand;
        else as :func:`pack_results` (tails cut to fit). With a signer, what is stored is
        sealed for ``key``."""
        room = max_bytes - (SEAL_BYTES if self.signer is not None else 0)
        if self.spill is None or not key:
            packed, kept = pack_results(results, room)
        else:
            packed, kept = zlib.compress(_dumps(_columns(results, with_commands=False))
                                         .encode("ascii")), results
            if len(packed) > room:
                job_id = key.split("#", 1)[0]
                try:
                    pointer = self.spill.put(job_id, "stored-" + key.replace("#", "-"),
                                             packed)
                    packed = _dumps({SPILL: pointer}).encode("ascii")
                except CloudKonError as exc:
                    # The bucket cannot be written (gone, denied): the lease keeps the
                    # results with their tails cut to fit, rather than none at all.
                    log.warning("bundle %s: its results could not be spilled (%s); stored"
                                " with their output tails cut to fit the lease", key, exc)
                    packed, kept = pack_results(results, room)
        return (packed if self.signer is None else self.signer.seal(packed, key)), kept

    def unpack_results(self, data: bytes, tasks: Iterable[tuple[int, str]] | None = None,
                       key: str = "") -> list[tuple]:
        """Stored results (following a pointer to spilled ones) as :func:`unpack_results`;
        with a signer, SignatureError unless sealed for ``key``."""
        if self.signer is not None:
            data = self.signer.open(data, key)
        if data[:1] == _SPILLED_PREFIX:
            data = self.spill_of(data)
        return unpack_results(data, tasks)

    def spill_of(self, data: bytes) -> bytes:
        """The spilled packed results stored results ``data`` (a pointer) point to."""
        try:
            pointer = check_pointer(json.loads(data)[SPILL])
        except (ValueError, TypeError, KeyError, RecursionError):
            raise CodecError("stored results are neither packed nor a spill pointer") from None
        if self.spill is None:
            raise CodecError(f"stored results spilled to s3://{pointer['bucket']}/"
                             f"{pointer['key']}; this reader has no bucket to read")
        return self.spill.get(pointer)


class InProcessCodec:
    """Bodies and stored results as the objects themselves, for queues and a lease store
    that live in the same process (the local flavour): nothing is serialised, nothing
    can fail to decode, and a bundle of `sleep 0` costs no more than its tasks."""

    @staticmethod
    def encode_bundle(bundle: Bundle, reply_to: str) -> tuple[Bundle, str]:
        return bundle, reply_to

    @staticmethod
    def decode_bundle(body: tuple[Bundle, str]) -> tuple[Bundle, str]:
        return body

    @staticmethod
    def results_bodies(bundle: ResultBundle) -> list[ResultBundle]:
        return [bundle]

    @staticmethod
    def decode_results(body: ResultBundle) -> ResultBundle:
        return body

    @staticmethod
    def pack_results(results: list[tuple], max_bytes: int,
                     key: str = "") -> tuple[list[tuple], list[tuple]]:
        # Stored as a copy, for the caller may go on appending to ``results``; nothing cut.
        return list(results), results

    @staticmethod
    def unpack_results(data: list[tuple], tasks: Iterable[tuple[int, str]],
                       key: str = "") -> list[tuple]:
        return list(data)


WIRE = WireCodec()
IN_PROCESS = InProcessCodec()

