"""ed25519 task signatures, compatible with choria asyncjobs.

asyncjobs signs ``"<id>:<queue>:<type>:<max_tries>:<created UnixNano>:<deadline UnixNano or 0>:<base64 payload>"``
with an ed25519 key and stores the hex signature (128 characters) in the task's ``signature`` member (asyncjobs
v0.3.0's ``Task.signatureMessage``; tests/asyncjobs checks both directions against that release's own code). Producers
sign with a :class:`Signer`; a dispatcher configured with a public key verifies with a :class:`Verifier` and
terminates tasks that are unsigned or tampered with. Needs PyNaCl (``pip install jetbridge-sdk[signing]``).
"""

from __future__ import annotations

import base64
from pathlib import Path

from ._errors import ConfigError
from ._task import TaskRecord


def signing_message(task: TaskRecord) -> bytes:
    deadline = task.deadline_ns or 0
    payload = base64.b64encode(task.payload or b"").decode()
    return f"{task.id}:{task.queue}:{task.type}:{task.max_tries}:{task.created_ns}:{deadline}:{payload}".encode()


def _key_bytes(key: str, what: str) -> bytes:
    text = key.strip()
    path = Path(text)
    if len(text) != 64 and path.exists():
        text = path.read_text().strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"{what} must be 64 hex characters or a file holding them") from None
    if len(raw) != 32:
        raise ConfigError(f"{what} must be 32 bytes (64 hex characters), got {len(raw)} bytes")
    return raw


class Signer:
    """Signs tasks with an ed25519 seed (hex, or a file holding the hex seed)."""

    def __init__(self, seed: str) -> None:
        from nacl.signing import SigningKey

        self._key = SigningKey(_key_bytes(seed, "signing seed"))

    @property
    def public_key(self) -> str:
        return self._key.verify_key.encode().hex()

    def sign(self, task: TaskRecord) -> str:
        return self._key.sign(signing_message(task)).signature.hex()


class Verifier:
    """Checks task signatures against an ed25519 public key (hex, or a file holding it)."""

    def __init__(self, public_key: str, *, optional: bool = False) -> None:
        from nacl.signing import VerifyKey

        self._key = VerifyKey(_key_bytes(public_key, "verification key"))
        self.optional = optional

    def problem(self, task: TaskRecord) -> str | None:
        """None when the task may run; otherwise why it may not (the task's terminal error)."""
        from nacl.exceptions import BadSignatureError

        if not task.signature:
            return None if self.optional else (
                f"task {task.id} is not signed and this dispatcher requires signed tasks: sign it at enqueue")
        try:
            self._key.verify(signing_message(task), bytes.fromhex(task.signature))
        except (BadSignatureError, ValueError):
            return f"task {task.id} has an invalid signature: it was changed after signing or signed with another key"
        return None
