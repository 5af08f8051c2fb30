"""``python -m bench``: every scenario and its baselines in one run; JSON on stdout and in bench/results/latest.json.

    python -m bench                  # the full run (about 3.5 minutes on the 2-core machine, warm)
    python -m bench --quick          # small counts, one run each: a smoke test of the harness (under a minute)
    python -m bench --only drain_go,latency
    python -m bench --budget 300     # seconds, builds included; a run that would not fit is skipped

Progress goes to stderr. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import api_bench, baselines, index_bench, peer_baselines, scenarios, tracing_ab
from .infra import REPO, build_go, commit_tree, ensure_py_spy, ensure_uvloop, go_version, load_avg, log

RESULTS = REPO / "bench" / "results" / "latest.json"


@dataclass(frozen=True)
class Counts:
    concurrency: int = 1000
    rr_n: int = 20_000
    js_n: int = 20_000
    naive_n: int = 10_000
    asyncjobs_n: int = 20_000
    drain_n: int = 20_000
    profile_n: int = 40_000
    drain_py_n: int = 20_000
    enqueue_n: int = 20_000
    latency_rates: tuple[int, ...] = (200, 1000)
    latency_seconds: float = 4.0
    cost_queued: int = 100_000
    cost_window: int = 20_000
    depth_small: int = 10_000
    two_n: int = 20_000
    #: no-op tasks each peer (taskiq, FastStream) enqueues and drains
    peers_n: int = 20_000
    #: tasks per drain of the limits-cost scenario (issue 18: four drains)
    limits_n: int = 10_000
    #: tasks in the store for the index scenario (issue 17), and the large run (None: skipped)
    index_n: int = 100_000
    index_large_n: int | None = 1_000_000
    #: tasks stored for the HTTP API scenario (issue 19), and tasks it enqueues over HTTP
    api_n: int = 100_000
    api_enqueue_n: int = 4000


QUICK = Counts(rr_n=5000, js_n=5000, naive_n=2000, asyncjobs_n=5000, drain_n=5000, profile_n=5000, drain_py_n=3000,
               enqueue_n=5000, peers_n=5000, limits_n=3000,
               latency_seconds=2.0, cost_queued=20_000, cost_window=5000, depth_small=3000, two_n=5000,
               index_n=20_000, index_large_n=None, api_n=20_000, api_enqueue_n=1000)


@dataclass(frozen=True)
class Step:
    name: str
    section: str
    #: rough seconds one run takes here, to decide whether it still fits the budget
    estimate: float
    run: Callable[[], Any]
    #: dotted paths of the figures kept from every run; the first chooses the representative (median) run
    metrics: tuple[str, ...]
    reps: int = 1
    needs_go: bool = False
    #: run in the last round (after the repeats of the headline steps), so the budget cuts it first
    late: bool = False


def _meta() -> dict[str, Any]:
    from importlib.metadata import version

    from bridge.embedded import server_binary

    def cmd(argv: list[str]) -> str | None:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=REPO).stdout.strip() or None
        except (OSError, subprocess.TimeoutExpired):
            return None

    mem_kb = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kb = int(f.readline().split()[1])
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(), "memory_gb": round(mem_kb / 1024 / 1024, 1), "kernel": platform.release(),
        "cpu_model": _cpu_model(), "python": sys.version.split()[0], "nats_py": version("nats-py"),
        "nats_server": cmd([server_binary(), "--version"]), "go": go_version(),
        "git_commit": cmd(["git", "rev-parse", "--short", "HEAD"]),
        "git_dirty": bool(cmd(["git", "status", "--porcelain", "--untracked-files=no"])),
    }


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _val(section: dict[str, Any], key: str, *path: str) -> Any:
    """A figure of a step: the median over its runs when it ran more than once, else its one value."""
    median = _get(section, key, "median")
    dotted = ".".join(path)
    if isinstance(median, dict) and dotted in median:
        return median[dotted]
    return _get(section, key, *path)


def aggregate(runs: list[dict[str, Any]], metrics: tuple[str, ...]) -> dict[str, Any]:
    """The run whose first metric is the median, with every run's figures and the median of each."""
    def value(run: dict[str, Any], metric: str) -> Any:
        return _get(run, *metric.split("."))

    primary = metrics[0]
    ok = sorted((r for r in runs if isinstance(value(r, primary), (int, float))), key=lambda r: value(r, primary))
    if len(runs) == 1:
        return runs[0]
    chosen = dict(ok[(len(ok) - 1) // 2] if ok else runs[-1])
    chosen["reps"] = len(runs)
    chosen["runs"] = [{**{m: value(r, m) for m in metrics}, "load_avg": r.get("load_avg"),
                       **({"error": r["error"]} if "error" in r else {})} for r in runs]
    medians = {}
    for m in metrics:
        values = [v for r in runs if isinstance(v := value(r, m), (int, float))]
        medians[m] = round(statistics.median(values), 3) if values else None
    chosen["median"] = medians
    return chosen


def _ratio(a: Any, b: Any) -> float | None:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return round(a / b, 3)
    return None


def ratios(out: dict[str, Any]) -> None:
    """Each scenario's figures over its baselines' (measured in this run); medians where a step ran repeatedly."""
    b, s = out["baselines"], out["scenarios"]
    rr = _val(b, "request_reply", "requests_per_s")
    fetch = _val(b, "jetstream", "fetch_ack", "msgs_per_s")
    pub = _val(b, "jetstream", "publish_async", "msgs_per_s")
    naive = _val(b, "naive_loop", "jobs_per_s")
    aj_drain = _val(b, "asyncjobs", "drain_tasks_per_s")
    for key in ("drain_go", "drain_go_profiled", "drain_python", "scaling_two_dispatchers", "scaling_processes_2",
                "scaling_depth_small", "cost"):
        rate = _val(s, key, "tasks_per_s")
        if rate is None:
            continue
        s[key]["ratios"] = {
            "to_raw_request_reply": _ratio(rate, rr), "to_fetch_ack": _ratio(rate, fetch),
            "to_naive_loop": _ratio(rate, naive), "to_asyncjobs_drain": _ratio(rate, aj_drain),
        }
        cpu = _val(s, key, "dispatcher_cpu_us_per_task")
        s[key]["ratios"]["cpu_to_naive_loop_cpu"] = _ratio(cpu, _val(b, "naive_loop", "cpu_us_per_job"))
        s[key]["ratios"]["cpu_to_asyncjobs_cpu"] = _ratio(cpu, _val(b, "asyncjobs", "drain_cpu_us_per_task"))
    for key in ("enqueue", "enqueue_chunk_1000"):
        rate = _val(s, key, "tasks_per_s")
        if rate is not None:
            s[key]["ratios"] = {
                # a task is two JetStream publishes (the task, its work item)
                "to_publish_async_msgs": _ratio(rate, pub),
                "to_publish_async_pairs": _ratio(rate, pub / 2 if pub else None),
                "to_asyncjobs_enqueue": _ratio(rate, _val(b, "asyncjobs", "enqueue_tasks_per_s")),
            }
    one, two = _val(s, "drain_go", "tasks_per_s"), _val(s, "scaling_two_dispatchers", "tasks_per_s")
    small_n, deep_n = _get(s, "scaling_depth_small", "queued"), _get(s, "cost", "queued")
    small = _val(s, "scaling_depth_small", "dispatcher_cpu_us_per_task")
    deep = _val(s, "cost", "dispatcher_cpu_us_per_task")
    out["scaling"] = {
        "one_dispatcher_tasks_per_s": one, "two_dispatchers_tasks_per_s": two, "two_over_one": _ratio(two, one),
        "processes_2_tasks_per_s": (p2 := _val(s, "scaling_processes_2", "tasks_per_s")),
        "processes_2_over_1": _ratio(p2, one),
        "processes_2_cpu_us_per_task": _val(s, "scaling_processes_2", "dispatcher_cpu_us_per_task"),
        "one_dispatcher_cpu_us_per_task": _val(s, "drain_go", "dispatcher_cpu_us_per_task"),
        "two_dispatchers_cpu_us_per_task": _val(s, "scaling_two_dispatchers", "dispatcher_cpu_us_per_task"),
        "cpu_us_per_task_by_depth": {str(small_n): small, str(deep_n): deep},
        "cpu_deep_over_small": _ratio(deep, small),
        "peak_rss_mb_by_depth": {str(small_n): _val(s, "scaling_depth_small", "dispatcher_peak_rss_mb_max"),
                                 str(deep_n): _val(s, "cost", "dispatcher_peak_rss_mb_max")},
    }


def targets(out: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target against the median of its step's runs (``measured``, which decides ``met``) and its best run."""
    s = out["scenarios"]
    rows = [
        ("drain with the Go no-op handler", ">=", 5000, "tasks/s", "drain_go", "tasks_per_s"),
        ("enqueue (Producer.enqueue_many)", ">=", 10000, "tasks/s", "enqueue", "tasks_per_s"),
        ("p99 overhead over raw request-reply at 1,000 tasks/s", "<=", 3.0, "ms", "latency",
         "rate_1000.overhead_p99_ms"),
        ("dispatcher CPU per task (100,000 queued, 1,000 in flight)", "<=", 150, "us", "cost",
         "dispatcher_cpu_us_per_task"),
        ("dispatcher peak RSS (100,000 queued, 1,000 in flight)", "<=", 150, "MB", "cost",
         "dispatcher_peak_rss_mb_max"),
        ("task index list/count p95 (100,000 stored tasks)", "<=", 200, "ms", "index", "n_100000.worst_p95_ms"),
        ("delayed task start lateness p99 (1,000 due in the same second)", "<=", 1000, "ms", "delayed_accuracy",
         "p99_late_ms"),
    ]
    result = []
    for name, op, target, unit, step, metric in rows:
        path = metric.split(".")
        measured = _val(s, step, *path)
        runs = _get(s, step, "runs") or [{metric: measured}]
        values = [v for r in runs if isinstance(v := r.get(metric), (int, float))]
        best = (max(values) if op == ">=" else min(values)) if values else None
        met = measured is not None and (measured >= target if op == ">=" else measured <= target)
        result.append({"target": name, "goal": f"{op} {target} {unit}", "measured": measured, "unit": unit,
                       "met": met, "best_run": best, "runs": values, "source": f"scenarios.{step}.{metric}"})
    return result


PEER_METRICS = ("drain_tasks_per_s", "enqueue_tasks_per_s", "worker_cpu_us_per_task")
#: the dispatcher's CPU per task in drain_go before issue 21's changes: commit 9073877, median of 3 runs on this
#: machine (2026-12-03, load 3-4), the "today" of the issue's goal
RECORDED_CPU_US_PER_TASK = {"commit": "9073877", "dispatcher_cpu_us_per_task": 273.1}
#: that commit, also run in the same run as a baseline (``drain_go_at_9073877``): its dispatcher from ``git archive``
BASE_COMMIT = "9073877"
BASE_STEP = f"drain_go_at_{BASE_COMMIT}"


def goals(out: dict[str, Any]) -> dict[str, Any]:
    """Issue 21's goals as ratios within this run (machine speed cancels out), each met or not."""
    b, s = out["baselines"], out["scenarios"]
    drain = _val(s, "drain_go", "tasks_per_s")
    cpu = _val(s, "drain_go", "dispatcher_cpu_us_per_task")
    naive_cpu = _val(b, "naive_loop", "cpu_us_per_job")
    rows: dict[str, Any] = {}

    def row(key: str, value: float | None, op: str, goal: float, how: str) -> None:
        met = value is not None and (value >= goal if op == ">=" else value <= goal)
        rows[key] = {"value": value, "goal": f"{op} {goal}", "met": met, "how": how}

    row("drain_over_taskiq", _ratio(drain, _val(b, "peer_taskiq", "drain_tasks_per_s")), ">=", 1.2,
        "drain_go tasks/s over taskiq-nats' drain (medians)")
    row("drain_over_faststream", _ratio(drain, _val(b, "peer_faststream", "drain_tasks_per_s")), ">=", 1.5,
        "drain_go tasks/s over FastStream's drain (medians)")
    to_naive = _ratio(cpu, naive_cpu)
    to_recorded = _ratio(cpu, RECORDED_CPU_US_PER_TASK["dispatcher_cpu_us_per_task"])
    row("dispatcher_cpu_over_naive_loop", to_naive, "<=", 1.0, "drain_go dispatcher CPU/task over the naive loop's")
    row("dispatcher_cpu_over_recorded", to_recorded, "<=", 0.6,
        f"drain_go dispatcher CPU/task over {RECORDED_CPU_US_PER_TASK} (another day: indicative only)")
    row(f"dispatcher_cpu_over_{BASE_COMMIT}", _ratio(cpu, _val(b, BASE_STEP, "dispatcher_cpu_us_per_task")), "<=", 0.6,
        f"drain_go dispatcher CPU/task over the same drain by the dispatcher of commit {BASE_COMMIT} (the issue's "
        "'today'), in this run (medians)")
    rows["dispatcher_cpu"] = {"met": rows["dispatcher_cpu_over_naive_loop"]["met"]
                              or rows[f"dispatcher_cpu_over_{BASE_COMMIT}"]["met"],
                              "how": f"the naive-loop ratio or the same-run ratio to {BASE_COMMIT}"}
    row("enqueue_over_taskiq", _ratio(_val(s, "enqueue", "tasks_per_s"), _val(b, "peer_taskiq", "enqueue_tasks_per_s")),
        ">=", 1.5, "Producer.enqueue_many tasks/s over taskiq's kiq() with 100 in flight")
    row("p99_added_latency_ms_at_200", _val(s, "latency", "rate_200", "overhead_p99_ms"), "<=", 3.0,
        "p99 end-to-end minus raw request-reply at 200 tasks/s, ms")
    return rows


DRAIN_METRICS = ("tasks_per_s", "dispatcher_cpu_us_per_task", "dispatcher_peak_rss_mb_max")


def _steps(c: Counts, bins: dict[str, str | None], spy: str | None) -> list[Step]:
    go_noop = bins.get("noop") or ""

    def drain(**kw: Any) -> Callable[[], Any]:
        return lambda: scenarios.drain(concurrency=c.concurrency, noop_bin=go_noop, **kw)

    return [
        Step("request_reply", "baselines", 10,
             lambda: baselines.request_reply(go_noop, n=c.rr_n, concurrency=c.concurrency),
             ("requests_per_s",), reps=3, needs_go=True),
        Step("jetstream", "baselines", 10, lambda: baselines.jetstream(c.js_n),
             ("publish_async.msgs_per_s", "fetch_ack.msgs_per_s"), reps=3),
        Step("peer_taskiq", "baselines", 25, lambda: peer_baselines.run("taskiq", c.peers_n), PEER_METRICS, reps=3),
        Step("peer_faststream", "baselines", 25, lambda: peer_baselines.run("faststream", c.peers_n), PEER_METRICS,
             reps=3),
        Step("drain_go", "scenarios", 25, drain(handler="go", n=c.drain_n), DRAIN_METRICS, reps=3, needs_go=True),
        Step(BASE_STEP, "baselines", 25, lambda: _at_commit(c, go_noop), DRAIN_METRICS, reps=3, needs_go=True),
        Step("enqueue", "scenarios", 12, lambda: scenarios.enqueue(n=c.enqueue_n, chunk=500),
             ("tasks_per_s", "producer_cpu_us_per_task", "pipelined_two_phase.tasks_per_s"), reps=3),
        Step("naive_loop", "baselines", 10, lambda: baselines.naive_loop(go_noop, c.naive_n),
             ("jobs_per_s", "cpu_us_per_job"), reps=3, needs_go=True),
        Step("asyncjobs", "baselines", 25,
             lambda: baselines.asyncjobs(bins.get("asyncjobs") or "", c.asyncjobs_n, c.concurrency),
             ("drain_tasks_per_s", "enqueue_tasks_per_s", "drain_cpu_us_per_task"), reps=2, needs_go=True),
        Step("latency", "scenarios", 35, lambda: scenarios.latency(
             rates=list(c.latency_rates), seconds=c.latency_seconds, noop_bin=go_noop, concurrency=c.concurrency),
             ("rate_1000.overhead_p99_ms", "rate_1000.overhead_p50_ms", "rate_200.overhead_p99_ms",
              "rate_200.overhead_p50_ms"), reps=3, needs_go=True),
        Step("cost", "scenarios", 40, drain(handler="go", n=c.cost_queued, window=c.cost_window, limit_s=150),
             DRAIN_METRICS, reps=2, needs_go=True),
        Step("drain_python", "scenarios", 20, drain(handler="python", n=c.drain_py_n), DRAIN_METRICS, reps=2),
        Step("drain_go_profiled", "scenarios", 25, drain(handler="go", n=c.profile_n, py_spy=spy), DRAIN_METRICS,
             needs_go=True),
        Step("scaling_depth_small", "scenarios", 15, drain(handler="go", n=c.depth_small), DRAIN_METRICS, reps=2,
             needs_go=True),
        Step("scaling_two_dispatchers", "scenarios", 20, drain(handler="go", n=c.two_n, dispatchers=2), DRAIN_METRICS,
             reps=2, needs_go=True),
        Step("scaling_processes_2", "scenarios", 20, drain(handler="go", n=c.two_n, processes=2), DRAIN_METRICS,
             reps=2, needs_go=True),
        Step("limits_cost", "scenarios", 60, lambda: scenarios.limits_cost(n=c.limits_n, concurrency=c.concurrency,
                                                                           noop_bin=go_noop),
             ("none.dispatcher_cpu_us_per_task", "concurrency_not_throttling.dispatcher_cpu_us_per_task",
              "rate_not_throttling.dispatcher_cpu_us_per_task", "none.tasks_per_s",
              "concurrency_not_throttling.tasks_per_s", "rate_not_throttling.tasks_per_s"), needs_go=True),
        Step("delayed_accuracy", "scenarios", 25, lambda: scenarios.delayed_accuracy(n=1000, concurrency=c.concurrency),
             ("p99_late_ms", "p50_late_ms", "early"), reps=1),
        Step("enqueue_chunk_1000", "scenarios", 12, lambda: scenarios.enqueue(n=c.enqueue_n, chunk=1000),
             ("tasks_per_s", "producer_cpu_us_per_task"), late=True),
        Step("index", "scenarios", 150, lambda: index_bench.main_both(c.index_n, c.index_large_n),
             ("n_100000.worst_p95_ms", "n_100000.catch_up_s", "n_100000.index_bytes_per_task")),
        Step("api", "scenarios", 60, lambda: api_bench.api_scenario(n=c.api_n, enqueue_n=c.api_enqueue_n),
             ("worst_p95_ms", "latency.get.p95_ms", "latency.list_state.p95_ms", "latency.count_state.p95_ms",
              "enqueue.tasks_per_s")),
        Step("experiment_uvloop", "experiments", 40, lambda: _uvloop(c, go_noop),
             ("uvloop_cpu_over_asyncio_cpu",), needs_go=True, late=True),
        Step("tracing_ab", "experiments", 75,
             lambda: tracing_ab.run(n=c.drain_n, concurrency=c.concurrency, noop_bin=go_noop),
             ("tracing_cpu_us_per_task", "off.dispatcher_cpu_us_per_task", "on.dispatcher_cpu_us_per_task",
              "on_over_off", "sampled_10pct_cpu_us_per_task"), needs_go=True, late=True),
    ]


def _at_commit(c: Counts, go_noop: str) -> Any:
    """``drain_go`` with the dispatcher (and SDK) of :data:`BASE_COMMIT`, on this venv and this machine, now."""
    root, error = commit_tree(BASE_COMMIT)
    if root is None:
        raise RuntimeError(error)
    return scenarios.drain(concurrency=c.concurrency, noop_bin=go_noop, handler="go", n=c.drain_n, root=root)


def _uvloop(c: Counts, go_noop: str) -> Any:
    error = ensure_uvloop()
    if error:
        return {"error": error}
    return scenarios.uvloop_ab(n=c.drain_n, concurrency=c.concurrency, noop_bin=go_noop)


def _run_once(step: Step) -> dict[str, Any]:
    load = load_avg()
    value = step.run()
    result: dict[str, Any] = asyncio.run(value) if asyncio.iscoroutine(value) else value
    result.setdefault("load_avg", load)
    return result


def _builds(out: dict[str, Any], only: set[str] | None) -> tuple[dict[str, str | None], str | None]:
    """The Go programs, py-spy and (when a peer runs) the peers' venv; each build's time and error go in ``out``."""
    bins: dict[str, str | None] = {}
    for name in ("noop", "asyncjobs"):
        t = time.monotonic()
        bins[name], err = build_go(name)
        out["builds"][name] = {"binary": bins[name], "seconds": round(time.monotonic() - t, 1), "error": err}
        log(f"built bench/go/{name} in {time.monotonic() - t:.1f}s" if not err else err)
    spy, err = ensure_py_spy()
    out["builds"]["py_spy"] = {"binary": spy, "error": err}
    if only is None or only & {"peer_taskiq", "peer_faststream"}:
        t = time.monotonic()
        peers_python, err = peer_baselines.ensure_venv()
        out["builds"]["peers_venv"] = {"python": peers_python, "seconds": round(time.monotonic() - t, 1),
                                       "error": err}
    return bins, spy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts and one run of each step")
    parser.add_argument("--only", help="comma-separated step names (see bench/README.md)")
    parser.add_argument("--reps", type=int, help="runs of every step (default: each step's own, 1 to 3)")
    parser.add_argument("--budget", type=float, default=600.0,
                        help="seconds for the whole run, builds included (default 600)")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)
    started = time.monotonic()
    deadline = started + args.budget
    counts = QUICK if args.quick else Counts()
    out: dict[str, Any] = {
        "schema": 1, "started": datetime.now(UTC).isoformat(timespec="seconds"), "load_avg_start": load_avg(),
        "quick": args.quick, "counts": dict(vars(counts)), "machine": _meta(),
        "builds": {}, "baselines": {}, "scenarios": {}, "experiments": {}, "skipped": {}, "errors": {},
    }
    log(f"load average at start: {out['load_avg_start']} on {out['machine']['cpus']} CPUs")

    only = set(args.only.split(",")) if args.only else None
    bins, spy = _builds(out, only)
    steps = [st for st in _steps(counts, bins, spy) if only is None or st.name in only]
    runs: dict[str, list[dict[str, Any]]] = {st.name: [] for st in steps}
    reps = {st.name: 1 if args.quick else (args.reps or st.reps) for st in steps}
    # Rounds: every step once, then the repeated ones again, so repeats of a scenario and of its baselines
    # are spread over the same stretch of the machine's (shared, noisy) time.
    rounds = max(reps.values(), default=0)
    for round_ in range(rounds):
        for step in steps:
            first = rounds - reps[step.name] if step.late else 0
            if not first <= round_ < first + reps[step.name]:
                continue
            if step.needs_go and not bins.get("noop"):
                out["skipped"][step.name] = "the Go no-op handler was not built"
                continue
            left = deadline - time.monotonic()
            if left < step.estimate:
                out["skipped"][f"{step.name} run {round_ - first + 1}"] = (
                    f"time budget: {left:.0f}s left, a run takes about {step.estimate:.0f}s")
                log(f"skipped {step.name} run {round_ - first + 1}: time budget")
                continue
            log(f"== {step.name} run {round_ - first + 1}/{reps[step.name]} (load {load_avg()})")
            t = time.monotonic()
            try:
                runs[step.name].append(_run_once(step))
            except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others' results
                out["errors"][f"{step.name} run {round_ + 1}"] = f"{type(exc).__name__}: {exc}"[:3000]
                log(f"{step.name} failed: {exc}")
            log(f"   {step.name} took {time.monotonic() - t:.1f}s")
    for step in steps:
        if runs[step.name]:
            out[step.section][step.name] = aggregate(runs[step.name], step.metrics)

    ratios(out)
    out["ratios"] = goals(out)
    out["targets"] = targets(out)
    out["load_avg_end"] = load_avg()
    # Others edit this working tree while the bench runs: say whether the code under test changed meanwhile.
    end = _meta()
    out["git_at_end"] = {"git_commit": end["git_commit"], "git_dirty": end["git_dirty"],
                         "changed_during_run": end["git_commit"] != out["machine"]["git_commit"]}
    out["duration_s"] = round(time.monotonic() - started, 1)
    text = json.dumps(out, indent=2, default=str)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w") as f:
        f.write(text + "\n")
    print(text)
    for key, goal in out["ratios"].items():
        said = f"{goal['value']} (goal {goal['goal']})" if "value" in goal else goal["how"]
        log(f"ratio  {'MET ' if goal['met'] else 'MISS'} {key}: {said}")
    for row in out["targets"]:
        log(f"target {'MET ' if row['met'] else 'MISS'} {row['target']}: {row['measured']} "
            f"(best run {row['best_run']}; goal {row['goal']})")
    log(f"done in {out['duration_s']}s; results in {args.output}")
    return 0
