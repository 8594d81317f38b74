"""The contenders of the comparison runs: each runs a workload file to its end and says
how long it took, what it cost in AWS requests, and how much memory its client used.

Every contender runs as whole processes, timed from outside: interpreter start-up,
reading the file, executing every task, collecting every result. Contenders with a
fleet (the remote flavour, Celery) have their workers started and ready before the
clock starts, as a fleet is up before a job arrives, and stopped after it.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness import (
    PYTHON,
    THREAD_POOL_PEER,
    ContenderFailed,
    child_env,
    last_line,
    run_process,
)
from benchmarks.moto_server import MotoServer, RequestCounts
from benchmarks.workloads import WorkloadFiles

READY_SECONDS = 120.0  # a worker fleet that is not polling by then is broken
# Remote workers long-poll for this long. Shorter than SQS's 20 s, so that a fleet stops
# promptly after each run (a poll in flight is waited for); it adds about one empty
# receive per second per worker process to a run's requests.
FLEET_WAIT_SECONDS = 1


@dataclass
class Outcome:
    """One run of one contender on one workload."""

    wall: float  # seconds, from the client's start to its exit
    tasks: int
    succeeded: int
    peak_rss_kib: int | None = None  # of the client process
    requests: RequestCounts | None = None  # AWS requests, counted at the moto server
    summary: dict = field(default_factory=dict)  # what the contender printed

    @property
    def tasks_per_s(self) -> float:
        return self.tasks / self.wall if self.wall > 0 else float("inf")


@dataclass
class Context:
    """What contenders share in one session: a folder, and the moto server if started."""

    folder: Path
    moto: MotoServer | None = None

    def env(self) -> dict[str, str]:
        """Never real AWS: with the moto server, everything is pointed at it."""
        return child_env(self.moto.env() if self.moto is not None else None)


def _run_client(argv: list[str], ctx: Context, log: Path, stdin_path: Path | None = None,
                ) -> tuple[float, str, int]:
    """Run a client to its end through the peak-RSS launcher; (wall s, stdout, peak KiB)."""
    run = run_process(argv, cwd=ctx.folder, log=log, env=ctx.env(), stdin_path=stdin_path,
                      peak_rss=True)
    return run.wall, run.stdout, run.peak_rss_kib


def _set_up(argv: list[str], ctx: Context) -> None:
    """Make a contender's AWS resources, once, before it is timed."""
    proc = subprocess.run(argv, env=ctx.env(), cwd=ctx.folder, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise ContenderFailed(f"{' '.join(argv[:4])}... exited {proc.returncode}:"
                              f" {last_line(proc.stderr)}")


def _log_path(ctx: Context, name: str, files: WorkloadFiles) -> Path:
    return ctx.folder / f"{name}-{files.name}-{files.tasks}-{uuid.uuid4().hex[:6]}.log"


class Contender:
    """Runs workloads one way. ``slots``: tasks it runs at once."""

    name: str = "?"
    slots: int = 1
    remote: bool = False  # talks to the moto server (needs the bench extra)
    max_tasks: int | None = None  # too slow for more: runs the first max_tasks only
    slow_because: str = ""  # why, for the table's note

    def available(self) -> str | None:
        """None if this contender can run here, else why not."""
        return None

    def describe(self) -> str:
        raise NotImplementedError

    def start(self, files: WorkloadFiles, ctx: Context) -> None:
        """Get ready to run ``files``: start the fleet, if any. Not timed."""

    def run(self, files: WorkloadFiles, ctx: Context) -> Outcome:
        """Run ``files`` to the end: the timed part."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop what :meth:`start` started. Not timed."""


class LocalCloudKon(Contender):
    """`cloudkon run FILE --workers N --json`: the local flavour."""

    def __init__(self, workers: int = 4) -> None:
        self.slots = workers
        self.name = "cloudkon-local" if workers == 4 else f"cloudkon-local-w{workers}"

    def describe(self) -> str:
        return f"cloudkon run --workers {self.slots}"

    def run(self, files: WorkloadFiles, ctx: Context) -> Outcome:
        argv = [PYTHON, "-m", "cloudkon", "run", str(files.path), "--workers", str(self.slots),
                "--json", "--job-id", f"bench-{files.name}"]
        wall, out, rss = _run_client(argv, ctx, _log_path(ctx, self.name, files))
        summary = json.loads(out)
        return Outcome(wall, summary["tasks"], summary["succeeded"], rss, summary=summary)


class _Fleet:
    """Worker processes started before a run and stopped after it; their stderr is logged."""

    def __init__(self, argvs: list[list[str]], ready_text: str, ctx: Context, tag: str) -> None:
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        try:
            for i, argv in enumerate(argvs):
                log = ctx.folder / f"{tag}-worker{i}.log"
                with open(log, "wb") as f:
                    self.procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f,
                                                       stderr=subprocess.STDOUT, env=ctx.env(),
                                                       cwd=ctx.folder))
                self.logs.append(log)
            self._wait_ready(ready_text)
        except BaseException:  # not ready, or stopped while starting: none is left behind
            self.stop()
            raise

    def _wait_ready(self, text: str) -> None:
        deadline = time.monotonic() + READY_SECONDS
        waiting = list(zip(self.procs, self.logs))
        while waiting:
            proc, log = waiting[0]
            if text in log.read_text(errors="replace"):
                waiting.pop(0)
                continue
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ContenderFailed("a worker did not start:"
                                      f" {last_line(log.read_text(errors='replace'))}")
            time.sleep(0.05)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class RemoteCloudKon(Contender):
    """The remote flavour on the moto server: `cloudkon submit --direct --wait` with
    ``processes`` `cloudkon worker` daemons of ``threads`` threads each.

    ``naive``: the naive remote design, by settings only: one task per message
    (--bundle-size 1) and one message per call (--batch-size 1), for submit, workers and
    the collector alike.
    """

    remote = True

    def __init__(self, processes: int, threads: int, naive: bool = False,
                 max_tasks: int | None = None) -> None:
        self.processes, self.threads, self.naive = processes, threads, naive
        self.slots = processes * threads
        self.name = "remote-naive" if naive else f"remote-{processes}x{threads}"
        self.max_tasks = max_tasks
        self.slow_because = "8 requests a task, on moto"
        self._prefix: str | None = None
        self._fleet: _Fleet | None = None

    def describe(self) -> str:
        naive = " --bundle-size 1 --batch-size 1" if self.naive else ""
        return (f"cloudkon submit --direct --wait{naive}, {self.processes} cloudkon worker"
                f" x {self.threads} threads, on moto")

    def available(self) -> str | None:
        return _importable("moto", "the moto server (pip install 'cloudkon[bench]')")

    def _setup(self, ctx: Context) -> str:
        if self._prefix is None:
            prefix = f"bench{uuid.uuid4().hex[:8]}"
            _set_up([PYTHON, "-m", "cloudkon", "setup", "--prefix", prefix,
                     "--bucket-suffix", "bench"], ctx)
            self._prefix = prefix
        return self._prefix

    def start(self, files: WorkloadFiles, ctx: Context) -> None:
        assert ctx.moto is not None, "the remote flavour needs the moto server"
        prefix = self._setup(ctx)
        worker = [PYTHON, "-m", "cloudkon", "worker", "--prefix", prefix, "--no-create",
                  "--bucket-suffix", "bench", "--threads", str(self.threads),
                  "--wait-seconds", str(FLEET_WAIT_SECONDS), "--liveness-seconds", "3600",
                  *self._batch()]
        tag = f"{self.name}-{files.name}-{uuid.uuid4().hex[:6]}"
        self._fleet = _Fleet([worker] * self.processes, "serving queue", ctx, tag)
        ctx.moto.reset()

    def _batch(self) -> list[str]:
        return ["--batch-size", "1"] if self.naive else []

    def run(self, files: WorkloadFiles, ctx: Context) -> Outcome:
        submit = [PYTHON, "-m", "cloudkon", "submit", str(files.path), "--prefix", self._prefix,
                  "--direct", "--wait", "--json", *self._batch(),
                  *(["--bundle-size", "1"] if self.naive else [])]
        wall, out, rss = _run_client(submit, ctx, _log_path(ctx, self.name, files))
        requests = ctx.moto.counts()
        summary = json.loads(out.splitlines()[-1])  # the line after the job id
        return Outcome(wall, summary["tasks"], summary["succeeded"], rss, requests, summary)

    def stop(self) -> None:
        fleet, self._fleet = self._fleet, None
        if fleet is not None:
            fleet.stop()


class ThreadPoolPeer(Contender):
    """ThreadPoolExecutor(N).map over the lines (benchmarks/baselines/thread_pool_peer.py)."""

    def __init__(self, threads: int = 4) -> None:
        self.slots = threads
        self.name = "threadpool"

    def describe(self) -> str:
        return f"ThreadPoolExecutor({self.slots}).map"

    def run(self, files: WorkloadFiles, ctx: Context) -> Outcome:
        argv = [PYTHON, str(THREAD_POOL_PEER), str(files.path), str(self.slots)]
        wall, out, rss = _run_client(argv, ctx, _log_path(ctx, self.name, files))
        doc = json.loads(out)
        return Outcome(wall, doc["tasks"], doc["succeeded"], rss, summary=doc)


class XargsPeer(Contender):
    """`xargs -P N -I{} sh -c '{}' < FILE`, the shell version of the workload."""

    def __init__(self, jobs: int = 4) -> None:
        self.slots = jobs
        self.name = "xargs"

    def describe(self) -> str:
        return f"xargs -P {self.slots} -I{{}} sh -c '{{}}'"

    def available(self) -> str | None:
        return None if shutil.which("xargs") else "xargs is not installed"

    def run(self, files: WorkloadFiles, ctx: Context) -> Outcome:
        argv = ["xargs", "-P", str(self.slots), "-I{}", "sh", "-c", "{}"]
        wall, _, rss = _run_client(argv, ctx, _log_path(ctx, self.name, files), files.shell_path)
        return Outcome(wall, files.tasks, files.tasks, rss)  # exit 0: every command succeeded


class ParallelPeer(Contender):
    """GNU parallel: `parallel -j N < FILE`, the shell version of the workload."""

    def __init__(self, jobs: int = 4, max_tasks: int | None = None) -> None:
        self.slots = jobs
        self.name = "gnu-parallel"
        self.max_tasks = max_tasks
        self.slow_because = "about 3 ms of Perl a job"

    def describe(self) -> str:
        return f"parallel -j {self.slots}"

    def available(self) -> str | None:
        path = shutil.which("parallel")
        if path is None:
            return "GNU parallel is not installed (apt-get install parallel)"
        version = subprocess.run([path, "--version"], capture_output=True, text=True,
                                 stdin=subprocess.DEVNULL, check=False).stdout
        return None if "GNU parallel" in version else f"{path} is not GNU parallel"

    def run(self, files: WorkloadFiles, ctx: Context) -> Outcome:
        argv = ["parallel", "--will-cite", "-j", str(self.slots)]
        wall, _, rss = _run_client(argv, ctx, _log_path(ctx, self.name, files), files.shell_path)
        return Outcome(wall, files.tasks, files.tasks, rss)  # exit 0: every job succeeded


class CeleryPeer(Contender):
    """Celery with its SQS broker and DynamoDB results on the moto server
    (benchmarks/celery_peer.py): one worker of ``concurrency`` threads."""

    remote = True

    def __init__(self, concurrency: int = 4, max_tasks: int | None = None) -> None:
        self.slots = concurrency
        self.name = "celery-sqs"
        self.max_tasks = max_tasks
        self.slow_because = "5 requests a task, on moto"
        self._config = None
        self._fleet: _Fleet | None = None

    def describe(self) -> str:
        return f"Celery, SQS broker + DynamoDB results, 1 worker --pool threads -c {self.slots}, on moto"

    def available(self) -> str | None:
        return (_importable("moto", "the moto server (pip install 'cloudkon[bench]')")
                or _importable("celery", "Celery (pip install 'cloudkon[bench]')")
                or _importable("pycurl", "pycurl, which Celery's SQS transport needs"))

    def start(self, files: WorkloadFiles, ctx: Context) -> None:
        assert ctx.moto is not None, "Celery on SQS needs the moto server"
        from benchmarks import celery_peer

        self._config = celery_peer.PeerConfig(ctx.moto.url, f"celery-{uuid.uuid4().hex[:10]}")
        endpoint, queue = self._config.endpoint, self._config.queue
        _set_up(celery_peer.create_command(endpoint, queue), ctx)
        worker = [*celery_peer.worker_command(endpoint, queue, self.slots), "--loglevel", "INFO"]
        self._fleet = _Fleet([worker], " ready.", ctx, f"{self.name}-{files.name}-{queue}")
        ctx.moto.reset()

    def run(self, files: WorkloadFiles, ctx: Context) -> Outcome:
        from benchmarks import celery_peer

        argv = celery_peer.submit_command(self._config.endpoint, self._config.queue,
                                          str(files.path))
        wall, out, rss = _run_client(argv, ctx, _log_path(ctx, self.name, files))
        requests = ctx.moto.counts()
        doc = json.loads(out)
        return Outcome(wall, doc["tasks"], doc["succeeded"], rss, requests, doc)

    def stop(self) -> None:
        fleet, self._fleet = self._fleet, None
        if fleet is not None:
            fleet.stop()


def _importable(module: str, what: str) -> str | None:
    import importlib.util

    return None if importlib.util.find_spec(module) else f"{what} is not installed"
