"""Settings: file, then environment, then flags; every bad key or value is named with what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
from jetbridge._errors import ConfigError

from bridge.settings import load_settings


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "jb.toml"
    config.write_text('server = "nats://file:4222"\nconcurrency = 10\nqueues = ["A", "B"]\nshutdown_grace = "5s"\n')
    s = load_settings(config, env={"JETBRIDGE_CONCURRENCY": "20"}, flags={})
    assert (s.server, s.concurrency, s.queues, s.shutdown_grace) == ("nats://file:4222", 20, ("A", "B"), 5.0)
    s = load_settings(config, env={"JETBRIDGE_CONCURRENCY": "20"}, flags={"concurrency": 30, "server": None})
    assert (s.concurrency, s.server) == (30, "nats://file:4222")


def test_routes_from_toml(tmp_path: Path) -> None:
    config = tmp_path / "jb.toml"
    config.write_text('[[routes]]\nmatch = "img:*"\nsubject = "images.{type}"\n\n'
                      '[[routes]]\nmatch = "legacy:*"\nsubject = "CHORIA_AJ.H.T.{type}"\nmode = "asyncjobs"\n')
    s = load_settings(config, env={})
    assert [(r.match, r.mode) for r in s.routes] == [("img:*", "jetbridge"), ("legacy:*", "asyncjobs")]


@pytest.mark.parametrize(("text", "match"), [
    ("concurency = 3", "unknown setting 'concurency'"),
    ("concurrency = 0", "concurrency must be between"),
    ('concurrency = "many"', "concurrency has an invalid value"),
    ('shutdown_grace = "soon"', "not a duration"),
    ('queues = ["a.b"]', "not a valid queue name"),
    ('log_format = "xml"', "log_format must be"),
    ("create_queues = 3", "must be true or false"),
    ('verify_key = "abc"', "verify_key must be"),
    ('metrics_listen = "9000"', "metrics_listen must be host:port"),
    ('[[routes]]\nmatch = "a b"\nsubject = "x"', "route match 'a b' is invalid"),
    ('[[routes]]\nmatch = "a"\nsubject = "x.>"', "not a valid subject template"),
    ('[[routes]]\nmatch = "a"\nsubject = "x"\nmode = "grpc"', "mode must be"),
    ('[[routes]]\nsubject = "x"', "a route needs match and subject"),
    ("this is = not toml", "not valid TOML"),
])
def test_bad_config_files_name_the_key(tmp_path: Path, text: str, match: str) -> None:
    config = tmp_path / "jb.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_settings(config, env={})


def test_bad_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="environment variable JETBRIDGE_CONCURRENCY"):
        load_settings(env={"JETBRIDGE_CONCURRENCY": "x"})
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        load_settings(env={"JETBRIDGE_COLOUR": "red"})


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings("/nonexistent/jb.toml", env={})


def test_secrets_are_redacted() -> None:
    s = load_settings(env={"JETBRIDGE_PASSWORD": "hunter2", "JETBRIDGE_SERVER": "nats://bob:pw@host:4222",
                           "JETBRIDGE_TOKEN": "t0k"})
    shown = str(s.redacted())
    assert "hunter2" not in shown and "pw@" not in shown and "t0k" not in shown and "<redacted>" in shown


def test_the_sdk_fast_read_switch_is_not_an_unknown_setting() -> None:
    """``JETBRIDGE_FAST_READ`` belongs to the SDK (jetbridge._fastread): the dispatcher must start with it set."""
    assert load_settings(None, env={"JETBRIDGE_FAST_READ": "0"}, flags={}).concurrency > 0
