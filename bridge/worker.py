"""A served queue and its work items: what an item must say, and what a stored task must be, to be used."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
from jetbridge.internal import TaskRecord, names, parse_ns

from .puller import Puller
from .queues import QueueConfig
from .states import Limits

if TYPE_CHECKING:
    from .priorities import PriorityPool


class _Item(msgspec.Struct):
    job: str
    kind: int = 0


_item_decoder = msgspec.json.Decoder(_Item)


def decode_item(data: bytes) -> str:
    """The task id a work item points at; raises ValueError naming what is wrong with the item."""
    try:
        task_id = _item_decoder.decode(data).job
    except RecursionError:
        raise ValueError("the work item's JSON is nested too deeply") from None
    if not names.is_valid_name(task_id):
        raise ValueError(f"job {task_id!r} is not a task id")
    return task_id


def check_document(task: TaskRecord, task_id: str) -> None:
    """What decoding cannot see: the document must be the task its subject names, with times that parse.

    Raises ValueError naming the member; the dispatcher then quarantines the document instead of failing on it
    at every delivery.
    """
    if task.id != task_id:
        raise ValueError(f"it holds task {task.id!r}, not {task_id!r}")
    for member in ("created", "deadline", "tried"):
        value = getattr(task, member)
        if value or member == "created":
            try:
                parse_ns(value)
            except ValueError:
                raise ValueError(f"{member} {value!r} is not an RFC 3339 time") from None


@dataclass(eq=False)
class QueueWorker:
    """Serves one queue."""

    config: QueueConfig
    limits: Limits
    capacity: int
    puller: Puller | None = None
    #: work items being processed: reply subject -> when the server was last told we are on it
    inflight: dict[str, float] = field(default_factory=dict)
    #: the queue was deleted (it is served again if it comes back)
    gone: bool = False
    #: items in ``inflight`` that wait for a global limit (bridge/limiter.py): they hold no slot
    waiting: int = 0
    #: the shared slots when the dispatcher serves queues by priority (bridge/priorities.py)
    pool: PriorityPool | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def free_slots(self) -> int:
        return self.capacity - len(self.inflight) + self.waiting

    def slot_freed(self) -> None:
        """A slot came free (an item ended, or waits for a limit): pull or start more."""
        if self.pool is not None:
            self.pool.kick()
        if self.puller is not None:
            self.puller.poke()
