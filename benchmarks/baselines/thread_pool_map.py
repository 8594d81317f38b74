"""Baseline for context: ThreadPoolExecutor(THREADS).map over the lines of a workload.

The per-task work is that of bare_loop.py and queue_pipeline.py: decode, strip, skip
blanks and comments, recognise ``sleep N`` in milliseconds, sleep only if N > 0, and
record a (line, status, start, end) tuple with time.time(). Prints
{"tasks": ..., "succeeded": ...} as JSON.

    python thread_pool_map.py WORKLOAD [THREADS]
"""

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def run_task(item):
    n, raw = item
    s = raw.decode("utf-8").strip()
    if not s or s[0] == "#":
        return None
    start = time.time()
    parts = s.split()
    if parts[0] == "sleep" and len(parts) == 2:
        ms = float(parts[1])
        if ms > 0:
            time.sleep(ms / 1000.0)
        status = "succeeded"
    else:
        rc = subprocess.call(["/bin/sh", "-c", s])
        status = "succeeded" if rc == 0 else "failed"
    return (n, status, start, time.time())


def main(path: str, threads: int) -> None:
    with open(path, "rb") as f, ThreadPoolExecutor(threads) as pool:
        results = [r for r in pool.map(run_task, enumerate(f, 1)) if r is not None]
    ok = sum(1 for r in results if r[1] == "succeeded")
    print(json.dumps({"tasks": len(results), "succeeded": ok}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 4)
