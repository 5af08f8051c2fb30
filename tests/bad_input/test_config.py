"""Invalid dispatcher configuration (TOML file, environment, routes): refused at load time with a ConfigError that
names the key or variable and what is allowed. (The cases in tests/bridge/test_settings.py are not repeated.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from jetbridge._errors import ConfigError

from bridge.dispatcher import Dispatcher
from bridge.routes import Route, Router
from bridge.settings import Settings, load_settings


@pytest.mark.parametrize(("text", "match"), [
    pytest.param("concurrency = inf", "concurrency", id="integer-infinite"),
    pytest.param("concurrency = 1.5", "concurrency must be a whole number", id="integer-fractional"),
    pytest.param("shutdown_grace = nan", "shutdown_grace", id="duration-nan"),
    pytest.param("no_handler_delay = inf", "no_handler_delay", id="duration-infinite"),
    pytest.param('subject_prefix = "jobs.*"', "subject_prefix", id="subject-prefix-wildcard"),
    pytest.param('subject_prefix = "my jobs"', "subject_prefix", id="subject-prefix-space"),
    pytest.param('subject_prefix = ""', "subject_prefix", id="subject-prefix-empty"),
    pytest.param("queues = 5", "queues has an invalid value 5", id="queues-not-a-list"),
    pytest.param('queues = ["a", "b c"]', "'b c' is not a valid queue name", id="queue-name-with-space"),
    pytest.param("routes = {}", "routes must be a list of tables", id="routes-not-a-list"),
    pytest.param("routes = [1]", "each route must be a table with match and subject", id="route-not-a-table"),
    pytest.param('[[routes]]\nmatch = "a"\nsubject = "x"\nheartbeat = false', "a route needs match and subject",
                 id="route-unknown-key"),
    pytest.param('[[routes]]\nmatch = "a*b"\nsubject = "x"', "route match 'a*b' is invalid", id="route-star-inside"),
    pytest.param('[[routes]]\nmatch = "a"\nsubject = "x..y"', "not a valid subject template", id="route-empty-token"),
    pytest.param('dispatcher_id = "node.1"', "dispatcher_id 'node.1' must be", id="dispatcher-id-with-dot"),
    pytest.param('retain_finished = "500ms"', "retain_finished must be 0 (forever) or at least 1s",
                 id="retain-below-a-second"),
    pytest.param("[server]\nurl = 'nats://x'", "server must be a string, got dict", id="table-for-a-string"),
    pytest.param('log_level = "verbose"', "log_level must be debug, info, warning or error", id="log-level-unknown"),
])
def test_bad_config_file_is_refused_naming_the_key(tmp_path: Path, text: str, match: str) -> None:
    config = tmp_path / "jetbridge.toml"
    config.write_text(text + "\n")
    with pytest.raises(ConfigError, match=re.escape(match)):
        load_settings(config, env={})


@pytest.mark.parametrize(("env", "match"), [
    pytest.param({"JETBRIDGE_SHUTDOWN_GRACE": "-5s"}, "environment variable JETBRIDGE_SHUTDOWN_GRACE: shutdown_grace "
                                                      "'-5s' is not a duration", id="env-negative-duration"),
    pytest.param({"JETBRIDGE_CREATE_QUEUES": "maybe"}, "environment variable JETBRIDGE_CREATE_QUEUES: create_queues "
                                                       "must be true or false", id="env-bool-unknown"),
    pytest.param({"JETBRIDGE_QUEUES": "a,b.c"}, "'b.c' is not a valid queue name", id="env-queue-with-dot"),
    pytest.param({"JETBRIDGE_CONCURRENCY": "1e3"}, "environment variable JETBRIDGE_CONCURRENCY: concurrency has an "
                                                   "invalid value '1e3'", id="env-integer-float-syntax"),
])
def test_bad_environment_is_refused_naming_the_variable(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(match)):
        load_settings(env=env)


def test_route_defined_twice_is_refused_when_the_dispatcher_is_built() -> None:
    routes = (Route("img:*", "a.{type}"), Route("img:*", "b.{type}"))
    with pytest.raises(ConfigError, match=re.escape("route 'img:*' is defined twice")):
        Router(list(routes))
    with pytest.raises(ConfigError, match=re.escape("route 'img:*' is defined twice")):
        Dispatcher(None, Settings(routes=routes))  # type: ignore[arg-type]


def test_route_subject_template_with_an_unknown_placeholder_is_refused() -> None:
    """``{tpye}`` is a typo for ``{type}``: every task would go to one literal subject nobody serves."""
    with pytest.raises(ConfigError, match=re.escape("route 'img:*': subject 'img.{tpye}'")):
        Route("img:*", "img.{tpye}").validate()
