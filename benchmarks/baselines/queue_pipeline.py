"""Baseline "per-item queue pipeline": one line per queue item, 4 worker threads.

A reader thread pushes the raw lines of a workload file, one per item, through a
queue.Queue to THREADS worker threads; each does the same per-task work as bare_loop.py
(decode, strip, skip blanks and comments, recognise ``sleep N`` in milliseconds, sleep
only if N > 0, time.time() start and end) and pushes one (line, status, start, end)
tuple per task back through a second queue.Queue to the main thread, which collects them.
Prints {"tasks": ..., "succeeded": ...} as JSON.

    python queue_pipeline.py WORKLOAD [THREADS]
"""

import json
import queue
import subprocess
import sys
import threading
import time

_END = None


def run_task(n: int, raw: bytes):
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
    inq: queue.Queue = queue.Queue()
    outq: queue.Queue = queue.Queue()

    def read() -> None:
        with open(path, "rb") as f:
            for item in enumerate(f, 1):
                inq.put(item)
        for _ in range(threads):
            inq.put(_END)

    def work() -> None:
        while (item := inq.get()) is not _END:
            outq.put(run_task(*item))
        outq.put(_END)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    reader = threading.Thread(target=read)
    for t in (reader, *workers):
        t.start()
    results = []
    running = threads
    while running:
        r = outq.get()
        if r is _END:
            running -= 1
        elif r is not None:  # None: a blank line or a comment
            results.append(r)
    for t in (reader, *workers):
        t.join()
    ok = sum(1 for r in results if r[1] == "succeeded")
    print(json.dumps({"tasks": len(results), "succeeded": ok}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 4)
