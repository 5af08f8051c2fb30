"""The guides' code blocks, taken from the files themselves, so the tests run what a user reads."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GUIDES = {
    "dispatcher": REPO / "README.md",
    "python": REPO / "sdk-python" / "README.md",
    "node": REPO / "interop" / "node" / "README.md",
    "go": REPO / "interop" / "go" / "README.md",
    "rust": REPO / "interop" / "rust" / "README.md",
}


def block(guide: str, lang: str, start: str) -> str:
    """The one ```lang block of ``guide`` whose code starts with ``start``."""
    text = GUIDES[guide].read_text()
    found = [m.group(1) for m in re.finditer(rf"```{lang}\n(.*?)```", text, re.S) if m.group(1).startswith(start)]
    assert len(found) == 1, f"{GUIDES[guide]}: expected one ```{lang} block starting {start!r}, found {len(found)}"
    return found[0]


def with_paths(code: str, paths: dict[str, Path]) -> str:
    """The guide's code with its placeholder paths (``/path/to/<file>``) made real; each must occur."""
    for placeholder, real in paths.items():
        assert placeholder in code, f"the guide's block no longer mentions {placeholder}:\n{code}"
        code = code.replace(placeholder, str(real))
    return code
