"""Signed bundles and results: HMAC-SHA256 with a deployment's shared key.

With a key configured (``--signing-key file:/PATH`` or ``ssm:/NAME``, or
CLOUDKON_SIGNING_KEY; the Lambda's stage names it in the same variable), the splitter and
``submit --direct`` sign every task bundle, workers sign the results they send and store,
and every reader checks what it reads: a worker refuses (to the dead-letter queue, with the
reason) a bundle that is unsigned, forged, signed with a key it does not have, or older
than the replay window; a replay refuses stored results that fail their check; a collector
drops such results, with a warning, and counts them.

The key file or parameter holds one key per line (blank lines and ``#`` comments skipped):
the first signs, the others are still accepted, so that keys rotate without a stop (put the
new key first, keep the old one second until nothing signed with it is left). A key's id is
derived from it (the first 8 hex digits of a SHA-256 of it), so nothing else names it.

A signed message is the message's own JSON body, as sent, with one field appended::

    BODY[:-1] + ',"sig":"hs1.KID.MILLIS.MAC"}'

where MILLIS is the signing time (milliseconds since the epoch) and MAC the hex
HMAC-SHA256, under the key KID, of ``hs1 \\n KIND \\n KID \\n MILLIS \\n JOB \\n BODY``
(KIND ``tasks`` or ``results``): exactly the bytes of the body as it was sent, its job id and
the time. The reader cuts the trailer off, checks the MAC over what remains, and decodes
only that. A reader without a key decodes a signed body as any other (the field is
ignored), so signing can be switched on with workers that do not check yet.

Stored results (the lease item's packed results) are sealed: ``CKS1`` + KID (8 bytes) +
the 32-byte HMAC of ``hs1 \\n stored \\n KID \\n \\n LEASE KEY \\n PACKED`` (no time) +
PACKED, which binds them to their bundle's lease key: results cannot be moved to another
bundle or job.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable
from typing import NamedTuple

from cloudkon.errors import SignatureError, UsageError
from cloudkon.limits import (
    DEFAULT_REPLAY_WINDOW_SECONDS,
    MIN_SIGNING_KEY_CHARS,
    SIGNATURE_MAX_FUTURE_SECONDS,
)

log = logging.getLogger(__name__)

SCHEME = "hs1"
# Where the CLI, the worker and the Lambda's stage take the key's source from.
SIGNING_KEY_VARIABLE = "CLOUDKON_SIGNING_KEY"
FILE_SOURCE = "file:"
SSM_SOURCE = "ssm:"
# What a signature adds to a message body, at most: ',"sig":"hs1.' (12), the key id (8),
# '.', the time (up to 16 digits), '.', the MAC (64) and '"'.
SIGNATURE_CHARS = 103
_KID_CHARS = 8
_TRAILER = re.compile(r',"sig":"hs1\.([0-9a-f]{8})\.([0-9]{1,16})\.([0-9a-f]{64})"\}\Z')
SEAL_MAGIC = b"CKS1"
SEAL_BYTES = len(SEAL_MAGIC) + _KID_CHARS + hashlib.sha256().digest_size


class Token(NamedTuple):
    """The signature a message carries."""

    kid: str
    millis: int
    mac: str


def key_id(secret: bytes) -> str:
    """The id of a key: 8 hex digits of a SHA-256 of it (its secret stays secret)."""
    return hashlib.sha256(b"cloudkon signing key id\n" + secret).hexdigest()[:_KID_CHARS]


def split_signed(body: str | bytes) -> tuple[str | bytes, Token | None]:
    """The body as signed and its signature, or the body unchanged and None if unsigned."""
    if isinstance(body, bytes):
        try:
            body = body.decode("ascii")
        except UnicodeDecodeError:
            return body, None
    start = max(len(body) - SIGNATURE_CHARS - 1, 0)  # the trailer is at the very end
    match = _TRAILER.search(body, start)
    if match is None:
        return body, None
    return body[:match.start()] + "}", Token(match[1], int(match[2]), match[3])


def unseal(data: bytes) -> bytes:
    """Stored results without their seal, unchecked (for a reader that has no key)."""
    if isinstance(data, (bytes, bytearray)) and data[:len(SEAL_MAGIC)] == SEAL_MAGIC:
        return bytes(data[SEAL_BYTES:])
    return data


class Signer:
    """Signs with the first of ``secrets`` and accepts any of them; ``source`` says where
    they came from (for messages). Task bundles signed more than ``window`` seconds ago
    (by ``clock``) are refused."""

    def __init__(self, secrets: list[bytes], source: str = "",
                 window: float = DEFAULT_REPLAY_WINDOW_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        if not secrets:
            raise UsageError(f"signing key {source}: holds no key")
        self._keys = {key_id(s): s for s in secrets}
        self.kid = key_id(secrets[0])
        self._secret = secrets[0]
        self.source = source
        self.window = window
        self.clock = clock

    @property
    def kids(self) -> list[str]:
        return list(self._keys)

    # --- messages -------------------------------------------------------------------------

    def sign(self, body: str, kind: str, job_id: str) -> str:
        """``body`` (a JSON object's text) with its signature appended."""
        millis = str(int(self.clock() * 1000))
        mac = self._mac(self._secret, kind, self.kid, millis, job_id, body.encode("utf-8"))
        return f'{body[:-1]},"sig":"{SCHEME}.{self.kid}.{millis}.{mac.hex()}"}}'

    def check(self, body: str, token: Token | None, kind: str, job_id: str,
              replay_window: bool) -> None:
        """SignatureError, with the reason, unless ``token`` signs ``body`` of ``job_id``
        with one of the keys (and, with ``replay_window``, within the window)."""
        if token is None:
            raise SignatureError(f"unsigned: this deployment accepts only signed {kind}"
                                 f" messages (key {self.kid} from {self.source})")
        secret = self._keys.get(token.kid)
        if secret is None:
            raise SignatureError(f"signed with key {token.kid}, which is not one of this"
                                 f" reader's keys ({', '.join(self._keys)})")
        mac = self._mac(secret, kind, token.kid, str(token.millis), job_id,
                        body.encode("utf-8")).hex()
        if not hmac.compare_digest(mac, token.mac):
            raise SignatureError(f"forged: its signature (key {token.kid}) does not match"
                                 " its body")
        if not replay_window:
            return
        age = self.clock() - token.millis / 1000
        if age > self.window:
            raise SignatureError(f"replayed: signed {age:.0f} s ago, older than the replay"
                                 f" window of {self.window:.0f} s")
        if -age > SIGNATURE_MAX_FUTURE_SECONDS:
            raise SignatureError(f"signed {-age:.0f} s in the future by this reader's clock"
                                 f" (at most {SIGNATURE_MAX_FUTURE_SECONDS} s are allowed)")

    # --- stored results -------------------------------------------------------------------

    def seal(self, packed: bytes, lease_key: str) -> bytes:
        """Packed results sealed for the lease item of ``lease_key``."""
        mac = self._mac(self._secret, "stored", self.kid, "", lease_key, packed)
        return SEAL_MAGIC + self.kid.encode("ascii") + mac + packed

    def open(self, data: bytes, lease_key: str) -> bytes:
        """The packed results of a sealed lease item of ``lease_key``; SignatureError if
        they are not sealed, or not sealed for it with one of the keys."""
        data = bytes(data)
        if data[:len(SEAL_MAGIC)] != SEAL_MAGIC or len(data) < SEAL_BYTES:
            raise SignatureError(f"the stored results of {lease_key} are unsigned")
        start = len(SEAL_MAGIC)
        kid = data[start:start + _KID_CHARS].decode("ascii", "replace")
        secret = self._keys.get(kid)
        if secret is None:
            raise SignatureError(f"the stored results of {lease_key} are signed with key"
                                 f" {kid!r}, which is not one of this reader's keys")
        packed = data[SEAL_BYTES:]
        mac = self._mac(secret, "stored", kid, "", lease_key, packed)
        if not hmac.compare_digest(mac, data[start + _KID_CHARS:SEAL_BYTES]):
            raise SignatureError(f"the stored results of {lease_key} are forged: their"
                                 f" signature (key {kid}) does not match them")
        return packed

    @staticmethod
    def _mac(secret: bytes, kind: str, kid: str, millis: str, job: str, body: bytes) -> bytes:
        head = f"{SCHEME}\n{kind}\n{kid}\n{millis}\n{job}\n".encode()
        return hmac.new(secret, head + body, hashlib.sha256).digest()


# --- where keys come from ---------------------------------------------------------------------


def parse_keys(text: str, source: str) -> list[bytes]:
    """The keys of a key file's or parameter's text: one a line, the first signing;
    UsageError naming the line of one too short to be a key."""
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if len(line) < MIN_SIGNING_KEY_CHARS:
            raise UsageError(f"signing key {source}, line {number}: a key has at least"
                             f" {MIN_SIGNING_KEY_CHARS} characters (make one with"
                             " `openssl rand -hex 32`)")
        keys.append(line.encode("utf-8"))
    if not keys:
        raise UsageError(f"signing key {source}: holds no key")
    return keys


def load_signer(source: str | None, config=None,
                window: float = DEFAULT_REPLAY_WINDOW_SECONDS) -> Signer | None:
    """The signer of ``source`` (``file:/PATH`` or ``ssm:/NAME``, a SecureString read with
    the credentials of ``config``, an AwsConfig), read once; None if ``source`` is empty.
    UsageError if the source cannot be read or holds no usable key."""
    if not source:
        return None
    if source.startswith(FILE_SOURCE):
        path = source[len(FILE_SOURCE):]
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"signing key {source}: {getattr(exc, 'strerror', None) or exc}"
                             ) from None
    elif source.startswith(SSM_SOURCE):
        text = _ssm_parameter(source[len(SSM_SOURCE):], source, config)
    else:
        raise UsageError(f"signing key {source!r}: name a file (file:/PATH) or an SSM"
                         " parameter (ssm:/NAME)")
    signer = Signer(parse_keys(text, source), source, window)
    log.info("signing with key %s from %s; accepting keys %s", signer.kid, source,
             ", ".join(signer.kids))
    return signer


def _ssm_parameter(name: str, source: str, config) -> str:
    from botocore.exceptions import ClientError

    from cloudkon import aws
    from cloudkon.config import AwsConfig

    if not name:
        raise UsageError(f"signing key {source!r}: no parameter name after 'ssm:'")
    ssm = aws.client("ssm", config or AwsConfig())
    try:
        answer = aws.call(f"read SSM parameter {name}", ssm.get_parameter,
                          expected=("ParameterNotFound",), Name=name, WithDecryption=True)
    except ClientError:
        raise UsageError(f"signing key {source}: no such SSM parameter (create it with `aws"
                         f" ssm put-parameter --type SecureString --name {name} --value ...`)"
                         ) from None
    return answer["Parameter"]["Value"]
