"""Limits and defaults, each with where the number comes from.

AWS limits join these as the remote flavour uses them; nothing else in the code base
spells a limit as a bare number.
"""

# Linux MAX_ARG_STRLEN (32 pages of 4 KiB): the longest single argument execve() accepts,
# terminating NUL included. A longer line could never run as `/bin/sh -c LINE`.
MAX_LINE_BYTES = 131072 - 1

# Tasks per bundle of `cloudkon run`. Large enough that queue traffic is noise next to task
# execution (CloudKon's task bundling), small enough that a bundle of results stays a few KiB.
DEFAULT_BUNDLE_SIZE = 256

# A bundle also closes once the estimated milliseconds of its tasks reach a budget, so that
# long tasks spread over the workers instead of queueing behind each other in one bundle.
# A sleep task costs its milliseconds. A shell command's cost is unknown: it is assumed to
# cost SHELL_TASK_MS, about what starting a process and a shell costs at the least.
SHELL_TASK_MS = 20
# Locally a queue hand-off costs microseconds: shell commands travel one per bundle.
DEFAULT_BUNDLE_MS = 20
# Through SQS and DynamoDB a bundle costs about seven requests of 10-50 ms each: a bundle of
# two seconds' work (100 shell commands, 200 `sleep 10`) makes them about 1% of its time.
DEFAULT_REMOTE_BUNDLE_MS = 2000
# A remote job ends small: its last bundles (this many full ones' tasks) are cut again so
# that each holds half of the work left, and every worker thread finishes at about the
# same time (issue 13's remote efficiency). A full bundle last would keep one thread busy
# for up to a whole budget while the others idle.
TAIL_HELD_BUNDLES = 3
# ... and no bundle of that end holds less than this share of its work (1/32 of 6 s: 190
# ms) or one shell command, so that a job makes no more bundles, and requests, than when
# its bundles started small (from one shell command, doubling).
TAIL_PARTS_MAX = 32
# ... nor more than this share of it, so that a short job (all of it held back) spreads
# over four threads at least, not half of it on one.
TAIL_PARTS_MIN = 4

# How much of the end of each of stdout and stderr a result keeps, and the most it may keep
# (--tail-bytes). 64 KiB: a result with both tails full, binary ones carried as base64
# (4/3), takes about 171 KiB, so one result still fits a message of the 256 KiB default
# without spilling to S3; a task being read holds at most twice that per stream, so 1,024
# bundle threads hold at most 256 MiB of tails.
DEFAULT_TAIL_BYTES = 4096
MAX_TAIL_BYTES = 65536

# The time limit of one task, in seconds, unless --task-timeout says otherwise.
DEFAULT_TASK_TIMEOUT = 3600.0

# After a timed-out task's process group got SIGTERM, seconds before it gets SIGKILL
# (as `timeout --kill-after`).
KILL_GRACE_SECONDS = 2.0

# The most worker threads `cloudkon run` starts: each is an OS thread with its own stack,
# and a few thousand already keep thousands of `sleep` tasks in flight.
MAX_LOCAL_WORKERS = 4096

# How many bad lines are printed one by one before the rest are only counted.
MAX_REPORTED_BAD_LINES = 20

# After Ctrl-C, how long `cloudkon run` may read on through the rest of the workload to count
# the tasks it never read (about 1.5 million lines a second); past it, a lower bound.
UNREAD_COUNT_SECONDS = 1.0

# How many failed or timed-out tasks a summary lists (those of the lowest line numbers)
# before the rest are only counted.
MAX_LISTED_FAILURES = 10

# The first bytes of a workload that are inspected to tell text from binary data.
BINARY_SNIFF_BYTES = 65536
# Binary data when at least this share of those bytes cannot be in text: control characters
# (not tab, newline, CR, FF, VT, ESC) and bytes that are not UTF-8. Perl's -B test uses the
# same share; executables, images, archives and UTF-16 text have 50% to 90%, a text file with
# a few bad lines well under 1%.
BINARY_ODD_BYTES_SHARE = 0.3

# --- AWS: the remote flavour ---------------------------------------------------------------
# Service quotas as documented by AWS (SQS Developer Guide, "Amazon SQS quotas"; DynamoDB
# Developer Guide, "Service, account, and table quotas").

# Entries in one SendMessageBatch / DeleteMessageBatch / ChangeMessageVisibilityBatch call,
# and the most messages one ReceiveMessage returns (MaxNumberOfMessages).
SQS_MAX_BATCH = 10

# The largest message, and the largest batch in total, SQS accepts since August 2025: 1 MiB.
# A queue's MaximumMessageSize still defaults to 256 KiB; `cloudkon setup` raises it to this.
SQS_MAX_MESSAGE_BYTES = 1048576
SQS_MAX_BATCH_BYTES = 1048576

# What a queue created elsewhere accepts unless told otherwise (the MaximumMessageSize
# default). Results messages stay under it, so they fit any queue they are sent to.
SQS_DEFAULT_MAX_MESSAGE_BYTES = 262144

# A results message larger than this is spilled: its body goes to the workload bucket and
# the message carries a pointer (the SQS Extended Client's pattern). The 256 KiB default
# less 8 KiB for the message attributes and the pointer's own envelope.
RESULTS_INLINE_MAX_BYTES = SQS_DEFAULT_MAX_MESSAGE_BYTES - 8192

# Spilled objects (results of messages and of lease items) expire from the bucket after
# this many days, by a lifecycle rule `cloudkon setup` sets: as long as SQS keeps a message
# and the lease table a COMPLETED lease (14 days), so no pointer outlives its object.
SPILL_RETENTION_DAYS = 14

# The longest long poll: ReceiveMessage WaitTimeSeconds is 0 to 20.
SQS_LONG_POLL_SECONDS = 20

# How long one receive of `cloudkon worker` waits for messages (--wait-seconds). A poll
# cannot be cut short without losing what SQS picked for it (those messages stay in flight,
# invisible, until their visibility timeout), so a stop waits for the poll in flight and
# gives back what it brings: an idle worker exits about this long after SIGTERM, well
# within 2 s. The price: an idle worker polls about 3,600 times an hour, 2.6 million
# requests a month, $1.04 a month at $0.40 per million (a 20 s poll: 180 an hour, $0.05).
# Only one thread of a worker polls at a time, and only while a thread is free.
WORKER_WAIT_SECONDS = 1

# The longest visibility timeout, 12 hours, counted from the message's first receive:
# heartbeats cannot keep one message invisible for longer than that.
SQS_MAX_VISIBILITY_SECONDS = 43200

# The longest a queue keeps a message (MessageRetentionPeriod maximum, 14 days). The
# dead-letter queue keeps its messages that long, and a COMPLETED lease is kept as long, so
# that any late duplicate of a bundle is still recognised.
SQS_MAX_RETENTION_SECONDS = 1209600

# Keys in one BatchGetItem call (and at most 16 MB of items in its answer).
DYNAMODB_MAX_BATCH_GET = 100

# A DynamoDB item is at most 400 KB, attribute names and values included.
DYNAMODB_MAX_ITEM_BYTES = 400 * 1024

# Of that, what a lease item may spend on the packed results of its bundle; the rest is
# room for the key, owner, status and times. Results that do not fit are spilled to the
# workload bucket and the item holds a pointer (codec.WireCodec); where nothing can spill
# (no bucket), their output tails are cut (codec.pack_results).
LEASE_RESULTS_MAX_BYTES = 360 * 1024

# The worker's visibility timeout and lease, in seconds: how long a bundle of a worker that
# died stays invisible before another worker may take it over. A heartbeat renews both
# every third of it, so a task may run for as long as it needs (up to the 12 hours above).
DEFAULT_VISIBILITY_SECONDS = 60
HEARTBEATS_PER_VISIBILITY = 3

# A lease lasts this share of the visibility timeout, both renewed together: when a worker
# dies, its lease has expired by the time its message is visible again, so the next
# receiver takes the bundle over at once instead of finding it still leased.
LEASE_SHARE_OF_VISIBILITY = 0.9

# After an AWS call failed even with its retries, how long the worker waits before trying
# that step again (receiving, or a heartbeat).
AWS_ERROR_PAUSE_SECONDS = 5.0

# How often SQS may deliver a message before redrive moves it to the dead-letter queue.
# Every receive counts, also one that ends in a give-back at shutdown (a spot interruption,
# a scale-in) or in finding the bundle leased by another worker; 50 leaves room for a long
# bundle to be interrupted many times, and still stops a message that kills every worker
# that takes it (a message that is not a bundle goes to the dead-letter queue at once).
DEFAULT_MAX_RECEIVE_COUNT = 50

# After SIGTERM, how long running tasks may take to finish. An EC2 spot interruption
# notice comes two minutes ahead; 110 s leaves ten for giving work back and exiting.
DEFAULT_DRAIN_SECONDS = 110.0

# How often the worker logs its liveness line with counts.
DEFAULT_LIVENESS_SECONDS = 60.0

# Attempts at one AWS call that fails with throttling, a 5xx or a dropped connection, and
# the cap of the exponential backoff between them (seconds, full jitter). Eight attempts
# ride out about a minute of trouble before the caller is told.
AWS_MAX_ATTEMPTS = 8
AWS_BACKOFF_BASE_SECONDS = 0.2
AWS_BACKOFF_MAX_SECONDS = 20.0

# Connection and read time-outs of AWS calls. The read time-out must exceed the long poll.
AWS_CONNECT_TIMEOUT_SECONDS = 5
AWS_READ_TIMEOUT_SECONDS = SQS_LONG_POLL_SECONDS + 10

# The heartbeat's calls (ChangeMessageVisibility, the lease's UpdateItem) go through clients
# of their own with short time-outs: none of them waits like a long poll (they take tens of
# milliseconds). One attempt takes at most their sum.
AWS_BEAT_CONNECT_TIMEOUT_SECONDS = 2
AWS_BEAT_READ_TIMEOUT_SECONDS = 4
AWS_BEAT_ATTEMPT_SECONDS = AWS_BEAT_CONNECT_TIMEOUT_SECONDS + AWS_BEAT_READ_TIMEOUT_SECONDS

# A call that extends a lease or a message's visibility gives up, retries included, within
# this share of the time it extends them by (no retry starts that could end later, an
# attempt taking up to AWS_BEAT_ATTEMPT_SECONDS): 9 s of a 54 s lease, 10 s of a 60 s
# visibility, so that a beat's two calls end well within the beat interval (20 s).
EXTEND_BUDGET_SHARE = 1 / 6

# A worker counts its lease as gone this share of the lease before it expires by its own
# reckoning (from when the last beat that landed was sent): then it ends the bundle's
# running task and gives the lease up, before anyone else could take it over.
LEASE_GUARD_SHARE = 0.1

# Heartbeats of different bundles run on a pool of this many threads at most (fewer with
# fewer bundle threads): a slow call delays only its own bundle's beat.
HEARTBEAT_MAX_CONCURRENT = 32

# Leases a worker watches for a takeover (a record version seen, and since when, per key)
# at most; then the memory starts afresh, which only delays takeovers.
LEASE_OBSERVATIONS_KEPT = 4096
# A worker that finds a bundle's lease held keeps the message hidden until its watch of the
# lease's version ends plus this margin, and then claims it again itself (its heartbeat
# thread ticks at least every second), so the watch is not restarted by whichever worker
# happens to receive the message next.
WATCH_RETRY_MARGIN_SECONDS = 2

# The most tasks one bundle message may carry. Its results must fit one lease item (above)
# even with their output cut away: a few bytes each, packed, so ten thousand leave room.
MAX_BUNDLE_TASKS = 10000

# Tasks per bundle of the remote flavour: as many as a bundle may carry. Through SQS and
# DynamoDB every bundle costs requests (a send, a receive, a claim, a completion, a results
# send and receive, two deletes), so a bundle is closed by its estimated work
# (DEFAULT_REMOTE_BUNDLE_MS) and by its bytes (one message, SQS_MAX_MESSAGE_BYTES), not by a
# small count: 100 shell commands or 200 `sleep 10` still travel per bundle, while 10,000
# `sleep 0` (about 200 KiB) share one message and cost a tenth of a request each.
DEFAULT_REMOTE_BUNDLE_SIZE = MAX_BUNDLE_TASKS

# How long the worker (`cloudkon worker`) lets the input message of a finished bundle wait
# for others to be deleted with it in one DeleteMessageBatch (at most SQS_MAX_BATCH): short
# next to the visibility timeout, and a worker that dies meanwhile leaves only messages
# whose bundles are COMPLETED, replayed when they come back.
DELETE_BATCH_SECONDS = 0.5

# Senders of `cloudkon submit --direct` and of the Lambda: SendMessageBatch calls in flight
# at once. On AWS one call takes 10-50 ms, so a few in parallel send a million-task
# workload's bundles in seconds.
DEFAULT_SENDERS = 4

# A worker whose input queue answers "does not exist" for this long (deleted by `cloudkon
# teardown`, or by hand) exits 2. Not at the first answer: SQS may say so for a moment
# while a queue of the same name is being recreated (AWS asks for 60 s between the two).
QUEUE_GONE_EXIT_SECONDS = 15.0

# `cloudkon sandbox`: the port of its moto server on 127.0.0.1 (LocalStack's 4566 and
# moto's own 5000 are left to them), the region it names, and the seconds its workers get
# to exit after Ctrl-C before they are killed.
SANDBOX_PORT = 4575
SANDBOX_REGION = "us-east-1"  # the one region whose buckets take no LocationConstraint
SANDBOX_STOP_SECONDS = 15.0
# How long one receive of the sandbox's S3 events waits: bounds how late it sees Ctrl-C.
SANDBOX_EVENT_POLL_SECONDS = 1

# How long a worker trusts what it last read of a job's state (cancelled or not) before
# reading it again: at most one read per job this often, and never longer than a
# heartbeat interval, so a cancel reaches running bundles at their next heartbeat.
JOB_STATE_CACHE_SECONDS = 5.0

# The most attempts a job may have (`cloudkon retry` adds one each time): attempt numbers
# are kept one byte per line while collecting.
MAX_JOB_ATTEMPTS = 255

# --- Fleets: the worker registry, the Auto Scaling group, the provisioner ------------------

# A worker's registry record is renewed every heartbeat interval (visibility / 3); missing
# this many beats in a row shows it as stale (a minute with the default visibility).
WORKER_STALE_BEATS = 3

# How long a registry record outlives its last beat before DynamoDB's TTL may sweep it:
# long enough that `fleet status` shows a dead worker as stale for a day.
WORKER_RECORD_RETENTION_SECONDS = 86400

# The termination lifecycle hook holds an instance that Auto Scaling takes out of service
# this long: the unit's TimeoutStopSec (120 s: the drain, 110 s, plus ten for giving work
# back) and a minute for the watcher's 5 s polls of the instance metadata and the shutdown.
DRAIN_HOOK_SECONDS = int(DEFAULT_DRAIN_SECONDS) + 70

# `fleet up` defaults: the instance type, the group's bounds and its size when created.
DEFAULT_INSTANCE_TYPE = "c7i.large"
DEFAULT_FLEET_MIN = 0
DEFAULT_FLEET_MAX = 10
DEFAULT_FLEET_INSTANCES = 1

# The public SSM parameter that names the latest Amazon Linux 2023 AMI (x86_64).
AL2023_AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
# The instance metadata service answers a PUT for a token only this many network hops away:
# 1 keeps it from containers on a worker (EC2's default; AL2023 AMIs ask for 2).
IMDS_HOP_LIMIT = 1

# The provisioner: how many tasks a queued bundle is assumed to hold (a remote bundle holds
# about 2000 ms of work: 100 shell commands at SHELL_TASK_MS each), and how many queued
# tasks one worker should have ahead of it.
DEFAULT_TASKS_PER_BUNDLE = DEFAULT_REMOTE_BUNDLE_MS // SHELL_TASK_MS
DEFAULT_TASKS_PER_WORKER = 1000

# No two changes of the desired count within this many seconds (Auto Scaling's own default
# cool-down, 300 s), so the fleet does not flap while new instances boot and the backlog
# they are meant for drains.
DEFAULT_SCALE_COOLDOWN_SECONDS = 300

# A fleet whose backlog has been empty this long goes down to its minimum. EC2 bills a
# minute at least, and a new worker takes a few minutes to boot and install: ten minutes of
# idleness is about what a restart would cost.
DEFAULT_SCALE_IDLE_SECONDS = 600

# How often `fleet scale --auto` (and the Lambda's schedule) decides.
SCALE_INTERVAL_SECONDS = 60

# Signed bundles (cloudkon/signing.py). A signed task bundle older than the replay window is
# refused. The default is the input queue's retention (14 days): no bundle legitimately
# waits in the queue longer, so none is refused for its age, and the lease of a bundle that
# ran is kept at least as long after it ran, so a copy resent within the window finds it
# COMPLETED and runs nothing. A bundle signed further in the future than the skew allowed
# (the signer's clock ahead of the worker's) is refused too.
DEFAULT_REPLAY_WINDOW_SECONDS = SQS_MAX_RETENTION_SECONDS
SIGNATURE_MAX_FUTURE_SECONDS = 300
# A signing key (a line of the key file or SSM parameter) has at least this many
# characters: 32 hex digits are 128 bits (`openssl rand -hex 32` gives 64).
MIN_SIGNING_KEY_CHARS = 32

# The split's progress record (the job record's ``split_progress``): written at most this
# often while bundles are sent, and when the split stops. A retried split continues after the
# last bundle recorded; only the bundles sent since are sent again (deduplicated by key).
SPLIT_PROGRESS_SECONDS = 5.0
# The Lambda stops splitting this long before its time is up (context's remaining time),
# records its progress and invokes itself again to continue; the margin covers the batches
# in flight, the record and the invoke.
SPLIT_STOP_MARGIN_SECONDS = 60.0
# A split whose record has not changed for this long has stopped (a Lambda killed, its
# retries spent): `collect` and `status` report it failed. Above a Lambda's 15 minutes would
# be safe but slow; a healthy split writes its record every SPLIT_PROGRESS_SECONDS, and a
# retried one on start, so 5 minutes covers Lambda's retry delays (1 then 2 minutes).
SPLIT_STALL_SECONDS = 300.0
# A job's split that failed with an error this many times in a row, without progress in
# between, is given up (recorded REJECTED with the error): Lambda tries an event 3 times.
SPLIT_MAX_FAILURES = 3

# A worker stores the results of a running bundle's finished tasks in its lease within this
# many seconds (one UpdateItem per bundle with new results per interval, never one per
# task): a worker killed mid-bundle has its takeover re-run at most the tasks that finished
# within the last interval, and the one that was running.
RESULTS_STORE_SECONDS = 2.0
