"""The fault matrix's options, scale and report.

``pytest tests/faults --full-scale -s`` (``make faults``) runs every scenario at full scale, including the
100,000-task soak; without ``--full-scale`` (as part of ``make test``) the same scenarios run with a few hundred
tasks and the soak is skipped. Either way a table of every scenario's outcome is printed at the end; a full-scale
run then ends with one plain line ``N passed, N failed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.faults.rig import ROWS

_outcomes = {"passed": 0, "failed": 0}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--full-scale", action="store_true", default=False,
                     help="run the fault matrix at full scale, including the 100k-task soak (make faults)")
    parser.addoption("--seed", type=int, default=None,
                     help="the history checker's seed (test_history.py): replays that history")
    parser.addoption("--soak-tasks", type=int, default=None, help="tasks in the soak (default 100000)")
    parser.addoption("--fault-tasks", type=int, default=None, help="tasks per fault scenario (default 3000 at full "
                                                                   "scale, 300 reduced)")


def _full(config: pytest.Config) -> bool:
    return bool(config.getoption("full_scale", default=False))


@dataclass(frozen=True)
class Scale:
    full: bool
    #: tasks per fault scenario, and the steady rate they are enqueued at (tasks/s)
    tasks: int
    rate: float
    #: how many times each scenario injects its fault
    faults: int
    soak_tasks: int
    settle_timeout: float


@pytest.fixture(scope="session")
def scale(request: pytest.FixtureRequest) -> Scale:
    soak = request.config.getoption("soak_tasks", default=None)
    tasks = request.config.getoption("fault_tasks", default=None)
    if _full(request.config):
        return Scale(full=True, tasks=tasks or 3000, rate=100.0, faults=6, soak_tasks=soak or 100_000,
                     settle_timeout=600.0)
    return Scale(full=False, tasks=tasks or 300, rate=40.0, faults=2, soak_tasks=0, settle_timeout=90.0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    timeout = 3600 if _full(config) else 150
    for item in items:
        if "tests/faults/" in item.nodeid.replace("\\", "/"):
            # the short history may take its full 3 minutes on a loaded machine when it has something to report
            short_history = not _full(config) and "test_history.py" in item.nodeid
            item.add_marker(pytest.mark.timeout(180 if short_history else timeout))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tests/faults/" not in report.nodeid.replace("\\", "/"):
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        if report.outcome == "passed":
            _outcomes["passed"] += 1
        elif report.outcome == "failed":
            _outcomes["failed"] += 1


def table() -> list[str]:
    header = ("scenario", "tasks", "lost", "dup.completions", "stuck", "wrong end", "dup.exec", "executions",
              "overlapping", "unverified", "faults", "recovery s", "wall s", "result", "notes")
    rows = [header] + [
        (r.scenario, str(r.tasks), str(r.lost), str(r.duplicated), str(r.stuck), str(r.wrong), str(r.dup_exec),
         str(r.executions), "-" if r.overlapping is None else str(r.overlapping),
         "-" if r.unverified is None else str(r.unverified), str(r.faults),
         "-" if r.recovery is None else f"{r.recovery:.1f}", f"{r.seconds:.0f}",
         "ok" if r.passed else "FAIL", r.notes) for r in ROWS]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    out = []
    for n, row in enumerate(rows):
        out.append(" | ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + " | " + row[-1])
        if n == 0:
            out.append("-+-".join("-" * w for w in widths) + "-+-" + "-" * 5)
    return out


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    if not ROWS:
        return
    scale = "full scale" if _full(config) else "reduced scale (make faults runs the full scale)"
    terminalreporter.write_sep("=", f"fault matrix, {scale}")
    for line in table():
        terminalreporter.write_line(line)
    terminalreporter.write_line("dispatcher warnings and errors logged per scenario (expected under faults):")
    for r in ROWS:
        terminalreporter.write_line(f"  {r.scenario}: {r.log_summary or 'none'}")
    terminalreporter.write_line("recovery per fault:")
    for r in ROWS:
        for detail in r.fault_details:
            terminalreporter.write_line(f"  {r.scenario}: {detail}")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _full(config) and (_outcomes["passed"] or _outcomes["failed"]):
        print(f"{_outcomes['passed']} passed, {_outcomes['failed']} failed", flush=True)
