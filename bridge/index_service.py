"""Sharing one task index: a long-running process answers queries over NATS, one-shot commands ask it.

A :class:`bridge.index.TaskIndex` costs one read of the whole task store to build. A process that runs anyway (``
jetbridge dlq keep``, later the HTTP API) keeps one current and answers ``jetbridge.index.query`` requests, so a CLI
command costs one request instead of a full read. With nobody answering, the command builds its own index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Protocol

import anyio
import msgspec
import nats.errors
import structlog
from anyio.abc import TaskGroup
from nats.aio.client import Client
from nats.aio.msg import Msg

from .index import Entry, Page, Query, TaskIndex

log = structlog.get_logger("jetbridge.index")

SUBJECT = "jetbridge.index.query"
#: ids per reply for bulk selections (keeps replies well under the server's max payload)
ID_PAGE = 10_000


class IndexView(Protocol):
    async def page(self, q: Query, *, limit: int = 100, cursor: str | None = None,
                   newest_first: bool = False) -> Page: ...

    async def count(self, q: Query) -> int: ...

    async def ids(self, q: Query) -> list[str]: ...

    async def forget(self, task_id: str) -> None: ...


class LocalView:
    """This process's own index."""

    def __init__(self, index: TaskIndex) -> None:
        self.index = index

    async def page(self, q: Query, *, limit: int = 100, cursor: str | None = None,
                   newest_first: bool = False) -> Page:
        return self.index.page(q, limit=limit, cursor=cursor, newest_first=newest_first)

    async def count(self, q: Query) -> int:
        return self.index.count(q)

    async def ids(self, q: Query) -> list[str]:
        return self.index.ids(q)

    async def forget(self, task_id: str) -> None:
        self.index.forget(task_id)


def _query_dict(q: Query) -> dict[str, Any]:
    d = asdict(q)
    d["states"] = sorted(q.states) if q.states is not None else None
    return d


def _query(d: dict[str, Any]) -> Query:
    states = d.get("states")
    return Query(states=frozenset(states) if states is not None else None, queue=d.get("queue"),
                 type=d.get("type"), code=d.get("code"), text=d.get("text"), since_ns=d.get("since_ns"),
                 until_ns=d.get("until_ns"))


class RemoteView:
    """An index kept by another process, asked over NATS."""

    def __init__(self, nc: Client, timeout: float = 10.0) -> None:
        self.nc = nc
        self.timeout = timeout

    async def _ask(self, body: dict[str, Any]) -> dict[str, Any]:
        reply = await self.nc.request(SUBJECT, msgspec.json.encode(body), timeout=self.timeout)
        answer: dict[str, Any] = msgspec.json.decode(reply.data)
        if "error" in answer:
            raise ValueError(str(answer["error"]))
        return answer

    async def page(self, q: Query, *, limit: int = 100, cursor: str | None = None,
                   newest_first: bool = False) -> Page:
        a = await self._ask({"op": "page", "query": _query_dict(q), "limit": limit, "cursor": cursor,
                             "newest_first": newest_first})
        return Page([Entry(**e) for e in a["entries"]], a["cursor"])

    async def count(self, q: Query) -> int:
        return int((await self._ask({"op": "count", "query": _query_dict(q)}))["count"])

    async def ids(self, q: Query) -> list[str]:
        out: list[str] = []
        cursor = None
        while True:
            a = await self._ask({"op": "ids", "query": _query_dict(q), "cursor": cursor})
            out.extend(a["ids"])
            cursor = a["cursor"]
            if cursor is None:
                return out

    async def forget(self, task_id: str) -> None:
        """Deletions are no messages on the store's stream: the keeping process hears of them from the deleter."""
        await self.nc.publish(f"{SUBJECT}.forget", task_id.encode())


async def serve(nc: Client, current: Callable[[], TaskIndex]) -> None:
    """Answer index queries from ``current()`` until cancelled (several keepers share the load in a queue group)."""

    async def on_query(msg: Msg) -> None:
        index = current()
        try:
            body = msgspec.json.decode(msg.data)
            q = _query(body.get("query") or {})
            op = body.get("op")
            if op == "count":
                answer: dict[str, Any] = {"count": index.count(q)}
            elif op == "page":
                page = index.page(q, limit=min(int(body.get("limit", 100)), 1000), cursor=body.get("cursor"),
                                  newest_first=bool(body.get("newest_first")))
                answer = {"entries": [asdict(e) for e in page.entries], "cursor": page.cursor}
            elif op == "ids":
                start = int(body.get("cursor") or 0)
                ids = index.ids(q)
                chunk = ids[start:start + ID_PAGE]
                answer = {"ids": chunk, "cursor": str(start + ID_PAGE) if start + ID_PAGE < len(ids) else None}
            elif op == "ping":
                answer = {"tasks": len(index)}
            else:
                answer = {"error": f"unknown op {op!r}"}
        except (msgspec.DecodeError, ValueError, TypeError, AttributeError) as exc:
            answer = {"error": str(exc)}
        await msg.respond(msgspec.json.encode(answer))

    async def on_forget(msg: Msg) -> None:
        current().forget(msg.data.decode(errors="replace"))

    subs = [await nc.subscribe(SUBJECT, queue="jetbridge-index", cb=on_query),
            await nc.subscribe(f"{SUBJECT}.forget", cb=on_forget)]
    try:
        await anyio.sleep_forever()
    finally:
        for sub in subs:
            await sub.unsubscribe()


async def open_view(nc: Client, tg: TaskGroup) -> IndexView:
    """The shared index if a process keeps one, else one of our own (built in ``tg``)."""
    try:
        await nc.request(SUBJECT, msgspec.json.encode({"op": "ping"}), timeout=1.0)
        return RemoteView(nc)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
        pass
    index = TaskIndex()
    tg.start_soon(index.follow, nc)
    await index.caught_up.wait()
    return LocalView(index)
