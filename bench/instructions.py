"""Instructions per task, counted by callgrind: a figure the shared machine's load cannot move.

    python -m bench.instructions [--tasks 2000] [--concurrency 200]

On a 2-core machine shared with other builds, CPU time per task moves by 10-20 % with the load, which hides the
effect of one change. Here the dispatcher runs under ``valgrind --tool=callgrind`` (about 50 times slower, so it
drains few tasks): once it is ready its counters are zeroed, ``--tasks`` no-op tasks are queued and drained through
the Go no-op handler, and the counters are dumped. Instructions per task = the dump's total / tasks. Idle work in
the same window (the keeper, the queue watch) is counted too; it is small and the same for both sides of an A/B.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nats
from jetbridge import _names as names

from .infra import BUILD_DIR, Children, Proc, Server, build_go, go_noop_proc, log
from .workload import create_queue, fill, stream_messages

QUEUE = "BENCH"


async def count(tasks: int, concurrency: int) -> dict[str, Any]:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return {"error": "valgrind is not installed"}
    noop, err = build_go("noop")
    if noop is None:
        return {"error": err}
    out_dir = BUILD_DIR / "callgrind"
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("callgrind.out.*"):
        old.unlink()
    with Server() as srv, Children() as kids:
        nc = await nats.connect(srv.url)
        await create_queue(nc, QUEUE, concurrency)
        kids.start(go_noop_proc(noop, srv.url, concurrency))
        argv = [valgrind, "--tool=callgrind", f"--callgrind-out-file={out_dir}/callgrind.out.%p",
                sys.executable, "-m", "bridge", "--server", srv.url, "run", "--queue", QUEUE,
                "--concurrency", str(concurrency), "--log-level", "info", "--log-format", "json"]
        dispatcher = kids.start(Proc("dispatcher-callgrind", argv, ready="dispatcher_started"), timeout=300)
        await asyncio.sleep(2)  # let start-up settle
        _control("-z", dispatcher.pid)
        started = time.monotonic()
        await fill(nc, QUEUE, tasks, chunk=500)
        stream = names.queue_stream(QUEUE)
        while await stream_messages(nc, stream) and time.monotonic() - started < 1800:  # noqa: ASYNC110 - a poll
            await asyncio.sleep(0.2)
        seconds = time.monotonic() - started
        _control("-d", dispatcher.pid)
        await asyncio.sleep(1)
        await nc.close()
    # callgrind_control -d writes callgrind.out.<pid>.1 (the window); the file without a suffix is the shutdown
    instructions = next((t for p in out_dir.glob("callgrind.out.*.1") if (t := _total(p))), None)
    if instructions is None:
        return {"error": f"no callgrind dump in {out_dir}"}
    return {"tasks": tasks, "concurrency": concurrency, "seconds_under_callgrind": round(seconds, 1),
            "instructions": instructions, "instructions_per_task": round(instructions / tasks)}


def _control(flag: str, pid: int) -> None:
    subprocess.run(["callgrind_control", flag, str(pid)], capture_output=True, timeout=120, check=False)


def _total(path: Path) -> int | None:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()
    result = asyncio.run(count(args.tasks, args.concurrency))
    log(f"instructions per task: {result.get('instructions_per_task')}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
