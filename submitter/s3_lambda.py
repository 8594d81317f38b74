"""What the S3-triggered Lambda of ``app.py`` does, and where it reads its settings.

Its settings are the environment variables of the Chalice stage (``.chalice/config.json``):
``CLOUDKON_PREFIX`` names the queues and lease table (as ``--prefix`` does for every
command), ``CLOUDKON_BUCKET`` the workload bucket and ``CLOUDKON_SIGNING_KEY``, if set, the
key the bundles are signed with (``ssm:/NAME``; read at the first event, then kept). In the Lambda they are environment
variables. When Chalice imports ``app.py`` to deploy or package it, the decorator already
needs the bucket's name; Chalice sets the stage's variables then too, and where nothing has
set them (a test importing ``app.py``), they are read from ``.chalice/config.json``.

The bucket's name matters only to ``chalice deploy`` and ``chalice package`` (the handler
reads the bucket of each event): :func:`subscribed_bucket` finds it there, or says in one
line why it cannot, and lets every other import of ``app.py`` go without one.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading

from cloudkon import aws
from cloudkon.config import AwsConfig
from cloudkon.errors import CloudKonError, SplitPaused, UsageError
from cloudkon.limits import SPLIT_STOP_MARGIN_SECONDS
from cloudkon.signing import SIGNING_KEY_VARIABLE
from submitter.deployment import Deployment
from submitter.manifest import Manifest
from submitter.submit import handle_upload

log = logging.getLogger(__name__)

PREFIX_VARIABLE = "CLOUDKON_PREFIX"
BUCKET_VARIABLE = "CLOUDKON_BUCKET"
# The Chalice stage whose variables are read from the file when the environment has none.
STAGE_VARIABLE = "CLOUDKON_CHALICE_STAGE"
DEFAULT_STAGE = "dev"
CONFIG_FILE = os.path.join(".chalice", "config.json")


def stage_variable(name: str, project_dir: str) -> str | None:
    """The stage variable ``name``: from the environment, else from the stage's entry in
    ``project_dir``'s ``.chalice/config.json`` (stage over top level); None if unset."""
    value = os.environ.get(name)
    if value:
        return value
    try:
        with open(os.path.join(project_dir, CONFIG_FILE), encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{CONFIG_FILE}: {exc}") from None
    stage = os.environ.get(STAGE_VARIABLE) or DEFAULT_STAGE
    variables = {**config.get("environment_variables", {}),
                 **config.get("stages", {}).get(stage, {}).get("environment_variables", {})}
    return variables.get(name) or None


def workload_bucket(project_dir: str) -> str | None:
    """The bucket the stage names (environment, else ``.chalice/config.json``); None if unset."""
    return stage_variable(BUCKET_VARIABLE, project_dir)


# Subscribed to where no bucket is named and none is needed (the Lambda itself, a test or a
# plain import of app.py): not a valid bucket name, so it cannot be mistaken for one.
UNSET_BUCKET = "UNSET-CLOUDKON_BUCKET"
# Set by `chalice local` in its server process, which loads the app in a thread.
_CHALICE_LOCAL_WORKER = "CHALICE_WORKER"


def chalice_command() -> str | None:
    """The Chalice CLI command loading the app in this process (``deploy``, ``package``,
    ``local``...), or None when no Chalice command is (the Lambda runtime, a test, a plain
    import, ``cloudkon sandbox``)."""
    cli = sys.modules.get("chalice.cli")
    if cli is None:
        return None
    import click  # loaded already: the Chalice CLI is built on it

    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        return ctx.info_name if ctx.find_root().command is getattr(cli, "cli", None) else None
    if os.environ.get(_CHALICE_LOCAL_WORKER):
        return "local"
    return None


def subscribed_bucket(project_dir: str) -> str:
    """The bucket whose uploads the handler is subscribed to.

    The stage's ``CLOUDKON_BUCKET``, else, when ``chalice deploy`` or ``chalice package``
    loads the app, the stage prefix's bucket in the credentials' account (as `cloudkon
    setup` names it), if it exists. When neither can be had, and when ``chalice local``
    loads the app (it serves HTTP routes and this app has none), one line on stderr ends the
    command. Elsewhere an unset bucket is fine: the handler reads each event's bucket."""
    bucket = workload_bucket(project_dir)
    command = chalice_command()
    if command == "local":
        _exit_chalice("`chalice local` serves HTTP routes, and this app has none: its handler"
                      " takes S3 events. Run `cloudkon sandbox` to try it with S3 events,"
                      " on this machine, without an AWS account")
    if bucket or command is None:
        return bucket or UNSET_BUCKET
    stage = _chalice_stage()
    try:
        bucket = _prefix_bucket(os.environ.get(PREFIX_VARIABLE) or AwsConfig.prefix)
    except CloudKonError as exc:
        _exit_chalice(f"{CONFIG_FILE}: the stage {stage!r} names no {BUCKET_VARIABLE}, and the"
                      f" prefix's bucket cannot be found ({exc}): run `cloudkon setup` in this"
                      " folder, which creates it and writes its name there")
    print(f"cloudkon: the stage {stage!r} names no {BUCKET_VARIABLE} in {CONFIG_FILE}:"
          f" subscribing to the prefix's bucket {bucket}", file=sys.stderr)
    return bucket


def _prefix_bucket(prefix: str) -> str:
    """The workload bucket of ``prefix`` in the credentials' account; NotSetUpError if it
    does not exist."""
    from cloudkon import aws

    config = AwsConfig(prefix=prefix)
    name = config.bucket(aws.account_id(config))
    aws.call(f"bucket {name}", aws.s3_client(config).head_bucket, Bucket=name)
    return name


def _chalice_stage() -> str:
    import click

    ctx = click.get_current_context(silent=True)
    stage = ctx.params.get("stage") if ctx is not None else None
    return stage or os.environ.get(STAGE_VARIABLE) or DEFAULT_STAGE


def _exit_chalice(message: str) -> None:
    """End the Chalice command with ``message`` on one line, without a traceback (Chalice
    prints one for any exception; `chalice local` loads the app in a thread)."""
    print(f"cloudkon: error: {message}", file=sys.stderr, flush=True)
    if os.environ.get(_CHALICE_LOCAL_WORKER):
        os._exit(2)  # a SystemExit would end only the loading thread, and the server hang
    raise SystemExit(2)


_deployment: Deployment | None = None
_lock = threading.Lock()


def _current_deployment() -> Deployment:
    """The deployment the stage names, made at the first event (not at import time) and
    kept for the next events of this Lambda instance."""
    global _deployment
    config = AwsConfig(prefix=os.environ.get(PREFIX_VARIABLE) or AwsConfig.prefix,
                       signing_key=os.environ.get(SIGNING_KEY_VARIABLE) or None)
    with _lock:
        if _deployment is None or _deployment.config != config:
            _deployment = Deployment(config)
        return _deployment


def on_upload(bucket: str, key: str, context=None, event: dict | None = None) -> Manifest | None:
    """Split the workload uploaded to ``bucket`` under ``key`` into bundles on the input
    queue. ``key`` is decoded: S3 sends it quote_plus-encoded, and Chalice's S3Event
    decodes it (``event.key``); decoding it again would turn a '+' into a space.

    With the Lambda's ``context`` (and twice the margin left), the split stops
    SPLIT_STOP_MARGIN_SECONDS before the Lambda's time is up, its progress recorded, and this
    function invokes itself again, asynchronously, with the same S3 ``event``, to continue
    from the record. If that invoke fails, or the split sent nothing in its time, it raises
    (SplitPaused), and Lambda's retry of the event continues the split instead."""
    logging.getLogger("submitter").setLevel(logging.INFO)  # the Lambda's root logs WARNING
    deployment = _current_deployment()
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    margin_ms = SPLIT_STOP_MARGIN_SECONDS * 1000
    if remaining is None or remaining() < 2 * margin_ms:
        # Too short a Lambda to stop in time with the margin: one killed by its timeout is
        # retried by Lambda, and goes on from the progress record all the same.
        return handle_upload(deployment, bucket, key)

    def should_stop() -> bool:
        return remaining() < margin_ms

    def continue_split() -> None:
        invoke_again(deployment, context, event or {})

    return handle_upload(deployment, bucket, key, should_stop=should_stop,
                         continue_split=continue_split if event is not None else None)


def invoke_again(deployment: Deployment, context, event: dict) -> None:
    """Invoke this Lambda function again, asynchronously, with ``event``; SplitPaused if
    that fails (the caller's error then has Lambda retry the event)."""
    function = getattr(context, "invoked_function_arn", "") or getattr(
        context, "function_name", "")
    try:
        client = aws.client("lambda", deployment.config)
        aws.call(f"invoke {function} again", client.invoke, FunctionName=function,
                 InvocationType="Event", Payload=json.dumps(event).encode())
    except CloudKonError as exc:
        raise SplitPaused(f"the split's continuation could not be invoked ({exc}); Lambda's"
                          " retry of the event continues it", progressed=True) from None
