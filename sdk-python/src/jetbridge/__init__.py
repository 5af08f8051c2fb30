"""Jetbridge SDK: write task handlers in Python and enqueue tasks for the Jetbridge dispatcher.

Handlers::

    service = jetbridge.Service(nc, "mailer")

    @service.handler("email:new")
    async def send(task: jetbridge.Task) -> dict:
        ...
        return {"sent": True}

    await jetbridge.serve(service)

Producers::

    producer = jetbridge.Producer(nc, queue="EMAIL")
    task_id = await producer.enqueue("email:new", {"to": "ada@example.com"})
    record = await producer.wait(task_id, timeout=30)
"""

from . import middleware
from ._errors import (
    ConfigError,
    ConflictError,
    CorruptTaskError,
    DuplicateTaskError,
    HandlerSignal,
    JetbridgeError,
    PayloadTooLargeError,
    ProtocolError,
    QueueFullError,
    QueueNotFoundError,
    Retry,
    TaskError,
    TaskNotFoundError,
    Terminate,
    TransportError,
    UnsupportedProtocolError,
)
from ._middleware import Middleware, Next
from ._producer import Producer, TaskSpec
from ._protocol import PROTOCOL_VERSION, Bytes
from ._schedule import Schedules, ScheduleView
from ._service import Service, Task, serve
from ._signing import Signer, Verifier
from ._task import TaskRecord, TaskResult, TaskState

__version__ = "0.1.0"

__all__ = [
    "PROTOCOL_VERSION", "Bytes", "ConfigError", "ConflictError", "CorruptTaskError", "DuplicateTaskError", "HandlerSignal",
    "JetbridgeError", "Middleware", "Next", "PayloadTooLargeError", "Producer", "ProtocolError", "QueueFullError", "QueueNotFoundError",
    "Retry", "Schedules", "ScheduleView", "Service", "Signer", "Task", "TaskError", "TaskNotFoundError", "TaskRecord", "TaskResult", "TaskSpec",
    "TaskState", "Terminate", "TransportError", "UnsupportedProtocolError", "Verifier", "middleware", "serve",
]

for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__") and getattr(_obj, "__module__", "").startswith("jetbridge._"):
        try:
            _obj.__module__ = "jetbridge"
        except (AttributeError, TypeError):
            pass
