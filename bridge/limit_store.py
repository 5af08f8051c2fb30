"""Global limits in a JetStream KV bucket: definitions, permit slots and rate buckets, and a live mirror of them.

Bucket ``JETBRIDGE_LIMITS`` (history 1), keys:

- ``def.<id>``: a :class:`bridge.limits.LimitSpec` (JSON), written by ``jetbridge limit set``;
- ``permit.<id>.<n>``: concurrency permit slot ``n`` (a :class:`bridge.limits.Permit`, empty when free);
- ``rate.<id>``: the GCRA arrival time of a rate limit (decimal ns).

Every write that hands out capacity is a compare-and-set on the key's revision, so two dispatchers can never both
take one slot or one token. Each dispatcher watches the whole bucket (:class:`LimitMirror`): definitions apply within
the watch's latency (milliseconds), a released permit wakes the tasks waiting for it, and the mirror's revisions make
the common compare-and-set succeed without a read first.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import msgspec
import nats.js.errors as jserr
import structlog
from jetbridge.internal import JetStreamError, Requester, js_publish
from nats.aio.client import Client
from nats.js.kv import KeyValue

from .limits import (
    Adapt,
    LimitSpec,
    Permit,
    gcra_take,
    is_free,
    lowered,
    permit_expiry,
    permit_slot,
    rate_factor,
    stored_problem,
    token_chunk,
)

log = structlog.get_logger("jetbridge.limits")

BUCKET = "JETBRIDGE_LIMITS"
_DEF, _PERMIT, _RATE, _ADAPT = "def.", "permit.", "rate.", "adapt."
_spec_decoder = msgspec.json.Decoder(LimitSpec)
_permit_decoder = msgspec.json.Decoder(Permit)
_adapt_decoder = msgspec.json.Decoder(Adapt)
#: tokens taken ahead (see :func:`bridge.limits.token_chunk`) are dropped when not used within this time, so a
#: start never counts against an interval long past
CREDIT_TTL = 0.05


async def open_bucket(nc: Client, *, create: bool, replicas: int = 1, timeout: float = 5.0) -> KeyValue | None:
    """The limits bucket; created when ``create`` (``limit set``), else None when it does not exist."""
    js = nc.jetstream(timeout=timeout)
    try:
        return await js.key_value(BUCKET)
    except jserr.BucketNotFoundError:
        if not create:
            return None
    try:
        return await js.create_key_value(bucket=BUCKET, history=1, replicas=replicas,
                                         description="Jetbridge global limits (jetbridge limit ...)")
    except jserr.APIError as exc:
        if "already in use" in str(exc.description):
            return await js.key_value(BUCKET)
        raise


async def _entries(kv: KeyValue, keys: str) -> list[KeyValue.Entry]:
    """The current values of the keys matching the subject filter ``keys`` (nats-py's ``keys()`` filters by
    substring after reading the whole bucket)."""
    watcher = await kv.watch(keys, ignore_deletes=True)
    found = []
    try:
        async for entry in watcher:
            if entry is None:
                break
            found.append(entry)
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return found


def decode_spec(key_id: str, value: bytes) -> LimitSpec:
    """The limit stored under ``def.<key_id>``; ValueError (with the reason) for one that cannot be applied."""
    try:
        spec = _spec_decoder.decode(value)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a limit definition: {exc}") from None
    problem = stored_problem(spec, key_id)
    if problem is not None:
        raise ValueError(problem)
    return spec


def _decode_permit(value: bytes | None) -> Permit | None:
    """A slot's holder; None when free (empty) or unreadable (written by hand: holds nothing)."""
    try:
        return _permit_decoder.decode(value) if value else None
    except msgspec.DecodeError:
        return None


async def save_spec(kv: KeyValue, spec: LimitSpec) -> None:
    await kv.put(_DEF + spec.id, msgspec.json.encode(spec))


async def load_specs(kv: KeyValue) -> list[LimitSpec]:
    specs = []
    for entry in await _entries(kv, _DEF + "*"):
        try:
            specs.append(decode_spec(entry.key[len(_DEF):], entry.value or b""))
        except ValueError:
            continue  # not applied by dispatchers either (LimitMirror.apply): not listed
    return sorted(specs, key=lambda s: (s.queues, s.types))


async def delete_spec(kv: KeyValue, spec_id: str) -> bool:
    """Remove a limit and its permits and bucket; False when there was no such limit."""
    try:
        await kv.get(_DEF + spec_id)
    except jserr.KeyNotFoundError:
        return False
    await kv.delete(_DEF + spec_id)
    for entry in (await _entries(kv, f"{_PERMIT}{spec_id}.*") + await _entries(kv, _RATE + spec_id)
                  + await _entries(kv, _ADAPT + spec_id)):
        await kv.purge(entry.key)
    return True


@dataclass
class LimitMirror:
    """The bucket as last seen by the watch (plus this dispatcher's own writes, which it sees first)."""

    specs: dict[str, LimitSpec] = field(default_factory=dict)
    permits: dict[str, dict[int, Permit | None]] = field(default_factory=dict)
    tats: dict[str, int] = field(default_factory=dict)
    adapts: dict[str, Adapt] = field(default_factory=dict)
    revisions: dict[str, int] = field(default_factory=dict)
    #: bumped on every definition change (callers cache per version)
    version: int = 0

    def apply(self, key: str, value: bytes | None, revision: int) -> str | None:
        """One watched (or own) write; returns the limit id it concerns (None for a stale or foreign key).

        The bucket can be written by hand, so nothing in it may raise here (an exception would end the watch, and
        the watch, restarted, would meet the same entry again: limits frozen for good). An entry that is not what
        Jetbridge writes is logged once (per write) and ignored: a definition that cannot be applied as a whole
        removes the limit stored under that key, as ``limit list`` (which skips it too) shows.
        """
        if revision < self.revisions.get(key, 0):
            return None
        self.revisions[key] = revision
        kind, _, rest = key.partition(".")
        if kind == "def":
            self.version += 1
            self.specs.pop(rest, None)
            if value:
                try:
                    self.specs[rest] = decode_spec(rest, value)
                except ValueError as exc:
                    log.warning("bad_limit_entry", key=key, error=str(exc), value=value[:200].decode(errors="replace"),
                                hint="ignored: not a limit this dispatcher can apply; write limits with "
                                     "`jetbridge limit set` (and remove this key)")
            return rest
        if kind == "permit":
            where = permit_slot(key)
            if where is None:
                if value:  # its deletion (``limit delete`` purges it with the limit's slots) says nothing new
                    log.warning("bad_limit_entry", key=key, error="not a permit slot key (permit.<id>.<n>)",
                                hint="ignored; remove this key from the bucket")
                return None
            spec_id, slot = where
            self.permits.setdefault(spec_id, {})[slot] = _decode_permit(value)
            return spec_id
        if kind == "adapt":
            try:
                self.adapts[rest] = _adapt_decoder.decode(value) if value else Adapt()
            except msgspec.DecodeError:
                self.adapts.pop(rest, None)
            return rest
        if kind == "rate":
            try:
                self.tats[rest] = int(value or b"0")
            except ValueError:
                self.tats[rest] = 0
            return rest
        return None


@dataclass(eq=False)
class Held:
    """A permit this dispatcher holds for one task.

    Compared by identity: a slot given up (lost, or being given back) may already be held again, for another task,
    and the two holdings must never be mistaken for each other.
    """

    key: str
    task: str
    revision: int
    lease: float
    renewed: float
    #: found taken by another holder (it expired while this dispatcher was paused or cut off): never renewed or
    #: written again
    lost: bool = False
    released: bool = False
    #: a renewal and the release of one permit never overlap: a release sent while a renewal's write is still
    #: unacknowledged compares against the revision before it, fails, and leaves the permit held (capacity lost
    #: until it expires); a renewal sent after the release finds the slot empty and would call the permit lost
    lock: anyio.Lock = field(default_factory=anyio.Lock)


class LimitKV:
    """The compare-and-set writes that take and give back capacity."""

    def __init__(self, kv: KeyValue, mirror: LimitMirror, dispatcher_id: str, clock: Callable[[], int],
                 requester: Requester | None = None) -> None:
        self.kv = kv
        #: the dispatcher's own request path: a compare-and-set through it costs about half of nats-py's publish
        self.rq = requester
        self.mirror = mirror
        self.dispatcher = dispatcher_id
        self.clock = clock
        #: permit keys an admission of this dispatcher is claiming right now (others pick another slot)
        self._claiming: set[str] = set()
        #: rate tokens taken ahead: limit id -> (tokens, when taken)
        self._credit: dict[str, tuple[int, float]] = {}
        self._rate_locks: dict[str, anyio.Lock] = {}

    async def _write(self, key: str, value: bytes, revision: int) -> int:
        """Write ``key`` only if its last revision is ``revision`` (0: it has none); the new revision, or
        :class:`nats.js.errors.KeyWrongLastSequenceError`."""
        if self.rq is None:
            return await (self.kv.update(key, value, last=revision) if revision else self.kv.create(key, value))
        try:
            ack = await js_publish(self.rq, f"$KV.{BUCKET}.{key}", value,
                                   {"Nats-Expected-Last-Subject-Sequence": str(revision)})
        except JetStreamError as exc:
            if exc.err_code in (10071, 10164):
                raise jserr.KeyWrongLastSequenceError(description=exc.description) from None
            raise
        return int(ack.seq)

    async def _cas(self, key: str, value: bytes, revision: int) -> int | None:
        """Write ``key`` if it is still at ``revision`` (the one the caller decided on: read together with the
        value, with no await in between); None (and the truth fetched) when it is not."""
        try:
            new = await self._write(key, value, revision)
        except jserr.KeyWrongLastSequenceError:
            try:
                entry = await self.kv.get(key)
                self.mirror.apply(key, entry.value, entry.revision or 0)
            except jserr.KeyNotFoundError as exc:  # deleted or purged: its marker's revision is the one to expect
                marker = exc.entry
                if marker is not None:
                    self.mirror.apply(key, None, marker.revision or 0)
            return None
        self.mirror.apply(key, value, new)
        return new

    async def take_permit(self, spec: LimitSpec, task_id: str, lease: float, now_mono: float) -> Held | None:
        """Claim a free slot of ``spec`` for ``task_id``; None when all are held.

        The scan starts at a random slot (dispatchers racing for free slots mostly pick different ones) and skips
        slots another admission here is claiming. A slot is checked and its revision read with no await in between.
        """
        slots = self.mirror.permits.get(spec.id, {})
        now, tries, start = self.clock(), 0, random.randrange(spec.concurrency)
        for i in range(spec.concurrency):
            n = (start + i) % spec.concurrency
            if not is_free(slots.get(n), now):
                continue
            key = f"{_PERMIT}{spec.id}.{n}"
            if key in self._claiming:
                continue
            self._claiming.add(key)
            try:
                revision = await self._cas(key, self._permit(task_id, lease), self.mirror.revisions.get(key, 0))
            finally:
                self._claiming.discard(key)
            if revision is not None:
                return Held(key, task_id, revision, lease, now_mono)
            tries += 1
            if tries == 4:
                break
            slots, now = self.mirror.permits.get(spec.id, {}), self.clock()
        return None

    def _permit(self, task_id: str, lease: float) -> bytes:
        expires = self.clock() + int(permit_expiry(lease) * 1e9)
        return msgspec.json.encode(Permit(task=task_id, dispatcher=self.dispatcher, expires=expires))

    async def renew(self, held: Held, now_mono: float) -> bool:
        """Push the permit's expiry on; False only when another holder has it now (it expired and was taken while
        we were away; then ``held.lost``). A permit whose limit was deleted, or that was given back meanwhile, is
        simply no longer renewed."""
        async with held.lock:
            if held.released or held.lost:
                return not held.lost
            value = self._permit(held.task, held.lease)
            try:
                held.revision = await self._write(held.key, value, held.revision)
            except jserr.KeyWrongLastSequenceError:
                try:
                    entry = await self.kv.get(held.key)
                except jserr.KeyNotFoundError:
                    held.renewed = float("inf")  # the limit was deleted (its slots purged): nothing to renew
                    return True
                current = _decode_permit(entry.value)
                if current is not None and current.task == held.task and current.dispatcher == self.dispatcher:
                    held.revision = entry.revision or held.revision  # still ours: renew from that revision next round
                    return True
                held.lost = True  # taken (and maybe given back) by another: it expired while we were away
                return False
            self.mirror.apply(held.key, value, held.revision)
            held.renewed = now_mono
            return True

    async def release(self, held: Held) -> None:
        """Give the permit back (once); a lost one is not ours to write any more."""
        async with held.lock:
            if held.released:
                return
            held.released = True
            if held.lost:
                return
            try:
                revision = await self._write(held.key, b"", held.revision)
                self.mirror.apply(held.key, b"", revision)
            except jserr.KeyWrongLastSequenceError:
                pass  # it expired and was taken: nothing of ours to give back

    async def take_token(self, spec: LimitSpec) -> int:
        """Start one attempt against ``spec``'s rate: 0 when allowed (and counted), else ns to wait.

        One compare-and-set at a time per limit in this dispatcher (the others wait for its result, then use the
        tokens it took ahead), so local admissions never race each other for the bucket's revision.
        """
        if self._use_credit(spec.id):
            return 0
        lock = self._rate_locks.setdefault(spec.id, anyio.Lock())
        async with lock:
            if self._use_credit(spec.id):
                return 0
            key = _RATE + spec.id
            for _ in range(8):
                revision = self.mirror.revisions.get(key, 0)  # read with the arrival time, no await in between
                now = self.clock()
                rate = spec.rate * rate_factor(self.mirror.adapts.get(spec.id), now) if spec.adaptive else spec.rate
                got, tat, wait = gcra_take(self.mirror.tats.get(spec.id, 0), now, rate, spec.burst,
                                           token_chunk(spec))
                if not got:
                    return wait
                if await self._cas(key, str(tat).encode(), revision) is not None:
                    if got > 1:
                        self._credit[spec.id] = (got - 1, time.monotonic())
                    return 0
        return int(1e9 / spec.rate)  # heavy contention between dispatchers: try again after one interval

    async def push_back(self, spec: LimitSpec) -> float | None:
        """A handler said "overloaded": halve ``spec``'s rate share (at most once a second, across dispatchers).
        The new share, or None when it was lowered a moment ago."""
        key = _ADAPT + spec.id
        revision = self.mirror.revisions.get(key, 0)
        new = lowered(self.mirror.adapts.get(spec.id), self.clock())
        if new is None:
            return None
        self._credit.pop(spec.id, None)
        if await self._cas(key, msgspec.json.encode(new), revision) is None:
            return None  # another dispatcher lowered it just now
        return new.factor

    def _use_credit(self, spec_id: str) -> bool:
        tokens, taken = self._credit.get(spec_id, (0, 0.0))
        if tokens <= 0 or time.monotonic() - taken > CREDIT_TTL:
            return False
        self._credit[spec_id] = (tokens - 1, taken)
        return True


async def permits_in_use(kv: KeyValue, spec: LimitSpec, now: int) -> int:
    """How many of ``spec``'s permit slots are held (not free, not expired) right now."""
    held = 0
    for entry in await _entries(kv, f"{_PERMIT}{spec.id}.*"):
        permit, where = _decode_permit(entry.value), permit_slot(entry.key)
        if permit and permit.task and permit.expires > now and where is not None and where[1] < spec.concurrency:
            held += 1
    return held


async def limit_rows(nc: Client, *, timeout: float = 5.0) -> list[dict[str, object]]:
    """Every limit with its permits in use, for ``limit list`` and ``info`` (empty when none was ever set)."""
    from jetbridge.internal import now_ns

    kv = await open_bucket(nc, create=False, timeout=timeout)
    if kv is None:
        return []
    rows: list[dict[str, object]] = []
    for spec in await load_specs(kv):
        rows.append({"id": spec.id, "types": spec.types, "queues": spec.queues,
                     "concurrency": spec.concurrency or None, "rate": spec.rate_text or None,
                     "rate_per_s": spec.rate or None, "burst": spec.burst if spec.rate else None,
                     "adaptive": spec.adaptive,
                     "running": await permits_in_use(kv, spec, now_ns()) if spec.concurrency else None})
    return rows
