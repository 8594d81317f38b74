"""SQS queues behind the :mod:`cloudkon.backends` queue interface.

Every call goes through :func:`cloudkon.aws.call` (retries, error translation). A batch
send that answers 200 can still fail some entries: only those are sent again.
"""

from __future__ import annotations

import contextlib
import logging
import threading

from botocore.exceptions import ClientError
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from cloudkon.aws import call
from cloudkon.backends import Message, batches
from cloudkon.errors import AwsError, NotSetUpError
from cloudkon.limits import (
    AWS_BACKOFF_BASE_SECONDS,
    AWS_BACKOFF_MAX_SECONDS,
    AWS_MAX_ATTEMPTS,
    EXTEND_BUDGET_SHARE,
    SQS_LONG_POLL_SECONDS,
    SQS_MAX_BATCH,
    SQS_MAX_VISIBILITY_SECONDS,
)

log = logging.getLogger(__name__)

# What SQS answers when a receipt handle no longer holds its message: deleted, received
# again, or past its visibility (moto says ReceiptHandleIsInvalid; AWS InvalidParameterValue
# or MessageNotInflight).
_NOT_HELD = ("ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight",
             "AWS.SimpleQueueService.MessageNotInflight")
REASON_ATTRIBUTE = "cloudkon-dead-letter-reason"
SOURCE_ATTRIBUTE = "cloudkon-source-message-id"
RECEIVES_ATTRIBUTE = "cloudkon-receive-count"  # receives on the input queue, this one included
_MAX_ATTRIBUTE_CHARS = 1024


class _EntriesFailed(Exception):
    """Some entries of a batch failed on SQS's side; they are worth sending again."""


class SqsQueue:
    """One SQS queue, known by URL; ``dead_letter_url`` is where :meth:`dead_letter` sends.

    ``batch_size`` caps the messages of one call (receive, batch send, batch give-back):
    10 is what SQS allows and what CloudKon uses; 1 is the naive design, kept as a setting
    so that benchmarks can measure what batching saves.
    """

    def __init__(self, client, url: str, name: str | None = None,
                 dead_letter_url: str | None = None, batch_size: int = SQS_MAX_BATCH,
                 beat_client=None) -> None:
        if not 1 <= batch_size <= SQS_MAX_BATCH:
            raise ValueError(f"batch_size {batch_size}: SQS takes 1 to {SQS_MAX_BATCH}")
        self.client = client
        # extend() is the heartbeat's call: a client with short time-outs, if given.
        self.beat_client = beat_client or client
        self.url = url
        self.name = name or url.rstrip("/").rsplit("/", 1)[-1]
        self.dead_letter_url = dead_letter_url
        self.batch_size = batch_size

    def receive(self, max_messages: int, wait_seconds: float,
                visibility_seconds: int) -> list[Message]:
        response = call(
            f"receive from queue {self.name}", self.client.receive_message,
            QueueUrl=self.url,
            MaxNumberOfMessages=max(1, min(max_messages, self.batch_size)),
            WaitTimeSeconds=max(0, min(round(wait_seconds), SQS_LONG_POLL_SECONDS)),
            VisibilityTimeout=min(int(visibility_seconds), SQS_MAX_VISIBILITY_SECONDS),
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return [
            Message(m["MessageId"], m["Body"], m["ReceiptHandle"],
                    int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)))
            for m in response.get("Messages", ())
        ]

    def delete(self, message: Message) -> None:
        with contextlib.suppress(ClientError):  # already gone: what deleting was for
            call(f"delete message {message.id} from queue {self.name}", self.client.delete_message,
                 expected=_NOT_HELD, QueueUrl=self.url, ReceiptHandle=message.receipt)

    def delete_batch(self, messages: list[Message]) -> None:
        for start in range(0, len(messages), self.batch_size):
            chunk = messages[start:start + self.batch_size]
            if len(chunk) == 1:
                self.delete(chunk[0])
                continue
            response = call(
                f"delete {len(chunk)} messages from queue {self.name}",
                self.client.delete_message_batch, QueueUrl=self.url,
                Entries=[{"Id": str(i), "ReceiptHandle": m.receipt} for i, m in enumerate(chunk)],
            )
            for failed in response.get("Failed", ()):
                # Not held any more (received again, or gone): what deleting was for, or the
                # message comes back and its bundle is found COMPLETED and replayed.
                log.debug("message %s was no longer held when deleted (%s)",
                          chunk[int(failed["Id"])].id, failed.get("Code"))

    def extend(self, message: Message, seconds: int) -> bool:
        try:
            call(f"extend message {message.id} in queue {self.name}",
                 self.beat_client.change_message_visibility, expected=_NOT_HELD,
                 budget=seconds * EXTEND_BUDGET_SHARE,
                 QueueUrl=self.url, ReceiptHandle=message.receipt,
                 VisibilityTimeout=min(int(seconds), SQS_MAX_VISIBILITY_SECONDS))
        except ClientError:
            return False
        return True

    def give_back(self, messages: list[Message]) -> None:
        for start in range(0, len(messages), self.batch_size):
            chunk = messages[start:start + self.batch_size]
            response = call(
                f"give back {len(chunk)} messages to queue {self.name}",
                self.client.change_message_visibility_batch, QueueUrl=self.url,
                Entries=[{"Id": str(i), "ReceiptHandle": m.receipt, "VisibilityTimeout": 0}
                         for i, m in enumerate(chunk)],
            )
            for failed in response.get("Failed", ()):
                log.debug("message %s was no longer held when given back (%s)",
                          chunk[int(failed["Id"])].id, failed.get("Code"))

    def send_batch(self, bodies: list[str]) -> None:
        for batch in batches(bodies, self.batch_size):
            self._send_entries({str(i): body for i, body in enumerate(batch)})

    def _send_entries(self, pending: dict[str, str]) -> None:
        """Send the entries, again and again for those that fail on SQS's side."""
        retrying = Retrying(
            retry=retry_if_exception_type(_EntriesFailed),
            wait=wait_random_exponential(multiplier=AWS_BACKOFF_BASE_SECONDS,
                                         max=AWS_BACKOFF_MAX_SECONDS),
            stop=stop_after_attempt(AWS_MAX_ATTEMPTS),
            before_sleep=lambda state: log.warning(
                "send to queue %s: %s; sending those again (attempt %d of %d)", self.name,
                state.outcome.exception(), state.attempt_number, AWS_MAX_ATTEMPTS),
        )
        try:
            for attempt in retrying:
                with attempt:
                    self._send_once(pending)
        except _EntriesFailed as exc:
            raise AwsError(f"send to queue {self.name}: {exc} (gave up after "
                           f"{AWS_MAX_ATTEMPTS} attempts)") from None

    def _send_once(self, pending: dict[str, str]) -> None:
        response = call(
            f"send {len(pending)} messages to queue {self.name}", self.client.send_message_batch,
            QueueUrl=self.url,
            Entries=[{"Id": i, "MessageBody": body} for i, body in pending.items()],
        )
        for sent in response.get("Successful", ()):
            pending.pop(sent["Id"], None)
        failed = response.get("Failed", ())
        refused = [f for f in failed if f.get("SenderFault")]
        if refused:
            first = refused[0]
            raise AwsError(f"send to queue {self.name}: {len(refused)} messages refused "
                           f"({first.get('Code')}: {first.get('Message', '')})",
                           first.get("Code", ""))
        if pending:
            codes = sorted({f.get("Code", "?") for f in failed}) or ["no answer"]
            raise _EntriesFailed(f"{len(pending)} entries failed ({', '.join(codes)})")

    # For `cloudkon status` and `cloudkon dlq`: not part of the queue interface.
    def depth(self) -> tuple[int, int]:
        """(visible, in flight) messages, as SQS counts them (approximately)."""
        attrs = call(f"queue {self.name}", self.client.get_queue_attributes, QueueUrl=self.url,
                     AttributeNames=["ApproximateNumberOfMessages",
                                     "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return (int(attrs["ApproximateNumberOfMessages"]),
                int(attrs["ApproximateNumberOfMessagesNotVisible"]))

    def peek(self, visibility_seconds: int, wait_seconds: int = 1) -> list[dict]:
        """Receive up to a batch of messages with all their attributes (the raw SQS
        entries), to be given back or deleted by receipt handle."""
        return call(f"receive from queue {self.name}", self.client.receive_message,
                    QueueUrl=self.url, MaxNumberOfMessages=self.batch_size,
                    WaitTimeSeconds=wait_seconds, VisibilityTimeout=visibility_seconds,
                    MessageAttributeNames=["All"],
                    MessageSystemAttributeNames=["All"]).get("Messages", [])

    def dead_letter(self, message: Message, reason: str) -> None:
        if self.dead_letter_url is None:
            raise NotSetUpError(f"queue {self.name} has no dead-letter queue")
        call(f"send message {message.id} to the dead-letter queue of {self.name}",
             self.client.send_message, QueueUrl=self.dead_letter_url, MessageBody=message.body,
             MessageAttributes={
                 REASON_ATTRIBUTE: {"DataType": "String",
                                    "StringValue": reason[:_MAX_ATTRIBUTE_CHARS] or "?"},
                 SOURCE_ATTRIBUTE: {"DataType": "String", "StringValue": message.id},
                 RECEIVES_ATTRIBUTE: {"DataType": "Number",
                                      "StringValue": str(message.receive_count)},
             })
        self.delete(message)


class SqsBroker:
    """Finds SQS queues by name or URL, looking each name up once; its queues move
    ``batch_size`` messages per call at most."""

    def __init__(self, client, batch_size: int = SQS_MAX_BATCH, beat_client=None) -> None:
        self.client = client
        self.beat_client = beat_client
        self.batch_size = batch_size
        self._urls: dict[str, str] = {}
        self._lock = threading.Lock()

    def url(self, name: str) -> str:
        """The URL of the queue ``name`` (a URL is its own); NotSetUpError if it does not exist."""
        if name.startswith(("https://", "http://")):
            return name
        with self._lock:
            url = self._urls.get(name)
        if url is None:
            url = call(f"queue {name}", self.client.get_queue_url, QueueName=name)["QueueUrl"]
            with self._lock:
                self._urls[name] = url
        return url

    def queue(self, name: str, dead_letter: str | None = None) -> SqsQueue:
        dlq_url = self.url(dead_letter) if dead_letter is not None else None
        return SqsQueue(self.client, self.url(name), None if "/" in name else name, dlq_url,
                        self.batch_size, self.beat_client)
