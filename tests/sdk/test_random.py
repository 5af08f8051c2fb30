"""Random bytes drawn in bulk: each byte handed out once, in this process and in a child forked from it; event ids
unique across a fork too."""

from __future__ import annotations

import os

from jetbridge._events import _new_event_id
from jetbridge._ksuid import new_ksuid
from jetbridge._random import RandomPool

from bridge.attempts import new_token


def test_draws_never_repeat_across_refills_and_have_the_size_asked() -> None:
    pool = RandomPool(chunk=100)
    draws = [pool.take(n) for n in (16, 12, 16, 30, 250, 16) * 200]  # refills often, and one draw over a chunk
    assert [len(d) for d in draws] == [16, 12, 16, 30, 250, 16] * 200
    sixteen = [d for d in draws if len(d) == 16]
    assert len(set(sixteen)) == len(sixteen)


def _in_child(make: object) -> str:
    """What ``make()`` returns in a forked child (the parent's pool already drawn from)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write one value and leave without running the parent's cleanups
        try:
            os.write(write, make().encode())  # type: ignore[operator]
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        value = f.read()
    os.waitpid(pid, 0)
    return value


def test_a_forked_child_never_hands_out_its_parents_next_ids_or_tokens() -> None:
    for make in (new_ksuid, new_token, _new_event_id):
        make()  # the pool now holds bytes the parent has yet to use
        child = _in_child(make)
        parent_next = [make() for _ in range(300)]  # past the rest of the parent's pool
        assert child and child not in parent_next, make
