"""The command line: pick languages and cases, run each language in its own environment, print the report.

Output is one line per case (``[lang] PASS name`` or ``[lang] FAIL name (…): reason``), then
``<lang>: N passed, N failed`` per language, and last ``overall: N passed, N failed``. The exit code is 0 only
when nothing failed. A language whose handler cannot start (no conformance.sh yet, a build missing, a crash
before ``ready``) gets one ``setup`` failure naming the reason, and the run goes on with the next language.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import anyio
from bridge.logs import configure_logging

from . import cases, direct, failover, v11
from .env import REPO, LanguageEnv, SetupError, Timing
from .processes import ReplicaError
from .registry import Case, CaseFailure

DEFAULT_LANGS = ("python", "node", "go", "rust")
#: languages run by default only when their handler exists (their engineer may not have written it yet)
OPTIONAL_LANGS = ("shell",)
CASE_FILTER_FILE = "conformance.cases"


def all_cases() -> list[Case]:
    return [*cases.registry.cases, *direct.registry.cases, *v11.registry.cases, *failover.registry.cases]


@dataclass
class Outcome:
    name: str
    passed: bool
    seconds: float
    reason: str = ""


@dataclass
class LanguageReport:
    lang: str
    out: TextIO
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(o.passed for o in self.outcomes)

    @property
    def failed(self) -> int:
        return sum(not o.passed for o in self.outcomes)

    def add(self, outcome: Outcome) -> None:
        """Record and print at once, so a long run shows progress and a hung case is easy to spot."""
        self.outcomes.append(outcome)
        verdict = "PASS" if outcome.passed else "FAIL"
        reason = f": {outcome.reason}" if outcome.reason else ""
        print(f"[{self.lang}] {verdict} {outcome.name} ({outcome.seconds:.2f}s){reason}", file=self.out, flush=True)

    def fail(self, name: str, reason: str) -> None:
        self.add(Outcome(name, False, 0.0, reason))


def select_cases(lang: str, available: list[Case], requested: set[str]) -> tuple[list[Case], list[str]]:
    """The cases to run for ``lang``: those ``requested`` on the command line (all when empty), narrowed by the
    language's ``interop/<lang>/conformance.cases`` if it has one (for handlers that can express only some
    behaviours, such as a shell command). Returns the cases and the filter names that match none."""
    chosen = [c for c in available if not requested or c.selected_by(requested)]
    filter_file = REPO / "interop" / lang / CASE_FILTER_FILE
    if not filter_file.exists():
        return chosen, []
    names = {line.split("#", 1)[0].strip() for line in filter_file.read_text().splitlines()} - {""}
    unknown = sorted(n for n in names if not any(c.selected_by({n}) for c in available))
    return [c for c in chosen if c.selected_by(names)], unknown


async def run_case(env: LanguageEnv, case: Case) -> Outcome:
    """Run one case under its timeout; every way it can end becomes a PASS or a FAIL with a reason."""
    def outcome(reason: str = "") -> Outcome:
        return Outcome(case.name, not reason, anyio.current_time() - started, reason)

    started = anyio.current_time()
    try:
        await env.ensure_replicas()
    except ReplicaError as exc:
        return outcome(f"a replica could not be (re)started before the case: {exc}")
    started = anyio.current_time()  # a restart is not the case's time
    try:
        with anyio.move_on_after(case.timeout) as scope:
            await case.fn(env)
    except CaseFailure as exc:
        return outcome(str(exc))
    except ReplicaError as exc:
        return outcome(f"replica: {exc}")
    except Exception as exc:  # noqa: BLE001 - an unexpected error fails this case, not the run
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions and isinstance(exc.exceptions[0], Exception):
            exc = exc.exceptions[0]  # the error itself, not the task group that carried it
        if isinstance(exc, CaseFailure):
            return outcome(str(exc))
        where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        at = f" (at {Path(where.filename).name}:{where.lineno})" if where else ""
        return outcome(f"error: {type(exc).__name__}: {exc}{at}")
    if scope.cancelled_caught:
        return outcome(f"timed out after {case.timeout:g}s")
    return outcome()


async def run_language(lang: str, chosen: list[Case], log_dir: Path, timing: Timing, out: TextIO) -> LanguageReport:
    report = LanguageReport(lang, out)
    script = REPO / "interop" / lang / "conformance.sh"
    if not script.exists():
        report.fail("setup", f"{script.relative_to(REPO)} does not exist: there is no {lang} conformance handler "
                             "(yet)")
        return report
    if not os.access(script, os.X_OK):
        report.fail("setup", f"{script.relative_to(REPO)} is not executable")
        return report
    lang_logs = log_dir / lang
    lang_logs.mkdir(parents=True, exist_ok=True)
    try:
        async with LanguageEnv.open(lang, script, lang_logs, timing) as env:
            for case in chosen:
                report.add(await run_case(env, case))
    except Exception as exc:  # noqa: BLE001 - one language's broken environment must not stop the others
        leaves = _leaves(exc)
        setup = next((e for e in leaves if isinstance(e, SetupError)), None)
        if setup is not None:
            report.fail("setup", str(setup))
        else:
            not_run = len(chosen) - len(report.outcomes)
            report.fail("aborted", f"{'; '.join(f'{type(e).__name__}: {e}' for e in leaves)} "
                                   f"({not_run} cases not run)")
    return report


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups: a task group reports a crash as a group of one."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def default_langs() -> list[str]:
    optional = [lang for lang in OPTIONAL_LANGS if (REPO / "interop" / lang / "conformance.sh").exists()]
    return [*DEFAULT_LANGS, *optional]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m interop.conformance",
        description="Drive each language's conformance handler through a real dispatcher and at the protocol "
                    "level; see interop/README.md for the handler contract.")
    parser.add_argument("langs", nargs="*", metavar="LANG",
                        help=f"directories under interop/ with a conformance.sh (default: {' '.join(default_langs())})")
    parser.add_argument("-k", "--case", action="append", default=[], metavar="NAME",
                        help="run only this case or group (e.g. echo, echo:binary, vector); repeatable")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--keep-logs", action="store_true", help="keep the log directory even when all pass")
    parser.add_argument("-v", "--verbose", action="store_true", help="dispatcher logs on stderr instead of a file")
    return parser.parse_args(argv)


async def run_all(langs: list[str], requested: set[str], log_dir: Path, out: TextIO) -> list[LanguageReport]:
    reports = []
    available = all_cases()
    for lang in langs:
        chosen, unknown = select_cases(lang, available, requested)
        if unknown:
            print(f"[{lang}] note: {CASE_FILTER_FILE} names unknown cases {unknown}", file=out, flush=True)
        report = await run_language(lang, chosen, log_dir, Timing(), out)
        print(f"{lang}: {report.passed} passed, {report.failed} failed", file=out, flush=True)
        reports.append(report)
    return reports


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    args = parse_args(argv)
    if args.list:
        for case in all_cases():
            summary = " ".join((case.fn.__doc__ or "").split("\n\n", 1)[0].split())
            print(f"{case.name:<34} {case.timeout:>4g}s  {summary}", file=out)
        return 0
    langs = args.langs or default_langs()
    requested = set(args.case)
    unknown = sorted(n for n in requested if not any(c.selected_by({n}) for c in all_cases()))
    if unknown:
        print(f"unknown case(s) {unknown}: see --list", file=sys.stderr)
        return 2
    log_dir = Path(tempfile.mkdtemp(prefix="jetbridge-conformance-"))
    dispatcher_log = None if args.verbose else (log_dir / "dispatcher.log").open("a")
    configure_logging("json" if dispatcher_log else "console", "info", stream=dispatcher_log or sys.stderr)
    began = time.monotonic()
    try:
        reports = anyio.run(run_all, langs, requested, log_dir, out)
    except KeyboardInterrupt:
        print(f"interrupted; logs so far: {log_dir}", file=out, flush=True)
        return 130
    finally:
        if dispatcher_log is not None:
            dispatcher_log.close()
    passed, failed = sum(r.passed for r in reports), sum(r.failed for r in reports)
    print(f"time: {time.monotonic() - began:.1f}s", file=out)
    if failed or args.keep_logs:
        print(f"logs: {log_dir} (dispatcher.log; <lang>/<instance>.stdout/.stderr)", file=out)
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
    print(f"overall: {passed} passed, {failed} failed", file=out, flush=True)
    return 0 if failed == 0 else 1
