"""The ``cloudkon`` command line.

Every failure a user can cause ends as one line on stderr and an exit code: 0 every task
succeeded, 1 a task failed or timed out (or a line was bad), 2 usage and input errors,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys

import click

from cloudkon import __version__
from cloudkon.errors import BadLinesError, CloudKonError, WorkloadError
from cloudkon.limits import (
    DEFAULT_BUNDLE_MS,
    DEFAULT_BUNDLE_SIZE,
    DEFAULT_TAIL_BYTES,
    DEFAULT_TASK_TIMEOUT,
    MAX_LOCAL_WORKERS,
    MAX_REPORTED_BAD_LINES,
)

log = logging.getLogger("cloudkon")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code instead of raising."""
    try:
        code = cli.main(args=argv, prog_name="cloudkon", standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _error(f"{exc.format_message().rstrip('.')}{hint}")
        return EXIT_USAGE
    except click.ClickException as exc:
        _error(exc.format_message())
        return exc.exit_code
    except click.Abort:
        return 128 + signal.SIGINT
    except CloudKonError as exc:
        _error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # stdout closed early (`cloudkon run ... | head`): not an error of ours.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep the interpreter's flush quiet
        return EXIT_FAILED
    return code if isinstance(code, int) else EXIT_OK


def _error(message: str) -> None:
    click.echo(f"cloudkon: error: {message}", err=True)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.levelname_lower = record.levelname.lower()
        return super().format(record)


def _setup_logging(verbose: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("cloudkon: %(levelname_lower)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    log.setLevel(level)
    for name in ("local", "worker", "submitter"):
        logging.getLogger(name).setLevel(level)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cloudkon")
@click.option("-v", "--verbose", count=True, help="More log lines on stderr (-vv for debug).")
def cli(verbose: int) -> None:
    """CloudKon: run the tasks of a workload file on a pool of workers.

    A workload has one task per line: `sleep N` sleeps N MILLISECONDS inside the worker
    (CloudKon's benchmark task); any other line is run with /bin/sh -c.
    """
    _setup_logging(verbose)


@cli.command()
@click.argument("workload", metavar="WORKLOAD")
@click.option("-w", "--workers", type=click.IntRange(1, MAX_LOCAL_WORKERS),
              default=lambda: os.cpu_count() or 1, show_default="number of CPUs",
              help="Worker threads executing tasks.")
@click.option("-o", "--output", metavar="FILE",
              help="Write one JSON line per task to FILE ('-' for stdout).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--task-timeout", type=click.FloatRange(min=0), default=DEFAULT_TASK_TIMEOUT,
              show_default=True, metavar="SECONDS",
              help="Time limit of each task; 0 for none. A task over it is timed_out.")
@click.option("--strict", is_flag=True,
              help="Check every line first; if any line cannot be a task, run nothing (exit 2).")
@click.option("--job-id", metavar="ID", help="Name the job (task ids are ID:LINE). Default: generated.")
@click.option("--bundle-size", type=click.IntRange(min=1), default=DEFAULT_BUNDLE_SIZE,
              show_default=True, help="Most tasks per bundle through the queues.")
@click.option("--bundle-ms", type=click.FloatRange(min=0), default=DEFAULT_BUNDLE_MS,
              show_default=True, metavar="MS",
              help="A bundle closes once its sleep tasks add up to MS; shell tasks travel alone.")
@click.option("--tail-bytes", type=click.IntRange(min=0), default=DEFAULT_TAIL_BYTES,
              show_default=True, help="How much of the end of stdout and of stderr a result keeps.")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar on stderr. Default: only when stderr is a terminal.")
def run(workload: str, workers: int, output: str | None, as_json: bool, task_timeout: float,
        strict: bool, job_id: str | None, bundle_size: int, bundle_ms: float, tail_bytes: int,
        progress: bool | None) -> int:
    """Run the tasks of WORKLOAD on local worker threads and summarise.

    Exit code: 0 all tasks succeeded; 1 a task failed or timed out, or a line was bad;
    2 usage or input error; 130 interrupted.
    """
    from cloudkon.config import RunConfig
    from cloudkon.model import new_job_id
    from cloudkon.results import ResultsWriter
    from cloudkon.workload import Workload
    from local.runner import LocalRunner

    config = RunConfig(
        workload=workload, job_id=job_id or new_job_id("local"), workers=workers,
        task_timeout=task_timeout or None, bundle_size=bundle_size, bundle_ms=bundle_ms,
        tail_bytes=tail_bytes, strict=strict,
    )
    Workload(workload).check()
    reporter = _BadLineReporter()
    if strict:
        checked = Workload(workload, on_bad_line=reporter)
        if checked.validate():
            raise BadLinesError(workload, checked.bad_lines)
        if not checked.tasks:
            raise WorkloadError(workload, "holds no tasks (only blank lines and comments)")
    writer = ResultsWriter(output) if output else None
    summary_out = sys.stderr if output == "-" else sys.stdout
    show_bar = sys.stderr.isatty() if progress is None else progress

    bar = _progress_bar(workload, show_bar)
    runner = LocalRunner(
        config,
        on_bad_line=reporter,
        on_results=_fan_out(writer, bar),
        on_total=(lambda n: _set_total(bar, n)) if bar is not None else None,
    )
    redirect = _tqdm_logging() if bar is not None else contextlib.nullcontext()
    try:
        with redirect:
            summary = runner.run()
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()

    if not summary.tasks_read and not summary.interrupted:
        if summary.bad_lines:
            raise WorkloadError(workload, f"no line is a task ({summary.bad_lines} bad line(s))")
        raise WorkloadError(workload, "holds no tasks (only blank lines and comments)")
    if reporter.count > MAX_REPORTED_BAD_LINES:
        log.warning("%s: %d bad lines in all, %d shown", workload, reporter.count,
                    MAX_REPORTED_BAD_LINES)
    click.echo(summary.to_json() if as_json else summary.to_text(), file=summary_out)
    if summary.interrupted:
        return 128 + (runner.signal_received or signal.SIGINT)
    return EXIT_OK if summary.ok else EXIT_FAILED


class _BadLineReporter:
    """Logs the first bad lines one by one and counts the rest."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, bad) -> None:
        self.count += 1
        if self.count <= MAX_REPORTED_BAD_LINES:
            log.warning("%s; line skipped", bad)


def _progress_bar(workload: str, show: bool):
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=_count_lines(workload), unit="task", file=sys.stderr, dynamic_ncols=True,
                smoothing=0.1)


def _set_total(bar, n: int) -> None:
    bar.total = n
    bar.refresh()


def _count_lines(path: str) -> int:
    """An upper bound on the tasks of a file (its line count), read fast, for the ETA."""
    n = 0
    last = b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def _fan_out(writer, bar):
    if writer is None and bar is None:
        return None

    def on_results(bundle) -> None:
        if writer is not None:
            writer.write(bundle)
        if bar is not None:
            bar.update(len(bundle.results))

    return on_results


def _tqdm_logging():
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm(loggers=[logging.getLogger()])
