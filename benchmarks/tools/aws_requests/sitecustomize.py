"""Counts the AWS requests of a process, per service and operation, from botocore's events.

Benchmark tooling, not part of CloudKon: a process started with this folder on PYTHONPATH
and CLOUDKON_COUNT_REQUESTS=PATH_PREFIX registers a ``before-call`` handler on every
botocore client it makes, and writes its counts to PATH_PREFIX.PID.json when it exits.
``install()`` does the same inside the calling process.
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import threading

_counts: collections.Counter = collections.Counter()
_lock = threading.Lock()
_installed = False


def _count(model, **kwargs) -> None:
    with _lock:
        _counts[f"{model.service_model.service_name}:{model.name}"] += 1


def install() -> None:
    """Count every request of every botocore client made from now on in this process."""
    global _installed
    if _installed:
        return
    _installed = True
    import botocore.session

    create_client = botocore.session.Session.create_client

    def counting_create_client(self, *args, **kwargs):
        client = create_client(self, *args, **kwargs)
        client.meta.events.register("before-call.*.*", _count)
        return client

    botocore.session.Session.create_client = counting_create_client


def counts() -> dict[str, int]:
    with _lock:
        return dict(_counts)


def _write(prefix: str) -> None:
    with open(f"{prefix}.{os.getpid()}.json", "w") as f:
        json.dump(counts(), f)


_prefix = os.environ.get("CLOUDKON_COUNT_REQUESTS")
if _prefix:
    install()
    atexit.register(_write, _prefix)
