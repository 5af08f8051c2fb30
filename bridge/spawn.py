"""Plain asyncio tasks for per-item work, kept so that shutdown can cancel them.

anyio's ``TaskGroup.start_soon`` builds a task handle, a cancel scope, an event and a weak-dict entry per call and
enters and leaves the scope around every task: 12.5 % of the dispatcher's CPU when each work item got one
(bench/README.md, profile). The dispatcher is tied to asyncio by nats-py anyway, so items are spawned here with
``loop.create_task`` and a strong reference each (asyncio keeps only weak ones).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class Spawner:
    """Starts coroutines as asyncio tasks and can cancel those still running."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def __len__(self) -> int:
        return len(self._tasks)

    async def cancel_all(self) -> None:
        """Cancel every task still running and wait until they have ended."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
