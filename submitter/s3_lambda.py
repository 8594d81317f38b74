"""What the S3-triggered Lambda of ``app.py`` does, and where it reads its settings.

Its settings are the environment variables of the Chalice stage (``.chalice/config.json``):
``CLOUDKON_PREFIX`` names the queues and lease table (as ``--prefix`` does for every
command) and ``CLOUDKON_BUCKET`` the workload bucket. In the Lambda they are environment
variables. When Chalice imports ``app.py`` to deploy or package it, the decorator already
needs the bucket's name; Chalice sets the stage's variables then too, and where nothing has
set them (a test importing ``app.py``), they are read from ``.chalice/config.json``.
"""

from __future__ import annotations

import json
import logging
import os
import threading

from cloudkon.config import AwsConfig
from cloudkon.errors import UsageError
from submitter.deployment import Deployment
from submitter.manifest import Manifest
from submitter.submit import handle_upload

log = logging.getLogger(__name__)

PREFIX_VARIABLE = "CLOUDKON_PREFIX"
BUCKET_VARIABLE = "CLOUDKON_BUCKET"
# The Chalice stage whose variables are read from the file when the environment has none.
STAGE_VARIABLE = "CLOUDKON_CHALICE_STAGE"
DEFAULT_STAGE = "dev"
_CONFIG_FILE = os.path.join(".chalice", "config.json")


def stage_variable(name: str, project_dir: str) -> str | None:
    """The stage variable ``name``: from the environment, else from the stage's entry in
    ``project_dir``'s ``.chalice/config.json`` (stage over top level); None if unset."""
    value = os.environ.get(name)
    if value:
        return value
    try:
        with open(os.path.join(project_dir, _CONFIG_FILE), encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{_CONFIG_FILE}: {exc}") from None
    stage = os.environ.get(STAGE_VARIABLE) or DEFAULT_STAGE
    variables = {**config.get("environment_variables", {}),
                 **config.get("stages", {}).get(stage, {}).get("environment_variables", {})}
    return variables.get(name) or None


def workload_bucket(project_dir: str) -> str:
    """The bucket whose uploads trigger the Lambda; UsageError if the stage names none."""
    bucket = stage_variable(BUCKET_VARIABLE, project_dir)
    if not bucket:
        raise UsageError(
            f"{BUCKET_VARIABLE} is not set: put the workload bucket's name (`cloudkon setup`"
            f" prints it) into the stage's environment_variables in {_CONFIG_FILE}")
    return bucket


_deployment: Deployment | None = None
_lock = threading.Lock()


def _current_deployment() -> Deployment:
    """The deployment the stage names, made at the first event (not at import time) and
    kept for the next events of this Lambda instance."""
    global _deployment
    prefix = os.environ.get(PREFIX_VARIABLE) or AwsConfig.prefix
    with _lock:
        if _deployment is None or _deployment.config.prefix != prefix:
            _deployment = Deployment(AwsConfig(prefix=prefix))
        return _deployment


def on_upload(bucket: str, key: str) -> Manifest | None:
    """Split the workload uploaded to ``bucket`` under ``key`` into bundles on the input
    queue. ``key`` is decoded: S3 sends it quote_plus-encoded, and Chalice's S3Event
    decodes it (``event.key``); decoding it again would turn a '+' into a space."""
    logging.getLogger("submitter").setLevel(logging.INFO)  # the Lambda's root logs WARNING
    return handle_upload(_current_deployment(), bucket, key)
