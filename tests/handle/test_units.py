"""The parts of ``jetbridge handle`` that need no server."""

from __future__ import annotations

import jetbridge
import pytest
from jetbridge._errors import ConfigError

from bridge.handle import HandleConfig, parse_progress, stdin_bytes


@pytest.mark.parametrize(("text", "value"), [("0.4", 0.4), ("40%", 0.4), ("2/5", 0.4), ("0", 0.0), ("1", 1.0)])
def test_progress_forms(text: str, value: float) -> None:
    assert parse_progress(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["1.5", "-0.1", "150%", "6/5", "half", "1/0", ""])
def test_bad_progress_is_refused(text: str) -> None:
    with pytest.raises((ValueError, ZeroDivisionError)):
        parse_progress(text)


def test_stdin_is_json_text_or_raw_bytes() -> None:
    assert stdin_bytes({"a": [1, "ü"]}) == '{"a":[1,"ü"]}'.encode()
    assert stdin_bytes(None) == b"null"
    assert stdin_bytes(jetbridge.Bytes(b"\x00\xff", "image/png")) == b"\x00\xff"


@pytest.mark.parametrize(("options", "error"), [
    ({"command": ()}, "no command"),
    ({"task_types": ()}, "at least one task type"),
    ({"command": ("/nonexistent/prog",)}, "not found or not executable"),
    ({"command": ("no-such-program-on-path",)}, "looked up on PATH"),
    ({"concurrency": 0}, "concurrency"),
    ({"kill_grace": -1}, "negative"),
    ({"terminate_exit": 0}, "between 1 and 255"),
    ({"name": "bad name"}, "service name"),
])
def test_config_errors_say_what_is_wrong(options: dict[str, object], error: str) -> None:
    base: dict[str, object] = {"command": ("sh",), "task_types": ("t",)}
    with pytest.raises(ConfigError, match=error):
        HandleConfig(**{**base, **options}).validate()  # type: ignore[arg-type]
