"""Operating jobs on the moto server, with real `cloudkon worker` subprocesses: status,
jobs, cancel, retry, resumed and interrupted collections, dead letters.

Workers run with short visibility timeouts (a heartbeat a second) so that a cancel is seen
within seconds. Tasks append their line number to a file, which tells what ran.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess

import pytest
from aws_fixtures import queue_url
from submit_helpers import read_results

from cloudkon.codec import encode_bundle
from cloudkon.model import Bundle

WORKER_ARGS = ("--threads", 2, "--visibility-timeout", 3, "--wait-seconds", 1,
               "--liveness-seconds", 600, "--drain-seconds", 5, "--task-timeout", 30)
TIMEOUT = "120"  # only ends a hang


@pytest.fixture
def fleet(provisioned, start_worker, wait_until):
    """The prefix's queues and table, and a worker serving them."""
    worker = start_worker(provisioned, *WORKER_ARGS)
    wait_until(lambda: "serving queue" in worker.log, timeout=60, what="the worker serving")
    return provisioned


def _aws(config) -> tuple[str, ...]:
    return ("--prefix", config.prefix)


def _ran(path) -> list[int]:
    return sorted(int(n) for n in path.read_text().split()) if path.exists() else []


def _submit(cloudkon, config, workload) -> str:
    proc = cloudkon("submit", *_aws(config), "--direct", "--bundle-ms", 0, workload)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_status_counts_what_collect_returns_and_retry_runs_only_the_failed_lines(
        fleet, cloudkon, write_workload, tmp_path, wait_until):
    ran = tmp_path / "ran"
    flag = tmp_path / "fixed"
    # Lines 2 and 4 fail until the flag file exists; the rest succeed.
    lines = [f"echo {n} >> {ran}; test -e {flag}" if n in (2, 4) else f"echo {n} >> {ran}"
             for n in range(1, 7)]
    workload = write_workload("\n".join(lines) + "\n")
    job_id = _submit(cloudkon, fleet, workload)

    def finished():
        proc = cloudkon("status", *_aws(fleet), job_id, "--json")
        return proc if json.loads(proc.stdout)["state"] == "done" else None

    status = wait_until(finished, timeout=60, what="the job done")
    assert status.returncode == 1  # tasks failed: not healthy
    counts = json.loads(status.stdout)
    out = tmp_path / "first.jsonl"
    collected = cloudkon("collect", *_aws(fleet), job_id, "-o", out, "--json", "--timeout",
                         TIMEOUT)
    summary = json.loads(collected.stdout)
    assert (counts["tasks"], counts["done"], counts["succeeded"], counts["failed"]) == \
        (summary["tasks"], summary["done"], summary["succeeded"], summary["failed"]) == (6, 6, 4, 2)
    assert counts["waiting"] == counts["running"] == 0
    text = cloudkon("status", *_aws(fleet), job_id).stdout
    assert f"job {job_id}: done" in text and "succeeded 4  failed 2" in text
    listed = cloudkon("jobs", *_aws(fleet))
    assert any(line.split()[0] == job_id and "done" in line and "6/6" in line
               for line in listed.stdout.splitlines()), listed.stdout

    flag.touch()
    ran.unlink()
    retried = cloudkon("retry", *_aws(fleet), job_id)
    assert retried.returncode == 0, retried.stderr
    assert f"job {job_id}: attempt 2: sent 2 failed tasks" in retried.stdout
    again = tmp_path / "second.jsonl"
    collected = cloudkon("collect", *_aws(fleet), job_id, "-o", again, "--timeout", TIMEOUT)
    assert collected.returncode == 0, collected.stderr + collected.stdout
    assert _ran(ran) == [2, 4]  # only the failed lines ran again
    results = read_results(again)  # fails on a task reported twice
    assert sorted(results) == list(range(1, 7))
    assert {line: r["status"] for line, r in results.items()} == dict.fromkeys(range(1, 7),
                                                                               "succeeded")
    assert results[2]["attempt"] == 2 and "attempt" not in results[1]
    assert {r["task_id"] for r in results.values()} == {f"{job_id}:{n}" for n in range(1, 7)}
    assert cloudkon("status", *_aws(fleet), job_id).returncode == 0  # healthy now
    nothing = cloudkon("retry", *_aws(fleet), job_id)
    assert (nothing.returncode, nothing.stdout.strip()) == (
        0, f"job {job_id}: no task failed; nothing to retry")


def test_cancel_mid_job_stops_the_running_task_and_starts_nothing_more(
        fleet, cloudkon, write_workload, tmp_path, wait_until):
    ran = tmp_path / "ran"
    lines = [f"echo {n} >> {ran}; /bin/sleep 30" for n in range(1, 9)]
    job_id = _submit(cloudkon, fleet, write_workload("\n".join(lines) + "\n"))
    wait_until(lambda: len(_ran(ran)) == 2, timeout=60, what="two tasks running")
    cancelled = cloudkon("cancel", *_aws(fleet), job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelled" in cancelled.stdout

    def stopped():
        progress = json.loads(cloudkon("status", *_aws(fleet), job_id, "--json").stdout)
        return progress if progress["running"] == 0 else None

    progress = wait_until(stopped, timeout=20, what="no task of the job running")
    assert progress["state"] == "cancelled" and progress["done"] == 0
    collected = cloudkon("collect", *_aws(fleet), job_id, "--timeout", TIMEOUT)
    assert collected.returncode == 1
    assert f"job {job_id} is cancelled: 8 of 8 tasks have no result" in collected.stderr
    assert "cancelled" in collected.stdout.splitlines()[0]
    assert cloudkon("status", *_aws(fleet), job_id).returncode == 1
    # Every bundle was deleted without running: nothing more started.
    wait_until(lambda: not _queued(fleet), timeout=30, what="the input queue empty")
    assert len(_ran(ran)) == 2
    assert cloudkon("cancel", *_aws(fleet), job_id).stdout.strip() == \
        f"job {job_id}: already cancelled"
    missing = cloudkon("cancel", *_aws(fleet), "job-nosuch")
    assert (missing.returncode, missing.stderr.strip()) == (
        2, "cloudkon: error: job job-nosuch does not exist (no manifest, no upload)")


def _queued(config) -> int:
    from aws_fixtures import messages_left
    import boto3

    return messages_left(boto3.client("sqs", region_name="us-east-1"), config.input_queue)


def test_collect_resumes_into_its_results_file_and_ctrl_c_says_how_to_pick_up(
        provisioned, cloudkon, start_cloudkon, start_worker, write_workload, tmp_path,
        wait_until):
    workload = write_workload("".join(f"echo task {n}\n" for n in range(1, 7)))
    job_id = _submit(cloudkon, provisioned, workload)
    out = tmp_path / "results.jsonl"
    # No worker yet: the collector waits; Ctrl-C ends it with the summary so far.
    collector = start_cloudkon("collect", *_aws(provisioned), job_id, "-o", out,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: out.exists(), what="the collector started")
    collector.send_signal(signal.SIGINT)
    stdout, stderr = collector.communicate(timeout=30)
    assert collector.returncode == 130, stderr
    assert stdout.splitlines()[0] == f"job {job_id}: interrupted"
    assert f"job {job_id} keeps running on the workers" in stderr
    command = stderr.splitlines()[-1].strip()
    assert command.startswith(f"cloudkon collect {job_id} --prefix {provisioned.prefix} ")
    assert command.endswith(f" -o {out}")

    start_worker(provisioned, *WORKER_ARGS)
    first = cloudkon("collect", *_aws(provisioned), job_id, "-o", out, "--timeout", TIMEOUT)
    assert first.returncode == 0, first.stderr
    # Cut the file to three results: a resumed collection adds only the three missing,
    # from the lease table (the queue has none left), with their commands.
    kept = out.read_text().splitlines()[:3]
    out.write_text("\n".join(kept) + "\n" + kept[-1][:10])  # and a last line cut short
    resumed = cloudkon("collect", *_aws(provisioned), job_id, "-o", out, "--timeout", TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr
    assert "3 results of job" in resumed.stderr
    results = read_results(out)
    assert sorted(results) == list(range(1, 7))
    assert out.read_text().splitlines()[:3] == kept
    assert all(r["command"] == f"echo task {n}" and r["stdout"] == f"task {n}\n"
               for n, r in results.items())
    assert "tasks               6   succeeded 6" in resumed.stdout


def test_dead_letters_are_listed_shown_and_redriven_where_they_run(
        provisioned, sqs, cloudkon, start_worker, tmp_path, wait_until):
    config = provisioned
    dlq = queue_url(sqs, config.dead_letter_queue)
    ran = tmp_path / "ran"
    body = encode_bundle(Bundle("dead-job", 3, [(7, f"echo 7 >> {ran}")]), config.output_queue)
    bundle_id = sqs.send_message(QueueUrl=dlq, MessageBody=body)["MessageId"]
    poison = sqs.send_message(QueueUrl=queue_url(sqs, config.input_queue),
                              MessageBody="not a bundle")["MessageId"]
    worker = start_worker(config, *WORKER_ARGS)
    wait_until(lambda: "dead-letter" in worker.log, what="the poison message dead-lettered")

    listed = cloudkon("dlq", "list", *_aws(config), "--json")
    assert listed.returncode == 0, listed.stderr
    letters = {d["id"]: d for d in json.loads(listed.stdout)}
    assert len(letters) == 2 and bundle_id in letters
    assert (letters[bundle_id]["job_id"], letters[bundle_id]["bundle"],
            letters[bundle_id]["tasks"]) == ("dead-job", 3, 1)
    [moved] = [d for d in letters.values() if d["source_id"] == poison]  # moved by the worker
    assert moved["job_id"] is None and "not JSON" in moved["reason"]
    assert moved["receive_count"] == 1
    text = cloudkon("dlq", "list", *_aws(config)).stdout
    assert text.splitlines()[0] == "2 dead letters"  # listing left them there

    shown = cloudkon("dlq", "show", *_aws(config), bundle_id)
    assert shown.returncode == 0, shown.stderr
    assert f"  7\techo 7 >> {ran}" in shown.stdout.splitlines()
    missing = cloudkon("dlq", "show", *_aws(config), "nosuch")
    assert missing.returncode == 2 and "no message nosuch" in missing.stderr
    assert cloudkon("dlq", "redrive", *_aws(config)).returncode == 2  # neither ids nor --all

    redriven = cloudkon("dlq", "redrive", *_aws(config), bundle_id)
    assert redriven.returncode == 0, redriven.stderr
    assert "1 messages redriven" in redriven.stdout
    wait_until(lambda: _ran(ran) == [7], what="the redriven bundle run")
    after = json.loads(cloudkon("dlq", "list", *_aws(config), "--json").stdout)
    assert [d["id"] for d in after] == [moved["id"]]


def test_status_watch_follows_a_running_job_to_its_end(
        fleet, cloudkon, start_cloudkon, write_workload, tmp_path, wait_until):
    gate = tmp_path / "gate"
    # Every task waits for the gate, so the job is still running when --watch starts.
    workload = write_workload("".join(
        f"sh -c 'while [ ! -e {gate} ]; do sleep 0.05; done'\n" for _ in range(4)))
    job_id = _submit(cloudkon, fleet, workload)
    watcher = start_cloudkon("status", *_aws(fleet), job_id, "--watch", "--json",
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = bytearray()  # read from the pipe itself: communicate() reads on from there

    def watched_running() -> bool:  # the watcher's own readings, as they come
        if select.select([watcher.stdout], [], [], 0.5)[0]:
            seen.extend(os.read(watcher.stdout.fileno(), 65536))
        lines = seen.decode().split("\n")[:-1]  # whole lines only
        return any(line.startswith("{") and json.loads(line)["state"] == "running"
                   for line in lines)

    # Not `status` in another process: --watch itself must have shown the job running.
    wait_until(watched_running, timeout=60, what="--watch showing the job running")
    gate.touch()
    stdout, stderr = watcher.communicate(timeout=60)

    assert watcher.returncode == 0, stderr
    readings = [json.loads(line) for line in (seen.decode() + stdout).splitlines()
                if line.startswith("{")]
    assert readings[-1]["state"] == "done" and readings[-1]["succeeded"] == 4
    assert any(r["state"] == "running" for r in readings[:-1])  # it watched, then ended


def test_ctrl_c_in_submit_wait_prints_the_summary_so_far_and_how_to_pick_up(
        provisioned, sqs, start_cloudkon, write_workload):
    workload = write_workload("".join(f"echo task {n}\n" for n in range(1, 4)))
    # No worker serves the prefix: the submit is sent, and then its collection waits.
    submit = start_cloudkon("submit", *_aws(provisioned), "--direct", "--wait", workload,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The job id is printed once the bundles are sent, as the collection starts.
    ready, _, _ = select.select([submit.stdout], [], [], 60)
    assert ready, "no job id printed"
    job_id = submit.stdout.readline().strip()
    inbox = queue_url(sqs, provisioned.input_queue)
    assert int(sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=[
        "ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"]) > 0
    submit.send_signal(signal.SIGINT)
    stdout, stderr = submit.communicate(timeout=30)

    assert submit.returncode == 130, stderr
    assert f"job {job_id}: interrupted" in stdout
    assert f"job {job_id} keeps running on the workers" in stderr
    assert stderr.splitlines()[-1].strip().startswith(f"cloudkon collect {job_id} --prefix")
    assert "Traceback" not in stderr



def test_status_without_a_job_lists_the_queues_and_the_workers_beating(
        fleet, cloudkon, wait_until):
    def listed():
        proc = cloudkon("status", *_aws(fleet), "--json")
        doc = json.loads(proc.stdout)
        return (proc, doc) if doc["workers"] else None

    proc, doc = wait_until(listed, timeout=60, what="the worker's first beat")
    assert proc.returncode == 0, proc.stderr
    [worker] = doc["workers"]
    assert worker["threads"] == 2 and worker["stale"] is False
    assert [q["role"] for q in doc["queues"]] == ["input", "dead letters", "output"]
    text = cloudkon("status", *_aws(fleet)).stdout
    assert "workers: 1" in text and f"{worker['worker_id']}" in text
