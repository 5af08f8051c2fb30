"""Who is online, as the API and the dashboard show it: handler instances (``$SRV.INFO`` + ``$SRV.STATS``) and
dispatchers (``jetbridge-dispatcher`` instances asked for their status). Pure shaping apart from the NATS I/O.

Every Jetbridge library announces itself in the service metadata ``jetbridge.sdk`` as ``<language>/<version>``
(protocol/SPEC.md §2: ``python/…``, ``go/…``, ``rust/…``, ``node/…``, ``shell/…`` for ``jetbridge handle``), and
each endpoint's task type in ``jetbridge.task_type``. Other micro services (``language``/``lang`` metadata, as
some tools write) are shown too, so an operator sees everything that answers discovery.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nats.aio.client import Client

from ..announce import SERVICE_NAME
from ..discovery import dispatchers, gather


def sdk_of(metadata: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(language, library version)`` from ``jetbridge.sdk`` (``go/0.1.0``), else from ``language``/``lang``."""
    sdk = str(metadata.get("jetbridge.sdk") or "").strip()
    if sdk:
        language, _, version = sdk.partition("/")
        return language or None, version or None
    language = str(metadata.get("language") or metadata.get("lang") or "").strip()
    return language or None, None


def describe_handler(info: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    """One handler instance for ``/v1/handlers``: its ``$SRV.INFO`` joined with its ``$SRV.STATS`` counters."""
    by_name = {e.get("name"): e for e in stats.get("endpoints") or []}
    endpoints = []
    for ep in info.get("endpoints") or []:
        s = by_name.get(ep.get("name"), {})
        task_type = (ep.get("metadata") or {}).get("jetbridge.task_type")
        endpoints.append({"name": str(ep.get("name", "")), "subject": str(ep.get("subject", "")),
                          "task_type": str(task_type) if task_type else None,
                          "requests": int(s.get("num_requests", 0)), "errors": int(s.get("num_errors", 0)),
                          "average_processing_time": int(s.get("average_processing_time", 0))})
    meta = info.get("metadata") or {}
    language, sdk_version = sdk_of(meta)
    protocols = str(meta.get("jetbridge.protocols") or "")
    return {"name": str(info.get("name", "")), "id": str(info.get("id", "")), "version": str(info.get("version", "")),
            "language": language, "sdk_version": sdk_version,
            "protocols": protocols.split(",") if protocols else None, "endpoints": endpoints}


def describe_handlers(infos: list[dict[str, Any]], stats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every instance but the dispatchers' own announcements (they are listed by :func:`online_dispatchers`)."""
    by_id = {s.get("id"): s for s in stats}
    out = [describe_handler(i, by_id.get(i.get("id"), {})) for i in infos if i.get("name") != SERVICE_NAME]
    return sorted(out, key=lambda h: (h["name"], h["id"]))


def describe_dispatcher(status: dict[str, Any], now: float) -> dict[str, Any]:
    """A dispatcher's status answer (bridge/announce.py), or its metadata fallback, in the API's shape."""
    started = float(status.get("started") or 0) or None
    uptime = status.get("uptime_s")
    if uptime is None and started:
        uptime = round(max(0.0, now - started), 3)
    in_flight = status.get("in_flight")
    return {"id": str(status.get("id", "")), "version": str(status.get("version", "")),
            "started": started, "uptime_s": float(uptime) if uptime is not None else None,
            "queues": [str(q) for q in status.get("queues") or [] if q],
            "configured": [str(q) for q in status.get("configured") or []] or None,
            "in_flight": int(in_flight) if isinstance(in_flight, int) else None,
            "answered": isinstance(in_flight, int)}


async def online(nc: Client, window: float, now: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(handlers, dispatchers)`` online: one ``$SRV.INFO`` and one ``$SRV.STATS`` scatter-gather, at once, then
    each dispatcher's status."""
    infos, stats = await asyncio.gather(gather(nc, "$SRV.INFO", window), gather(nc, "$SRV.STATS", window))
    found = await dispatchers(nc, [i for i in infos if i.get("name") == SERVICE_NAME], timeout=max(window, 0.5))
    return describe_handlers(infos, stats), [describe_dispatcher(s, now) for s in found]


async def online_dispatchers(nc: Client, window: float, now: float) -> list[dict[str, Any]]:
    """Every ``jetbridge-dispatcher`` instance that answers discovery, asked for its live status."""
    infos = [i for i in await gather(nc, "$SRV.INFO", window) if i.get("name") == SERVICE_NAME]
    return [describe_dispatcher(s, now) for s in await dispatchers(nc, infos, timeout=max(window, 0.5))]


def group_services(handlers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Instances of one service (same name, version and library) as one row: how many, the task types they serve,
    requests and errors summed, and the average time weighted by requests (what an operator compares)."""
    groups: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for h in handlers:
        key = (h["name"], h["version"], h.get("language") or "", h.get("sdk_version") or "")
        g = groups.setdefault(key, {"name": h["name"], "version": h["version"], "language": h.get("language"),
                                    "sdk_version": h.get("sdk_version"), "instances": 0, "ids": [],
                                    "task_types": [], "requests": 0, "errors": 0, "_time": 0})
        g["instances"] += 1
        g["ids"].append(h["id"])
        for e in h["endpoints"]:
            name = e.get("task_type") or e["name"]
            if name not in g["task_types"]:
                g["task_types"].append(name)
            g["requests"] += e["requests"]
            g["errors"] += e["errors"]
            g["_time"] += e["average_processing_time"] * e["requests"]
    out = []
    for g in groups.values():
        g["avg_ms"] = round(g.pop("_time") / g["requests"] / 1e6, 2) if g["requests"] else None
        out.append(g)
    return sorted(out, key=lambda g: (g["name"], g["version"]))
