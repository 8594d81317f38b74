"""The dead-letter queue of a prefix: what is in it (`cloudkon dlq list`, `show`), and
putting messages back on the input queue (`cloudkon dlq redrive`).

SQS cannot read a queue without receiving from it: listing receives every message for a
short visibility timeout (``DLQ_PEEK_SECONDS``) and gives them all back at once, so the
queue is left as it was (each message's own receive count on the dead-letter queue goes
up by one). A redriven message is sent to the input queue with its body unchanged, then
deleted from the dead-letter queue: a crash in between leaves a copy in both, which the
lease of its bundle makes harmless.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cloudkon.backends import Message
from cloudkon.backends.sqs import RECEIVES_ATTRIBUTE, REASON_ATTRIBUTE, SOURCE_ATTRIBUTE
from cloudkon.codec import decode_bundle
from cloudkon.errors import CodecError, UsageError
from cloudkon.model import bundle_key

# How long listing holds the dead letters it reads before giving them back: long enough to
# read them all, short enough that a failed listing leaves them hidden only briefly.
DLQ_PEEK_SECONDS = 30
# The most dead letters one command reads.
DLQ_MAX_MESSAGES = 1000
# Without a reason of ours, the message was moved by the queue's redrive policy.
REDRIVE_POLICY_REASON = "received too often without completing (the queue's redrive policy)"


@dataclass
class DeadLetter:
    """One message of the dead-letter queue."""

    id: str
    body: str
    receipt: str
    reason: str
    receive_count: int  # receives on the input queue (approximate when SQS moved it)
    job_id: str = ""  # "" when the body is not a bundle
    bundle: int | None = None
    attempt: int = 1
    tasks: list[tuple[int, str]] | None = None
    source_id: str = ""  # its id on the input queue, when a worker moved it (a new message)

    @property
    def key(self) -> str:
        return "" if self.bundle is None else bundle_key(self.job_id, self.bundle, self.attempt)

    def to_dict(self, with_tasks: bool = False) -> dict:
        d = {"id": self.id, "job_id": self.job_id or None, "bundle": self.bundle,
             "attempt": self.attempt, "reason": self.reason,
             "receive_count": self.receive_count, "source_id": self.source_id or None,
             "tasks": len(self.tasks) if self.tasks is not None else None}
        if with_tasks:
            d["task_list"] = ([{"line": line, "command": command} for line, command in self.tasks]
                              if self.tasks is not None else None)
            d["body"] = None if self.tasks is not None else self.body
        return d

    def line(self) -> str:
        what = (f"job {self.job_id} bundle {self.bundle}"
                + (f" (attempt {self.attempt})" if self.attempt > 1 else "")
                + f", {len(self.tasks):,} tasks") if self.tasks is not None else "not a bundle"
        return f"{self.id}  {what}  receives {self.receive_count}  reason: {self.reason}"

    def to_text(self) -> str:
        lines = [self.line()]
        if self.tasks is None:
            lines.append(f"  body: {self.body[:1000]}")
        else:
            lines += [f"  {line}\t{command}" for line, command in self.tasks]
        return "\n".join(lines)


class DeadLetters:
    """The dead-letter queue and the input queue of a deployment."""

    def __init__(self, deployment, limit: int = DLQ_MAX_MESSAGES) -> None:
        self.deployment = deployment
        self.queue = deployment.broker.queue(deployment.config.dead_letter_queue)
        self.limit = limit

    def _receive_all(self) -> list[DeadLetter]:
        found: dict[str, DeadLetter] = {}
        while len(found) < self.limit:
            batch = self.queue.peek(DLQ_PEEK_SECONDS)
            if not batch:
                break
            for entry in batch:
                found[entry["MessageId"]] = _dead_letter(entry)
        return list(found.values())

    def _give_back(self, letters: list[DeadLetter]) -> None:
        if letters:
            self.queue.give_back([Message(d.id, d.body, d.receipt, 0) for d in letters])

    def list(self) -> list[DeadLetter]:
        """Every dead letter (up to the limit), left in the queue."""
        letters = self._receive_all()
        self._give_back(letters)
        return letters

    def show(self, message_id: str) -> DeadLetter:
        """The dead letter ``message_id``, left in the queue; UsageError if there is none."""
        letters = self._receive_all()
        self._give_back(letters)
        for letter in letters:
            if letter.id == message_id:
                return letter
        raise UsageError(f"no message {message_id} in queue {self.queue.name}"
                         " (`cloudkon dlq list` lists them)")

    def redrive(self, message_ids: list[str] | None) -> list[DeadLetter]:
        """Send the dead letters ``message_ids`` (every one if None) back to the input
        queue and delete them here; UsageError, with nothing moved, if one is not there."""
        letters = self._receive_all()
        if message_ids is None:
            chosen, rest = letters, []
        else:
            wanted = set(message_ids)
            missing = wanted - {d.id for d in letters}
            if missing:
                self._give_back(letters)
                raise UsageError(f"no message {', '.join(sorted(missing))} in queue"
                                 f" {self.queue.name} (`cloudkon dlq list` lists them)")
            chosen = [d for d in letters if d.id in wanted]
            rest = [d for d in letters if d.id not in wanted]
        self._give_back(rest)
        if chosen:
            self.deployment.input_queue.send_batch([d.body for d in chosen])
            for d in chosen:
                self.queue.delete(Message(d.id, d.body, d.receipt, 0))
        return chosen


def _dead_letter(entry: dict) -> DeadLetter:
    attrs = entry.get("MessageAttributes", {})
    reason = attrs.get(REASON_ATTRIBUTE, {}).get("StringValue") or REDRIVE_POLICY_REASON
    if RECEIVES_ATTRIBUTE in attrs:
        receives = int(attrs[RECEIVES_ATTRIBUTE]["StringValue"])
    else:  # moved by SQS: its count went on here, where our own receive counted one more
        receives = max(int(entry.get("Attributes", {}).get("ApproximateReceiveCount", 1)) - 1, 0)
    letter = DeadLetter(entry["MessageId"], entry["Body"], entry["ReceiptHandle"], reason,
                        receives, source_id=attrs.get(SOURCE_ATTRIBUTE, {}).get("StringValue", ""))
    try:
        bundle, _ = decode_bundle(entry["Body"])
    except CodecError:
        try:  # a body of ours that does not decode may still name its job
            doc = json.loads(entry["Body"])
            letter.job_id = doc.get("job", "") if isinstance(doc, dict) else ""
            letter.job_id = letter.job_id if isinstance(letter.job_id, str) else ""
        except ValueError:
            pass
        return letter
    letter.job_id, letter.bundle, letter.attempt = bundle.job_id, bundle.seq, bundle.attempt
    letter.tasks = bundle.tasks
    return letter
