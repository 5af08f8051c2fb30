"""The task index's queries, pure: filters, patterns, counts, stable paging while tasks change, forgetting."""

from __future__ import annotations

import pytest

from bridge.index import Query, TaskIndex

S = 1_000_000_000


def _index() -> TaskIndex:
    index = TaskIndex()
    for i in range(30):
        state = ("complete", "expired", "terminated")[i % 3]
        index.put(f"t{i:02d}", state, ("email:new", "email:bounce", "sms:send")[i % 3 if i < 15 else 0],
                  "A" if i % 2 else "B", created_ns=i * S, updated_ns=100 * S + i * S,
                  code="" if state == "complete" else ("timeout" if i % 4 else "bad_input"),
                  error="" if state == "complete" else f"Upstream said NO #{i}")
    index.sort_rows()
    return index


def test_filters_and_counts_agree() -> None:
    index = _index()
    cases = [
        Query(states=frozenset({"expired"})), Query(type="email:*"), Query(type="email:new"), Query(queue="A"),
        Query(queue="B", states=frozenset({"expired", "terminated"})), Query(code="bad_input"),
        Query(text="said no #1"), Query(since_ns=110 * S, until_ns=119 * S), Query(type="*:send", queue="A"),
        Query(queue="nope"), Query(type="x*"),
    ]
    for q in cases:
        ids = index.ids(q)
        assert index.count(q) == len(ids), q
        assert ids == sorted(ids)  # creation order
    assert index.count(Query(type="email:*")) == 25
    assert index.ids(Query(text="SAID NO #1")) == ["t01", "t10", "t11", "t13", "t14", "t16", "t17", "t19"]
    assert index.ids(Query(since_ns=110 * S, until_ns=112 * S)) == ["t10", "t11", "t12"]
    assert index.counts_by_queue(frozenset({"expired", "terminated"})) == {"A": 10, "B": 10}


def test_paging_is_stable_while_tasks_change_and_go() -> None:
    index = _index()
    q = Query(states=frozenset({"expired", "terminated"}))
    first = index.page(q, limit=5)
    assert [e.id for e in first.entries] == ["t01", "t02", "t04", "t05", "t07"] and first.cursor
    index.put("t02", "complete", "email:new", "B", 2 * S, 200 * S)  # changes under the reader
    index.forget("t08")
    index.put("t99", "expired", "email:new", "A", 99 * S, 300 * S, "timeout", "late")  # a new task: at the end
    second = index.page(q, limit=5, cursor=first.cursor)
    assert [e.id for e in second.entries] == ["t10", "t11", "t13", "t14", "t16"]
    rest = index.page(q, limit=100, cursor=second.cursor)
    assert [e.id for e in rest.entries][-1] == "t99" and rest.cursor is None
    newest = index.page(q, limit=2, newest_first=True)
    assert [e.id for e in newest.entries] == ["t99", "t29"]
    assert [e.id for e in index.page(q, limit=2, newest_first=True, cursor=newest.cursor).entries] == ["t28", "t26"]
    assert index.get("t08") is None and index.count(Query()) == 30
    with pytest.raises(ValueError, match="not one this index handed out"):
        index.page(q, cursor="zz")


def test_corrupt_documents_are_skipped() -> None:
    index = TaskIndex()
    index.put_raw(b"not json", 1)
    index.put_raw(b'{"id": "x", "created": "yesterday"}', 1)
    index.put_raw(b'{"id": "ok", "state": "new", "type": "a", "queue": "Q", "created": "2026-01-01T00:00:00Z"}', 1)
    assert [e.id for e in index.page(Query()).entries] == ["ok"]
