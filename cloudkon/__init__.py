"""CloudKon for Python: run the tasks of a workload file on a pool of workers."""

__version__ = "0.1.0"
