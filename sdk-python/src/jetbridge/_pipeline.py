"""``Producer.enqueue_many``'s pipeline: a chunk of tasks in three waves, with a future per publish.

Every create of the chunk is sent at once, then every stored task's work item, then the events: each item still
goes out only after its own task is stored, as in ``Producer.enqueue``. Each publish is queued without awaiting
(:meth:`Requester.send`) and its acknowledgement is a future: no coroutine or task per task, which was most of the
producer's time per task when every task of a chunk was a coroutine of its own (bench/README.md, issue 21).

A task whose publish is not acknowledged at once (not sent, no reply in time, no leader, an error other than a
taken id) goes through the same steps as ``Producer.enqueue``, with their retries and their ``queue_error`` mark, so
a chunk behaves as that many ``enqueue`` calls. A create that is retried counts the first send as tried, so our own
earlier create, stored but unacknowledged, is recognised rather than reported as a duplicate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import _names as names
from ._errors import DuplicateTaskError, JetbridgeError
from ._events import task_state_event
from ._fastwrite import publish as publish_fast
from ._store import PubAck, settled_puback
from ._task import TaskRecord

if TYPE_CHECKING:
    from ._producer import Producer, TaskSpec

Built = tuple[int, TaskRecord, str, bytes]  # index in the results, document, queue, stored bytes
Stored = tuple[int, TaskRecord, str, int]  # index, document, queue, sequence to save against


async def _settle(futures: Sequence[asyncio.Future[Any] | None]) -> None:
    """Wait until every future is done (each ends alone: a request's timeout fails it)."""
    pending = [f for f in futures if f is not None]
    if pending:
        await asyncio.wait(pending)


def _raise_unexpected(outcomes: Sequence[object]) -> None:
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, JetbridgeError):
            raise outcome


async def enqueue_chunk(producer: Producer, specs: list[TaskSpec], results: list[str | JetbridgeError],
                        offset: int) -> None:
    """Enqueue ``specs``, writing each one's id or error into ``results`` from ``offset`` on."""
    built: list[Built] = []
    for i, spec in enumerate(specs, offset):
        try:
            built.append((i, *producer._build(spec)))
        except JetbridgeError as exc:
            results[i] = exc
    stored = await _store_all(producer, built, [specs[i - offset].dedup_key for i, *_ in built], results)
    failed = await _queue_all(producer, stored)
    for i, doc, _, _ in stored:
        if i in failed:
            results[i] = failed[i]
        else:
            results[i] = doc.id
            await publish_fast(producer._nc, names.task_state_event_subject(doc.id), task_state_event(doc))


async def _store_all(producer: Producer, built: list[Built], dedup_keys: list[str | None],
                     results: list[str | JetbridgeError]) -> list[Stored]:
    """Wave one: the creates. A dedup key takes the awaited path (its answer may name another task)."""
    store = producer._store
    await producer._rq.start()
    creates = [None if key else store.create_nowait(doc.id, data)
               for (_, doc, _, data), key in zip(built, dedup_keys, strict=True)]
    await _settle(creates)
    stored: list[Stored] = []
    retry: list[tuple[int, TaskRecord, str, str | None, int]] = []
    for (i, doc, queue, _), key, future in zip(built, dedup_keys, creates, strict=True):
        seq = store.created(doc.id, future)
        if isinstance(seq, DuplicateTaskError):
            results[i] = seq
        elif seq is None:
            retry.append((i, doc, queue, key, 0 if future is None else 1))
        else:
            stored.append((i, doc, queue, seq))
    again = await asyncio.gather(*(producer._store_new(doc, queue, key, tried=tried)
                                   for _, doc, queue, key, tried in retry), return_exceptions=True)
    _raise_unexpected(again)
    for (i, doc, queue, _, _), outcome in zip(retry, again, strict=True):
        if isinstance(outcome, JetbridgeError):
            results[i] = outcome
        elif isinstance(outcome, int):
            stored.append((i, doc, queue, outcome))
    return stored


async def _queue_all(producer: Producer, stored: list[Stored]) -> dict[int, JetbridgeError]:
    """Wave two: the work items; returns the error of each task that could not be queued (marked ``queue_error``).

    An item sent again carries the same ``Nats-Msg-Id``, so one stored but not acknowledged is not queued twice.
    """
    items = [producer._rq.send(names.queue_subject(queue, doc.id), names.work_item(doc.id),
                               headers={names.H_MSG_ID: f"{doc.id}:{seq}"}) for _, doc, queue, seq in stored]
    await _settle(items)
    again = [(i, doc, queue, seq) for (i, doc, queue, seq), future in zip(stored, items, strict=True)
             if not isinstance(settled_puback(future), PubAck)]
    outcomes = await asyncio.gather(*(producer._queue_item(doc, queue, seq) for _, doc, queue, seq in again),
                                    return_exceptions=True)
    _raise_unexpected(outcomes)
    return {i: outcome for (i, *_), outcome in zip(again, outcomes, strict=True)
            if isinstance(outcome, JetbridgeError)}
