"""End to end on the moto server: submit (S3 upload -> the Lambda, or --direct) -> input queue
-> two real `cloudkon worker` subprocesses -> output queue -> `cloudkon collect`.

The Lambda runs in this process, driven by chalice.test.Client (moto runs Lambdas only in
Docker). Results are compared task by task with `cloudkon run` on the same file.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter

import pytest
from aws_fixtures import messages_left
from submit_helpers import (
    BUCKET_SUFFIX,
    chalice_project,
    deliver_upload,
    make_bucket,
    mixed_workload,
    outcome,
    read_results,
)

from cloudkon.model import FAILED, SUCCEEDED, TIMED_OUT
from submitter.collect import Collector
from submitter.deployment import Deployment

E2E_TASKS = 10_000
TASK_TIMEOUT = "1"
COLLECT_TIMEOUT = "600"  # only ends a hang


@pytest.fixture
def remote(provisioned, start_worker, wait_until):
    """The prefix's resources, its bucket and two workers serving it."""
    make_bucket(provisioned)
    workers = [start_worker(provisioned, "--threads", 4, "--task-timeout", TASK_TIMEOUT,
                            "--wait-seconds", 5, "--visibility-timeout", 6) for _ in range(2)]
    wait_until(lambda: all("serving queue" in w.log for w in workers), timeout=60,
               what="both workers serving")
    return provisioned


def _aws(config) -> tuple[str, ...]:
    return ("--prefix", config.prefix, "--bucket-suffix", BUCKET_SUFFIX)


def _counts_line(summary: str) -> str:
    return next(line for line in summary.splitlines() if line.strip().startswith("tasks"))


@pytest.fixture
def local_run(cloudkon):
    """`cloudkon run` of a workload: its results by line, and its summary's counts line."""

    def run(workload) -> tuple[dict, str]:
        out = workload.with_suffix(".local.jsonl")
        proc = cloudkon("run", "--task-timeout", TASK_TIMEOUT, "-w", 4, "-o", out, workload,
                        timeout=600)
        assert proc.returncode == 1, proc.stderr  # some tasks fail and time out
        return read_results(out), _counts_line(proc.stdout)

    return run


def _assert_same_results(remote_results: dict, local_results: dict, job_id: str) -> None:
    assert sorted(remote_results) == sorted(local_results)
    differ = [line for line in local_results
              if outcome(remote_results[line]) != outcome(local_results[line])]
    assert not differ, [(outcome(remote_results[n]), outcome(local_results[n])) for n in differ[:5]]
    assert {r["task_id"] for r in remote_results.values()} == {
        f"{job_id}:{line}" for line in local_results}
    statuses = {r["status"] for r in remote_results.values()}
    assert statuses == {SUCCEEDED, FAILED, TIMED_OUT}


def test_an_upload_split_by_the_lambda_is_run_by_two_workers_and_collected(
        remote, write_workload, local_run, cloudkon, tmp_path):
    workload = write_workload(mixed_workload(E2E_TASKS), name="mixed work+load ü.txt")
    local_results, local_counts = local_run(workload)
    submitted = cloudkon("submit", *_aws(remote), workload)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    key = f"workloads/{job_id}/{workload.name}"
    deliver_upload(chalice_project(tmp_path / "chalice", remote), remote.bucket(BUCKET_SUFFIX), key)

    out = tmp_path / "remote.jsonl"
    collected = cloudkon("collect", *_aws(remote), job_id, "-o", out, "--timeout",
                         COLLECT_TIMEOUT, timeout=900)
    assert collected.returncode == 1, collected.stderr  # some tasks fail and time out
    remote_results = read_results(out)
    _assert_same_results(remote_results, local_results, job_id)
    assert _counts_line(collected.stdout) == local_counts
    assert len(local_results) == E2E_TASKS + 1
    assert len({r["worker"] for r in remote_results.values()}) == 2


def test_submit_direct_wait_runs_and_collects_like_cloudkon_run(
        remote, write_workload, local_run, cloudkon, tmp_path):
    workload = write_workload(mixed_workload(E2E_TASKS))
    local_results, local_counts = local_run(workload)
    out = tmp_path / "remote.jsonl"
    proc = cloudkon("submit", *_aws(remote), "--direct", "--wait", "-o", out, "--timeout",
                    COLLECT_TIMEOUT, workload, timeout=900)
    assert proc.returncode == 1, proc.stderr
    job_id = proc.stdout.splitlines()[0]
    _assert_same_results(read_results(out), local_results, job_id)
    assert _counts_line(proc.stdout) == local_counts
    assert re.search(r"submit to last result +[0-9.]+ s", proc.stdout), proc.stdout

    # The results are all taken; a second collector reads them back from the lease table.
    again = Collector(job_id, *_backends(remote), quiet_seconds=0).run(timeout=2)
    assert again.complete and again.recovered == len(local_results)
    expected = Counter(r["status"] for r in local_results.values())
    assert {s: n for s, n in again.summary.counts.items() if n} == dict(expected)


def _backends(config) -> tuple:
    deployment = Deployment(config)
    return deployment.output_queue, deployment.manifests, deployment.leases


def test_two_jobs_collected_at_the_same_time_get_exactly_their_own_results(
        remote, write_workload, cloudkon, start_cloudkon, tmp_path):
    jobs = {}
    for name, tasks in (("a", 600), ("b", 900)):
        workload = write_workload("".join(f"echo {name}{n}\n" if n % 50 == 0 else "sleep 1\n"
                                          for n in range(tasks)), name=f"{name}.txt")
        proc = cloudkon("submit", *_aws(remote), "--direct", workload)
        assert proc.returncode == 0, proc.stderr
        jobs[name] = (proc.stdout.strip(), tasks)
    collectors = {
        name: start_cloudkon("collect", *_aws(remote), job_id, "-o", tmp_path / f"{name}.jsonl",
                             "--timeout", COLLECT_TIMEOUT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        for name, (job_id, _) in jobs.items()
    }
    for name, proc in collectors.items():
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        job_id, tasks = jobs[name]
        results = read_results(tmp_path / f"{name}.jsonl")
        assert sorted(results) == list(range(1, tasks + 1))
        assert {r["job_id"] for r in results.values()} == {job_id}
        assert results[1]["stdout"] == f"{name}0\n"


def test_an_upload_event_delivered_twice_runs_no_task_twice(
        remote, write_workload, cloudkon, tmp_path, sqs, wait_until):
    ran = tmp_path / "ran.txt"
    workload = write_workload(mixed_workload(400, ran_file=ran), name="twice.txt")
    submitted = cloudkon("submit", *_aws(remote), workload)
    job_id = submitted.stdout.strip()
    project = chalice_project(tmp_path / "chalice", remote)
    deliver_upload(project, remote.bucket(BUCKET_SUFFIX), f"workloads/{job_id}/twice.txt",
                   times=2)

    out = tmp_path / "remote.jsonl"
    collected = cloudkon("collect", *_aws(remote), job_id, "-o", out, "--timeout",
                         COLLECT_TIMEOUT, timeout=900)
    assert collected.returncode == 1, collected.stderr
    results = read_results(out)  # fails on a task reported twice
    assert len(results) == 401
    # Every copy of every bundle handled (run once, then replayed) before the file is read.
    wait_until(lambda: messages_left(sqs, remote.input_queue) == 0, timeout=120,
               what="input queue drained")
    shell_lines = sorted(int(n) for n in ran.read_text().split())
    expected = sorted(line for line, r in results.items() if "ran.txt" in r["command"])
    assert shell_lines == expected and len(expected) > 10


def test_collect_names_what_is_wrong_in_one_line(remote, cloudkon, write_workload, tmp_path):
    workload = write_workload("sleep 0\n")
    cases = [
        (("collect", *_aws(remote), "job-20990101T000000-abcdef"),
         "cloudkon: error: job job-20990101T000000-abcdef does not exist (no manifest, no upload)"),
        (("collect", "--prefix", "tnosuch", "job-x"),
         "cloudkon: error: queue tnosuch-output: it does not exist; is the prefix 'tnosuch' right?"
         " To make its deployment, run `cloudkon setup --prefix tnosuch`"),
        (("submit", "--prefix", "tnosuch", "--direct", workload),
         "cloudkon: error: queue tnosuch-input: it does not exist; is the prefix 'tnosuch' right?"
         " To make its deployment, run `cloudkon setup --prefix tnosuch`"),
        (("submit", "--prefix", remote.prefix, "--bucket-suffix", "nosuch", workload),
         f"cloudkon: error: upload {workload} to bucket {remote.prefix}-workloads-nosuch: it does"
         f" not exist; is the prefix '{remote.prefix}' right? To make its deployment, run"
         f" `cloudkon setup --prefix {remote.prefix} --bucket-suffix nosuch`"),
        (("submit", "--prefix", "tnosuch", workload),
         "cloudkon: error: queue tnosuch-input: it does not exist; is the prefix 'tnosuch' right?"
         " To make its deployment, run `cloudkon setup --prefix tnosuch`"),
        (("submit", *_aws(remote), write_workload(b"", name="empty.txt")),
         f"cloudkon: error: {tmp_path / 'empty.txt'}: is empty: no tasks to run"),
        (("submit", *_aws(remote), "--direct", write_workload(b"\x00\x01\x02" * 100, name="b.bin")),
         f"cloudkon: error: {tmp_path / 'b.bin'}: is not a text workload (binary data); a"
         " workload is UTF-8 text, one task per line"),
    ]
    for args, message in cases:
        proc = cloudkon(*args)
        assert (proc.returncode, proc.stderr.strip()) == (2, message)


def test_submit_without_credentials_says_so(cloudkon, write_workload, tmp_path, moto_server):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_DEFAULT_REGION="us-east-1", AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_EC2_METADATA_DISABLED="true",
               AWS_ENDPOINT_URL=moto_server)
    proc = cloudkon("submit", "--direct", write_workload("sleep 0\n"), env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("cloudkon: error: no AWS credentials found")

