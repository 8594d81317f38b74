"""`cloudkon sandbox`, run as a user runs it: in one terminal (a subprocess), with the
remote commands in another (subprocesses given the environment it prints), through S3,
the Lambda handler of app.py, SQS and its workers; then Ctrl-C, after which nothing it
started runs on. It starts its own moto server: the session's is not used."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from aws_fixtures import _free_port

ROOT = Path(__file__).resolve().parent.parent


class SandboxProcess:
    """A `cloudkon sandbox` subprocess whose stdout is read as it comes."""

    def __init__(self, cwd: Path, *args: object) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CLOUDKON_"))}
        self.stderr_path = cwd / "sandbox.err"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cloudkon", "sandbox", *map(str, args)], cwd=cwd,
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def exports(self) -> dict[str, str]:
        return dict(re.fullmatch(r"export (\w+)=(.*)", line).groups()
                    for line in self.lines if line.startswith("export "))

    def worker_pids(self) -> list[int]:
        header = next(line for line in self.lines if "(pids " in line)
        return [int(p) for p in re.search(r"\(pids ([\d, ]+)\)", header).group(1).split(", ")]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _processes_naming(text: str) -> list[int]:
    """The processes whose command line holds ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry))
    return found


def test_sandbox_runs_submit_wait_through_s3_the_lambda_and_its_workers_and_ctrl_c_ends_it_all(
        tmp_path, cloudkon, write_workload, wait_until, process_gone):
    prefix = f"sbx{os.getpid()}"
    port = _free_port()
    sandbox = SandboxProcess(tmp_path, "--workers", 2, "--threads", 2, "--port", port,
                             "--prefix", prefix)
    try:
        wait_until(lambda: any("Ctrl-C" in line for line in sandbox.lines)
                   or sandbox.proc.poll() is not None, timeout=90, what="the sandbox ready")
        assert sandbox.proc.poll() is None, sandbox.stderr
        exported = sandbox.exports()
        assert exported == {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "sandbox",
            "AWS_SECRET_ACCESS_KEY": "sandbox", "CLOUDKON_PREFIX": prefix}
        pids = sandbox.worker_pids()
        assert len(pids) == 2

        # The other terminal: only what the sandbox printed, no AWS settings of its own.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CLOUDKON_"))}
        env.update(exported)
        workload = write_workload("".join(f"sleep {10 + n % 3}\n" for n in range(301)))
        proc = cloudkon("submit", workload, "--wait", "--output", tmp_path / "results.jsonl",
                        env=env, timeout=180)
        assert proc.returncode == 0, proc.stderr + sandbox.stderr
        assert "uploaded to s3://" in proc.stderr and "the Lambda splits it" in proc.stderr
        job_id = proc.stdout.splitlines()[0]
        assert f"job {job_id}: finished" in proc.stdout
        assert "tasks             301   succeeded 301" in proc.stdout
        # The summary of a remote job: both workers with their threads, the efficiency of a
        # sleep workload, the wall time from the split's start with the upload's wait apart.
        assert "tasks/s with 2 workers, 4 threads" in proc.stdout
        assert re.search(r"^  efficiency \d+\.\d%", proc.stdout, re.M), proc.stdout
        assert re.search(r"^  upload waited \d+\.\d{3} s for the split \(not in the wall"
                         r" time\)$", proc.stdout, re.M), proc.stdout
        results = (tmp_path / "results.jsonl").read_text().splitlines()
        assert len(results) == 301
        assert f"job {job_id}: splitting s3://" in sandbox.stderr  # the Lambda's own log line

        sandbox.proc.send_signal(signal.SIGINT)
        assert sandbox.proc.wait(60) == 130
        for pid in pids:
            wait_until(lambda pid=pid: process_gone(pid), timeout=30, what=f"worker {pid} gone")
        assert _processes_naming(f"--prefix {prefix}") == []
        with socket.socket() as probe:  # its moto server went with it
            assert probe.connect_ex(("127.0.0.1", port)) != 0
    finally:
        sandbox.kill()
        for pid in _processes_naming(f"--prefix {prefix}"):
            os.kill(pid, signal.SIGKILL)


def test_sandbox_on_a_port_in_use_says_so_in_one_line(tmp_path, cloudkon):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = cloudkon("sandbox", "--port", port, "--workers", 0, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"cloudkon: error: sandbox: cannot listen on 127.0.0.1:{port}")
    assert proc.stderr.count("\n") == 1, proc.stderr
