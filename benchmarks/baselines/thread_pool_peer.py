"""The ThreadPoolExecutor peer: ``ThreadPoolExecutor(THREADS).map`` over a workload's lines,
the obvious Python way to run them, and the baseline of the comparison runs.

The per-task work is that of benchmarks/baselines/bare_loop.py: decode, strip, skip
blanks and comments, recognise ``sleep N`` in milliseconds (sleep only if N > 0), run
anything else as ``/bin/sh -c LINE`` with its output captured, and record a
(line, status, start, end) tuple with time.time(). Prints {"tasks": ..., "succeeded": ...}
as JSON. A standalone script (stdlib only), so that it measures only itself.

    python thread_pool_peer.py WORKLOAD [THREADS]
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
        rc = subprocess.run(["/bin/sh", "-c", s], stdin=subprocess.DEVNULL,
                            capture_output=True, check=False).returncode
        status = "succeeded" if rc == 0 else "failed"
    return (n, status, start, time.time())


def main(path: str, threads: int) -> None:
    with open(path, "rb") as f, ThreadPoolExecutor(threads) as pool:
        results = [r for r in pool.map(run_task, enumerate(f, 1)) if r is not None]
    ok = sum(1 for r in results if r[1] == "succeeded")
    print(json.dumps({"tasks": len(results), "succeeded": ok}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 4)
