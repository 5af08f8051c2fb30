"""How the CLI ends on an error: one clear line and a documented exit code, never a traceback.

Also the one piece of argument handling click lacks: global options (``--server``, ``--config``...) are accepted
after the command as well (``jetbridge run --server URL``), by moving them in front of it before parsing.
"""

from __future__ import annotations

import os
import traceback

import msgspec
from jetbridge.internal import JetbridgeError, JetStreamError

from .cli_common import EXIT_NO_SERVER, EXIT_USAGE, say_error
from .embedded import NoServerError

#: the global options; each takes a value
GLOBAL_OPTIONS = frozenset({
    "--config", "-c", "--server", "-s", "--context", "--creds", "--user", "--password", "--token", "--nkey",
    "--tls-ca", "--tls-cert", "--tls-key", "--data-dir", "--inbox-prefix", "--signing-seed",
})
#: set to 1 to see the traceback of an unexpected error (for bug reports)
DEBUG_ENV = "JB_DEBUG"
EXIT_INTERNAL = 70


def hoist_global_options(argv: list[str], options: frozenset[str]) -> list[str]:
    """``argv`` with every global option (and its value) moved to the front; nothing after ``--`` is touched."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        name = arg.split("=", 1)[0]
        if name in options:
            if "=" in arg or i + 1 >= len(argv):
                front.append(arg)
            else:
                front.extend(argv[i:i + 2])
                i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def report(exc: BaseException) -> int:
    """Print ``exc`` as one line and return the exit code for it."""
    exc = _unwrap(exc)
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, NoServerError):
        code, text = EXIT_NO_SERVER, str(exc)
    elif isinstance(exc, JetbridgeError):  # TransportError included: exit 2, as scripts already expect
        code, text = EXIT_USAGE, str(exc)
    elif isinstance(exc, JetStreamError):
        code, text = EXIT_USAGE, f"JetStream refused: {exc.description} (err_code {exc.err_code})"
    elif isinstance(exc, msgspec.DecodeError):
        code, text = EXIT_USAGE, f"not valid JSON: {exc}"
    elif isinstance(exc, (OSError, TimeoutError)):
        code, text = EXIT_USAGE, f"{type(exc).__name__}: {exc}"
    else:
        if os.environ.get(DEBUG_ENV):
            traceback.print_exception(exc)
        code = EXIT_INTERNAL
        text = (f"unexpected {type(exc).__name__}: {exc} (a bug: please report it; {DEBUG_ENV}=1 shows the "
                "traceback)")
    say_error(text)
    return code
