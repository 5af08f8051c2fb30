"""Who is online: dispatchers and handler services, found with NATS micro discovery (``$SRV.INFO``).

Every micro service answers ``$SRV.INFO``; one request gathers the answers that arrive within a short window.
Dispatchers (bridge/announce.py) are then asked for their live status. Pure grouping functions are apart from I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import anyio
import nats.errors
from nats.aio.client import Client

from .announce import SERVICE_NAME, STATUS_SUBJECT


@dataclass
class HandlerGroup:
    """One handler service name: its instances, languages and the task types it serves."""

    name: str
    instances: int = 0
    sdks: set[str] = field(default_factory=set)
    versions: set[str] = field(default_factory=set)
    task_types: set[str] = field(default_factory=set)
    subjects: set[str] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        return {"service": self.name, "instances": self.instances, "sdk": sorted(self.sdks),
                "versions": sorted(self.versions), "task_types": sorted(self.task_types)}


async def gather_infos(nc: Client, window: float = 0.5) -> list[dict[str, Any]]:
    """Every micro service's ``$SRV.INFO`` answer that arrives within ``window`` seconds."""
    return await gather(nc, "$SRV.INFO", window)


async def gather(nc: Client, subject: str, window: float = 0.5) -> list[dict[str, Any]]:
    """Scatter-gather: every JSON object answering a request to ``subject`` (``$SRV.INFO``, ``$SRV.STATS``...)
    within ``window`` seconds."""
    found: list[dict[str, Any]] = []
    inbox = nc.new_inbox()

    async def on_msg(msg: Any) -> None:
        try:
            doc = json.loads(msg.data)
        except ValueError:
            return
        if isinstance(doc, dict):
            found.append(doc)

    sub = await nc.subscribe(inbox, cb=on_msg)
    try:
        await nc.publish(subject, b"", reply=inbox)
        await nc.flush()
        await anyio.sleep(window)  # discovery has no "last answer": a fixed window is how `nats micro ls` works too
    finally:
        await sub.unsubscribe()
    return found


def handler_groups(infos: list[dict[str, Any]]) -> list[HandlerGroup]:
    """The handler services among ``infos`` (they carry ``jetbridge.*`` metadata), grouped by name."""
    groups: dict[str, HandlerGroup] = {}
    for info in infos:
        meta = info.get("metadata") or {}
        if info.get("name") == SERVICE_NAME or not any(str(k).startswith("jetbridge.") for k in meta):
            continue
        g = groups.setdefault(str(info.get("name")), HandlerGroup(str(info.get("name"))))
        g.instances += 1
        if meta.get("jetbridge.sdk"):
            g.sdks.add(str(meta["jetbridge.sdk"]))
        g.versions.add(str(info.get("version", "")))
        for ep in info.get("endpoints") or []:
            task_type = (ep.get("metadata") or {}).get("jetbridge.task_type")
            if task_type:
                g.task_types.add(str(task_type))
            if ep.get("subject"):
                g.subjects.add(str(ep["subject"]))
    return sorted(groups.values(), key=lambda g: g.name)


def serves(queues: list[str], queue: str) -> bool:
    return queue in queues or "*" in queues


def handler_for(groups: list[HandlerGroup], task_type: str, subject: str) -> bool:
    """Whether any online handler serves ``task_type`` (by endpoint metadata, or a subject/``*`` match)."""
    for g in groups:
        if task_type in g.task_types or subject in g.subjects:
            return True
        if any(s.endswith(".*") and subject.startswith(s[:-1]) and "." not in subject[len(s) - 1:] for s in g.subjects):
            return True
    return False


async def dispatchers(nc: Client, infos: list[dict[str, Any]], timeout: float = 1.0) -> list[dict[str, Any]]:
    """The live status of each announced dispatcher (falls back to its metadata if it does not answer)."""
    out = []
    for info in infos:
        if info.get("name") != SERVICE_NAME:
            continue
        meta = info.get("metadata") or {}
        did = str(meta.get("jetbridge.dispatcher", ""))
        try:
            msg = await nc.request(STATUS_SUBJECT.format(id=did), b"", timeout=timeout)
            out.append(json.loads(msg.data))
        except (nats.errors.Error, ValueError, TimeoutError):
            out.append({"id": did, "version": meta.get("jetbridge.version", ""), "queues":
                        str(meta.get("jetbridge.queues", "")).split(","),
                        "started": float(meta.get("jetbridge.started") or 0), "in_flight": None})
    return sorted(out, key=lambda d: str(d.get("id")))
