"""The project's exceptions: one base class, specific subclasses.

Every error a user can cause is a :class:`CloudKonError`; the CLI prints its message on
one line and exits with its ``exit_code``. Foreign exceptions are translated into these at
the boundary where they are raised (``raise ... from``).
"""

from __future__ import annotations


class CloudKonError(Exception):
    """Base class of every error CloudKon raises on purpose."""

    exit_code = 1


class UsageError(CloudKonError):
    """The command line asks for something that cannot be done."""

    exit_code = 2


class WorkloadError(UsageError):
    """The workload file as a whole cannot be used (missing, a directory, binary, empty)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class BadLinesError(WorkloadError):
    """``--strict`` found lines that cannot be tasks; nothing was run."""

    def __init__(self, path: str, count: int) -> None:
        noun = "line" if count == 1 else "lines"
        super().__init__(path, f"{count} bad {noun}; nothing was run (--strict)")
        self.count = count


class OutputError(CloudKonError):
    """Results could not be written (disk full, file removed)."""


class OutputClosed(OutputError):
    """Whoever read the results from stdout has gone (`cloudkon run ... -o - | head`): the
    run stops quietly, as a Unix filter does on SIGPIPE."""

    exit_code = 141  # 128 + SIGPIPE


class CodecError(CloudKonError):
    """A message body that is not a CloudKon message: not JSON, an unknown version, a
    missing or ill-typed field."""


class SignatureError(CodecError):
    """A signed deployment's message or stored results that are unsigned, forged, signed
    with a key not configured, or (a task bundle) older than the replay window."""


class SpillError(CodecError):
    """Results spilled to the workload bucket cannot be read back: the object is gone
    (removed, expired) or is not what the pointer to it says (size, SHA-256)."""


class AwsError(CloudKonError):
    """An AWS call failed: at once for an error that retrying cannot mend, or after the
    retries for throttling, 5xx and dropped connections ran out."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code  # the AWS error code, e.g. "AccessDenied"; "" for connection errors


class NotSetUpError(UsageError):
    """A queue, table or bucket the command needs does not exist (`cloudkon setup`)."""

    def __init__(self, message: str, what: str = "") -> None:
        super().__init__(message)
        self.what = what  # the call or resource that found it missing ("queue x-input")


class CredentialsError(UsageError):
    """boto3 found no AWS credentials, or no region to use."""


class JobNotFoundError(UsageError):
    """No job of that id was ever submitted with this prefix (no manifest, no upload)."""


class JobConflictError(UsageError):
    """A job of that id exists with another workload: a job id names one workload."""

    def __init__(self, job_id: str, digest: str) -> None:
        known = f"sha256 {digest[:12]}..." if digest else "sha256 not recorded"
        super().__init__(f"job {job_id} exists with another workload ({known}); choose another"
                         " --job-id")
        self.job_id = job_id
        self.digest = digest


class SplitPaused(CloudKonError):
    """A split stopped before its time ran out (a Lambda's), its progress recorded, to be
    continued; ``progressed``: it sent bundles before stopping."""

    def __init__(self, message: str, progressed: bool) -> None:
        super().__init__(message)
        self.progressed = progressed


class SplitFailedError(CloudKonError):
    """A job's split failed for good, or stopped making progress: it sends no more tasks."""
