"""Run the command blocks of a Markdown document as written, in one shell, in order.

The few lines a test cannot run as a person would are changed in one documented way each:
- ``pip install ...`` is skipped: the test already runs in the installed virtualenv (a re-install would reach out
  to the network and take minutes);
- a line whose comment says ``Ctrl-C`` (a live view) runs for :data:`LIVE_SECONDS`, then gets SIGINT, as a person
  would press Ctrl-C, and must exit 0.
Every other line runs verbatim under ``set -e``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LIVE_SECONDS = 5
_FENCE = re.compile(r"^```(sh|bash|shell)\s*$")


def section(markdown: str, heading: str) -> str:
    """The text of the section ``heading`` (up to the next heading of the same level)."""
    level = heading.split(" ")[0]
    start = markdown.index(heading + "\n")
    nxt = re.search(rf"^{re.escape(level)} ", markdown[start + len(heading):], re.M)
    return markdown[start:start + len(heading) + (nxt.start() if nxt else len(markdown))]


def shell_blocks(markdown: str) -> list[str]:
    blocks, current = [], None
    for line in markdown.splitlines():
        if current is None and _FENCE.match(line):
            current = []
        elif current is not None and line.startswith("```"):
            blocks.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def script(blocks: list[str]) -> str:
    """One bash script running ``blocks`` in order, with the changes listed in this module's docstring."""
    out = ["set -e"]
    for block in blocks:
        for line in block.splitlines():
            if line.lstrip().startswith("pip install"):
                out.append(f": skipped, the venv is installed: {line.strip()!r}")
            elif "Ctrl-C" in line.partition("#")[2]:
                out.append(f"timeout --preserve-status -s INT {LIVE_SECONDS} {line.partition('#')[0].strip()}")
            else:
                out.append(line)
    return "\n".join(out) + "\n"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment a new user has: the venv's commands on PATH, no Jetbridge or NATS settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JETBRIDGE_", "NATS_"))}
    return {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "COLUMNS": "160", **extra}
