"""Queues created and changed while the dispatcher runs are served within seconds, never after a restart.

A dispatcher started with ``--queue '*'`` serves queues made later, and every dispatcher applies changed queue
settings (max tries, concurrency, lease, retry policy) live. It also notices a queue whose Jetbridge settings were
stripped by asyncjobs' ``ajc queue configure`` (which rewrites the consumer without its metadata) and says so
loudly, because the queue then runs with asyncjobs' meanings: the max run time becomes the lease.
"""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING

import anyio
import structlog
from jetbridge.internal import JetbridgeError, QueueNotFoundError

from .queues import QueueConfig

if TYPE_CHECKING:
    from .dispatcher import Dispatcher

log = structlog.get_logger("jetbridge.queues")


def changes(old: QueueConfig, new: QueueConfig) -> dict[str, tuple[object, object]]:
    """The settings that differ between two definitions of a queue: name -> (old, new)."""
    found = {}
    for f in fields(QueueConfig):
        before, after = getattr(old, f.name), getattr(new, f.name)
        if before != after:
            found[f.name] = (before, after)
    return found


def warn_if_asyncjobs(config: QueueConfig, *, was_jetbridge: bool = False) -> None:
    if not config.asyncjobs_native:
        return
    if was_jetbridge:
        log.error("queue_settings_stripped", queue=config.name, lease_s=config.lease,
                  hint="the queue's consumer lost its jetbridge.* metadata (asyncjobs `ajc queue configure`?): it now "
                       "runs with asyncjobs meanings (max run time is the lease, retries use the default policy); "
                       f"restore them with `jetbridge queue add {config.name} ...`")
    else:
        log.warning("queue_asyncjobs_settings", queue=config.name, lease_s=config.lease,
                    hint="the queue was made by asyncjobs (no jetbridge.* metadata): its max run time is used as "
                         "the lease and retries use the default policy")


async def watch_queues(dispatcher: Dispatcher, every: float = 2.0) -> None:
    """Every ``every`` seconds: serve new queues (with ``*``) and apply changed settings of served ones."""
    while True:
        await anyio.sleep(every)
        try:
            await refresh(dispatcher)
        except JetbridgeError as exc:
            log.warning("queue_refresh_failed", error=str(exc), hint="trying again shortly")


async def refresh(dispatcher: Dispatcher) -> None:
    wanted = [q for q in dispatcher.settings.queues if q != "*"]
    if "*" in dispatcher.settings.queues:
        wanted = sorted(set(wanted) | set(await dispatcher.admin.names()))
    for name in wanted:
        worker = dispatcher.workers.get(name)
        try:
            config = await dispatcher.admin.get(name)
        except QueueNotFoundError:
            if worker is not None and not worker.gone:
                worker.gone = True
                log.warning("queue_gone", queue=name, hint="the queue was deleted; its items are no longer served")
            continue
        if worker is None:
            log.info("queue_added", queue=name, max_concurrent=config.max_concurrent, lease_s=config.lease)
            warn_if_asyncjobs(config)
            dispatcher.serve_queue(config)
            continue
        worker.gone = False
        diff = changes(worker.config, config)
        if diff:
            log.info("queue_changed", queue=name, **{k: f"{a} -> {b}" for k, (a, b) in diff.items()})
            if "asyncjobs_native" in diff:
                warn_if_asyncjobs(config, was_jetbridge=not worker.config.asyncjobs_native)
            dispatcher.apply_queue_config(worker, config)
