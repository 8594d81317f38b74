"""The AWS boundary: boto3 clients built from an :class:`~cloudkon.config.AwsConfig`, and
one way to call them.

Every AWS call goes through :func:`call`: throttling, 5xx answers and dropped connections
are retried with exponential backoff and full jitter, a bounded number of times, each retry
logged at WARNING; whatever still fails becomes a :class:`~cloudkon.errors.CloudKonError`.
botocore's own retries are switched off so that this is the only retry policy. Credentials,
region and endpoint come from boto3's own chain (AWS_PROFILE, AWS_DEFAULT_REGION,
AWS_ENDPOINT_URL, the instance role) unless the configuration names them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from cloudkon.config import AwsConfig
from cloudkon.errors import AwsError, CredentialsError, NotSetUpError
from cloudkon.limits import (
    AWS_BACKOFF_BASE_SECONDS,
    AWS_BACKOFF_MAX_SECONDS,
    AWS_BEAT_ATTEMPT_SECONDS,
    AWS_BEAT_CONNECT_TIMEOUT_SECONDS,
    AWS_BEAT_READ_TIMEOUT_SECONDS,
    AWS_CONNECT_TIMEOUT_SECONDS,
    AWS_MAX_ATTEMPTS,
    AWS_READ_TIMEOUT_SECONDS,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# Error codes that mean "slow down": botocore's own list (botocore.retries.standard) plus
# the codes SQS and DynamoDB document for it.
THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException",
    "TransactionInProgressException", "RequestLimitExceeded", "BandwidthLimitExceeded",
    "LimitExceededException", "RequestThrottled", "SlowDown", "PriorRequestNotComplete",
    "EC2ThrottledException", "AWS.SimpleQueueService.RequestThrottled", "KMS.ThrottlingException",
})
# Error codes of failures on AWS's side that a retry may not meet again; any HTTP 5xx too.
TRANSIENT_CODES = frozenset({
    "InternalError", "InternalFailure", "InternalServerError", "ServiceUnavailable",
    "RequestTimeout", "RequestTimeoutException",
})
NOT_FOUND_CODES = frozenset({
    "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue", "ResourceNotFoundException",
    "NoSuchBucket", "404",
})
_CREDENTIAL_CODES = frozenset({
    "InvalidClientTokenId", "UnrecognizedClientException", "ExpiredToken",
    "ExpiredTokenException", "InvalidAccessKeyId", "SignatureDoesNotMatch",
})
_NO_CREDENTIALS = ("no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and"
                   " AWS_SECRET_ACCESS_KEY, or run where an IAM role provides them")


_NO_REGION = ("no AWS region: pass --region, or set AWS_REGION or AWS_DEFAULT_REGION, or a"
              " region in the AWS profile")
# The region variables in the order the AWS SDKs and CLI read them: AWS_REGION (the SDKs,
# and the Lambda runtime, which sets both) before AWS_DEFAULT_REGION (boto3's own, which
# with the profile botocore resolves itself).
_REGION_VARIABLES = ("AWS_REGION",)


def region_name(config: AwsConfig) -> str | None:
    """The region to use: the configuration's, else AWS_REGION; None leaves it to boto3
    (AWS_DEFAULT_REGION, then the profile), so every AWS variable is read as the AWS CLI
    reads it, by every command and by the Lambda."""
    if config.region:
        return config.region
    return next((os.environ[v] for v in _REGION_VARIABLES if os.environ.get(v)), None)


def error_code(exc: ClientError) -> str:
    """The AWS error code of a ClientError (the query-protocol code where SQS gives one)."""
    error = exc.response.get("Error", {})
    return error.get("QueryErrorCode") or error.get("Code") or ""


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: throttling, 5xx, dropped or timed-out connections."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        codes = {error.get("Code"), error.get("QueryErrorCode")}
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return bool(codes & THROTTLING_CODES or codes & TRANSIENT_CODES) or status >= 500
    return isinstance(exc, (BotoConnectionError, HTTPClientError))


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    what = state.kwargs.get("_what", "AWS call") if state.kwargs else "AWS call"
    reason = error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
    log.warning("%s: %s on attempt %d of %d; retrying in %.1f s", what, reason,
                state.attempt_number, AWS_MAX_ATTEMPTS,
                state.next_action.sleep if state.next_action else 0.0)


_retrying = Retrying(
    retry=retry_if_exception(is_transient),
    wait=wait_random_exponential(multiplier=AWS_BACKOFF_BASE_SECONDS, max=AWS_BACKOFF_MAX_SECONDS),
    stop=stop_after_attempt(AWS_MAX_ATTEMPTS),
    before_sleep=_log_retry,
    reraise=True,
)


def _attempt(operation: Callable[..., T], params: dict, _what: str) -> T:
    return operation(**params)


def call(what: str, operation: Callable[..., T], expected: Collection[str] = (),
         budget: float | None = None, **params: Any) -> T:
    """``operation(**params)``, retried while it fails transiently; ``what`` names it in logs
    and errors ("receive from queue cloudkon-input"). With a ``budget`` (seconds), no retry
    starts that could end past it, an attempt taking up to AWS_BEAT_ATTEMPT_SECONDS (the
    time-outs of a client made with ``beat=True``, which such a call must use): a call that
    protects a deadline (a heartbeat) gives up in time. A ClientError whose code is in
    ``expected`` is raised as it is, for the caller to handle; every other failure becomes
    NotSetUpError, CredentialsError or AwsError."""
    retrying = _retrying
    if budget is not None:
        retrying = _retrying.copy(
            stop=stop_after_attempt(AWS_MAX_ATTEMPTS)
            | stop_before_delay(max(budget - AWS_BEAT_ATTEMPT_SECONDS, 0.0)))
    try:
        return retrying(_attempt, operation, params, _what=what)
    except ClientError as exc:
        code = error_code(exc)
        if code in expected or exc.response.get("Error", {}).get("Code") in expected:
            raise
        raise translate(exc, what) from exc
    except BotoCoreError as exc:
        raise translate(exc, what) from exc


def translate(exc: Exception, what: str) -> Exception:
    """The CloudKon error that says what went wrong with ``what``."""
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
        return CredentialsError(_NO_CREDENTIALS)
    if isinstance(exc, NoRegionError):
        return CredentialsError(_NO_REGION)
    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message") or ""
        if code in NOT_FOUND_CODES or exc.response.get("Error", {}).get("Code") in NOT_FOUND_CODES:
            return NotSetUpError(f"{what}: it does not exist (run `cloudkon setup` to create it)",
                                 what)
        if code in _CREDENTIAL_CODES:
            return CredentialsError(f"{what}: AWS refused the credentials ({code}: {message})")
        gave_up = f" (gave up after {AWS_MAX_ATTEMPTS} attempts)" if is_transient(exc) else ""
        return AwsError(f"{what}: {code}: {message}{gave_up}".rstrip(": "), code)
    gave_up = f" (gave up after {AWS_MAX_ATTEMPTS} attempts)" if is_transient(exc) else ""
    return AwsError(f"{what}: {exc}{gave_up}")


# What a session reads once and keeps: credentials, profile and configuration files.
_SESSION_ENVIRONMENT = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                        "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE",
                        "AWS_SHARED_CREDENTIALS_FILE", "AWS_EC2_METADATA_DISABLED")
_sessions: dict[tuple, boto3.session.Session] = {}
_sessions_lock = threading.Lock()


class _LockedSession:
    """A boto3 session whose clients are made one at a time (a session is not safe to
    share between threads; the clients it makes are)."""

    def __init__(self, session: boto3.session.Session) -> None:
        self._session = session

    def client(self, *args, **kwargs):
        with _sessions_lock:
            return self._session.client(*args, **kwargs)


def _session(region: str | None) -> _LockedSession:
    """One session per region and credential environment, for the whole process: a
    session loads the endpoint and service models once for all its clients (each new
    session costs about 70 ms of CPU again), and its credentials refresh as one."""
    key = (region, tuple(os.environ.get(name) for name in _SESSION_ENVIRONMENT))
    with _sessions_lock:
        session = _sessions.get(key)
        if session is None:
            session = _sessions[key] = boto3.session.Session(region_name=region)
    return _LockedSession(session)


def client(service: str, config: AwsConfig, max_connections: int = 10, beat: bool = False):
    """A boto3 client for ``service`` as the configuration says, without botocore retries;
    ``beat``: with the short time-outs of the heartbeat's calls (no long poll), so that a
    hung call fails in time to be retried within the lease it extends."""
    botocore_config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=AWS_BEAT_CONNECT_TIMEOUT_SECONDS if beat else AWS_CONNECT_TIMEOUT_SECONDS,
        read_timeout=AWS_BEAT_READ_TIMEOUT_SECONDS if beat else AWS_READ_TIMEOUT_SECONDS,
        max_pool_connections=max_connections,
    )
    try:
        return _session(region_name(config)).client(
            service, endpoint_url=config.endpoint_url, config=botocore_config)
    except NoRegionError as exc:
        raise translate(exc, service) from exc
    except BotoCoreError as exc:  # a profile that does not exist, a malformed config file
        raise CredentialsError(f"AWS configuration: {exc}") from exc


def sqs_client(config: AwsConfig, max_connections: int = 10, beat: bool = False):
    return client("sqs", config, max_connections, beat)


def dynamodb_client(config: AwsConfig, max_connections: int = 10, beat: bool = False):
    return client("dynamodb", config, max_connections, beat)


def s3_client(config: AwsConfig):
    return client("s3", config)


def account_id(config: AwsConfig) -> str:
    """The AWS account the credentials belong to."""
    sts = client("sts", config)
    return call("look up the AWS account", sts.get_caller_identity)["Account"]
