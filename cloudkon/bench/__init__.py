"""CloudKon's comparison runs: the same workloads through the local flavour, the remote
flavour on a moto server, the naive remote design and peers (ThreadPoolExecutor, xargs,
GNU parallel, Celery on SQS), with request accounting and cost.

Used by ``cloudkon bench`` and by the pytest-benchmark runs in benchmarks/. Needs the
``bench`` extra (``pip install 'cloudkon[bench]'``): moto, Celery, matplotlib.
"""
