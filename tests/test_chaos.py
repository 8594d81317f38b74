"""Chaos soak (slow; `./scripts/test -m slow`): workers are killed with SIGKILL and replaced
while a job runs against the moto server. Every task still gets exactly one result, and
every shell task ran at least once (a task killed mid-run, or finished but not yet
recorded, runs again on the worker that takes its bundle over)."""

from __future__ import annotations

import random
import subprocess
import threading

import pytest
from submit_helpers import read_results

pytestmark = pytest.mark.slow

TASKS = 3000
KILLS = 8


@pytest.mark.timeout(900)
def test_workers_killed_at_random_lose_no_task_and_report_each_once(
        provisioned, start_worker, cloudkon, start_cloudkon, write_workload, tmp_path):
    ran = tmp_path / "ran.txt"
    lines = [f"echo {n} >> {ran}" if n % 10 == 0 else "sleep 20" for n in range(1, TASKS + 1)]
    workload = write_workload("\n".join(lines) + "\n")
    aws = ("--prefix", provisioned.prefix)
    submitted = cloudkon("submit", *aws, "--direct", "--bundle-ms", "200", workload)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()

    worker_args = ("--threads", 4, "--visibility-timeout", 4, "--wait-seconds", 1)
    workers = [start_worker(provisioned, *worker_args) for _ in range(3)]
    out = tmp_path / "results.jsonl"
    collector = start_cloudkon("collect", *aws, job_id, "-o", out, "--timeout", 600,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    done = threading.Event()
    rng = random.Random(7)
    kills = 0
    waiter = threading.Thread(target=lambda: (collector.wait(), done.set()), daemon=True)
    waiter.start()
    # The chaos: at random moments (not waiting for anything), a worker dies and another starts.
    while kills < KILLS and not done.wait(rng.uniform(1.0, 3.0)):
        victim = workers.pop(rng.randrange(len(workers)))
        victim.kill()
        workers.append(start_worker(provisioned, *worker_args))
        kills += 1
    stdout, stderr = collector.communicate(timeout=600)

    assert collector.returncode == 0, stderr.decode()
    results = read_results(out)  # fails on a task reported twice
    assert sorted(results) == list(range(1, TASKS + 1))
    assert all(r["status"] == "succeeded" for r in results.values())
    shell_lines = {int(n) for n in ran.read_text().split()}
    assert shell_lines == {n for n in range(1, TASKS + 1) if n % 10 == 0}
    assert kills >= 3, "the job ended before the chaos had begun: make it longer"
