"""Signed bundles (cloudkon/signing.py): with a signing key, bundles and results are signed,
and workers, replays and collectors refuse what is unsigned, forged or replayed; without
one, the worker says so once and everything works as before."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import boto3
import pytest
from aws_fixtures import messages_left, queue_url
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from submit_helpers import (
    BUCKET_SUFFIX,
    REGION,
    ROOT,
    chalice_project,
    deliver_upload,
    make_bucket,
)

from cloudkon.backends.dynamodb import DynamoLeaseStore
from cloudkon.backends.memory import MemoryBroker, MemoryLeaseStore
from cloudkon.codec import WireCodec, decode_bundle, encode_bundle, pack_results, unpack_results
from cloudkon.config import AwsConfig, FleetConfig, WorkerConfig
from cloudkon.errors import CodecError, SignatureError, UsageError
from cloudkon.limits import SQS_MAX_MESSAGE_BYTES
from cloudkon.model import SUCCEEDED, Bundle, ResultBundle, bundle_key
from cloudkon.signing import Signer, load_signer
from fleet.resources import _user_data
from submitter import client
from submitter.collect import Collector
from submitter.deployment import Deployment
from submitter.manifest import SUBMITTED, Manifest, MemoryManifests
from submitter.split import _fitting
from worker.daemon import Worker

KEY = "k1-" + "0123456789abcdef" * 4
OLD_KEY = "k0-" + "fedcba9876543210" * 4
WORKER_ARGS = ("--threads", 2, "--wait-seconds", 1, "--visibility-timeout", 4,
               "--liveness-seconds", 600)


def _signer(*keys: str, clock=time.time, window: float = 3600) -> Signer:
    return Signer([k.encode() for k in keys or (KEY,)], "test", window, clock)


def _bundle(job: str = "job-s", seq: int = 0, command: str = "echo hi") -> Bundle:
    return Bundle(job, seq, [(1, command)], sent_at=1.0)


def _result(line: int, out: str = "") -> tuple:
    return (line, "echo", SUCCEEDED, 0, None, 10.0, 11.0, out, "")


# --- the format, without AWS ------------------------------------------------------------------


def test_a_signed_bundle_decodes_as_signed_and_any_change_is_refused_as_forged():
    codec = WireCodec(signer=_signer())
    body = codec.encode_bundle(_bundle(), "out")
    bundle, reply_to = codec.decode_bundle(body)
    assert (bundle.job_id, bundle.tasks, reply_to) == ("job-s", [(1, "echo hi")], "out")
    # A reader without a key ignores the signature.
    assert decode_bundle(body)[0].tasks == [(1, "echo hi")]
    for forged in (body.replace("echo hi", "echo pwned"), body.replace('"job-s"', '"job-t"'),
                   body.replace('"seq":0', '"seq":1')):
        with pytest.raises(SignatureError, match="forged"):
            codec.decode_bundle(forged)
    with pytest.raises(SignatureError, match="unsigned"):
        codec.decode_bundle(encode_bundle(_bundle(), "out"))
    with pytest.raises(SignatureError, match="not one of this reader's keys"):
        WireCodec(signer=_signer(OLD_KEY)).decode_bundle(body)
    # A results message signed as such is no task bundle, and the other way round.
    results = codec.results_bodies(ResultBundle("job-s", 0, [_result(1)], 1.0, "w"))[0]
    assert codec.decode_results(results).results[0][0] == 1
    with pytest.raises(SignatureError, match="forged"):
        codec.decode_results(results.replace('"job":"job-s"', '"job":"job-t"'))


_SIGNED = WireCodec(signer=_signer()).encode_bundle(
    Bundle("job-p", 4, [(1, "echo 'a b'"), (7, "sleep 1")], 2.5, 2), "https://q/out")


@settings(max_examples=150, deadline=None)
@given(st.integers(0, len(_SIGNED) - 1), st.sampled_from(("flip", "insert", "delete")),
       st.characters(codec="ascii"))
def test_any_change_to_a_signed_bundle_is_refused(at, how, char):
    if how == "flip":
        assume(_SIGNED[at] != char)
        body = _SIGNED[:at] + char + _SIGNED[at + 1:]
    elif how == "insert":
        body = _SIGNED[:at] + char + _SIGNED[at:]
    else:
        body = _SIGNED[:at] + _SIGNED[at + 1:]
    with pytest.raises(CodecError):  # a SignatureError, or not even a message
        WireCodec(signer=_signer()).decode_bundle(body)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_any_other_body_is_refused_with_a_codec_error_and_nothing_else(body):
    with pytest.raises(CodecError):
        WireCodec(signer=_signer()).decode_bundle(body)


def test_a_bundle_older_than_the_replay_window_or_from_the_future_is_refused():
    now = [1_000_000.0]
    codec = WireCodec(signer=_signer(clock=lambda: now[0], window=600))
    body = codec.encode_bundle(_bundle(), "out")
    now[0] += 599
    assert codec.decode_bundle(body)[0].job_id == "job-s"
    now[0] += 2
    with pytest.raises(SignatureError, match="replayed: signed 601 s ago, older than the replay"
                                             " window of 600 s"):
        codec.decode_bundle(body)
    now[0] -= 601 + 301
    with pytest.raises(SignatureError, match="in the future"):
        codec.decode_bundle(body)


def test_keys_rotate_the_first_signs_and_the_previous_one_is_still_accepted():
    old = WireCodec(signer=_signer(OLD_KEY)).encode_bundle(_bundle(), "out")
    rotated = WireCodec(signer=_signer(KEY, OLD_KEY))
    assert rotated.decode_bundle(old)[0].job_id == "job-s"
    new = rotated.encode_bundle(_bundle(), "out")
    assert WireCodec(signer=_signer(KEY)).decode_bundle(new)[0].job_id == "job-s"
    with pytest.raises(SignatureError):
        WireCodec(signer=_signer(OLD_KEY)).decode_bundle(new)


def test_stored_results_are_sealed_for_their_lease_key():
    codec = WireCodec(signer=_signer())
    sealed, _ = codec.pack_results([_result(1, "out")], 10_000, "job-s#0")
    assert codec.unpack_results(sealed, [(1, "echo")], "job-s#0")[0][7] == "out"
    assert unpack_results(sealed)[0][7] == "out"  # a reader without a key cuts the seal off
    with pytest.raises(SignatureError, match="forged"):
        codec.unpack_results(sealed, [(1, "echo")], "job-t#0")  # moved to another bundle
    unsealed, _ = pack_results([_result(1, "out")], 10_000)
    with pytest.raises(SignatureError, match="unsigned"):
        codec.unpack_results(unsealed, [(1, "echo")], "job-s#0")
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(SignatureError, match="forged"):
        codec.unpack_results(tampered, [(1, "echo")], "job-s#0")


def test_a_bundle_split_to_fit_a_message_still_fits_once_signed():
    codec = WireCodec(signer=_signer())
    tasks = [(n, "echo " + "x" * 2000) for n in range(1, 400)]
    for part in _fitting(tasks, "job-big", "out", overhead=codec.bundle_overhead):
        assert len(codec.encode_bundle(part, "out")) <= SQS_MAX_MESSAGE_BYTES


def test_key_sources_that_cannot_serve_are_refused_in_one_line(tmp_path):
    short = tmp_path / "short"
    short.write_text("# a comment\n\ntoo-short\n")
    with pytest.raises(UsageError, match=r"line 3: a key has at least 32 characters"):
        load_signer(f"file:{short}")
    with pytest.raises(UsageError, match="No such file"):
        load_signer(f"file:{tmp_path / 'nosuch'}")
    with pytest.raises(UsageError, match=r"name a file \(file:/PATH\) or an SSM parameter"):
        load_signer("vault:/x")
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    with pytest.raises(UsageError, match="holds no key"):
        load_signer(f"file:{empty}")
    assert load_signer(None) is None and load_signer("") is None


def test_a_bad_key_ends_submit_and_worker_with_one_line_and_exit_2(cloudkon, write_workload,
                                                                   tmp_path):
    short = write_workload("short\n", name="short.key")
    for args in (("submit", "--direct", short), ("worker",)):
        proc = cloudkon(*args, "--prefix", "tnokey", "--region", REGION,
                        "--endpoint-url", "http://127.0.0.1:9", "--signing-key", f"file:{short}")
        assert proc.returncode == 2
        assert proc.stderr == (f"cloudkon: error: signing key file:{short}, line 1: a key has at"
                               " least 32 characters (make one with `openssl rand -hex 32`)\n")


def test_a_key_is_read_from_an_ssm_securestring(aws_config):
    name = f"/{aws_config.prefix}-signing-key"
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name=name, Value=f"{KEY}\n{OLD_KEY}\n", Type="SecureString")
    signer = load_signer(f"ssm:{name}", aws_config)
    assert signer.kid == _signer(KEY).kid and len(signer.kids) == 2
    with pytest.raises(UsageError, match="no such SSM parameter"):
        load_signer(f"ssm:/{aws_config.prefix}-nosuch", aws_config)


def test_a_takeover_ignores_partial_results_that_fail_their_check_and_runs_every_task(
        tmp_path, wait_until):
    broker = MemoryBroker()
    inbox = broker.create("in", dead_letter="in-dlq")
    broker.create("out")
    leases = MemoryLeaseStore()
    # A record given up by "another owner", claiming line 1 done: unsealed, so not believed.
    leases.claim("job-t#0", "forger/1", 60)
    unsealed, _ = pack_results([_result(1, "forged\n")], 10_000)
    leases.release("job-t#0", "forger/1", unsealed)
    ran = tmp_path / "ran"
    codec = WireCodec(signer=_signer())
    inbox.send_batch([codec.encode_bundle(
        Bundle("job-t", 0, [(1, f"echo 1 >> {ran}"), (2, f"echo 2 >> {ran}")]), "out")])
    worker = Worker(inbox, broker, leases, WorkerConfig("w", threads=1, wait_seconds=0.1),
                    codec=codec)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: ran.exists() and ran.read_text().split() == ["1", "2"],
                   what="both tasks run")
        stored = wait_until(lambda: (c := leases.lookup("job-t#0")).outcome == "COMPLETED" and c)
        results = codec.unpack_results(stored.results, None, "job-t#0")
        assert sorted((r[0], r[7]) for r in results) == [(1, ""), (2, "")]  # not "forged"
    finally:
        worker.stop(hard=True)
        thread.join(30)


def test_collect_drops_and_counts_results_messages_and_stored_results_that_fail_their_check():
    manifests = MemoryManifests()
    manifests.save(Manifest("job-c", SUBMITTED, "w.txt", 9.0, bundles=3, last_line=3)
                   .done(tasks=3))
    broker = MemoryBroker()
    out = broker.create("output")
    leases = MemoryLeaseStore()
    codec = WireCodec(signer=_signer())
    out.send_batch(codec.results_bodies(ResultBundle("job-c", 0, [_result(1, "ok\n")], 9.0))
                   + WireCodec().results_bodies(ResultBundle("job-c", 1, [_result(2)], 9.0)))
    for seq, line, packed in ((1, 2, pack_results([_result(2, "forged\n")], 10_000)[0]),
                              (2, 3, codec.pack_results([_result(3, "ok\n")], 10_000,
                                                        "job-c#1")[0])):  # another bundle's
        leases.claim(f"job-c#{seq}", "w/1", 60)
        leases.complete(f"job-c#{seq}", "w/1", packed)
    collection = Collector("job-c", out, manifests, leases, quiet_seconds=0,
                           codec=codec).run(timeout=1)
    assert not collection.complete and collection.missing_count == 2
    assert collection.summary.bad_signatures == 3  # one message, two stored bundles
    assert collection.summary.to_dict()["bad_signatures"] == 3


# --- workers, the splitter and collect on the moto server --------------------------------------


@pytest.fixture
def key_file(tmp_path) -> Path:
    path = tmp_path / "signing.key"
    path.write_text(KEY + "\n")
    return path


def _dead_letters(cloudkon, config) -> dict[str, dict]:
    listed = cloudkon("dlq", "list", "--prefix", config.prefix, "--json")
    assert listed.returncode == 0, listed.stderr
    return {d["source_id"]: d for d in json.loads(listed.stdout)}


def test_a_signing_worker_dead_letters_unsigned_forged_and_replayed_bundles_and_forged_stores(
        provisioned, sqs, dynamodb, cloudkon, start_worker, key_file, tmp_path, wait_until):
    config = provisioned
    ran = tmp_path / "ran"
    codec = WireCodec(signer=_signer())
    stale = WireCodec(signer=_signer(clock=lambda: time.time() - 120))

    def body(name: str, codec=codec, seq: int = 0) -> str:
        return codec.encode_bundle(Bundle(f"job-{name}", seq, [(1, f"echo {name} >> {ran}")]),
                                   config.output_queue)

    # A COMPLETED lease forged by whoever may write the table: results without a seal.
    leases = DynamoLeaseStore(dynamodb, config.lease_table)
    leases.claim(bundle_key("job-stored", 0), "forger/1", 60)
    unsealed, _ = pack_results([_result(1, "forged output\n")], 10_000)
    assert leases.complete(bundle_key("job-stored", 0), "forger/1", unsealed)
    url = queue_url(sqs, config.input_queue)
    sent = {name: sqs.send_message(QueueUrl=url, MessageBody=text)["MessageId"] for name, text in (
        ("unsigned", encode_bundle(Bundle("job-unsigned", 0, [(1, f"echo x >> {ran}")]),
                                   config.output_queue)),
        ("forged", body("forged").replace("echo forged", "echo evil")),
        ("replayed", body("replayed", stale)),
        ("stored", body("stored")),
        ("signed", body("signed")),
    )}
    worker = start_worker(config, *WORKER_ARGS, "--signing-key", f"file:{key_file}",
                          "--replay-window", 60, "--log-json")
    wait_until(lambda: messages_left(sqs, config.dead_letter_queue) == 4, timeout=60,
               what="four dead letters")
    letters = _dead_letters(cloudkon, config)
    assert "unsigned" in letters[sent["unsigned"]]["reason"]
    assert "forged" in letters[sent["forged"]]["reason"]
    assert "older than the replay window of 60 s" in letters[sent["replayed"]]["reason"]
    assert "not replayed: the stored results of job-stored#0 are unsigned" in \
        letters[sent["stored"]]["reason"]
    assert letters[sent["forged"]]["job_id"] == "job-forged"  # `dlq show` names the job
    wait_until(lambda: ran.exists() and ran.read_text() == "signed\n", what="the signed bundle run")
    lines = [json.loads(line) for line in worker.log.splitlines() if line.startswith("{")]
    refused = {line.get("message_id") for line in lines if " refused (" in line["message"]}
    assert refused == {sent["unsigned"], sent["forged"], sent["replayed"]}
    assert not any("no signing key" in line["message"] for line in lines)
    # Nothing of the refused was run or replayed: the only results are the signed bundle's.
    out = queue_url(sqs, config.output_queue)
    got = sqs.receive_message(QueueUrl=out, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    assert [codec.decode_results(m["Body"]).job_id for m in got["Messages"]] == ["job-signed"]
    # What the worker stored is sealed for its lease key.
    stored = leases.lookup(bundle_key("job-signed", 0)).results
    assert codec.unpack_results(stored, None, bundle_key("job-signed", 0))[0][7] == ""


def test_without_a_key_the_worker_warns_once_and_runs_bundles_as_before(
        provisioned, sqs, start_worker, tmp_path, wait_until):
    ran = tmp_path / "ran"
    signed = WireCodec(signer=_signer()).encode_bundle(
        Bundle("job-plain", 0, [(1, f"echo signed >> {ran}")]), provisioned.output_queue)
    sqs.send_message(QueueUrl=queue_url(sqs, provisioned.input_queue), MessageBody=signed)
    sqs.send_message(QueueUrl=queue_url(sqs, provisioned.input_queue), MessageBody=encode_bundle(
        Bundle("job-plain", 1, [(2, f"echo plain >> {ran}")]), provisioned.output_queue))
    worker = start_worker(provisioned, *WORKER_ARGS)
    wait_until(lambda: ran.exists() and sorted(ran.read_text().split()) == ["plain", "signed"],
               what="both bundles run")
    assert worker.log.count("no signing key configured") == 1


def test_signed_jobs_run_end_to_end_direct_and_through_the_lambda_and_collect_drops_forgeries(
        provisioned, sqs, cloudkon, start_worker, key_file, write_workload, tmp_path,
        wait_until):
    config = provisioned
    make_bucket(config)
    aws = ("--prefix", config.prefix, "--bucket-suffix", BUCKET_SUFFIX)
    key = ("--signing-key", f"file:{key_file}")
    workload = write_workload("echo one\necho two\necho three\n")

    # Direct: sent signed before any worker runs, so that forged results come first.
    direct = cloudkon("submit", *aws, *key, "--direct", workload)
    assert direct.returncode == 0, direct.stderr
    job_id = direct.stdout.strip()
    forger = WireCodec(signer=_signer(OLD_KEY))
    forged = [encode_results_body(job_id, None), encode_results_body(job_id, forger)]
    for text in forged:
        sqs.send_message(QueueUrl=queue_url(sqs, config.output_queue), MessageBody=text)
    start_worker(config, *WORKER_ARGS, *key)
    out = tmp_path / "direct.jsonl"
    collected = cloudkon("collect", *aws, *key, job_id, "-o", out, "--timeout", 60, "--json")
    assert collected.returncode == 0, collected.stderr
    summary = json.loads(collected.stdout)
    assert summary["succeeded"] == 3 and summary["bad_signatures"] == 2
    assert collected.stderr.count("its results are dropped") == 2
    records = {r["line"]: r["stdout"] for r in map(json.loads, out.read_text().splitlines())}
    assert records == {1: "one\n", 2: "two\n", 3: "three\n"}

    # Through S3 and the Lambda, whose stage names the key.
    job_id = "job-through-the-lambda"
    bucket = config.bucket(BUCKET_SUFFIX)
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=bucket, Key=f"workloads/{job_id}/{workload.name}", Body=workload.read_bytes())
    project = chalice_project(tmp_path / "chalice", config)
    settings = json.loads((project / ".chalice" / "config.json").read_text())
    settings["stages"]["dev"]["environment_variables"]["CLOUDKON_SIGNING_KEY"] = \
        f"file:{key_file}"
    (project / ".chalice" / "config.json").write_text(json.dumps(settings))
    deliver_upload(project, bucket, f"workloads/{job_id}/{workload.name}")
    signed = Deployment(replace(config, bucket_suffix=BUCKET_SUFFIX,
                                signing_key=f"file:{key_file}"))
    collection = client.collect(signed, job_id, timeout=60)
    assert collection.complete and collection.summary.counts[SUCCEEDED] == 3
    assert collection.summary.bad_signatures == 0


def encode_results_body(job_id: str, codec: WireCodec | None) -> str:
    """A results message for line 1 of ``job_id`` saying what the task never printed."""
    bundle = ResultBundle(job_id, 0, [(1, "echo one", SUCCEEDED, 0, None, 1.0, 2.0,
                                       "forged\n", "")], 1.0, "forger")
    return (codec or WireCodec()).results_bodies(bundle)[0]


def test_fleet_up_passes_an_ssm_signing_key_to_its_workers_and_refuses_other_sources():
    fleet = FleetConfig(threads=4, signing_key="ssm:/tk-signing-key")
    data = _user_data(ROOT, AwsConfig(prefix="tk"), "s3://b/dist/w.whl", fleet)
    assert 'CLOUDKON_WORKER_ARGS="--threads 4 --signing-key ssm:/tk-signing-key"\n' in data
    for source in ("file:/etc/key", "ssm:/k; reboot", "ssm:"):
        with pytest.raises(UsageError, match="ssm:NAME"):
            FleetConfig(signing_key=source)
