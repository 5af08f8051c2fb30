"""Routing: which handler subject serves a task type, and in which protocol mode.

A route matches a task type exactly (``email:new``), by prefix with a trailing ``*`` (``email:*``), or always
(``*``, the catch-all). The most specific route wins: exact, then the longest prefix, then the catch-all.
``{type}`` in a subject is replaced by the task type.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from jetbridge.internal import ConfigError, names

Mode = Literal["jetbridge", "asyncjobs"]


@dataclass(frozen=True, slots=True)
class Route:
    """Where tasks of matching types go.

    Attributes:
        match: a task type, a prefix ending in ``*``, or ``*``.
        subject: the request subject; ``{type}`` becomes the task type.
        mode: ``jetbridge`` (protocol v1) or ``asyncjobs`` (an unchanged asyncjobs request-reply handler).
        heartbeats: whether handlers on this route must heartbeat (v1 only); off, the attempt's whole budget
            is its lease.
    """

    match: str
    subject: str
    mode: Mode = "jetbridge"
    heartbeats: bool = True

    def validate(self) -> Route:
        body = self.match[:-1] if self.match.endswith("*") else self.match
        if self.match != "*" and not (body and names.is_valid_name(body)):
            raise ConfigError(f"route match {self.match!r} is invalid: use a task type, a prefix ending in '*', or '*'")
        if self.mode not in ("jetbridge", "asyncjobs"):
            raise ConfigError(f"route {self.match!r}: mode must be 'jetbridge' or 'asyncjobs', not {self.mode!r}")
        probe = self.subject.replace("{type}", "t")
        if not probe or any(c in probe for c in " *>\t") or ".." in probe or probe.startswith(".") or probe.endswith("."):
            raise ConfigError(f"route {self.match!r}: subject {self.subject!r} is not a valid subject template")
        if "{" in probe or "}" in probe:
            raise ConfigError(f"route {self.match!r}: subject {self.subject!r} has an unknown placeholder: "
                              "only {type} is replaced")
        return self

    def subject_for(self, task_type: str) -> str:
        if self.mode == "asyncjobs" and self.subject == f"{names.ASYNCJOBS_HANDLER_PREFIX}.{{type}}" and self.match == "*":
            return f"{names.ASYNCJOBS_HANDLER_PREFIX}.catchall"
        return self.subject.replace("{type}", task_type)


def default_route(prefix: str = names.DEFAULT_TASK_SUBJECT_PREFIX) -> Route:
    return Route("*", f"{prefix}.{{type}}")


class Router:
    """Resolves task types to routes; results are cached per type."""

    def __init__(self, routes: list[Route] | None = None, *, prefix: str = names.DEFAULT_TASK_SUBJECT_PREFIX) -> None:
        routes = [r.validate() for r in (routes or [])]
        seen = set()
        for r in routes:
            if r.match in seen:
                raise ConfigError(f"route {r.match!r} is defined twice")
            seen.add(r.match)
        if "*" not in seen:
            routes.append(default_route(prefix))
        self.routes = routes
        self._exact = {r.match: r for r in routes if not r.match.endswith("*")}
        self._prefixes = sorted((r for r in routes if r.match.endswith("*") and r.match != "*"),
                                key=lambda r: len(r.match), reverse=True)
        self._catchall = next(r for r in routes if r.match == "*")
        self.resolve = lru_cache(maxsize=4096)(self._resolve)

    def _resolve(self, task_type: str) -> tuple[Route, str]:
        route = self._exact.get(task_type)
        if route is None:
            route = next((r for r in self._prefixes if task_type.startswith(r.match[:-1])), self._catchall)
        return route, route.subject_for(task_type)
