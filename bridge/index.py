"""An in-memory index of the task store, kept current from the store's own stream.

Listing tasks by reading every stored document per command costs a full read of ``CHORIA_AJ_TASKS`` each time. The
index reads it once (an ordered consumer: the last message of every task subject, then live updates) and answers
list and count queries from memory: by state, type (exact or a pattern such as ``email:*``), queue, last-change
time, error code and error text, with a stable paging cursor. The CLI, the HTTP API and the dashboard share it.

Rows are columns (``array`` and ``bytearray``) rather than one object per task, so a task costs about the size of
its id and its capped error text plus ~40 bytes. Rows never move once the index has caught up, so a cursor (a row
number) stays valid while tasks change; rows are in creation order (tasks stored before the index started are
sorted by ``created`` when the catch-up ends; later ones are appended as they appear).

Deletions are not messages on a stream: the index forgets a task when told (:meth:`TaskIndex.forget`, which the bulk
and dead-letter commands call) and callers that load a listed task drop it when it turns out missing.
"""

from __future__ import annotations

import fnmatch
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import msgspec
from jetbridge.internal import names, parse_ns
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

#: longest error text kept per task (searching error text looks at this much)
MAX_ERROR_TEXT = 240
#: distinct error texts interned at most (beyond, a text search reads every matching row's text)
MAX_TEXTS = 200_000
#: the state code of a forgotten row
_GONE = 255


class _Doc(msgspec.Struct):
    """The members of a task document the index keeps (the rest is skipped while decoding)."""

    id: str
    type: str = ""
    queue: str = ""
    state: str = ""
    created: str = ""
    last_err: str = ""
    last_err_code: str = ""


_decoder = msgspec.json.Decoder(_Doc)


@dataclass(frozen=True)
class Query:
    """Which tasks: every given member must match. ``type`` may be a pattern (``*``, ``?``, ``[...]``).

    ``since_ns``/``until_ns`` bound the time of the task's last change; ``text`` is searched, ignoring case, in the
    last error message.
    """

    states: frozenset[str] | None = None
    queue: str | None = None
    type: str | None = None
    code: str | None = None
    text: str | None = None
    since_ns: int | None = None
    until_ns: int | None = None


@dataclass(frozen=True)
class Entry:
    """One indexed task, as a query returns it."""

    id: str
    state: str
    type: str
    queue: str
    created_ns: int
    updated_ns: int
    code: str
    error: str


@dataclass(frozen=True)
class Page:
    entries: list[Entry]
    #: pass back as ``cursor`` for the next page; None when there is none
    cursor: str | None


class _Strings:
    """Small-integer codes for repeated strings (states, types, queues, error codes)."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.values: list[str] = []

    def code(self, value: str) -> int:
        found = self.codes.get(value)
        if found is None:
            found = self.codes[value] = len(self.values)
            self.values.append(value)
        return found


def _stamp_and_pending(msg: Msg) -> tuple[int, int]:
    """The stored time (ns) and the consumer's pending count, read from the ack subject without nats-py's parser.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>`` (9 tokens), or the 12-token form with
    domain and account hash in front and a random token at the end. Parsing it by hand halves the catch-up time.
    """
    parts = (msg.reply or "").split(".")
    try:
        if len(parts) == 9:
            return int(parts[7]), int(parts[8])
        if len(parts) >= 11:
            return int(parts[9]), int(parts[10])
    except ValueError:
        pass
    meta = msg.metadata
    return int(meta.timestamp.timestamp() * 1e9) if meta.timestamp else 0, meta.num_pending or 0


class TaskIndex:
    """The index; feed it with :meth:`follow` (or :meth:`put` and :meth:`forget` directly)."""

    def __init__(self) -> None:
        self._row: dict[str, int] = {}
        self._ids: list[str] = []
        self._state = bytearray()
        self._type = array("I")
        self._queue = array("I")
        self._code = array("I")
        self._created = array("q")
        self._updated = array("q")
        self._error: list[str] = []
        self._states = _Strings()
        self._types = _Strings()
        self._queues = _Strings()
        self._codes = _Strings()
        #: distinct error texts (most failures share a few): a text search looks at each once, not at each task
        self._texts: dict[str, str] = {}
        self._all_interned = True
        #: live counts by (state, queue, type) codes, so counting by any of them never scans
        self._counts: Counter[tuple[int, int, int]] = Counter()
        #: set once every task stored when :meth:`follow` began is in the index
        self.caught_up = anyio.Event()
        self._sorted = False

    def __len__(self) -> int:
        return len(self._row)

    # Feeding ------------------------------------------------------------------------------------------------

    def put_raw(self, data: bytes, updated_ns: int) -> None:
        """Index one stored task document (its latest version); corrupt documents are skipped."""
        try:
            doc = _decoder.decode(data)
            created = parse_ns(doc.created) if doc.created else 0
        except (msgspec.DecodeError, ValueError, RecursionError):
            return
        self.put(doc.id, doc.state, doc.type, doc.queue, created, updated_ns, doc.last_err_code, doc.last_err)

    def put(self, task_id: str, state: str, task_type: str, queue: str, created_ns: int, updated_ns: int,
            code: str = "", error: str = "") -> None:
        sc, tc, qc = self._states.code(state or "new"), self._types.code(task_type), self._queues.code(queue)
        error = error[:MAX_ERROR_TEXT]
        if len(self._texts) < MAX_TEXTS:
            error = self._texts.setdefault(error, error)
        elif error not in self._texts:
            self._all_interned = False
        row = self._row.get(task_id)
        if row is None:
            self._row[task_id] = len(self._ids)
            self._ids.append(task_id)
            self._state.append(sc)
            self._type.append(tc)
            self._queue.append(qc)
            self._code.append(self._codes.code(code))
            self._created.append(created_ns)
            self._updated.append(updated_ns)
            self._error.append(error)
        else:
            self._counts[(self._state[row], self._queue[row], self._type[row])] -= 1
            self._state[row], self._type[row], self._queue[row] = sc, tc, qc
            self._code[row] = self._codes.code(code)
            self._updated[row], self._error[row] = updated_ns, error
        self._counts[(sc, qc, tc)] += 1

    def forget(self, task_id: str) -> None:
        """Drop a deleted task (its row stays as a gap so that cursors keep their meaning)."""
        row = self._row.pop(task_id, None)
        if row is not None:
            self._counts[(self._state[row], self._queue[row], self._type[row])] -= 1
            self._state[row] = _GONE
            self._error[row] = ""

    def sort_rows(self) -> None:
        """Put the rows in creation order (once, when the catch-up ends, before any cursor was handed out)."""
        order = sorted(self._row.values(), key=lambda r: (self._created[r], self._ids[r]))
        self._ids = [self._ids[r] for r in order]
        self._state = bytearray(self._state[r] for r in order)
        for name in ("_type", "_queue", "_code", "_created", "_updated"):
            column = getattr(self, name)
            setattr(self, name, array(column.typecode, (column[r] for r in order)))
        self._error = [self._error[r] for r in order]
        self._row = {task_id: r for r, task_id in enumerate(self._ids)}
        self._sorted = True

    async def follow(self, nc: Client, *, stream: str = names.TASKS_STREAM) -> None:
        """Keep the index current until cancelled: every stored task first, then each change as it is saved."""
        js = nc.jetstream()
        info = await js.stream_info(stream)
        behind = info.state.messages > 0
        if not behind:
            self.sort_rows()
            self.caught_up.set()

        async def on_msg(msg: Msg) -> None:
            nonlocal behind
            stamp, pending = _stamp_and_pending(msg)
            if msg.headers and "Nats-Marker-Reason" in msg.headers:  # a delete marker (streams that enable them)
                self.forget(msg.subject.rsplit(".", 1)[-1])
            else:
                self.put_raw(msg.data, stamp)
            if behind and pending == 0:
                behind = False
                self.sort_rows()
                self.caught_up.set()

        sub = await js.subscribe(f"{names.TASK_SUBJECT_PREFIX}.*", stream=stream, cb=on_msg, ordered_consumer=True,
                                 deliver_policy=DeliverPolicy.LAST_PER_SUBJECT, pending_msgs_limit=1_000_000,
                                 pending_bytes_limit=1 << 30)
        if behind:  # the stored tasks may have been deleted between the stream info and the subscription
            consumer = await sub.consumer_info()
            if not consumer.num_pending and not (consumer.delivered and consumer.delivered.consumer_seq) and behind:
                behind = False
                self.sort_rows()
                self.caught_up.set()
        try:
            await anyio.sleep_forever()
        finally:
            await sub.unsubscribe()

    # Queries ------------------------------------------------------------------------------------------------

    def _matcher(self, values: _Strings, wanted: str | None) -> set[int] | None:
        if wanted is None:
            return None
        if any(c in wanted for c in "*?["):
            return {code for value, code in values.codes.items() if fnmatch.fnmatchcase(value, wanted)}
        found = values.codes.get(wanted)
        return {found} if found is not None else set()

    def _rows(self, q: Query, start: int, reverse: bool) -> Iterator[int]:
        states = self._matcher(self._states, None)
        if q.states is not None:
            states = {self._states.codes[s] for s in q.states if s in self._states.codes}
        types, queues = self._matcher(self._types, q.type), self._matcher(self._queues, q.queue)
        codes = self._matcher(self._codes, q.code)
        text = q.text.lower() if q.text else None
        texts = None
        if text is not None and self._all_interned:
            texts = {t for t in self._texts if text in t.lower()}
        st, ty, qu, co, up, er = self._state, self._type, self._queue, self._code, self._updated, self._error
        since, until = q.since_ns, q.until_ns
        span = range(start, -1, -1) if reverse else range(start, len(self._ids))
        for r in span:
            s = st[r]
            if s == _GONE or (states is not None and s not in states):
                continue
            if (types is not None and ty[r] not in types) or (queues is not None and qu[r] not in queues):
                continue
            if codes is not None and co[r] not in codes:
                continue
            if (since is not None and up[r] < since) or (until is not None and up[r] > until):
                continue
            if texts is not None:
                if er[r] not in texts:
                    continue
            elif text is not None and text not in er[r].lower():
                continue
            yield r

    def entry(self, row: int) -> Entry:
        return Entry(id=self._ids[row], state=self._states.values[self._state[row]],
                     type=self._types.values[self._type[row]], queue=self._queues.values[self._queue[row]],
                     created_ns=self._created[row], updated_ns=self._updated[row],
                     code=self._codes.values[self._code[row]], error=self._error[row])

    def get(self, task_id: str) -> Entry | None:
        row = self._row.get(task_id)
        return self.entry(row) if row is not None else None

    def page(self, q: Query, *, limit: int = 100, cursor: str | None = None, newest_first: bool = False) -> Page:
        """Up to ``limit`` matching tasks in creation order (or newest first), from ``cursor`` on."""
        if cursor:
            try:
                start = int(cursor) + (-1 if newest_first else 1)
            except ValueError:
                raise ValueError(f"cursor {cursor!r} is not one this index handed out") from None
        else:
            start = len(self._ids) - 1 if newest_first else 0
        rows: list[int] = []
        for r in self._rows(q, start, newest_first):
            rows.append(r)
            if len(rows) == limit:
                break
        more = len(rows) == limit and next(self._rows(q, rows[-1] + (-1 if newest_first else 1), newest_first),
                                           None) is not None
        return Page([self.entry(r) for r in rows], str(rows[-1]) if more else None)

    def ids(self, q: Query) -> list[str]:
        """Every matching task id, in creation order (for bulk operations)."""
        return [self._ids[r] for r in self._rows(q, 0, False)]

    def count(self, q: Query) -> int:
        """How many tasks match; by state, queue and type only, this reads the live counts and never scans."""
        if q.code is None and q.text is None and q.since_ns is None and q.until_ns is None:
            states = None if q.states is None else {self._states.codes[s] for s in q.states if s in self._states.codes}
            types, queues = self._matcher(self._types, q.type), self._matcher(self._queues, q.queue)
            return sum(n for (s, qc, t), n in self._counts.items()
                       if (states is None or s in states) and (queues is None or qc in queues)
                       and (types is None or t in types))
        return sum(1 for _ in self._rows(q, 0, False))

    def counts_by_queue(self, states: frozenset[str]) -> dict[str, int]:
        """Tasks in ``states`` per queue (the ``dead_letters`` gauge)."""
        codes = {self._states.codes[s] for s in states if s in self._states.codes}
        out: Counter[str] = Counter()
        for (s, qc, _t), n in self._counts.items():
            if s in codes and n:
                out[self._queues.values[qc]] += n
        return dict(out)
