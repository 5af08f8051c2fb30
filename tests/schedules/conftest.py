"""asyncjobs' ``ajc`` fixtures (tests/asyncjobs/conftest.py) for the schedule interop tests."""

from tests.asyncjobs.conftest import ajc, ajc_bin  # noqa: F401 - pytest finds fixtures by name here
