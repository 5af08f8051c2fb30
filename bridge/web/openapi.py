"""The OpenAPI document, generated from the code: ``python -m bridge.web.openapi > docs/openapi.json``.

The checked-in copy is compared with this output by tests/web/test_openapi.py, so it cannot drift from the code.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from .app import create_app
from .backend import Backend


async def _never() -> Backend:
    raise RuntimeError("the document is built without starting the app")


def document() -> dict[str, Any]:
    return create_app(_never).openapi()


def text() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(text())
