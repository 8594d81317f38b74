"""Message bodies and stored results: what goes in comes out, what is not valid is refused."""

from __future__ import annotations

import json

import pytest

from cloudkon.codec import (
    decode_bundle,
    decode_results,
    encode_bundle,
    encode_results,
    pack_results,
    results_bodies,
    unpack_results,
)
from cloudkon.errors import CodecError
from cloudkon.model import FAILED, SUCCEEDED, TIMED_OUT, Bundle, ResultBundle

T0 = 1_735_689_600.123456


def result(line: int, command: str = "sleep 0", status: str = SUCCEEDED, out: str = "",
           err: str = "", code: int | None = 0, sig: str | None = None) -> tuple:
    return (line, command, status, code, sig, T0 + line, T0 + line + 0.25, out, err)


def test_bundle_round_trips_with_its_reply_queue():
    bundle = Bundle("job-1", 7, [(3, "sleep 10"), (4, "echo 'hé \x01 \uffff'")], T0)
    decoded, reply_to = decode_bundle(encode_bundle(bundle, "https://sqs/123/out"))
    assert (decoded.job_id, decoded.seq, decoded.tasks, decoded.sent_at) == \
           ("job-1", 7, bundle.tasks, T0)
    assert reply_to == "https://sqs/123/out"


def test_body_is_ascii_so_sqs_takes_any_command():
    body = encode_bundle(Bundle("j", 0, [(1, "echo \uffff \x1b")]), "out")
    assert body.isascii()


def _body(**fields) -> str:
    doc = {"v": 1, "kind": "tasks", "job": "j", "seq": 0, "reply_to": "q", "tasks": [[1, "x"]]}
    doc.update(fields)
    return json.dumps({k: v for k, v in doc.items() if v is not ...})


@pytest.mark.parametrize("body, reason", [
    ("not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    (_body(v=3), "version"),
    (_body(v=2), "attempt"),
    (_body(v=2, attempt=1), "attempt"),
    (_body(kind="results"), "kind"),
    (_body(tasks=[]), "tasks"),
    (_body(job=""), "job"),
    (_body(seq=True), "seq"),
    (_body(reply_to=...), "reply_to"),
    (_body(tasks=[[0, "x"]]), "line"),
    (_body(tasks=[["1", "x"]]), "line"),
    (_body(tasks=[[1, ""]]), "command"),
    (_body(tasks=[[1, "a"], [1, "b"]]), "twice"),
    (_body(sent_at=-1), "sent_at"),
])
def test_invalid_bundle_bodies_are_refused_with_a_reason(body, reason):
    with pytest.raises(CodecError, match=reason):
        decode_bundle(body)


def test_results_round_trip_in_columns():
    results = [result(1), result(2, "false", FAILED, code=1, err="boom"),
               result(3, "sleep 9999", TIMED_OUT, code=None, sig="SIGKILL", out="tail")]
    body = encode_results(ResultBundle("job-1", 2, results, T0, "host:1"))
    assert set(json.loads(body)["results"]) >= {"line", "command", "status", "start_us"}
    decoded = decode_results(body)
    assert (decoded.job_id, decoded.seq, decoded.worker, decoded.sent_at) == \
        ("job-1", 2, "host:1", T0)
    for got, want in zip(decoded.results, results, strict=True):
        assert got[:5] == want[:5] and got[7:] == want[7:]
        assert got[5] == pytest.approx(want[5], abs=1e-6)
        assert got[6] == pytest.approx(want[6], abs=1e-6)


def test_results_too_large_for_one_message_are_split_and_all_arrive():
    results = [result(i, out="x" * 3000) for i in range(1, 101)]
    bodies = results_bodies(ResultBundle("job", 0, results, T0), max_bytes=64 * 1024)
    assert len(bodies) > 1
    assert all(len(b) <= 64 * 1024 for b in bodies)
    lines = [r[0] for b in bodies for r in decode_results(b).results]
    assert sorted(lines) == list(range(1, 101))


def test_stored_results_leave_out_commands_and_take_them_from_the_bundle():
    tasks = [(1, "echo one"), (2, "echo two")]
    results = [result(1, "echo one", out="one\n"), result(2, "echo two", out="two\n")]
    packed, kept = pack_results(results, 10_000)
    assert kept is results
    assert b"echo one" not in packed
    assert [r[:3] + r[7:] for r in unpack_results(packed, tasks)] == \
           [r[:3] + r[7:] for r in results]


def test_stored_results_read_back_without_the_bundle_have_blank_commands():
    results = [result(1, "echo one", out="one\n"), result(2, "echo two", status=FAILED, code=1)]
    packed, _ = pack_results(results, 10_000)
    assert [r[:3] + r[7:] for r in unpack_results(packed)] == \
           [(r[0], "") + r[2:3] + r[7:] for r in results]


def test_results_too_large_for_the_store_get_their_output_tails_cut():
    import random

    rnd = random.Random(1)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

    def noise() -> str:  # does not compress: tails must be cut
        return "".join(rnd.choice(alphabet) for _ in range(4096))

    results = [result(i, out=noise(), err=noise()) for i in range(1, 41)]
    packed, kept = pack_results(results, 40_000)
    assert len(packed) <= 40_000
    assert kept is not results
    for before, after in zip(results, kept, strict=True):
        assert before[7].endswith(after[7]) and before[8].endswith(after[8])
        assert len(after[7]) < 4096


def test_results_that_cannot_fit_even_without_output_are_refused():
    results = [result(i) for i in range(1, 2001)]
    with pytest.raises(CodecError, match="without their output"):
        pack_results(results, 100)


def test_stored_results_naming_a_line_not_in_the_bundle_are_refused():
    packed, _ = pack_results([result(5)], 10_000)
    with pytest.raises(CodecError, match="line 5"):
        unpack_results(packed, [(1, "sleep 0")])
    with pytest.raises(CodecError, match="unpack"):
        unpack_results(b"garbage", [(1, "sleep 0")])


def test_a_retry_bundle_is_version_2_and_carries_its_attempt_to_its_results():
    bundle = Bundle("j", 3, [(5, "false")], sent_at=1.5, attempt=2)
    body = encode_bundle(bundle, "out")
    assert json.loads(body)["v"] == 2 and json.loads(body)["attempt"] == 2
    decoded, _ = decode_bundle(body)
    assert (decoded.attempt, decoded.seq, decoded.tasks) == (2, 3, [(5, "false")])
    results = ResultBundle("j", 3, [(5, "false", "failed", 1, None, 2.0, 2.5, "", "")], 1.5,
                           "w", attempt=2)
    assert decode_results(encode_results(results)).attempt == 2
    assert decode_results(encode_results(ResultBundle("j", 0, [], 0.0))).attempt == 1
    assert json.loads(encode_bundle(Bundle("j", 0, [(1, "x")]), "out"))["v"] == 1
