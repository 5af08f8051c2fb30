"""Random bytes from the operating system's CSPRNG, drawn in bulk: one system call for many ids or tokens.

``secrets.token_bytes`` per id was a measurable share of a task's cost (attempt tokens in the dispatcher, KSUIDs in
``enqueue_many``). A :class:`RandomPool` draws a few kilobytes at a time and hands each byte out once. A forked
child starts with an empty pool: otherwise parent and child would hand out the same bytes (the same task ids, the
same attempt tokens) until their pools ran dry.
"""

from __future__ import annotations

import os
import secrets


class RandomPool:
    """Fresh CSPRNG bytes, never the same byte twice, in this process or a child forked from it."""

    def __init__(self, chunk: int = 4096) -> None:
        self._chunk = chunk
        self._pool = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def take(self, n: int) -> bytes:
        at = self._at
        if at + n > len(self._pool):
            self._pool, at = secrets.token_bytes(max(self._chunk, n)), 0
        self._at = at + n
        return self._pool[at:at + n]

    def _forget(self) -> None:
        self._pool, self._at = b"", 0
