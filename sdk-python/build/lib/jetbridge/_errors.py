"""Jetbridge's exceptions.

::

    JetbridgeError
    ├── ConfigError                 bad settings, names or options; fix the input
    ├── PayloadTooLargeError        the task would not fit the server's max_payload
    ├── TransportError              NATS could not be reached or did not answer
    ├── ProtocolError               a message is not valid protocol v1
    │   └── UnsupportedProtocolError
    └── TaskError
        ├── TaskNotFoundError
        ├── CorruptTaskError        the stored document is not a task (the dispatcher quarantines it)
        ├── DuplicateTaskError      the id (or dedup key) is taken; ``.task_id`` names the existing task
        ├── QueueNotFoundError
        ├── QueueFullError
        └── ConflictError           a concurrent change won the compare-and-set

    HandlerSignal                   raised by handler code, never caught by ``except JetbridgeError``
    ├── Retry
    └── Terminate
"""

from __future__ import annotations


class JetbridgeError(Exception):
    """Base of every error Jetbridge raises."""


class ConfigError(JetbridgeError, ValueError):
    """A setting, name or option is invalid. The message names it and says what is allowed."""


class PayloadTooLargeError(JetbridgeError, ValueError):
    """A task or result does not fit the limits that follow from the server's ``max_payload``."""

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class TransportError(JetbridgeError):
    """NATS could not be reached, or a request to it timed out."""


class ProtocolError(JetbridgeError):
    """A message does not follow the wire protocol."""


class UnsupportedProtocolError(ProtocolError):
    """A message speaks a protocol version this code does not."""


class TaskError(JetbridgeError):
    """A task operation failed."""


class TaskNotFoundError(TaskError, LookupError):
    """No task has that id."""


class CorruptTaskError(TaskError, ValueError):
    """The stored document of a task cannot be read as a task."""


class DuplicateTaskError(TaskError):
    """The task id, or the deduplication key within its window, is already taken."""

    def __init__(self, message: str, *, task_id: str) -> None:
        super().__init__(message)
        self.task_id = task_id


class QueueNotFoundError(TaskError, LookupError):
    """No queue has that name."""


class QueueFullError(TaskError):
    """The queue holds its maximum number of entries and refuses new ones."""


class ConflictError(TaskError):
    """Another writer changed the task first (compare-and-set failed)."""


class HandlerSignal(Exception):
    """Raised by handler code to choose the outcome of an attempt."""


class Retry(HandlerSignal):
    """Fail this attempt; the dispatcher retries the task (``after`` seconds overrides its backoff)."""

    def __init__(self, message: str = "retry requested", *, code: str = "retry", after: float | None = None) -> None:
        super().__init__(message)
        if after is not None and after < 0:
            raise ValueError("Retry(after=...) must be >= 0 seconds")
        self.message = message
        self.code = code
        self.after = after


class Terminate(HandlerSignal):
    """Fail the task for good: it is never retried."""

    def __init__(self, message: str = "terminated by handler", *, code: str = "terminate") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
