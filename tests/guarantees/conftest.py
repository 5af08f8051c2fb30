"""The guarantees tests share the bad-input fixtures (captured logs)."""

from tests.bad_input.conftest import logs  # noqa: F401 - a fixture
