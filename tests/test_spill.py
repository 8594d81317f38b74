"""Large output: bounded tails, binary output carried exactly and compactly, and results too
large for a message or a lease item spilled to the workload bucket behind a pointer, which
the collector follows (and reports clearly when its object is gone)."""

from __future__ import annotations

import base64
import json
import logging
import os
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudkon.backends import COMPLETED
from cloudkon.backends.memory import MemoryBroker, MemoryLeaseStore, MemorySpillStore
from cloudkon.codec import (
    WireCodec,
    decode_results,
    encode_results,
    pack_results,
    unpack_results,
)
from cloudkon.errors import AwsError, CodecError, SpillError
from cloudkon.executor import Executor
from cloudkon.limits import (
    LEASE_RESULTS_MAX_BYTES,
    MAX_TAIL_BYTES,
    RESULTS_INLINE_MAX_BYTES,
    SQS_DEFAULT_MAX_MESSAGE_BYTES,
)
from cloudkon.model import SUCCEEDED, Result, ResultBundle, bundle_key
from submitter.collect import Collector
from submitter.manifest import SUBMITTED, Manifest, MemoryManifests

T0 = 1_700_000_000.0


def _binary(n: int, seed: int = 1) -> bytes:
    """``n`` bytes that do not compress and are not UTF-8 (as a binary output's)."""
    return bytes(x | 0x80 if i % 7 == 0 else x for i, x in enumerate(os.urandom(n)))


def _as_tail(data: bytes) -> str:
    """A tail as the executor keeps it: bytes that are not UTF-8 as surrogate escapes."""
    return data.decode("utf-8", "surrogateescape")


# 60,000 control characters: 360 KB of JSON escapes, a result over a message alone.
ESCAPING = "\x01" * 60_000


def _result(line: int, out: str = "", err: str = "") -> tuple:
    return (line, f"task {line}", SUCCEEDED, 0, None, T0 + line, T0 + line + 0.5, out, err)


def _noise_text(n: int) -> str:
    """``n`` characters of text that does not compress (base64 of random bytes)."""
    return base64.b64encode(os.urandom(n * 3 // 4 + 3)).decode("ascii")[:n]


# --- tails and binary output --------------------------------------------------------------


def test_a_5_mb_binary_output_keeps_exactly_its_last_tail_bytes(tmp_path):
    data = os.urandom(5_000_000)
    (tmp_path / "blob").write_bytes(data)
    executor = Executor(timeout=30, tail_bytes=MAX_TAIL_BYTES)
    try:
        results: list[tuple] = []
        executor.run_bundle("job-bin", [(1, f"cat {tmp_path / 'blob'}"),
                                        (2, "head -c 5000000 /dev/urandom")], results,
                             lambda: False)
    finally:
        executor.close()
    by_line = {r[0]: r for r in results}
    assert by_line[1][2] == SUCCEEDED and by_line[2][2] == SUCCEEDED
    assert by_line[1][7].encode("utf-8", "surrogateescape") == data[-MAX_TAIL_BYTES:]
    assert len(by_line[2][7].encode("utf-8", "surrogateescape")) == MAX_TAIL_BYTES


def test_a_text_tail_cut_inside_a_character_stays_text(tmp_path):
    executor = Executor(timeout=30, tail_bytes=10)
    try:
        results: list[tuple] = []
        executor.run_bundle("job-t", [(1, "printf 'ééééééééé'")], results,  # 18 bytes
                            lambda: False)
    finally:
        executor.close()
    assert results[0][7] == "ééééé"  # 10 bytes from the end: a lone byte dropped, not escaped


def test_binary_output_travels_exactly_as_base64_not_as_escapes():
    data = _binary(MAX_TAIL_BYTES)
    bundle = ResultBundle("job-b", 0, [_result(1, _as_tail(data), "plain text")], T0, "w1")
    body = encode_results(bundle)
    assert len(body) < len(data) * 4 / 3 + 1024  # base64, not 6 bytes per byte
    back = decode_results(body).results[0]
    assert back[7].encode("utf-8", "surrogateescape") == data
    assert back[8] == "plain text"
    stored = unpack_results(pack_results([_result(1, _as_tail(data))], 10 ** 6)[0])
    assert stored[0][7].encode("utf-8", "surrogateescape") == data


def test_a_results_record_shows_binary_output_readably_with_its_exact_bytes_beside():
    data = b"ok \xff\xfe end"
    record = Result._make(_result(1, _as_tail(data), "é")).to_record("job-r")
    json.dumps(record, ensure_ascii=False).encode("utf-8")  # writable as UTF-8
    assert record["stdout"] == "ok \ufffd\ufffd end"
    assert base64.b64decode(record["stdout_base64"]) == data
    assert record["stderr"] == "é" and "stderr_base64" not in record


def test_an_output_entry_that_is_neither_text_nor_base64_is_refused():
    doc = json.loads(encode_results(ResultBundle("job-x", 0, [_result(1, "x")], T0)))
    doc["results"]["stdout"] = [{"b64": "not base64!"}]
    with pytest.raises(CodecError, match="bad times or output"):
        decode_results(json.dumps(doc))


@pytest.mark.parametrize("command", ["run", "worker"])
def test_tail_bytes_over_the_maximum_is_one_clear_line_and_exit_2(cloudkon, write_workload,
                                                                   command):
    args = (("run", write_workload("echo hi\n"), "-o", "out.jsonl") if command == "run"
            else ("worker", "--prefix", "never-made", "--region", "us-east-1"))
    proc = cloudkon(*args, "--tail-bytes", MAX_TAIL_BYTES + 1)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [(
        f"cloudkon: error: --tail-bytes {MAX_TAIL_BYTES + 1}: a result keeps at most"
        f" {MAX_TAIL_BYTES} bytes of the end of stdout and of stderr")]


def test_the_largest_tail_runs_locally_and_comes_back_whole(cloudkon, write_workload,
                                                            tmp_path):
    blob = tmp_path / "blob"
    blob.write_bytes(_binary(200_000))
    proc = cloudkon("run", write_workload(f"cat {blob}\necho done\n"), "-o", "out.jsonl",
                    "--tail-bytes", MAX_TAIL_BYTES)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "out.jsonl").read_text(encoding="utf-8")
    records = [json.loads(x) for x in text.split("\n") if x]
    by_line = {r["line"]: r for r in records}
    assert base64.b64decode(by_line[1]["stdout_base64"]) == blob.read_bytes()[-MAX_TAIL_BYTES:]
    assert by_line[2]["stdout"] == "done\n"


# --- spilling: messages and lease items ----------------------------------------------------


def test_small_results_stay_in_the_message_and_large_ones_spill_behind_a_pointer():
    spill = MemorySpillStore("bkt")
    codec = WireCodec(worker_threads=4, spill=spill)
    small = ResultBundle("job-s", 3, [_result(1, "hi")], T0, "w1")
    assert codec.results_bodies(small) == [encode_results(
        ResultBundle("job-s", 3, small.results, T0, "w1", 4))]
    assert not spill.objects

    large = ResultBundle("job-s", 4, [_result(1, ESCAPING)], T0, "w1", attempt=2)
    bodies = codec.results_bodies(large)
    assert len(bodies) == 1 and len(bodies[0]) < 1024  # a pointer, not the results
    pointer = json.loads(bodies[0])["spill"]
    assert pointer["bucket"] == "bkt" and pointer["key"].startswith("spill/job-s/")
    assert pointer["size"] > RESULTS_INLINE_MAX_BYTES
    back = codec.decode_results(bodies[0])
    assert (back.job_id, back.seq, back.attempt, back.worker, back.threads) == \
        ("job-s", 4, 2, "w1", 4)
    assert back.results == [r for r in ResultBundle("job-s", 4, large.results, T0).results]


def test_without_a_bucket_large_results_split_over_messages_each_within_the_limit():
    large = ResultBundle("job-n", 0, [_result(n, _noise_text(60_000)) for n in range(1, 8)], T0)
    bodies = WireCodec().results_bodies(large)
    assert len(bodies) > 1 and all(len(b) <= SQS_DEFAULT_MAX_MESSAGE_BYTES for b in bodies)
    assert sum(len(decode_results(b).results) for b in bodies) == 7


def test_stored_results_beyond_the_lease_item_spill_and_read_back_whole():
    spill = MemorySpillStore()
    codec = WireCodec(spill=spill)
    results = [_result(n, _noise_text(60_000)) for n in range(1, 10)]
    key = bundle_key("job-l", 5)
    packed, kept = codec.pack_results(results, LEASE_RESULTS_MAX_BYTES, key)
    assert kept is results  # nothing cut
    assert len(packed) < 1024 and len(spill.objects) == 1
    tasks = [(r[0], r[1]) for r in results]
    assert codec.unpack_results(packed, tasks) == results
    small, _ = codec.pack_results(results[:1], LEASE_RESULTS_MAX_BYTES, key)
    assert zlib.decompress(small) and len(spill.objects) == 1  # fits: kept in the item
    with pytest.raises(CodecError, match="spilled to the workload bucket"):
        unpack_results(packed, tasks)  # a reader without the bucket says so


def test_a_spilled_object_that_changed_is_refused():
    spill = MemorySpillStore()
    codec = WireCodec(spill=spill)
    body = codec.results_bodies(ResultBundle("job-c", 0, [_result(1, ESCAPING)], T0))[0]
    key = json.loads(body)["spill"]["key"]
    spill.objects[key] = spill.objects[key][:-1] + b" "
    with pytest.raises(SpillError, match="do not match their SHA-256"):
        codec.decode_results(body)


# --- the collector ---------------------------------------------------------------------------


def _job(job_id: str, lines: int) -> MemoryManifests:
    manifests = MemoryManifests()
    manifests.save(Manifest(job_id, SUBMITTED, "w.txt", T0, tasks=lines, bundles=1,
                            last_line=lines))
    return manifests


def _spilled_run(job_id: str, lines: int = 9):
    """A bundle's results spilled on the output queue and in the lease store, as a worker
    with a bucket leaves them: (queue, leases, spill store, the results)."""
    spill = MemorySpillStore()
    codec = WireCodec(spill=spill)
    # Line 1's stderr is over a message alone: its message spills, the others' stay inline.
    results = [_result(n, _noise_text(60_000), ESCAPING if n == 1 else "")
               for n in range(1, lines + 1)]
    broker = MemoryBroker()
    broker.create("output")
    out = broker.queue("output")
    out.send_batch(codec.results_bodies(ResultBundle(job_id, 0, results, T0, "w1")))
    leases = MemoryLeaseStore()
    key = bundle_key(job_id, 0)
    assert leases.claim(key, "w1/x-1", 60).outcome != COMPLETED
    packed, _ = codec.pack_results(results, leases.max_results_bytes, key)
    assert leases.complete(key, "w1/x-1", packed, T0)
    return out, leases, spill, results


def test_the_collector_reads_spilled_results_and_removes_them(tmp_path):
    out, leases, spill, results = _spilled_run("job-k")
    written: list[ResultBundle] = []
    collection = Collector("job-k", out, _job("job-k", 9), leases, on_results=written.append,
                           codec=WireCodec(spill=spill)).run(timeout=5)
    assert collection.complete and collection.recovered == 0
    assert [r[7] for b in written for r in b.results] == [r[7] for r in results]
    assert len(spill.objects) == 1  # the message's object removed; the lease item's kept


def test_a_gone_spilled_object_is_one_warning_and_the_lease_copy_is_read(caplog):
    out, leases, spill, results = _spilled_run("job-g")
    message_key = next(k for k in spill.objects if "/results-" in k)
    del spill.objects[message_key]
    caplog.set_level(logging.WARNING)
    written: list[ResultBundle] = []
    collection = Collector("job-g", out, _job("job-g", 9), leases, on_results=written.append,
                           quiet_seconds=0, codec=WireCodec(spill=spill)).run(timeout=5)
    assert collection.complete and collection.recovered == 1  # line 1, whose message spilled
    assert sorted(r[7] for b in written for r in b.results) == sorted(r[7] for r in results)
    gone = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert gone == [(f"job job-g: bundle 0's results cannot be read: spilled results"
                     f" s3://memory/{message_key} are gone; they are read back from the lease"
                     " table instead")]


def test_when_every_spilled_copy_is_gone_the_collection_says_so_and_ends_incomplete(caplog):
    out, leases, spill, _ = _spilled_run("job-h")
    spill.objects.clear()
    caplog.set_level(logging.WARNING)
    collection = Collector("job-h", out, _job("job-h", 9), leases, quiet_seconds=0,
                           codec=WireCodec(spill=spill)).run(timeout=1)
    assert not collection.complete and collection.missing_count == 1  # line 1
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "bundle 0's results cannot be read" in said
    assert "bundle 0's stored results do not unpack: spilled results" in said
    assert len(out) == 0  # the unreadable message does not cycle on the queue


# --- untrusted pointers ------------------------------------------------------------------------

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(pointer=_json | st.fixed_dictionaries(
    {"bucket": _json, "key": st.just("spill/j/x") | _json, "size": _json, "sha256": _json}))
def test_any_pointer_in_a_message_or_a_lease_item_is_followed_or_refused(pointer):
    codec = WireCodec(spill=MemorySpillStore())
    body = json.dumps({"v": 1, "kind": "results", "job": "j", "seq": 0, "spill": pointer})
    for read in (lambda: codec.decode_results(body),
                 lambda: codec.unpack_results(json.dumps({"spill": pointer}).encode())):
        with pytest.raises(CodecError):
            read()


@pytest.mark.parametrize("change, said", [
    ({"bucket": "elsewhere"}, "not to this deployment's memory"),
    ({"key": "spill/other-job/results-x"}, "outside job job-p's folder"),
])
def test_a_pointer_to_another_bucket_or_job_is_refused_without_fetching(change, said):
    spill = MemorySpillStore()
    codec = WireCodec(spill=spill)
    body = codec.results_bodies(ResultBundle("job-p", 0, [_result(1, ESCAPING)], T0))[0]
    doc = json.loads(body)
    doc["spill"].update(change)
    with pytest.raises(CodecError, match=said):
        codec.decode_results(json.dumps(doc))


class _Unwritable(MemorySpillStore):
    """A bucket that cannot be written (gone, or the role may not)."""

    def put(self, job_id: str, what: str, data: bytes) -> dict:
        raise AwsError("put to s3://memory/spill/: AccessDenied: denied", "AccessDenied")


def test_stored_results_whose_spill_fails_are_stored_with_tails_cut_not_lost(caplog):
    codec = WireCodec(spill=_Unwritable())
    results = [_result(n, _noise_text(60_000)) for n in range(1, 10)]
    key = bundle_key("job-u", 2)
    caplog.set_level(logging.WARNING)
    packed, kept = codec.pack_results(results, LEASE_RESULTS_MAX_BYTES, key)
    assert len(packed) <= LEASE_RESULTS_MAX_BYTES
    back = codec.unpack_results(packed, [(r[0], r[1]) for r in results], key)
    assert [r[0] for r in back] == list(range(1, 10)) and back == kept
    assert all(len(r[7]) < 60_000 for r in back)  # cut, and said
    assert any("could not be spilled" in r.getMessage() for r in caplog.records)
