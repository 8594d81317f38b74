"""CloudKon's benchmarks: not part of the product, and not in its wheel.

The comparison runs (``suite``: the same workloads through the local flavour, the remote
flavour on a counting moto server, the naive remote design and peers: ThreadPoolExecutor,
xargs, GNU parallel, Celery on SQS) and the benchmarks of issue 2 share one harness
(``harness``: whole-process runs, timing, peak RSS, ratio tables). Used by the
pytest-benchmark files here and by ``cloudkon bench`` from a source checkout. Needs the
``bench`` extra (``pip install -e '.[bench]'``): moto, Celery, matplotlib.
"""
