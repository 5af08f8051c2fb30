"""The checked-in OpenAPI document matches the code, and schemathesis fuzzes every operation from it against a
real app: no 500s, and every response matches its schema (status codes, bodies, content types)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from bridge.web import openapi

from .conftest import TOKENS, Served

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_checked_in_document_matches_the_code() -> None:
    assert DOC.read_text() == openapi.text(), (
        "docs/openapi.json is stale: run `.venv/bin/python -m bridge.web.openapi > docs/openapi.json`")


def test_document_is_openapi_3_1_with_every_asyncjobs_path() -> None:
    doc = json.loads(DOC.read_text())
    assert doc["openapi"].startswith("3.1")
    for path in ("/healthz", "/readyz", "/v1/info", "/v1/retry-policies", "/v1/tasks", "/v1/tasks/{id}",
                 "/v1/tasks/{id}/retry", "/v1/tasks/retry", "/v1/queues", "/v1/queues/{name}",
                 "/v1/queues/{name}/purge", "/v1/schedules", "/v1/schedules/{name}"):
        assert path in doc["paths"], path


# Checks: no 5xx, status codes, content types and bodies as documented, schema-violating input rejected, and
# authentication enforced. Left out: "every schema-valid request is accepted", since some rules cannot be said in
# a schema (a cron expression, a duration's text, a queue that must exist) and are answered with a 400 envelope.
# The event stream never ends by itself, so it is tested by its own test (test_events.py), not fuzzed.
schema = schemathesis.openapi.from_path(DOC).exclude(path="/v1/events")


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_fuzz(case: schemathesis.Case, web_auth: Served) -> None:
    # As the operator, so that every operation is reached (and schemathesis checks that no token gets 401).
    case.call_and_validate(base_url=web_auth.url, headers={"Authorization": f"Bearer {TOKENS['operator']}"},
                           timeout=30, excluded_checks=[positive_data_acceptance])


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
