"""What a conformance case is, how cases are registered, and the small assertions they share.

A case is one async function that takes the language's :class:`~interop.conformance.env.LanguageEnv` and
returns when the handler behaved as the contract says, or raises :class:`CaseFailure` with a sentence that names
what was expected and what happened. The runner bounds every case with its own timeout, so a case only needs
timeouts on the waits whose expiry it wants to explain better than "timed out".
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jetbridge import TaskRecord

    from .env import LanguageEnv

CaseFn = Callable[["LanguageEnv"], Awaitable[None]]


class CaseFailure(Exception):
    """The handler (or the dispatcher with it) did not do what the case expects; the message says how."""


@dataclass(frozen=True)
class Case:
    """One named check.

    ``name`` is ``group`` or ``group:variant`` (``echo:binary``); a per-language case filter file may list
    either, so a language can opt into a whole group at once.
    """

    name: str
    fn: CaseFn
    timeout: float

    @property
    def group(self) -> str:
        return self.name.split(":", 1)[0]

    def selected_by(self, names: set[str]) -> bool:
        return self.name in names or self.group in names


class Registry:
    """An ordered list of cases; the order is the order they run and are reported in."""

    def __init__(self) -> None:
        self.cases: list[Case] = []

    def case(self, name: str, *, timeout: float = 20.0) -> Callable[[CaseFn], CaseFn]:
        """Register the decorated function as case ``name``, bounded by ``timeout`` seconds."""

        def register(fn: CaseFn) -> CaseFn:
            self.add(Case(name, fn, timeout))
            return fn

        return register

    def add(self, case: Case) -> None:
        if any(c.name == case.name for c in self.cases):
            raise ValueError(f"duplicate conformance case {case.name!r}")
        self.cases.append(case)


def check(condition: bool, message: str) -> None:
    """Fail the case with ``message`` unless ``condition`` holds."""
    if not condition:
        raise CaseFailure(message)


def describe(record: TaskRecord) -> str:
    """A task in one line, for failure messages: the fields that explain most outcomes."""
    parts = [f"state={record.state}", f"tries={record.tries}"]
    if record.last_err_code:
        parts.append(f"last_err_code={record.last_err_code}")
    if record.last_err:
        parts.append(f"last_err={record.last_err[:200]!r}")
    if record.result is not None:
        parts.append(f"result={short(record.result.value())}")
    return " ".join(parts)


def short(value: Any, limit: int = 120) -> str:
    """``repr`` cut to ``limit`` characters: a near-limit payload must not flood the report."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def expect_task(record: TaskRecord, *, state: str, tries: int | None = None, code: str | None = None) -> None:
    """Fail unless the task ended in ``state`` (and with ``tries`` attempts and error ``code``, when given)."""
    ok = record.state == state and (tries is None or record.tries == tries) and (
        code is None or record.last_err_code == code)
    if not ok:
        wanted = f"state={state}" + (f" tries={tries}" if tries is not None else "") + (
            f" last_err_code={code}" if code is not None else "")
        raise CaseFailure(f"expected {wanted}, got {describe(record)}")


def same_json(a: Any, b: Any) -> bool:
    """JSON equality that Python's ``==`` gets wrong: ``true`` is not ``1``; ``1`` and ``1.0`` are one number.

    JavaScript has one number type, so an echo of ``1.0`` may come back as ``1``; that is the same JSON value.
    A boolean that comes back as a number (or the other way round) is not.
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)
