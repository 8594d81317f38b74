"""The ``cloudkon`` command line.

Every failure a user can cause ends as one line on stderr and an exit code: 0 every task
succeeded, 1 a task failed or timed out (or a line was bad), 2 usage and input errors,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import shlex
import signal
import sys
import threading

import click

from cloudkon import __version__, logs
from cloudkon.config import (
    DEFAULT_PREFIX,
    AwsConfig,
    FleetConfig,
    RunConfig,
    SandboxConfig,
    WorkerConfig,
)
from cloudkon.errors import CloudKonError, OutputClosed, UsageError
from cloudkon.limits import (
    DEFAULT_BUNDLE_MS,
    DEFAULT_BUNDLE_SIZE,
    DEFAULT_DRAIN_SECONDS,
    DEFAULT_FLEET_INSTANCES,
    DEFAULT_FLEET_MAX,
    DEFAULT_FLEET_MIN,
    DEFAULT_INSTANCE_TYPE,
    DEFAULT_LIVENESS_SECONDS,
    DEFAULT_REMOTE_BUNDLE_MS,
    DEFAULT_REMOTE_BUNDLE_SIZE,
    DEFAULT_REPLAY_WINDOW_SECONDS,
    DELETE_BATCH_SECONDS,
    DEFAULT_SENDERS,
    DEFAULT_TAIL_BYTES,
    MAX_TAIL_BYTES,
    DEFAULT_TASK_TIMEOUT,
    DEFAULT_TASKS_PER_WORKER,
    DEFAULT_VISIBILITY_SECONDS,
    MAX_BUNDLE_TASKS,
    MAX_LOCAL_WORKERS,
    MAX_REPORTED_BAD_LINES,
    SANDBOX_PORT,
    SCALE_INTERVAL_SECONDS,
    SQS_LONG_POLL_SECONDS,
    SQS_MAX_BATCH,
    SQS_MAX_VISIBILITY_SECONDS,
    WORKER_WAIT_SECONDS,
)
from cloudkon.model import check_job_id, new_job_id

log = logging.getLogger("cloudkon")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_YOUNG_COLLECTION_OBJECTS = 50_000  # see console()
# Bare `cloudkon`: click 8.2 and later raise this (a UsageError) to show the help; 8.1
# printed it and exited 0, as `cloudkon` does on either.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def console() -> int:
    """Entry point of the console script and of ``python -m cloudkon``: :func:`main` in a
    process of its own, tuned for it."""
    # A run makes a few small tuples per task (its line, its result) that live as long as
    # their bundle, thousands at a time: with the default threshold (a young collection
    # every 700 new objects) the collector took a fifth of a `sleep 0` job, mostly moving
    # live results from one generation to the next. Cycles are rare here; they are still
    # collected, later.
    gc.set_threshold(_YOUNG_COLLECTION_OBJECTS, *gc.get_threshold()[1:])
    code = main()
    # The process ends now: spare its exit the last collection, a walk of all it loaded.
    gc.freeze()
    return code


def main(argv: list[str] | None = None) -> int:
    """The command line, in this process; returns the exit code instead of raising."""
    try:
        code = cli.main(args=argv, prog_name="cloudkon", standalone_mode=False)
    except _NO_ARGS_IS_HELP as exc:
        click.echo(exc.ctx.get_help())
        return EXIT_OK
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _error(f"{exc.format_message().rstrip('.')}{hint}")
        return EXIT_USAGE
    except click.ClickException as exc:
        _error(exc.format_message())
        return exc.exit_code
    except click.Abort:
        return 128 + signal.SIGINT
    except (OutputClosed, BrokenPipeError):
        # stdout closed early (`cloudkon run ... -o - | head`): not an error of ours.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep the interpreter's flush quiet
        return OutputClosed.exit_code
    except CloudKonError as exc:
        _error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    return code if isinstance(code, int) else EXIT_OK


class _Number(click.FloatRange):
    """A float in a range, and not NaN (which every comparison, and so the range, lets by)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number", param, ctx)
        return number


def _error(message: str) -> None:
    click.echo(f"cloudkon: error: {message}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cloudkon")
@click.option("-v", "--verbose", count=True, help="More log lines on stderr (-vv for debug).")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """CloudKon: run the tasks of a workload file on a pool of workers.

    A workload has one task per line: `sleep N` sleeps N MILLISECONDS inside the worker
    (CloudKon's benchmark task); any other line is run with /bin/sh -c.
    """
    ctx.obj = verbose
    if ctx.invoked_subcommand != "worker":  # the daemon sets up its own log lines
        logs.configure(verbose)


# --- The local flavour ----------------------------------------------------------------------


@cli.command()
@click.argument("workload", metavar="WORKLOAD")
@click.option("-w", "--workers", type=click.IntRange(1, MAX_LOCAL_WORKERS),
              default=lambda: os.cpu_count() or 1, show_default="number of CPUs",
              help="Worker threads executing tasks.")
@click.option("-o", "--output", metavar="FILE",
              help="Write one JSON line per task to FILE ('-' for stdout).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--task-timeout", type=_Number(min=0), default=DEFAULT_TASK_TIMEOUT,
              show_default=True, metavar="SECONDS",
              help="Time limit of each task; 0 for none. A task over it is timed_out.")
@click.option("--strict", is_flag=True,
              help="Check every line first; if any line cannot be a task, run nothing (exit 2).")
@click.option("--job-id", metavar="ID", help="Name the job (task ids are ID:LINE). Default: generated.")
@click.option("--bundle-size", type=click.IntRange(min=1), default=DEFAULT_BUNDLE_SIZE,
              show_default=True, help="Most tasks per bundle through the queues.")
@click.option("--bundle-ms", type=_Number(min=0), default=DEFAULT_BUNDLE_MS,
              show_default=True, metavar="MS",
              help="A bundle closes once its tasks add up to about MS of work (a sleep N"
                   " counts N, a shell command 20): shell tasks travel alone by default.")
@click.option("--tail-bytes", type=click.IntRange(min=0), default=DEFAULT_TAIL_BYTES,
              show_default=True, help="How much of the end of stdout and of stderr a result keeps"
                                      f" (at most {MAX_TAIL_BYTES}).")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar on stderr. Default: only when stderr is a terminal.")
@click.option("--resume", metavar="FILE",
              help="Run only the tasks without a result in the results file FILE (a"
                   " cancelled one counts as none) and append to it; the job id is FILE's.")
def run(workload: str, workers: int, output: str | None, as_json: bool, task_timeout: float,
        strict: bool, job_id: str | None, bundle_size: int, bundle_ms: float, tail_bytes: int,
        progress: bool | None, resume: str | None) -> int:
    """Run the tasks of WORKLOAD ('-' for stdin) on local worker threads and summarise.

    Exit code: 0 all tasks succeeded; 1 a task failed or timed out, or a line was bad;
    2 usage or input error; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM).
    """
    from cloudkon.results import read_for_resume
    from cloudkon.workload import local_source
    from local.runner import LocalRunner

    resumed = None
    if resume is not None:
        if output is not None and output != resume:
            raise click.UsageError("--resume FILE appends to FILE: leave out --output")
        resumed = read_for_resume(resume, check_job_id(job_id) if job_id else None)
        job_id, output = resumed.job_id or job_id, resume
    job_id = new_job_id("local") if job_id is None else check_job_id(job_id)
    with local_source(workload) as (name, opener):
        config = RunConfig(
            workload=name, job_id=job_id, workers=workers, task_timeout=task_timeout or None,
            bundle_size=bundle_size, bundle_ms=bundle_ms, tail_bytes=tail_bytes, strict=strict,
        )
        reporter = _BadLineReporter(name, strict)
        runner = LocalRunner(config, on_bad_line=reporter, opener=opener, resume=resumed)
        runner.check()
        if resumed is not None:
            click.echo(f"cloudkon: {resume}: {len(resumed.lines):,} tasks have a result"
                       " already; running the others", err=True)
        with _Sinks(output, progress, runner.workload.line_count, resumed) as sinks:
            runner.on_results, runner.on_total = sinks.on_results, sinks.on_total
            summary = runner.run()
    reporter.finish()
    sinks.print_summary(summary, as_json)
    if summary.interrupted:
        return 128 + (runner.signal_received or signal.SIGINT)
    return EXIT_OK if summary.ok else EXIT_FAILED


class _BadLineReporter:
    """Logs the first bad lines one by one and counts the rest. With --strict nothing is
    skipped (nothing runs at all): the lines are only named."""

    def __init__(self, workload: str, strict: bool = False) -> None:
        self.workload = workload
        self.count = 0
        self.template = "%s" if strict else "%s; line skipped"

    def __call__(self, bad) -> None:
        self.count += 1
        if self.count <= MAX_REPORTED_BAD_LINES:
            log.warning(self.template, bad)

    def finish(self) -> None:
        if self.count > MAX_REPORTED_BAD_LINES:
            log.warning("%s: %d bad lines in all, %d shown", self.workload, self.count,
                        MAX_REPORTED_BAD_LINES)


class _Sinks:
    """Where results go as they come in (a results file, a progress bar) and where the
    summary is printed; ``on_results`` and ``on_total`` are None when nothing listens."""

    def __init__(self, output: str | None, progress: bool | None, total=None,
                 resume=None) -> None:
        from cloudkon.results import ResultsWriter

        self.summary_file = sys.stderr if output == "-" else sys.stdout
        self.writer = ResultsWriter(output, resume) if output else None
        self.bar = None
        if sys.stderr.isatty() if progress is None else progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total() if total else None, unit="task", file=sys.stderr,
                            dynamic_ncols=True, smoothing=0.1)
        self.on_results = self._on_results if self.writer or self.bar else None
        self.on_total = self._on_total if self.bar else None
        self._redirect = contextlib.nullcontext()

    def __enter__(self) -> _Sinks:
        if self.bar is not None:
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._redirect = logging_redirect_tqdm(loggers=[logging.getLogger()])
        self._redirect.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            self._redirect.__exit__(*exc_info)
        finally:
            if self.bar is not None:
                self.bar.close()
            if self.writer is not None:
                self.writer.close()

    def _on_results(self, bundle) -> None:
        if self.writer is not None:
            self.writer.write(bundle)
        if self.bar is not None:
            self.bar.update(len(bundle.results))

    def _on_total(self, n: int) -> None:
        self.bar.total = n
        self.bar.refresh()

    def print_summary(self, summary, as_json: bool) -> None:
        click.echo(summary.to_json() if as_json else summary.to_text(), file=self.summary_file)


# --- The remote flavour: AWS resources and the worker daemon --------------------------------
# boto3 is imported inside these commands only, so that `cloudkon run` starts fast.

_BATCH_SIZE_HELP = ("Most messages one SQS call sends or receives. 1, with --bundle-size 1 on"
                    " submit, is the naive one-task-per-message, one-message-per-call design,"
                    " for comparison.")


def _aws_options(prefix_required: bool = False):
    """--prefix, --region and --endpoint-url, with their environment variables."""

    def decorate(f):
        f = click.option("--endpoint-url", metavar="URL", default=None,
                         help="Send AWS calls here (a moto server, LocalStack). Default: boto3's"
                              " own setting (AWS_ENDPOINT_URL, the profile).")(f)
        f = click.option("--region", envvar=["AWS_REGION", "AWS_DEFAULT_REGION"], default=None,
                         help="AWS region [env: AWS_REGION, AWS_DEFAULT_REGION]. Default: the"
                              " profile's.")(f)
        # No default= at all when required: click counts an explicit None as given.
        default = {} if prefix_required else {"default": None, "show_default": "cloudkon"}
        f = click.option("--prefix", envvar="CLOUDKON_PREFIX", required=prefix_required,
                         **default, help="Names every AWS resource: PREFIX-input, PREFIX-input-dlq,"
                              " PREFIX-output, PREFIX-leases, PREFIX-workloads-ACCOUNT"
                              " [env: CLOUDKON_PREFIX].")(f)
        return f

    return decorate


@contextlib.contextmanager
def _deployment_of(config: AwsConfig):
    """A missing queue, table or bucket of ``config``'s prefix said as such: the prefix
    has no deployment (or is mistyped), and the setup command that makes one."""
    from cloudkon.backends.resources import not_set_up
    from cloudkon.errors import NotSetUpError

    try:
        yield
    except NotSetUpError as exc:
        raise not_set_up(config, exc) from None


def _aws_config(prefix: str | None, region: str | None, endpoint_url: str | None,
                bucket_suffix: str | None = None, signing_key: str | None = None) -> AwsConfig:
    return AwsConfig(prefix=prefix or DEFAULT_PREFIX, region=region or None,
                     endpoint_url=endpoint_url or None, bucket_suffix=bucket_suffix or None,
                     signing_key=signing_key or None)


_SIGNING_KEY = click.option(
    "--signing-key", metavar="file:PATH|ssm:NAME", envvar="CLOUDKON_SIGNING_KEY", default=None,
    help="The deployment's signing key: a file or an SSM SecureString parameter, one key a"
         " line (the first signs, the others are still accepted). Bundles are signed, and"
         " bundles and results checked (README, \"Signed bundles\") [env:"
         " CLOUDKON_SIGNING_KEY].")


_BUCKET_SUFFIX = click.option(
    "--bucket-suffix", metavar="SUFFIX", default=None,
    help="Ends the workload bucket's name (S3 names are global). Default: the account id.")


@cli.command("setup")
@_aws_options()
@_BUCKET_SUFFIX
@click.option("--visibility-timeout", type=click.IntRange(1, SQS_MAX_VISIBILITY_SECONDS),
              default=DEFAULT_VISIBILITY_SECONDS, show_default=True, metavar="SECONDS",
              help="The input queue's default visibility timeout.")
@click.option("--chalice-stage", metavar="STAGE", default="dev", show_default=True,
              help="The stage of .chalice/config.json (in the current folder, if there) whose"
                   " CLOUDKON_PREFIX and CLOUDKON_BUCKET are set to this deployment's.")
def setup_command(prefix: str | None, region: str | None, endpoint_url: str | None,
                  bucket_suffix: str | None, visibility_timeout: int, chalice_stage: str) -> int:
    """Create the AWS resources of PREFIX: queues, lease table, workload bucket.

    Creates only what is missing and sets the attributes of what exists, so running it
    again is harmless. Prints each resource and what was done to it. In a Chalice project
    (this repository), it also writes the prefix and the bucket into the stage's variables
    in .chalice/config.json, for `chalice deploy`.
    """
    from cloudkon.backends.resources import BUCKET_KIND, setup
    from submitter.chalice_stage import fill_stage

    config = _aws_config(prefix, region, endpoint_url, bucket_suffix)
    done = setup(config, visibility_timeout)
    for resource in done:
        click.echo(str(resource))
    bucket = next(r.name for r in done if r.kind == BUCKET_KIND)
    stage = fill_stage(os.getcwd(), config.prefix, bucket, chalice_stage)
    if stage is not None:
        click.echo(str(stage))
    return EXIT_OK


@cli.command("teardown")
@_aws_options(prefix_required=True)
@_BUCKET_SUFFIX
def teardown_command(prefix: str, region: str | None, endpoint_url: str | None,
                     bucket_suffix: str | None) -> int:
    """Delete the AWS resources of PREFIX, and the objects in its bucket.

    Messages still in the queues are lost. Resources already gone are reported as absent.
    """
    from cloudkon.backends.resources import teardown
    from fleet.status import beating_workers

    config = _aws_config(prefix, region, endpoint_url, bucket_suffix)
    beating = beating_workers(config)
    if beating:
        log.warning("%d worker(s) of prefix %s still beating (%s): they fail once their"
                    " queues are gone; stop them first (`cloudkon fleet down` for a fleet)",
                    len(beating), config.prefix, ", ".join(w.worker_id for w in beating))
    for resource in teardown(config):
        click.echo(str(resource))
    return EXIT_OK


@cli.command("worker")
@_aws_options()
@click.option("-t", "--threads", type=click.IntRange(1, 1024), default=lambda: os.cpu_count() or 1,
              show_default="number of CPUs", help="Bundles run at the same time.")
@click.option("--no-create", is_flag=True,
              help="Fail if the queues or the table are missing instead of creating them.")
@click.option("--drain-seconds", type=_Number(min=0), default=DEFAULT_DRAIN_SECONDS,
              show_default=True,
              metavar="SECONDS",
              help="After SIGTERM, how long running tasks may take to finish (the spot"
                   " interruption notice is 120 s).")
@click.option("--visibility-timeout", type=click.IntRange(2, SQS_MAX_VISIBILITY_SECONDS),
              default=DEFAULT_VISIBILITY_SECONDS, show_default=True, metavar="SECONDS",
              help="How long a received bundle stays hidden, renewed by heartbeats every third"
                   " of it; after a crash, others take the bundle over this much later.")
@click.option("--wait-seconds", type=click.IntRange(0, SQS_LONG_POLL_SECONDS),
              default=WORKER_WAIT_SECONDS, show_default=True, metavar="SECONDS",
              help="Long poll: how long one receive waits for messages. A stop waits for the"
                   " receive in flight, so an idle worker exits this long after SIGTERM at"
                   " most; longer polls cost fewer requests while idle (up to 20).")
@click.option("--task-timeout", type=_Number(min=0), default=DEFAULT_TASK_TIMEOUT,
              show_default=True, metavar="SECONDS",
              help="Time limit of each task; 0 for none.")
@click.option("--tail-bytes", type=click.IntRange(min=0), default=DEFAULT_TAIL_BYTES,
              show_default=True, help="How much of the end of stdout and of stderr a result keeps"
                                      f" (at most {MAX_TAIL_BYTES}).")
@_BUCKET_SUFFIX
@click.option("--liveness-seconds", type=_Number(min=1), default=DEFAULT_LIVENESS_SECONDS,
              show_default=True, metavar="SECONDS", help="How often to log a line of counts.")
@click.option("--log-json", is_flag=True, help="Log JSON lines (for CloudWatch Logs, jq).")
@click.option("--worker-id", metavar="ID", default=None,
              help="Names this worker in leases, logs and results. Default: HOST:PID.")
@click.option("--batch-size", type=click.IntRange(1, SQS_MAX_BATCH), default=SQS_MAX_BATCH,
              show_default=True, help=_BATCH_SIZE_HELP)
@click.option("--instance-id", envvar="CLOUDKON_INSTANCE_ID", default="", metavar="ID",
              help="The EC2 instance this worker runs on, for its registry record (the fleet's"
                   " user data sets it) [env: CLOUDKON_INSTANCE_ID].")
@click.option("--emf-metrics", is_flag=True,
              help="Log one CloudWatch Embedded Metric Format line per bundle (tasks"
                   " completed, failed, timed out, replayed, bundle duration, queue wait).")
@click.option("--task-env", "task_env", multiple=True, metavar="NAME",
              envvar="CLOUDKON_TASK_ENV",
              help="Pass this variable of the worker's environment on to tasks (repeatable;"
                   " the variable separates names by spaces). Tasks get only these, PATH,"
                   " HOME, LANG, LANGUAGE, LC_*, TZ, USER, LOGNAME, TMPDIR and their"
                   " CLOUDKON_* ids; never AWS_* [env: CLOUDKON_TASK_ENV].")
@_SIGNING_KEY
@click.option("--replay-window", type=_Number(min=1), default=DEFAULT_REPLAY_WINDOW_SECONDS,
              show_default=True, metavar="SECONDS",
              help="With --signing-key: refuse bundles signed longer ago than this (the"
                   " default is the input queue's retention, so that no bundle waiting in"
                   " the queue is refused).")
@click.pass_obj
def worker_command(verbose: int, prefix: str | None, region: str | None,
                   endpoint_url: str | None, threads: int, no_create: bool,
                   drain_seconds: float, visibility_timeout: int, wait_seconds: int,
                   task_timeout: float, tail_bytes: int, bucket_suffix: str | None,
                   liveness_seconds: float, log_json: bool, worker_id: str | None,
                   batch_size: int, instance_id: str, emf_metrics: bool,
                   task_env: tuple[str, ...], signing_key: str | None,
                   replay_window: float) -> int:
    """Run the worker daemon: execute the task bundles of PREFIX-input until SIGTERM.

    SIGTERM drains: nothing new starts, what has not started is given back at once,
    running tasks get --drain-seconds to finish, exit 0. A second SIGTERM or SIGINT ends
    them, gives everything back and exits at once (143 or 130). Either way the receive in
    flight (--wait-seconds) is waited for, and what it brings is given back at once.
    """
    import socket

    from worker.aws import aws_worker

    logs.configure(verbose, daemon=True, as_json=log_json)
    config = WorkerConfig(
        worker_id=worker_id or f"{socket.gethostname()}:{os.getpid()}", threads=threads,
        visibility_seconds=visibility_timeout, wait_seconds=wait_seconds,
        drain_seconds=drain_seconds, liveness_seconds=liveness_seconds,
        task_timeout=task_timeout or None, tail_bytes=tail_bytes, instance_id=instance_id,
        emf_metrics=emf_metrics, task_env=task_env,
        delete_batch_seconds=DELETE_BATCH_SECONDS, replay_window_seconds=replay_window,
        complete_behind=True,
    )
    worker = aws_worker(_aws_config(prefix, region, endpoint_url, bucket_suffix,
                                    signing_key=signing_key),
                        config, batch_size, create=not no_create)
    return worker.run()


@cli.command("sandbox")
@click.option("-w", "--workers", type=click.IntRange(0, 64), default=2, show_default=True,
              help="`cloudkon worker` processes to start.")
@click.option("-t", "--threads", type=click.IntRange(1, 1024), default=4, show_default=True,
              help="Threads of each worker.")
@click.option("--port", type=click.IntRange(0, 65535), default=SANDBOX_PORT, show_default=True,
              help="Port of the moto server on 127.0.0.1 (0: any free port).")
@click.option("--prefix", envvar="CLOUDKON_PREFIX", default=DEFAULT_PREFIX, show_default=True,
              help="The deployment's prefix [env: CLOUDKON_PREFIX].")
@click.pass_obj
def sandbox_command(verbose: int, workers: int, threads: int, port: int, prefix: str) -> int:
    """Run the remote flavour on this machine, without an AWS account, until Ctrl-C.

    Starts a moto server on 127.0.0.1 in place of AWS, makes the deployment there (as
    `cloudkon setup`), delivers the bucket's upload events to the Lambda handler of app.py,
    and starts WORKERS `cloudkon worker` processes. It prints the environment to export in
    another terminal, where `cloudkon submit FILE --wait`, `collect` and the rest then work
    as on AWS. Nothing reaches AWS. Ctrl-C (or SIGTERM) stops everything it started. Needs
    a source checkout with the sandbox extra (./scripts/cloudkon sandbox installs it).
    """
    from cloudkon.sandbox import Sandbox

    logs.configure(verbose, daemon=True)
    config = SandboxConfig(prefix=_aws_config(prefix, None, None).prefix, workers=workers,
                           threads=threads, port=port)
    return Sandbox(config, out=lambda line: click.echo(line) or sys.stdout.flush()).run()


# --- The remote flavour: fleets of workers on EC2 --------------------------------------------


@cli.group("fleet")
def fleet_group() -> None:
    """Workers on EC2 in an Auto Scaling group: make it, size it, watch it, remove it.

    Run from a source checkout (fleet up builds the project's wheel for the instances),
    after `cloudkon setup`.
    """


@fleet_group.command("up")
@_aws_options()
@_BUCKET_SUFFIX
@click.option("--instances", type=click.IntRange(min=0), default=None, metavar="N",
              help=f"Desired instances. Default: {DEFAULT_FLEET_INSTANCES} for a new fleet, the"
                   " current count for one that exists.")
@click.option("--min", "min_size", type=click.IntRange(min=0), default=DEFAULT_FLEET_MIN,
              show_default=True, metavar="N", help="Fewest instances (the provisioner's floor).")
@click.option("--max", "max_size", type=click.IntRange(min=0), default=DEFAULT_FLEET_MAX,
              show_default=True, metavar="N", help="Most instances (the provisioner's ceiling).")
@click.option("--instance-type", default=DEFAULT_INSTANCE_TYPE, show_default=True, metavar="TYPE",
              help="EC2 instance type of the workers.")
@click.option("--spot", is_flag=True, help="Run the workers on spot instances (a mixed"
                                           " instances policy, price-capacity-optimized).")
@click.option("--threads", type=click.IntRange(1, 1024), default=None, metavar="N",
              help="Bundle threads per worker. Default: one per vCPU.")
@click.option("--subnet", "subnets", multiple=True, metavar="ID",
              help="A subnet of the group (repeatable). Default: the default VPC's default"
                   " subnets.")
@click.option("--ami", default=None, metavar="ID",
              help="The workers' AMI. Default: the latest Amazon Linux 2023 (x86_64), from"
                   " the public SSM parameter.")
@click.option("--tasks-per-worker", type=click.IntRange(min=1), default=DEFAULT_TASKS_PER_WORKER,
              show_default=True, metavar="N",
              help="The provisioner's target: queued tasks per worker.")
@click.option("--signing-key", metavar="ssm:NAME", default=None,
              help="The workers run only bundles signed with the key in this SSM parameter"
                   " (README, \"Signed bundles\"). Default: none, unchecked.")
def fleet_up_command(prefix: str | None, region: str | None, endpoint_url: str | None,
                     bucket_suffix: str | None, instances: int | None, min_size: int,
                     max_size: int, instance_type: str, spot: bool, threads: int | None,
                     subnets: tuple[str, ...], ami: str | None, tasks_per_worker: int,
                     signing_key: str | None) -> int:
    """Create or update the fleet of PREFIX; print each resource and what was done to it.

    The worker role and instance profile (deploy/iam/), the wheel of this checkout in the
    workload bucket, a launch template whose user data installs it and starts the worker
    unit, the Auto Scaling group PREFIX-workers with a termination lifecycle hook that lets
    workers drain, and the provisioner's settings. Running it again changes only what
    differs.
    """
    from fleet.resources import up

    fleet = FleetConfig(instances=instances, min_size=min_size, max_size=max_size,
                        instance_type=instance_type, spot=spot, threads=threads,
                        subnets=subnets, ami=ami, tasks_per_worker=tasks_per_worker,
                        signing_key=signing_key)
    for resource in up(_aws_config(prefix, region, endpoint_url, bucket_suffix), fleet):
        click.echo(str(resource))
    return EXIT_OK


@fleet_group.command("down")
@_aws_options(prefix_required=True)
@_BUCKET_SUFFIX
def fleet_down_command(prefix: str, region: str | None, endpoint_url: str | None,
                       bucket_suffix: str | None) -> int:
    """Remove what `fleet up` made for PREFIX, and nothing else.

    The group is scaled to 0 first, so that each worker drains as in any scale-in (up to
    a few minutes), then deleted; then the launch template, instance profile, role, the
    uploaded wheels and the provisioner's settings. Queues, table and bucket stay
    (`cloudkon teardown`).
    """
    from fleet.resources import down

    for resource in down(_aws_config(prefix, region, endpoint_url, bucket_suffix)):
        click.echo(str(resource))
    return EXIT_OK


@fleet_group.command("status")
@_aws_options()
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
def fleet_status_command(prefix: str | None, region: str | None, endpoint_url: str | None,
                         as_json: bool) -> int:
    """The group's instances and, from the workers' registry, each one's last beat, busy
    threads and tasks done.

    Exit code: 0 healthy; 1 not healthy (no group, fewer in service than desired, or a
    stale worker: one whose last beat is three heartbeat intervals old).
    """
    from fleet.status import fleet_status

    status = fleet_status(_aws_config(prefix, region, endpoint_url))
    click.echo(status.to_json() if as_json else status.to_text())
    return EXIT_OK if status.healthy else EXIT_FAILED


@fleet_group.command("scale")
@_aws_options()
@click.argument("count", type=click.IntRange(min=0), required=False, metavar="[N]")
@click.option("--auto", is_flag=True,
              help="Run the provisioner: size the fleet to the input queue's backlog every"
                   f" {SCALE_INTERVAL_SECONDS} s, until Ctrl-C.")
@click.option("--once", is_flag=True, help="With --auto: one decision, then exit.")
@click.option("--dry-run", is_flag=True, help="With --auto: print the decisions, change nothing.")
def fleet_scale_command(prefix: str | None, region: str | None, endpoint_url: str | None,
                        count: int | None, auto: bool, once: bool, dry_run: bool) -> int:
    """Set the fleet's desired count to N, or let the provisioner size it (--auto).

    A count set by hand stays: it turns the provisioner (this command's --auto, and the
    Lambda's schedule) off until `fleet scale --auto` turns it on again.
    """
    import time

    from fleet.provisioner import Fleet, describe

    if (count is None) == (not auto):
        raise click.UsageError("give either N or --auto")
    if (once or dry_run) and not auto:
        raise click.UsageError("--once and --dry-run go with --auto")
    fleet = Fleet(_aws_config(prefix, region, endpoint_url))
    if not auto:
        before, now = fleet.scale_to(count)
        click.echo(f"fleet {fleet.config.fleet_group}: desired {before} -> {now}; the"
                   " provisioner is off until `cloudkon fleet scale --auto`")
        return EXIT_OK
    while True:
        decision = fleet.scale_auto(dry_run=dry_run)
        click.echo(describe(fleet.config.fleet_group, decision, dry_run))
        if once:
            return EXIT_OK
        time.sleep(SCALE_INTERVAL_SECONDS)


# --- The remote flavour: submitting jobs and collecting their results -----------------------

_COLLECT_OPTIONS = (
    click.option("-o", "--output", metavar="FILE",
                 help="Write one JSON line per task to FILE ('-' for stdout)."),
    click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object."),
    click.option("--timeout", type=_Number(min=0), default=None, metavar="SECONDS",
                 help="Stop collecting after SECONDS; missing tasks are named, exit code 1."
                      " Default: wait until every task has a result."),
    click.option("--progress/--no-progress", default=None,
                 help="Show a progress bar on stderr. Default: only when stderr is a terminal."),
)


def _collect_options(f):
    for option in reversed(_COLLECT_OPTIONS):
        f = option(f)
    return f


@cli.command("submit")
@_aws_options()
@_BUCKET_SUFFIX
@click.argument("workload", metavar="WORKLOAD")
@click.option("--direct", is_flag=True,
              help="Split the workload here and send its bundles to PREFIX-input, instead of"
                   " uploading it to the bucket for the Lambda to split.")
@click.option("--wait", is_flag=True, help="Then collect the results, as `cloudkon collect` does.")
@_collect_options
@click.option("--job-id", metavar="ID", help="Name the job (task ids are ID:LINE). Default: generated.")
@click.option("--bundle-size", type=click.IntRange(1, MAX_BUNDLE_TASKS),
              default=DEFAULT_REMOTE_BUNDLE_SIZE,
              show_default=True, help="With --direct: most tasks per bundle.")
@click.option("--bundle-ms", type=_Number(min=0), default=DEFAULT_REMOTE_BUNDLE_MS,
              show_default=True, metavar="MS",
              help="With --direct: a bundle closes once its tasks add up to about MS of work"
                   " (a sleep N counts N, a shell command 20).")
@click.option("--senders", type=click.IntRange(1, 64), default=DEFAULT_SENDERS, show_default=True,
              help="With --direct: SendMessageBatch calls in flight at once.")
@click.option("--batch-size", type=click.IntRange(1, SQS_MAX_BATCH), default=SQS_MAX_BATCH,
              show_default=True, help=_BATCH_SIZE_HELP)
@_SIGNING_KEY
def submit_command(prefix: str | None, region: str | None, endpoint_url: str | None,
                   bucket_suffix: str | None, workload: str, direct: bool, wait: bool,
                   output: str | None, as_json: bool, timeout: float | None,
                   progress: bool | None, job_id: str | None, bundle_size: int, bundle_ms: float,
                   senders: int, batch_size: int, signing_key: str | None) -> int:
    """Submit the tasks of WORKLOAD to the workers of PREFIX; print the job id.

    By default the workload is uploaded to the bucket, where the Lambda (`chalice deploy`)
    splits it into bundles on PREFIX-input; with --direct this command does that itself.
    With --wait it then collects the results and prints the summary, as `cloudkon collect`.
    """
    from submitter.deployment import Deployment

    if (output or as_json or timeout is not None) and not wait:
        raise click.UsageError("--output, --json and --timeout go with --wait")
    deployment = Deployment(_aws_config(prefix, region, endpoint_url, bucket_suffix,
                                        signing_key), senders, batch_size)
    job_id = check_job_id(job_id) if job_id else new_job_id("job")
    with _deployment_of(deployment.config):
        return _submit(deployment, workload, job_id, direct, wait, output, as_json, timeout,
                       progress, bundle_size, bundle_ms)


def _submit(deployment, workload: str, job_id: str, direct: bool, wait: bool,
            output: str | None, as_json: bool, timeout: float | None, progress: bool | None,
            bundle_size: int, bundle_ms: float) -> int:
    from submitter import client

    digest = None
    if direct:
        manifest, again = client.send_direct(deployment, workload, job_id, bundle_size,
                                             bundle_ms)
        if again:
            click.echo(f"cloudkon: job {job_id}: submitted before with this workload; nothing"
                       " sent again", err=True)
        else:
            for line, reason in manifest.bad_lines:
                log.warning("%s:%d: %s; line skipped", workload, line, reason)
            click.echo(f"cloudkon: job {job_id}: sent {manifest.tasks:,} tasks in"
                       f" {manifest.bundles:,} bundles to queue {deployment.config.input_queue}",
                       err=True)
    else:
        sent = client.upload(deployment, workload, job_id)
        digest = sent.digest
        if sent.again:
            click.echo(f"cloudkon: job {job_id}: submitted before with this workload"
                       f" ({sent.uri}); nothing uploaded again", err=True)
        else:
            click.echo(f"cloudkon: job {job_id}: uploaded to {sent.uri}; the Lambda splits it",
                       err=True)
    click.echo(job_id)
    if not wait:
        return EXIT_OK
    return _collect_and_report(deployment, job_id, output, as_json, timeout, progress,
                               show_elapsed=True, digest=digest)


@cli.command("collect")
@_aws_options()
@_BUCKET_SUFFIX
@click.argument("job_id", metavar="JOB_ID")
@_collect_options
@_SIGNING_KEY
def collect_command(prefix: str | None, region: str | None, endpoint_url: str | None,
                    bucket_suffix: str | None, job_id: str, output: str | None, as_json: bool,
                    timeout: float | None, progress: bool | None,
                    signing_key: str | None) -> int:
    """Collect the results of job JOB_ID and print the summary, as `cloudkon run` does.

    Results of other jobs on the shared output queue are left to their own collectors.
    Results another collector took are read back from the lease table. With -o FILE and
    FILE already holding results of the job, they are kept and only the missing tasks are
    added. Ctrl-C (or SIGTERM) prints the summary so far and the command that picks the
    job up; the job keeps running. Exit code: 0 every task succeeded; 1 a task failed or
    timed out, the job is cancelled, or --timeout passed first; 2 usage errors (no such
    job, a rejected workload, missing AWS resources or credentials); 130/143 interrupted.
    """
    from submitter.deployment import Deployment

    deployment = Deployment(_aws_config(prefix, region, endpoint_url, bucket_suffix,
                                        signing_key))
    with _deployment_of(deployment.config):
        return _collect_and_report(deployment, job_id, output, as_json, timeout, progress,
                                   resume=True)


def _collect_and_report(deployment, job_id: str, output: str | None, as_json: bool,
                        timeout: float | None, progress: bool | None,
                        show_elapsed: bool = False, resume: bool = False,
                        digest: str | None = None) -> int:
    from cloudkon.results import read_for_resume
    from submitter import client

    resumed = None
    if resume and output and output != "-" and os.path.exists(output):
        resumed = read_for_resume(output, job_id)
        click.echo(f"cloudkon: {output}: {len(resumed.lines):,} results of job {job_id} there"
                   " already; adding the missing ones", err=True)
    signals = _InterruptOnSigterm()
    with signals, _Sinks(output, progress, resume=resumed) as sinks:
        collection = client.collect(deployment, job_id, timeout, on_results=sinks.on_results,
                                    on_total=sinks.on_total,
                                    already=resumed.bundles if resumed else None,
                                    digest=digest)
    summary = collection.summary
    wait = collection.split_wait
    if as_json:
        doc = summary.to_dict()
        if wait is not None:
            doc["split_wait_seconds"] = round(wait, 6)
        click.echo(json.dumps(doc), file=sinks.summary_file)
    else:
        sinks.print_summary(summary, as_json)
        if wait is not None:
            click.echo(f"  upload waited {wait:.3f} s for the split (not in the wall time)",
                       file=sinks.summary_file)
    if show_elapsed and collection.complete and not as_json \
            and collection.submit_to_last is not None:
        click.echo(f"  submit to last result {collection.submit_to_last:.3f} s",
                   file=sinks.summary_file)
    if collection.recovered:
        log.warning("job %s: %d results read back from the lease table", job_id,
                    collection.recovered)
    if collection.interrupted:
        signum = signals.signum or signal.SIGINT
        click.echo(f"cloudkon: {_signal_word(signum)}: job {job_id} keeps running on the"
                   f" workers; pick up its results with:\n  "
                   f"{_resume_command(deployment.config, job_id, output)}", err=True)
        return 128 + signum
    if collection.cancelled:
        _error(f"job {job_id} is cancelled: {collection.missing_count:,} of"
               f" {summary.tasks_read:,} tasks have no result")
        return EXIT_FAILED
    if not collection.complete:
        _error(collection.shortfall(timeout))
        return EXIT_FAILED
    return EXIT_OK if summary.ok else EXIT_FAILED


class _InterruptOnSigterm:
    """While collecting, SIGTERM interrupts as Ctrl-C does (Python raises KeyboardInterrupt
    for SIGINT): the collector stops where it is and the summary so far is printed. The
    handler notes the signal and raises; nothing else runs in it."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous = None

    def _on_signal(self, signum, frame) -> None:
        self.signum = signum
        raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._on_signal)
                              for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in (self._previous or {}).items():
            signal.signal(sig, handler)


def _signal_word(signum: int) -> str:
    return "interrupted" if signum == signal.SIGINT else "terminated"


def _resume_command(config: AwsConfig, job_id: str, output: str | None) -> str:
    """The `cloudkon collect` command that picks the job up where this one stopped."""
    words = ["cloudkon", "collect", job_id]
    if config.prefix != DEFAULT_PREFIX:
        words += ["--prefix", config.prefix]
    if config.region:
        words += ["--region", config.region]
    if config.endpoint_url:
        words += ["--endpoint-url", config.endpoint_url]
    if config.bucket_suffix:
        words += ["--bucket-suffix", config.bucket_suffix]
    if output and output != "-":
        words += ["-o", output]
    return " ".join(shlex.quote(w) for w in words)


# --- Operating jobs: status, listing, cancel, retry, dead letters -----------------------------

_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def _deployment(prefix, region, endpoint_url, bucket_suffix=None, signing_key=None):
    from submitter.deployment import Deployment

    return Deployment(_aws_config(prefix, region, endpoint_url, bucket_suffix, signing_key))


@cli.command("status")
@_aws_options()
@_BUCKET_SUFFIX
@click.argument("job_id", metavar="[JOB_ID]", required=False)
@click.option("--watch", is_flag=True, help="Redraw the job's progress in place until it ends.")
@_JSON
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True,
              help="Without JOB_ID: look at the last N jobs submitted for those not finished.")
def status_command(prefix, region, endpoint_url, bucket_suffix, job_id: str | None,
                   watch: bool, as_json: bool, limit: int) -> int:
    """Show a job's progress (tasks done, failed, running, waiting; rate, ETA, workers),
    read from its record and its bundles' leases without consuming anything.

    Without JOB_ID: the queues (visible, in flight, dead letters), the workers (from
    their heartbeat records) and the jobs not finished. Exit code: 0 ok; 1 the job is not
    healthy (a task failed or timed out, it was cancelled, its split failed; without
    JOB_ID: dead letters wait, a worker is stale or an unfinished job is not healthy); 2
    usage errors (no such job).
    """
    import json

    from submitter import client, jobs

    deployment = _deployment(prefix, region, endpoint_url, bucket_suffix)
    if job_id is None:
        if watch:
            raise click.UsageError("--watch needs a JOB_ID")
        view = jobs.overview(deployment, limit)
        click.echo(json.dumps(view.to_dict()) if as_json else view.to_text())
        return EXIT_OK if view.healthy else EXIT_FAILED
    reader = jobs.ProgressReader(check_job_id(job_id), deployment.manifests, deployment.leases,
                                 exists=lambda: client.uploaded(deployment, job_id),
                                 codec=deployment.codec)
    if watch:
        progress = jobs.watch(reader, _Redraw(as_json))
    else:
        progress = reader.read()
    if as_json:
        if not watch:
            click.echo(json.dumps(progress.to_dict()))
    else:
        click.echo(progress.to_text())
    return EXIT_OK if progress.healthy else EXIT_FAILED


class _Redraw:
    """Draws each reading of `status --watch`: in place on a terminal, a line per change
    otherwise; JSON lines with --json."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.tty = sys.stdout.isatty()
        self.last = ""

    def __call__(self, progress) -> None:
        import json

        if self.as_json:
            click.echo(json.dumps(progress.to_dict()))
            return
        line = progress.line()
        if self.tty:
            width = max(len(self.last), len(line))
            click.echo("\r" + line.ljust(width) + ("\n" if progress.finished else ""), nl=False)
        elif line != self.last:
            click.echo(line)
        self.last = line


@cli.command("jobs")
@_aws_options()
@_JSON
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True,
              help="List the last N jobs submitted (0: all).")
def jobs_command(prefix, region, endpoint_url, as_json: bool, limit: int) -> int:
    """List jobs, oldest first: id, submitted, state (splitting, running, done, cancelled,
    failed split), tasks done / total. One Scan of the lease table for the job records,
    then each job's leases by key."""
    import json

    from submitter import jobs

    deployment = _deployment(prefix, region, endpoint_url)
    listed = jobs.list_jobs(deployment.manifests, deployment.leases, limit or None)
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in listed]))
        return EXIT_OK
    click.echo(f"{'JOB':<36} {'SUBMITTED':<23} {'STATE':<12} {'DONE/TOTAL':>21}  FAILED")
    for p in listed:
        submitted = jobs.when_text(p.submitted_at) if p.submitted_at else "-"
        click.echo(f"{p.job_id:<36} {submitted:<23} {p.state:<12}"
                   f" {f'{p.done:,}/{p.tasks:,}':>21}  {p.failed + p.timed_out:,}")
    return EXIT_OK


@cli.command("cancel")
@_aws_options()
@click.argument("job_id", metavar="JOB_ID")
def cancel_command(prefix, region, endpoint_url, job_id: str) -> int:
    """Cancel job JOB_ID: workers delete its bundles when they receive them, without running
    them, and end its running tasks at their next heartbeat; `collect` and `status` then
    say cancelled. Exit code: 0; 2 no such job."""
    from submitter import jobs

    deployment = _deployment(prefix, region, endpoint_url)
    outcome = jobs.cancel(deployment.manifests, deployment.leases, check_job_id(job_id))
    if outcome == "cancelled":
        click.echo(f"job {job_id}: cancelled; workers delete its waiting bundles and end its"
                   " running tasks at their next heartbeat")
    elif outcome == "finished":
        click.echo(f"job {job_id}: already finished; nothing to cancel")
    else:
        click.echo(f"job {job_id}: already cancelled")
    return EXIT_OK


@cli.command("retry")
@_aws_options()
@_BUCKET_SUFFIX
@click.argument("job_id", metavar="JOB_ID")
@click.option("--failed", is_flag=True, help="Retry the failed tasks (the default).")
@click.option("--timed-out", is_flag=True, help="Retry the timed-out tasks too.")
@click.option("--workload", metavar="FILE",
              help="Read the commands from FILE instead of the job's workload (needed for a"
                   " job submitted with --direct from another machine).")
@_SIGNING_KEY
def retry_command(prefix, region, endpoint_url, bucket_suffix, job_id: str, failed: bool,
                  timed_out: bool, workload: str | None, signing_key: str | None) -> int:
    """Submit the failed tasks of finished job JOB_ID again (with --timed-out, the timed-out
    ones too), as a new attempt of the same job with the same task ids; `collect JOB_ID`
    then returns the latest attempt of each task. Exit code: 0 (also when nothing failed);
    2 usage errors (no such job, a job still running or cancelled)."""
    from cloudkon.model import FAILED, TIMED_OUT
    from submitter import jobs

    deployment = _deployment(prefix, region, endpoint_url, bucket_suffix, signing_key)
    statuses = (FAILED, TIMED_OUT) if timed_out else (FAILED,)
    done = jobs.retry(deployment, check_job_id(job_id), statuses, workload)
    what = " or ".join(s.replace("_", " ") for s in statuses)
    if done is None:
        click.echo(f"job {job_id}: no task {what}; nothing to retry")
        return EXIT_OK
    click.echo(f"job {job_id}: attempt {done.attempt}: sent {done.tasks:,} {what} tasks in"
               f" {done.bundles:,} bundles to queue {deployment.config.input_queue}")
    click.echo(f"  collect with: {_resume_command(deployment.config, job_id, None)}")
    return EXIT_OK


@cli.group("dlq")
def dlq_group() -> None:
    """The dead-letter queue (PREFIX-input-dlq): list, show and redrive its messages."""


@dlq_group.command("list")
@_aws_options()
@_JSON
def dlq_list_command(prefix, region, endpoint_url, as_json: bool) -> int:
    """List the dead letters: id, job, bundle, reason, receive count. They stay in the queue
    (received for a moment and given back)."""
    import json

    from submitter.dlq import DeadLetters

    letters = DeadLetters(_deployment(prefix, region, endpoint_url)).list()
    if as_json:
        click.echo(json.dumps([d.to_dict() for d in letters]))
    else:
        click.echo(f"{len(letters)} dead letters")
        for d in letters:
            click.echo(d.line())
    return EXIT_OK


@dlq_group.command("show")
@_aws_options()
@click.argument("message_id", metavar="MESSAGE_ID")
@_JSON
def dlq_show_command(prefix, region, endpoint_url, message_id: str, as_json: bool) -> int:
    """Print a dead letter and its tasks (line, then command), or its body if it is not a
    bundle. Exit code: 0; 2 no such message."""
    import json

    from submitter.dlq import DeadLetters

    letter = DeadLetters(_deployment(prefix, region, endpoint_url)).show(message_id)
    click.echo(json.dumps(letter.to_dict(with_tasks=True)) if as_json else letter.to_text())
    return EXIT_OK


@dlq_group.command("redrive")
@_aws_options()
@click.argument("message_ids", metavar="[MESSAGE_ID]...", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Redrive every dead letter.")
def dlq_redrive_command(prefix, region, endpoint_url, message_ids: tuple[str, ...],
                        everything: bool) -> int:
    """Put dead letters back on the input queue, where workers run them: those named, or
    with --all every one. Exit code: 0; 2 a message that is not there (nothing is moved)."""
    from submitter.dlq import DeadLetters

    if everything == bool(message_ids):
        raise click.UsageError("name the messages to redrive, or pass --all (not both)")
    deployment = _deployment(prefix, region, endpoint_url)
    moved = DeadLetters(deployment).redrive(None if everything else list(message_ids))
    for d in moved:
        click.echo(f"redrove {d.id} ({'job ' + d.job_id + ' bundle ' + str(d.bundle) if d.tasks is not None else 'not a bundle'})"
                   f" to queue {deployment.config.input_queue}")
    click.echo(f"{len(moved)} messages redriven")
    return EXIT_OK


# --- Reading a results file back ------------------------------------------------------------


@cli.command("report")
@click.argument("results", metavar="RESULTS")
@click.option("--plot", "png", metavar="PNG", help="Draw every chart, as panels of one PNG file.")
@click.option("--plot-dir", metavar="DIR",
              help="Write one PNG file per chart into DIR, created if missing: completed.png,"
                   " throughput.png, latency_cdf.png, durations.png, workers.png.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def report_command(results: str, png: str | None, plot_dir: str | None, as_json: bool) -> int:
    """Summarise a results file: counts, throughput, latency, durations, workers.

    RESULTS ('-' for stdin) is the file of one JSON line per task that `cloudkon run
    --output FILE`, `cloudkon submit --wait --output FILE` and `cloudkon collect --output
    FILE` write. --plot and --plot-dir also draw charts (they need matplotlib: pip install
    'cloudkon[plot]'). Exit code: 0; 2 usage or input error (a line that is not a result is
    named by its number).
    """
    from cloudkon import report

    if png or plot_dir:
        report.check_plotting(png, plot_dir)
    summary = report.Report(report.load(results))
    click.echo(summary.to_json() if as_json else summary.to_text())
    if png or plot_dir:
        for path in report.plot(summary, png, plot_dir):
            click.echo(f"cloudkon: wrote {path}", err=True)
    return EXIT_OK


# --- Comparison runs --------------------------------------------------------------------------


@cli.command("bench")
@click.option("--tasks", type=click.IntRange(min=1), default=None, metavar="N",
              help="Tasks in each compare-* workload. Default: 10,000 `sleep 0`, 1,000 of the"
                   " others (2,000 and 100,000 with --large).")
@click.option("-g", "--group", "groups", multiple=True, metavar="NAME",
              help="What to run: compare (the default), scale, efficiency, all, or one group"
                   " (compare-sleep0, compare-sleep10, compare-true, compare-mixed,"
                   " scale-local-tasks, scale-remote-tasks, scale-local-workers,"
                   " scale-remote-workers, efficiency-local, efficiency-remote). Repeatable.")
@click.option("--large", is_flag=True, help="The sizes of the full comparison (issue 5).")
@click.option("--json", "as_json", is_flag=True, help="Print every row and figure as JSON.")
def bench_command(tasks: int | None, groups: tuple[str, ...], large: bool, as_json: bool) -> int:
    """Run the comparison runs and print one table: the same workloads through the local
    flavour, the remote flavour on a moto server started here (never AWS), the naive
    remote design and peers (ThreadPoolExecutor, xargs, GNU parallel, Celery on SQS).

    Each group's ratios are against its first row, measured in the same run. The runs are
    in benchmarks/, which is not installed with cloudkon: run this from a source checkout
    (./scripts/cloudkon bench installs the bench extra). The pytest-benchmark version of
    the same runs is benchmarks/test_compare.py.
    """
    try:  # only now: the benchmarks are no part of the product
        from benchmarks import suite
        from benchmarks.contenders import ContenderFailed
    except ImportError as exc:
        raise UsageError(f"bench: cannot import {exc.name or 'benchmarks'}: the comparison runs"
                         " need a source checkout with the bench extra; run ./scripts/cloudkon"
                         " bench there (or pip install -e '.[bench]')") from exc

    try:
        chosen = list(dict.fromkeys(suite.iter_groups(list(groups) or ["compare"])))
    except KeyError as exc:
        raise click.BadParameter(f"no group {exc.args[0]!r}", param_hint="--group") from None

    def progress(row) -> None:
        if row.tasks_per_s is None:
            click.echo(f"cloudkon: {row.group} {row.contender}: {row.note}", err=True)
        else:
            click.echo(f"cloudkon: {row.group} {row.contender}: {row.tasks:,} tasks in"
                       f" {row.wall_s:.2f} s", err=True)

    def stop(signum, _frame):  # SIGTERM: stop the fleets and the moto server on the way out
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    with suite.Bench() as bench:
        try:
            bench.run_groups(chosen, large=large, tasks=tasks, on_run=progress)
        except ContenderFailed as exc:
            _error(f"bench: {exc}")
            return EXIT_FAILED
        click.echo(suite.to_json(bench.runs) if as_json else suite.table(bench.runs))
    return EXIT_OK
