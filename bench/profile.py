"""Reading py-spy's collapsed stacks (``py-spy record --format raw --function``) into shares of CPU.

Each line is ``frame;frame;...;leaf COUNT`` with frames like ``Dispatcher._handle (bridge/dispatcher.py:217)``.
py-spy leaves idle threads out by default, so every sample is the dispatcher running Python (or native code
called from it): a function's *self* share is where the CPU was, its *total* share is what it and its callees
cost.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

#: where a leaf frame's file puts its time; the first matching prefix wins
AREAS = (
    ("jetbridge/_fastread.py", "jetbridge wire path (_fastread, _fastwrite: nats-py's parse and publish, redone)"),
    ("jetbridge/_fastwrite.py", "jetbridge wire path (_fastread, _fastwrite: nats-py's parse and publish, redone)"),
    ("jetbridge/", "jetbridge SDK (store, requester, protocol, events)"),
    ("bridge/", "bridge (dispatcher)"),
    ("nats/", "nats-py client"),
    ("asyncio/", "asyncio event loop"),
    ("anyio/", "anyio"),
    ("structlog/", "structlog"),
    ("prometheus_client/", "prometheus_client"),
    ("msgspec/", "msgspec"),
    ("ksuid/", "ksuid"),
    ("secrets.py", "secrets/hashlib"),
    ("hashlib", "secrets/hashlib"),
    ("base64.py", "base64"),
    ("selectors.py", "asyncio event loop"),
    ("socket.py", "asyncio event loop"),
)


def _area(frame: str) -> str:
    location = frame[frame.rfind("(") + 1:].rstrip(")")
    for prefix, area in AREAS:
        if location.startswith(prefix) or f"/{prefix}" in location:
            return area
    return "other: " + location.split(":")[0]


def _function(frame: str) -> str:
    """``Dispatcher._handle (bridge/dispatcher.py)``: the frame without its line number."""
    name, _, location = frame.rpartition(" (")
    file = location.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({file})"


def parse(path: str | Path, top: int = 25) -> dict[str, Any]:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    samples = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        samples += count
        leaf = frames[-1]
        own[_function(leaf)] += count
        areas[_area(leaf)] += count
        for fn in {_function(f) for f in frames}:
            total[fn] += count

    def shares(counter: Counter[str], n: int) -> list[dict[str, Any]]:
        return [{"function": fn, "share": round(c / samples, 4)} for fn, c in counter.most_common(n)]

    # The frames every stack shares (runpy, typer, anyio.run, the event loop) say nothing: leave them out.
    inclusive = Counter({fn: c for fn, c in total.items() if c < 0.8 * samples})
    return {
        "samples": samples,
        "self": shares(own, top),
        "total": shares(inclusive, top),
        "areas": [{"area": a, "share": round(c / samples, 4)} for a, c in areas.most_common()],
        "steps": {name: round(sum(total[fn] for fn in fns if fn in total) / samples, 4) if samples else None
                  for name, fns in STEPS.items()},
    }


#: the dispatcher's per-task steps (inclusive shares). The first nine do not contain each other; the nats-py
#: rows overlap them (subscription callbacks include intake and replies; publishes happen inside every step).
STEPS = {
    "intake: Puller._on_msg -> Dispatcher._on_item (a task per item)":
        ["Puller._on_msg (bridge/puller.py)"],
    "load the task: TaskStore.load_raw (direct get)": ["TaskStore.load_raw (jetbridge/_store.py)"],
    "saves: TaskStore.save_raw (CAS publish, await the ack)": ["TaskStore.save_raw (jetbridge/_store.py)"],
    "state machine: on_delivery/on_outcome/apply": ["on_delivery (bridge/states.py)", "on_outcome (bridge/states.py)",
                                                    "apply (bridge/states.py)"],
    "events: Settler.event (task_state_event + publish)": ["Settler.event (bridge/settle.py)"],
    "attempt: AttemptRunner.run (build the request, request, read the reply)":
        ["AttemptRunner.run (bridge/attempts.py)"],
    "ack: Settler.item": ["Settler.item (bridge/settle.py)"],
    "metrics: prometheus_client": ["Tally.inc (bridge/tally.py)", "Tally.dec (bridge/tally.py)",
                                   "Tally.set (bridge/tally.py)", "TallyHistogram.observe (bridge/tally.py)",
                                   "MetricWrapperBase.labels (prometheus_client/metrics.py)",
                                   "Counter.inc (prometheus_client/metrics.py)",
                                   "Gauge.inc (prometheus_client/metrics.py)", "Gauge.dec (prometheus_client/metrics.py)",
                                   "Histogram.observe (prometheus_client/metrics.py)",
                                   "Gauge.set (prometheus_client/metrics.py)"],
    "replies: Requester._on_reply (futures resolved)": ["Requester._on_reply (jetbridge/_requester.py)"],
    "nats-py: read loop (parse, headers, hand to subscriptions)": ["Client._read_loop (nats/aio/client.py)"],
    # with the fast wire path the read loop runs jetbridge._fastread.FastParser, which calls the lanes (intake,
    # replies) in the loop: this row then includes them
    "nats-py: subscription callback tasks (include intake and replies)":
        ["Subscription._wait_for_msgs (nats/aio/subscription.py)"],
    "nats-py: publish (build PUB/HPUB, headers; inside the steps above)": ["Client.publish (nats/aio/client.py)",
                                                                           "publish_nowait (jetbridge/_fastwrite.py)"],
    "nats-py: flusher (socket writes)": ["Client._flusher (nats/aio/client.py)"],
    # per-request and watchdog timers (call_later), the requester's shared one (Requester._arm, call_at and its
    # FIFOs), and the watchdogs' timer wheel
    "timers: call_later, Requester._arm (requests, attempt watchdogs)": [
        "BaseEventLoop.call_later (asyncio/base_events.py)", "Requester._arm (jetbridge/_requester.py)",
        "Requester._expire_after (jetbridge/_requester.py)", "Requester._sweep (jetbridge/_requester.py)",
        "TimerWheel.add (bridge/wheel.py)", "TimerWheel.remove (bridge/wheel.py)", "TimerWheel._fire (bridge/wheel.py)"],
    "random ids: secrets (event ids, attempt tokens)": ["token_bytes (secrets.py)"],
}
