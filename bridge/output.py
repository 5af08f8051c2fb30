"""How the CLI shows things: rich tables on a terminal, JSON with ``--json``."""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

import msgspec
from jetbridge.internal import TaskRecord
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def task_dict(task: TaskRecord) -> dict[str, Any]:
    d: dict[str, Any] = msgspec.to_builtins(task)
    if task.payload is not None:
        d["payload"] = _payload_view(task.payload, task.content_type)
    return d


def _payload_view(data: bytes, content_type: str) -> Any:
    if content_type in ("", "application/json"):
        try:
            return json.loads(data)
        except ValueError:
            pass
    return {"base64": base64.b64encode(data).decode(), "content_type": content_type or "application/octet-stream"}


def result_text(task: TaskRecord) -> str:
    if task.result is None:
        return ""
    value = task.result.payload
    if task.result.encoding == "base64":
        return f"<{len(base64.b64decode(value))} bytes {task.result.content_type}>"
    return json.dumps(value, ensure_ascii=False)


def try_limit(task: TaskRecord, queue_max_tries: int = -1) -> str:
    """The try limit that applies: the task's own capped by its queue's (as the dispatcher enforces it)."""
    bounds = [n for n in (task.max_tries, queue_max_tries) if n > 0]
    return str(min(bounds)) if bounds else "unlimited"


def show_task(task: TaskRecord, queue_max_tries: int = -1) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("id", task.id), ("type", task.type), ("queue", task.queue), ("state", task.state),
        ("tries", f"{task.tries} of {try_limit(task, queue_max_tries)}"), ("created", task.created),
        ("deadline", task.deadline or ""), ("last tried", task.tried or ""),
        ("last error", f"{task.last_err} [{task.last_err_code}]" if task.last_err else ""),
        ("progress", f"{task.progress:.0%} {task.progress_message}" if task.progress is not None else ""),
        ("payload", json.dumps(_payload_view(task.payload or b"", task.content_type), ensure_ascii=False)[:500]),
        ("result", result_text(task)[:500]),
    ]
    rows.append(("replays", str(task.replays) if task.replays else ""))
    for key, value in rows:
        if value:
            table.add_row(key, str(value))
    console.print(table)
    from .history import timeline  # issue 17: the attempt timeline

    for line in timeline(task):
        console.print(line, markup=False, highlight=False)


def task_table(tasks: list[TaskRecord]) -> None:
    """Tasks as a table. Ids are never cut (they are copied into other commands); long errors wrap at words."""
    table = Table("type", "queue", "state", "tries", "created", "last error / result")
    table.add_column("id", no_wrap=True, min_width=max((len(t.id) for t in tasks), default=2))
    table.columns.insert(0, table.columns.pop())
    for t in tasks:
        table.add_row(t.id, t.type, t.queue, t.state, str(t.tries), t.created[:19], t.last_err or result_text(t)[:200])
    console.print(table)
