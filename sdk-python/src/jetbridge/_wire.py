"""The wire formats' pure checks (SPEC §1.1, §3.2): integers, timestamps, base64, and the schema patterns.

Kept apart from the codec (``_protocol``) because these are the rules every field check uses and the vectors pin
exactly: the regular expressions are the ones of ``protocol/schemas/common.schema.json``, character for character.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Final

# The same patterns as protocol/schemas/common.schema.json. The timestamp pattern also checks that the date
# exists (month lengths, leap years), so schema and codec accept exactly the same strings (SPEC §3.2).
_DATE: Final = (
    r"(?:[0-9]{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
    r"|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29)"
)
_TIME: Final = (
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
TIMESTAMP_PATTERN: Final = f"^{_DATE}{_TIME}$"
BASE64_PATTERN: Final = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$"
_BASE64 = re.compile(BASE64_PATTERN)


def strict(pattern: str) -> str:
    """The schema pattern for Python's ``re``, whose ``$`` also matches before a final newline (ECMA's does not)."""
    return pattern.removesuffix("$") + r"\Z"


TOKEN_PATTERN: Final = r"^[A-Za-z0-9_-]{8,64}$"
SUBJECT_PATTERN: Final = r"^[^\s*>.]+(\.[^\s*>.]+)*$"
TRACEPARENT_PATTERN: Final = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)


def integral(doc: dict[str, Any], members: tuple[str, ...]) -> bool:
    """Rewrite integer members written with a zero fraction (1.0, 6e4) as integers, as JSON Schema reads them.

    SPEC §1.1: a number is an integer when its value is integral, whatever its notation. msgspec (like Go's and
    Rust's JSON libraries) refuses 1.0 for an int, so the rare body that uses it is normalised and decoded again.
    Returns whether anything changed.
    """
    changed = False
    for member in members:
        value = doc.get(member)
        if type(value) is float and value.is_integer():
            doc[member] = int(value)
            changed = True
    return changed


def is_integer(value: Any, wanted: int) -> bool:
    """``value`` is the JSON number ``wanted`` (1 and 1.0 yes; true, "1" and 1.5 no)."""
    return type(value) in (int, float) and value == wanted


def is_timestamp(text: str) -> bool:
    """The protocol's timestamp grammar (SPEC §3.2): the schema pattern, which also rejects dates that do not exist."""
    return _TIMESTAMP.fullmatch(text) is not None


def b64decode(text: str) -> bytes:
    """Canonical standard base64 with padding only (SPEC §3.2): the schema pattern, then the decoder."""
    if not _BASE64.fullmatch(text):
        raise ValueError("invalid base64: not canonical standard base64 with padding")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"invalid base64: {exc}") from None
