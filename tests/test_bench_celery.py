"""The Celery peer of the benchmarks (benchmarks/celery_peer.py): a worker subprocess
and a submit subprocess on the session's moto server, told the endpoint only by
``--endpoint`` (AWS_ENDPOINT_URL is taken out of their environment)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid

import pytest

from benchmarks.celery_peer import (
    PeerConfig,
    create_resources,
    delete_resources,
    run_line,
    submit_command,
    worker_command,
)

SUBMIT_TIMEOUT_SECONDS = 120.0
SHUTDOWN_DEADLINE_SECONDS = 30.0


def test_sleep_line_sleeps_in_process_and_succeeds():
    outcome = run_line("sleep 10")
    assert outcome["exit_code"] == 0
    assert outcome["end"] - outcome["start"] >= 0.010


def test_shell_line_returns_its_exit_code():
    assert run_line("exit 3")["exit_code"] == 3
    assert run_line("true")["exit_code"] == 0


def test_sleep_line_in_seconds_is_refused():
    with pytest.raises(ValueError):
        run_line("sleep 1s")


@pytest.fixture
def peer(moto_server):
    config = PeerConfig(moto_server, f"celery-{uuid.uuid4().hex[:10]}")
    create_resources(config)
    yield config
    delete_resources(config)


@pytest.fixture
def peer_env(moto_server) -> dict[str, str]:
    """The environment's fake credentials and region, but no endpoint: a request that does
    not go to ``--endpoint`` goes to AWS, which is unreachable here, and fails."""
    env = dict(os.environ)
    for name in [n for n in env if n.startswith("AWS_ENDPOINT_URL")]:
        del env[name]
    return env


def test_workload_runs_on_moto_and_worker_stops_on_sigterm(peer, peer_env, tmp_path):
    lines = ["sleep 0"] * 20 + ["sleep 10"] * 15 + ["true"] * 14 + ["exit 3"]
    workload = tmp_path / "mixed.txt"
    workload.write_text("# a mixed workload\n\n" + "\n".join(lines) + "\n")
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(worker_command(peer.endpoint, peer.queue, 2),
                                  stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, env=peer_env)
    try:
        done = subprocess.run(submit_command(peer.endpoint, peer.queue, str(workload)),
                              capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=SUBMIT_TIMEOUT_SECONDS, env=peer_env)
        assert done.stdout, done.stderr
        outcome = json.loads(done.stdout)
        assert outcome["tasks"] == 50
        assert outcome["succeeded"] == 49
        assert outcome["failed"] == 1
        assert outcome["wall_seconds"] > 0
        assert done.returncode == 1  # not every task succeeded

        worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(SHUTDOWN_DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker still running {SHUTDOWN_DEADLINE_SECONDS} s after SIGTERM:"
                        f" {log_path.read_text(errors='replace')[-2000:]}")
        assert code == 0, log_path.read_text(errors="replace")[-2000:]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
