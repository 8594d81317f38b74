"""`cloudkon bench` and the machinery of the comparison runs (benchmarks/).

The figures themselves are not checked (timings on a shared machine mean nothing in a
test); what is checked is what a user reads off the table: every contender ran the whole
workload or says why not, ratios are against the group's first row, and the request
accounting counts what each design really sends.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import uuid

import pytest
from conftest import wait_until

from benchmarks import prices
from benchmarks.moto_server import CountingApp, operation
from benchmarks.workloads import MIXED, WorkloadSpec, shell_line


def test_bench_compares_every_contender_on_one_workload(cloudkon):
    proc = cloudkon("bench", "--group", "compare-sleep10", "--tasks", 8, "--json", timeout=300)

    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    rows = {r["contender"]: r for r in doc["runs"]}
    assert set(rows) == {"threadpool", "cloudkon-local", "remote-1x4", "remote-2x2",
                         "remote-4x1", "remote-naive", "xargs", "gnu-parallel", "celery-sqs"}
    assert doc["machine"]["prices"].startswith("us-east-1")
    for name, row in rows.items():
        if name == "gnu-parallel" and row["note"].startswith("not run"):
            continue  # GNU parallel is optional
        assert row["tasks"] == 8, row
        assert row["baseline"] == "threadpool"
        assert row["ratio"] == pytest.approx(row["tasks_per_s"] / rows["threadpool"]["tasks_per_s"],
                                             rel=0.01)
        assert 0 < row["efficiency"] <= 1.05, row
    assert rows["threadpool"]["ratio"] == 1.0
    for name in ("remote-1x4", "remote-2x2", "remote-4x1", "remote-naive", "celery-sqs"):
        assert rows[name]["requests_per_1000"] > 0 and rows[name]["dollars_per_million"] > 0
    assert not rows["cloudkon-local"]["requests"]
    # One task per message and one message per call: every task and every result is a send
    # of its own. Bundled, the 8 tasks go out in a handful of batches.
    naive, bundled = rows["remote-naive"]["requests"], rows["remote-1x4"]["requests"]
    assert naive["sqs:SendMessageBatch"] == 16
    assert bundled["sqs:SendMessageBatch"] < 8
    assert naive["sqs:ReceiveMessage"] >= 16  # a receive per task, by worker and collector
    # Celery sends one message per task, through botocore or pycurl: the server counts both.
    assert rows["celery-sqs"]["requests"]["sqs:SendMessage"] == 8
    assert rows["celery-sqs"]["requests"]["sqs:ReceiveMessage"] >= 1
    assert "compare-sleep10" in proc.stderr  # progress, one line per row


def test_bench_table_names_the_baseline_and_the_prices(cloudkon):
    proc = cloudkon("bench", "--group", "scale-local-workers", timeout=120)

    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["group", "contender", "tasks"]
    assert any("local-w1" in line and "1.00x" in line and "(baseline local-w1)" in line
               for line in lines)
    assert any("local-w4" in line for line in lines)
    assert "checked 2026-11-25" in proc.stdout


@pytest.mark.parametrize("args, needle", [
    (["--group", "nope"], "--group: no group 'nope'"),
    (["--tasks", "0"], "--tasks"),
])
def test_bench_refuses_bad_options_in_one_line(cloudkon, args, needle):
    proc = cloudkon("bench", *args)

    assert proc.returncode == 2
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_bench_without_the_benchmarks_says_to_run_it_from_a_checkout(monkeypatch, capsys):
    """An installed wheel has no benchmarks package: one line and exit 2, no traceback."""
    from cloudkon.cli import main

    monkeypatch.setitem(sys.modules, "benchmarks", None)  # import of benchmarks fails

    assert main(["bench"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("cloudkon: error: bench: cannot import benchmarks"), err
    assert "./scripts/cloudkon bench" in err and "[bench]" in err


def test_sqs_bills_each_64_kib_chunk_and_dynamodb_each_kilobyte():
    assert prices.billed_units("sqs", "SendMessageBatch", 1000, 200) == 1
    assert prices.billed_units("sqs", "ReceiveMessage", 300, 200 * 1024) == 4
    assert prices.billed_units("dynamodb", "UpdateItem", 2500, 100) == 3
    assert prices.billed_units("dynamodb", "GetItem", 100, 5000) == 2
    assert prices.billed_units("dynamodb", "DescribeTable", 100, 5000) == 0
    # A million requests of each, at the dated prices.
    assert prices.cost({"sqs:ReceiveMessage": 1e6}) == pytest.approx(0.40)
    assert prices.cost({"dynamodb:UpdateItem": 1e6}) == pytest.approx(0.625)
    assert prices.cost({"s3:PutObject": 1e6, "s3:GetObject": 1e6}) == pytest.approx(5.4)


def _environ(method="POST", path="/", query="", target="", service="sqs", body=b""):
    return {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
            "HTTP_X_AMZ_TARGET": target, "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            "HTTP_AUTHORIZATION": "AWS4-HMAC-SHA256 Credential=testing/20261125/us-east-1/"
                                  f"{service}/aws4_request, SignedHeaders=host, Signature=x"}


@pytest.mark.parametrize("environ, expected", [
    (_environ(target="AmazonSQS.ReceiveMessage"), ("sqs", "ReceiveMessage")),
    (_environ(target="DynamoDB_20120810.UpdateItem", service="dynamodb"),
     ("dynamodb", "UpdateItem")),
    (_environ(body=b"Action=SendMessage&QueueUrl=x"), ("sqs", "SendMessage")),
    (_environ(method="GET", query="Action=GetCallerIdentity", service="sts"),
     ("sts", "GetCallerIdentity")),
    (_environ(method="PUT", path="/bucket/workloads/a b.txt", service="s3"), ("s3", "PutObject")),
    (_environ(method="GET", path="/bucket", query="list-type=2&prefix=x", service="s3"),
     ("s3", "ListObjectsV2")),
])
def test_the_moto_server_names_operations_as_botocore_does(environ, expected):
    body = environ["wsgi.input"].getvalue()
    assert operation(environ, body) == expected


def test_the_counting_server_passes_the_request_body_on_untouched():
    seen = []

    def app(environ, start_response):
        seen.append(environ["wsgi.input"].read())
        start_response("200 OK", [])
        return [b"x" * 70_000]

    counting = CountingApp(app)
    out = counting(_environ(target="AmazonSQS.ReceiveMessage", body=b'{"QueueUrl": "q"}'),
                   lambda *a: None)

    assert seen == [b'{"QueueUrl": "q"}'] and b"".join(out) == b"x" * 70_000
    snap = counting.snapshot()
    assert snap["requests"] == {"sqs:ReceiveMessage": 1}
    assert snap["units"] == {"sqs:ReceiveMessage": 2}  # 70,000 bytes: two 64 KiB chunks


def test_peers_that_use_a_shell_get_sleeps_in_seconds():
    assert shell_line("sleep 10") == "sleep 0.01"
    assert shell_line("sleep 0") == "sleep 0"
    assert shell_line("echo mixed") == "echo mixed"
    assert MIXED.sleep_seconds(10) is None  # not all sleeps: no efficiency
    two = WorkloadSpec("two", ("sleep 1", "sleep 2"), 0, 0, "")
    assert two.sleep_seconds(5) == pytest.approx(0.007)  # 1+2+1+2+1 ms


def _processes_marked(mark: str) -> list[str]:
    """Command lines of the live processes whose environment holds ``mark``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if mark.encode() not in f.read():
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                found.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:  # gone, or not ours to read
            continue
    return found


def test_bench_stopped_by_sigterm_leaves_no_process_behind(tmp_path):
    """Fleets, clients and the moto server all end with `cloudkon bench`."""
    mark = f"BENCH_TEST_MARK=sigterm-{uuid.uuid4().hex}"
    env = {**os.environ, mark.split("=")[0]: mark.split("=")[1]}
    err = tmp_path / "bench.err"
    with open(err, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cloudkon", "bench", "--group", "compare-sleep10",
             "--tasks", "200"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=f,
            env=env, start_new_session=True)
    try:
        wait_until(lambda: "remote-1x4:" in err.read_text(), timeout=120,
                   what="a remote row done")
        assert _processes_marked(mark)  # the next fleet, the moto server...
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 143
        wait_until(lambda: not _processes_marked(mark), timeout=30,
                   interval=0.2, what="every process of the bench gone")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for line in _processes_marked(mark):
            print("left behind:", line)


def test_table_lists_requests_per_1000_tasks_by_operation():
    from benchmarks.suite import Run, table

    runs = [Run("compare-x", "threadpool", "", tasks=500, wall_s=1.0, tasks_per_s=500.0,
                ratio=1.0, baseline="threadpool"),
            Run("compare-x", "remote-1x4", "", tasks=500, wall_s=2.0, tasks_per_s=250.0,
                ratio=0.5, requests={"sqs:SendMessageBatch": 1, "dynamodb:UpdateItem": 4},
                requests_per_1000=10.0, dollars_per_million=0.01, baseline="threadpool")]

    text = table(runs)

    assert "0.50x" in text and "(baseline threadpool)" in text
    line = next(x for x in text.splitlines() if x.startswith("compare-x remote-1x4 "))
    assert "SendMessageBatch 2.0" in line and "UpdateItem 8.0" in line


def test_a_contender_that_fails_stops_the_bench_with_one_line(cloudkon, tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "xargs").write_text("#!/bin/sh\necho 'first of two lines' >&2\n"
                                "echo 'xargs: broken on purpose' >&2\nexit 3\n")
    (fake / "xargs").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}

    proc = cloudkon("bench", "--group", "compare-true", "--tasks", 2, env=env, timeout=300)

    assert proc.returncode == 1
    *progress, last = proc.stderr.strip().splitlines()
    assert last.startswith("cloudkon: error: bench: xargs") and "exited 3" in last, proc.stderr
    assert last.endswith("xargs: broken on purpose")
    assert all(line.startswith("cloudkon: compare-true ") for line in progress), proc.stderr
    assert "Traceback" not in proc.stderr
