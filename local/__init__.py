"""The local flavour: in-process queues and worker threads, no AWS account needed."""
