"""``jetbridge handle``: any program as a handler.

``jetbridge handle TYPE [TYPE...] -- COMMAND [ARGS...]`` registers a handler service (a NATS micro service in the
queue group ``jetbridge``, through :class:`jetbridge.Service`) and runs COMMAND once per attempt:

- **stdin**: the payload. A JSON payload as its JSON text, a binary payload as its raw bytes.
- **environment**: the parent's environment plus ``JETBRIDGE_TASK_ID``, ``_TYPE``, ``_QUEUE``, ``_ATTEMPT``,
  ``_MAX_ATTEMPTS``, ``_DEADLINE`` (empty when none), ``_ATTEMPT_DEADLINE``, ``_CONTENT_TYPE``, ``_CREATED``,
  ``_BUDGET_MS`` (all ``JETBRIDGE_TASK_*``), ``JETBRIDGE_CONTROL_FD=3`` and ``TRACEPARENT`` when the task has one.
- **stdout**: the result. If it parses as JSON, the JSON value; empty, ``null``; otherwise the bytes, with content
  type ``application/octet-stream`` (or what a ``content-type`` control line said).
- **exit status**: 0 completes the task; :data:`TERMINATE_EXIT` (100, ``--terminate-exit``) terminates it (never
  retried); anything else, or death by a signal, is a retryable error whose message is the tail of stderr (the last
  :data:`STDERR_TAIL` bytes) and whose code is ``exit_<status>`` or ``signal_<NAME>``.
- **fd 3**, the control channel (a Unix socket; ``JETBRIDGE_CONTROL_FD`` names it), one line per instruction:

  ====================================  ==========================================================================
  ``heartbeat [MESSAGE]``               publish a heartbeat now (the attempt is alive)
  ``progress P [MESSAGE]``              a heartbeat with progress: ``0.4``, ``40%`` or ``2/5``
  ``retry-after DURATION``              when the command then exits non-zero, retry after ``5s``, ``250ms``, ``2m``
  ``error-code CODE``                   the error code of a failure (instead of ``exit_<n>`` / ``terminate``)
  ``content-type TYPE``                 stdout is a binary result of this type (``application/json``: JSON)
  ``publish SUBJECT TEXT``              publish TEXT on a NATS subject (not ``$...``) with the handler's connection
  ====================================  ==========================================================================

  Before jetbridge stops a command it writes ``cancel REASON`` (``operator``, ``timeout``, ``deadline``, ``lost``,
  ``shutdown``, ``result_too_large``) to fd 3, so a ``TERM`` trap may read why.

  Why not ``jetbridge:`` lines on stderr: stderr belongs to the command and to whatever tools it runs. Scanning it
  means any tool that happens to print such a line steers the task, and the error message would have to be cleaned
  of control lines. A separate descriptor is unambiguous, costs one ``>&3`` per line, and leaves stdout and stderr
  exactly as the program writes them. It is a socket rather than a pipe so that jetbridge can answer on it (the
  ``cancel`` line above).

Protocol 1.1 (SPEC §5): through :class:`jetbridge.Service`, a request is heartbeated from its receipt, also while
it waits for a free command slot, and with ``heartbeat_ack`` an attempt whose heartbeats stop being acknowledged is
fenced: its command is stopped exactly as for a cancel with reason ``lost``. ``nats micro stats`` counts failed
commands as errors, with their real run time.

The command runs in its own session and process group. When its attempt's budget runs out, the task is cancelled,
the attempt is fenced,
its stdout passes the size limit (the server's ``max_payload``: more can never fit a reply; ended with
``result_too_large``), or ``jetbridge handle`` shuts down past its grace period, the whole group gets SIGTERM, then
SIGKILL after ``kill_grace``. When the command exits, whatever it left running in its group is killed (SIGKILL).
Every child is reaped. Commands are started with ``posix_spawn`` (this process is never forked), with fds 0 to 3
only and default signal handling. If ``jetbridge handle`` itself is killed with SIGKILL its commands live on until
they next write to fd 3 (SIGPIPE) or finish; run replicas in a container or a systemd unit to contain them.

Middleware (issue 20, :mod:`jetbridge.middleware`): every attempt ends with one structured log line
``attempt_done`` (task id, type, queue, attempt, outcome, error code, duration; ``log_attempts``), and ``timeout``
(``--timeout``) stops a command that runs longer than that, bounded by the attempt's budget: it is stopped as for a
budget timeout (``cancel timeout`` on fd 3, SIGTERM, SIGKILL), and the attempt replies ``retry`` with code
``cancelled``. Tracing: a request's W3C ``traceparent`` is the command's ``TRACEPARENT``, so an OpenTelemetry SDK in
the command continues the trace (the variable is removed when the request has none, never inherited).

Draining (:meth:`CommandHandler.stop`, SIGTERM on the CLI): no new commands start; running ones may finish within
``grace``; then they are stopped as above and their attempts end ``retry`` with code ``shutdown``.
"""

from __future__ import annotations

import fcntl
import math
import os
import shutil
import signal
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio
import jetbridge
import msgspec
import structlog
import typer
from anyio.abc import TaskStatus
from jetbridge.internal import ConfigError, format_ms, names
from jetbridge.middleware import log_attempts, timeout
from nats.aio.client import Client
from typer.core import TyperCommand

from .policy import parse_duration
from .settings import SECRET_KEYS, _redact_url

log = structlog.get_logger("jetbridge.handle")

#: The descriptor of the control channel in the command.
CONTROL_FD = 3
#: The exit status that terminates a task (the default of ``--terminate-exit``).
TERMINATE_EXIT = 100
#: How much of the end of stderr becomes the error message.
STDERR_TAIL = 2048
#: Control lines longer than this are dropped.
MAX_CONTROL_LINE = 65536
#: After the command exits, how long its output may take to close (something outside its group may hold it).
IO_GRACE = 1.0
#: Service metadata ``jetbridge.sdk``.
SDK_NAME = f"shell/{jetbridge.__version__}"
CANCEL_REASONS = frozenset({"operator", "deadline", "timeout", "lost", "shutdown", "result_too_large"})

#: Signals the command starts with at their default action, whatever ``jetbridge handle`` inherited or set.
DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE, signal.SIGXFSZ)
#: Waiting for exits without pidfds (not Linux) takes a thread per running command.
_WAIT_THREADS = anyio.CapacityLimiter(math.inf)


def default_concurrency() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True, kw_only=True)
class HandleConfig:
    """What ``jetbridge handle`` runs, and how.

    Attributes:
        command: the program and its arguments (run directly, not through a shell).
        task_types: endpoints to serve, subject ``<prefix>.<type>``; ``*`` serves ``<prefix>.*``.
        concurrency: commands run at once by this replica.
        prefix: task subject prefix; must match the dispatcher's routes.
        grace: on stop, how long running commands may finish before they are stopped.
        kill_grace: between SIGTERM and SIGKILL whenever a command is stopped.
        terminate_exit: the exit status that terminates the task instead of retrying it.
        name: the micro service name.
        env: variables added to the commands' environment (over the parent's).
        timeout: seconds a command may run per attempt, within the attempt's budget (None: the budget).
        log_attempts: one ``attempt_done`` log line per attempt.
    """

    command: tuple[str, ...]
    task_types: tuple[str, ...]
    concurrency: int = field(default_factory=default_concurrency)
    prefix: str = names.DEFAULT_TASK_SUBJECT_PREFIX
    grace: float = 30.0
    kill_grace: float = 5.0
    terminate_exit: int = TERMINATE_EXIT
    name: str = "jetbridge-handle"
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None
    log_attempts: bool = True

    def validate(self) -> HandleConfig:
        if not self.command:
            raise ConfigError("no command: put the program to run after --, e.g. "
                              "`jetbridge handle resize -- ./resize.sh`")
        if not self.task_types:
            raise ConfigError("name at least one task type to serve, e.g. `jetbridge handle resize -- ./resize.sh`")
        if resolve_command(self.command[0]) is None:
            raise ConfigError(f"command {self.command[0]!r} not found or not executable"
                              + ("" if "/" in self.command[0] else " (it is looked up on PATH)"))
        if not 1 <= self.concurrency <= 10_000:
            raise ConfigError(f"concurrency must be between 1 and 10000, got {self.concurrency}")
        if self.grace < 0 or self.kill_grace < 0:
            raise ConfigError("grace and kill grace must not be negative")
        if self.timeout is not None and not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ConfigError(f"the timeout must be a positive duration, got {self.timeout!r}")
        if not 1 <= self.terminate_exit <= 255:
            raise ConfigError(f"the terminate exit code must be between 1 and 255, got {self.terminate_exit}")
        if not self.name or any(not (c.isascii() and (c.isalnum() or c in "-_")) for c in self.name):
            raise ConfigError(f"service name {self.name!r} is invalid: use letters, digits, '-' and '_'")
        return self


def resolve_command(program: str) -> str | None:
    """The executable ``program`` names (a path, or a name on PATH), or None."""
    if "/" in program:
        return program if os.path.isfile(program) and os.access(program, os.X_OK) else None
    return shutil.which(program)


class CommandHandler:
    """Serve task types by running a command per attempt (see the module's documentation)."""

    def __init__(self, nc: Client, config: HandleConfig) -> None:
        self.config = config.validate()
        self.nc = nc
        self.service = jetbridge.Service(
            nc, config.name, prefix=config.prefix, concurrency=config.concurrency,
            description=f"jetbridge handle: runs {os.path.basename(config.command[0])} per task",
            metadata={"jetbridge.sdk": SDK_NAME, "jetbridge.command": os.path.basename(config.command[0])},
            # A backstop only: run() stops commands itself once the grace is over.
            drain_timeout=config.grace + config.kill_grace + IO_GRACE + 5.0)
        for task_type in config.task_types:
            self.service.add_handler(task_type, self._handle)
        if config.log_attempts:  # outermost: it logs what the timeout made of the attempt
            self.service.use(log_attempts(log))
        if config.timeout is not None:
            self.service.use(timeout(config.timeout))
        self.draining = False
        self.stopped = anyio.Event()
        self._runs: set[_Run] = set()
        self._stopping = anyio.Event()
        self._hurry = anyio.Event()

    @property
    def stdout_limit(self) -> int:
        """The most stdout a command may write: more can never fit a reply under the server's max_payload."""
        return int(self.nc.max_payload)

    @property
    def running(self) -> int:
        """Commands running now."""
        return len(self._runs)

    async def run(self, *, task_status: TaskStatus[CommandHandler] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until :meth:`stop`, then drain (running commands get ``grace`` to finish)."""
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self.service.run)
                log.info("handler_ready", name=self.config.name, prefix=self.config.prefix,
                         task_types=list(self.config.task_types), command=self.config.command[0],
                         concurrency=self.config.concurrency)
                task_status.started(self)
                await self._stopping.wait()
                with anyio.move_on_after(self.config.grace):
                    async with anyio.create_task_group() as race:
                        async def idle() -> None:
                            await self.service.in_flight.wait_idle()
                            race.cancel_scope.cancel()

                        async def hurry() -> None:
                            await self._hurry.wait()
                            race.cancel_scope.cancel()

                        race.start_soon(idle)
                        race.start_soon(hurry)
                for run in list(self._runs):
                    log.warning("stopping_command", task_id=run.task.id, reason="shutdown",
                                hint="it did not finish within the grace period")
                    run.stop("shutdown")
        finally:
            self.stopped.set()

    def stop(self, *, now: bool = False) -> None:
        """Drain: start no new commands and let running ones finish within ``grace`` (``now``: stop them now)."""
        self.draining = True
        self.service.stop()
        self._stopping.set()
        if now:
            self._hurry.set()

    async def _handle(self, task: jetbridge.Task) -> Any:
        if self.draining:
            raise jetbridge.Retry("jetbridge handle is shutting down", code="shutdown")
        run = _Run(self, task)
        self._runs.add(run)  # before it starts, so that a drain that ends now stops it too
        try:
            with anyio.CancelScope(shield=True):  # a command that started is always supervised
                await run.start()
            async with anyio.create_task_group() as tg:
                tg.start_soon(run.supervise)
                try:
                    await run.finished.wait()
                except anyio.get_cancelled_exc_class():
                    run.stop(task.cancel_reason or "timeout")
                    raise  # after the task group has waited for the command to end
        finally:
            self._runs.discard(run)
        return run.outcome()


def _timestamp(value: datetime | None) -> str:
    return format_ms(round(value.timestamp() * 1000) * 1_000_000) if value is not None else ""


#: Variables a task's command never sees: the credentials this process connects with are not the command's.
SECRET_ENV = frozenset({f"JETBRIDGE_{k.upper()}" for k in SECRET_KEYS} | {
    "NATS_PASSWORD", "NATS_TOKEN", "NATS_CREDS", "NATS_NKEY", "NATS_NKEY_SEED", "NATS_USER_JWT"})


def _without_secrets(base: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in SECRET_ENV}
    for key in ("NATS_URL", "JETBRIDGE_SERVER"):
        if key in env and "@" in env[key]:
            env[key] = _redact_url(env[key]).replace("<redacted>@", "")
    return env


def task_environment(task: jetbridge.Task, base: Mapping[str, str]) -> dict[str, str]:
    """The command's environment: ``base`` without NATS credentials, plus the task's metadata."""
    env = _without_secrets(base)
    env.update({
        "JETBRIDGE_TASK_ID": task.id,
        "JETBRIDGE_TASK_TYPE": task.type,
        "JETBRIDGE_TASK_QUEUE": task.queue,
        "JETBRIDGE_TASK_ATTEMPT": str(task.attempt),
        "JETBRIDGE_TASK_MAX_ATTEMPTS": str(task.max_attempts),
        "JETBRIDGE_TASK_DEADLINE": _timestamp(task.deadline),
        "JETBRIDGE_TASK_ATTEMPT_DEADLINE": _timestamp(task.attempt_deadline),
        "JETBRIDGE_TASK_CONTENT_TYPE": task.content_type,
        "JETBRIDGE_TASK_CREATED": _timestamp(task.created),
        "JETBRIDGE_TASK_BUDGET_MS": str(int(task.budget * 1000)),
        "JETBRIDGE_CONTROL_FD": str(CONTROL_FD),
    })
    if task.traceparent:
        env["TRACEPARENT"] = task.traceparent
    else:
        env.pop("TRACEPARENT", None)
    return env


def stdin_bytes(payload: Any) -> bytes:
    """The payload as the command reads it: raw bytes, or JSON text."""
    if isinstance(payload, jetbridge.Bytes):
        return payload.data
    return msgspec.json.encode(payload)


def parse_progress(text: str) -> float:
    """``0.4``, ``40%`` or ``2/5``, between 0 and 1; raises ValueError."""
    if text.endswith("%"):
        value = float(text[:-1]) / 100
    elif "/" in text:
        done, _, total = text.partition("/")
        value = float(done) / float(total)
    else:
        value = float(text)
    if not 0 <= value <= 1:
        raise ValueError(f"progress {text!r} is not between 0 and 1")
    return value


def _high_fd(fd: int) -> int:
    """``fd``, moved to 4 or above if it is lower, so that setting up 0 to 3 in the child cannot overwrite it."""
    if fd > CONTROL_FD:
        return fd
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, CONTROL_FD + 1)
    os.close(fd)
    return high


class _Run:
    """One command for one attempt: its process, its output and how it ended.

    The command is started with ``posix_spawn`` (no fork of this process: cheap, and safe with threads), in a new
    session, with the control socket at fd 3 and the signals it may get at their defaults.
    """

    def __init__(self, handler: CommandHandler, task: jetbridge.Task) -> None:
        self.handler = handler
        self.config = handler.config
        self.task = task
        self.limit = handler.stdout_limit
        self.pid: int | None = None
        self.returncode: int | None = None
        self.stdout = bytearray()
        self.overflow = False
        self.stderr_tail = bytearray()
        self.stderr_size = 0
        self.retry_after: float | None = None
        self.error_code: str | None = None
        self.content_type: str | None = None
        self.stop_reason: str | None = None
        self.finished = anyio.Event()
        self._stop_requested = anyio.Event()
        self._fds: dict[str, int] = {}  # our ends: stdin, stdout, stderr, control
        self._pidfd: int | None = None
        self._partial = b""  # a control line not yet ended by a newline
        self._log = log.bind(task_id=task.id, type=task.type, attempt=task.attempt)

    async def start(self) -> None:
        """Start the command (raises :class:`jetbridge.Retry` if it cannot be started)."""
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        self._fds["control"] = ours.detach()
        child = {"control": theirs.detach()}
        for name, (read, write) in (("stdin", os.pipe()), ("stdout", os.pipe()), ("stderr", os.pipe())):
            self._fds[name], child[name] = (write, read) if name == "stdin" else (read, write)
            os.set_blocking(self._fds[name], False)
        try:
            for name in child:
                child[name] = _high_fd(child[name])
            self.pid = os.posix_spawnp(  # noqa: ASYNC221 - returns once the child has exec'd, in about 1 ms
                self.config.command[0], list(self.config.command),
                task_environment(self.task, {**os.environ, **self.config.env}),
                file_actions=[(os.POSIX_SPAWN_DUP2, child["stdin"], 0), (os.POSIX_SPAWN_DUP2, child["stdout"], 1),
                              (os.POSIX_SPAWN_DUP2, child["stderr"], 2),
                              (os.POSIX_SPAWN_DUP2, child["control"], CONTROL_FD)],
                setsid=True, setsigmask=(), setsigdef=DEFAULT_SIGNALS)
        except OSError as exc:
            self._close()
            raise jetbridge.Retry(f"cannot run {self.config.command[0]}: {exc.strerror or exc}",
                                  code="spawn_failed") from None
        finally:
            for fd in child.values():
                os.close(fd)
        if hasattr(os, "pidfd_open"):
            try:
                self._pidfd = os.pidfd_open(self.pid)
            except OSError:  # a kernel before 5.3: wait in a thread
                self._pidfd = None
        self._log.debug("command_started", pid=self.pid)

    def stop(self, reason: str) -> None:
        """Stop the command: ``cancel REASON`` on fd 3, SIGTERM to its group, SIGKILL after the kill grace."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop_requested.set()

    async def supervise(self) -> None:
        """Feed, read and wait for the command; sets :attr:`finished` once it and its group are gone."""
        with anyio.CancelScope(shield=True):
            try:
                async with anyio.create_task_group() as tg:
                    output_closed = anyio.Event()
                    tg.start_soon(self._killer)
                    tg.start_soon(self._write_stdin)
                    tg.start_soon(self._read_output, output_closed)
                    self.returncode = await self._wait_exit()
                    self._signal(signal.SIGKILL)  # whatever it left running in its group
                    with anyio.move_on_after(IO_GRACE):  # something outside its group may hold its output
                        await output_closed.wait()
                    tg.cancel_scope.cancel()
            finally:
                if self.returncode is None and self.pid is not None:  # only if supervising itself failed
                    self._signal(signal.SIGKILL)
                    self.returncode = await anyio.to_thread.run_sync(self._reap, limiter=_WAIT_THREADS)
                self._close()
                self._log.debug("command_ended", returncode=self.returncode, stop_reason=self.stop_reason)
                self.finished.set()

    async def _wait_exit(self) -> int:
        if self._pidfd is not None:
            await anyio.wait_readable(self._pidfd)  # readable once the process has exited
            return self._reap()
        return await anyio.to_thread.run_sync(self._reap, limiter=_WAIT_THREADS)

    def _reap(self) -> int:
        assert self.pid is not None
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:  # reaped by someone else (a waitpid(-1) child watcher): status unknown
            return 255
        return os.waitstatus_to_exitcode(status)

    def _close(self) -> None:
        for fd in [*self._fds.values(), *([self._pidfd] if self._pidfd is not None else [])]:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()
        self._pidfd = None

    def _signal(self, signum: int) -> None:
        if self.pid is None:
            return
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    async def _killer(self) -> None:
        await self._stop_requested.wait()
        try:
            os.write(self._fds["control"], f"cancel {self.stop_reason}\n".encode())
        except (OSError, KeyError):
            pass
        self._log.info("command_stopping", reason=self.stop_reason, signal="SIGTERM")
        self._signal(signal.SIGTERM)
        await anyio.sleep(self.config.kill_grace)
        self._log.warning("command_killed", reason=self.stop_reason, signal="SIGKILL",
                          hint=f"it did not exit within {self.config.kill_grace:g}s of SIGTERM")
        self._signal(signal.SIGKILL)

    async def _write_stdin(self) -> None:
        fd = self._fds.pop("stdin")
        data = memoryview(stdin_bytes(self.task.payload))
        try:
            while data:
                try:
                    data = data[os.write(fd, data[:65536]):]
                except BlockingIOError:
                    await anyio.wait_writable(fd)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the command does not read its stdin: fine
        finally:
            os.close(fd)  # end of input

    async def _chunks(self, name: str, sink: Callable[[bytes], Awaitable[None]]) -> None:
        """Read one of our ends until the command's side is closed; ``sink`` gets each chunk, then ``b""``."""
        fd = self._fds[name]
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                await anyio.wait_readable(fd)
                continue
            except ConnectionResetError:
                chunk = b""
            await sink(chunk)
            if not chunk:
                return

    async def _read_output(self, closed: anyio.Event) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._chunks, "stdout", self._on_stdout)
            tg.start_soon(self._chunks, "stderr", self._on_stderr)
            tg.start_soon(self._chunks, "control", self._on_control)
        closed.set()

    async def _on_stdout(self, chunk: bytes) -> None:
        if self.overflow:
            return  # drained and dropped while the command is being stopped
        if len(self.stdout) + len(chunk) > self.limit:
            self.overflow = True
            self._log.warning("result_too_large", limit=self.limit)
            self.stop("result_too_large")
            return
        self.stdout += chunk

    async def _on_stderr(self, chunk: bytes) -> None:
        self.stderr_size += len(chunk)
        self.stderr_tail += chunk
        if len(self.stderr_tail) > STDERR_TAIL:
            del self.stderr_tail[:-STDERR_TAIL]

    async def _on_control(self, chunk: bytes) -> None:
        *lines, self._partial = (self._partial + chunk).split(b"\n") if chunk else (self._partial, b"")
        if len(self._partial) > MAX_CONTROL_LINE:
            self._log.warning("control_line_too_long", limit=MAX_CONTROL_LINE)
            self._partial = b""
        for line in lines:
            await self._control(line.decode(errors="replace").strip())

    async def _control(self, line: str) -> None:
        verb, _, rest = line.partition(" ")
        if not verb:
            return
        action = self._actions.get(verb)
        try:
            if action is None:
                raise ValueError(f"unknown instruction: use {', '.join(self._actions)}")
            await action(self, rest.strip())
        except (ValueError, ConfigError) as exc:
            self._log.warning("bad_control_line", line=line[:200], error=str(exc))
        except Exception as exc:  # noqa: BLE001 - e.g. disconnected: the next heartbeat may get through
            self._log.warning("control_line_failed", line=line[:200], error=repr(exc))

    async def _heartbeat(self, rest: str) -> None:
        await self.task.heartbeat(None, rest or None)

    async def _progress(self, rest: str) -> None:
        value, _, message = rest.partition(" ")
        await self.task.heartbeat(parse_progress(value), message.strip() or None)

    async def _retry_after(self, rest: str) -> None:
        self.retry_after = parse_duration(rest, what="retry-after")

    async def _error_code(self, rest: str) -> None:
        if not rest or len(rest) > 128 or " " in rest:
            raise ValueError("an error code is one word of 1 to 128 characters")
        self.error_code = rest

    async def _content_type(self, rest: str) -> None:
        if not rest or len(rest) > 255:
            raise ValueError("a content type is 1 to 255 characters")
        self.content_type = rest

    async def _publish(self, rest: str) -> None:
        subject, _, text = rest.partition(" ")
        if not subject or subject.startswith("$") or "*" in subject or ">" in subject:
            raise ValueError("publish needs a subject without wildcards that does not start with '$'")
        await self.handler.nc.publish(subject, text.encode())

    _actions: dict[str, Callable[[_Run, str], Awaitable[None]]] = {
        "heartbeat": _heartbeat, "progress": _progress, "retry-after": _retry_after, "error-code": _error_code,
        "content-type": _content_type, "publish": _publish,
    }

    def _stderr_text(self) -> str:
        text = bytes(self.stderr_tail).decode(errors="replace")
        if self.stderr_size > len(self.stderr_tail) and "\n" in text.rstrip("\n"):
            text = text.split("\n", 1)[1]  # drop the partial first line
        return text.strip()

    def _status_text(self) -> str:
        rc = self.returncode
        if rc is not None and rc < 0:
            return f"command was killed by signal {_signal_name(-rc)}"
        return f"command exited with status {rc}"

    def outcome(self) -> Any:
        """The result, or the Retry / Terminate the SDK replies with."""
        if self.overflow:
            raise jetbridge.Terminate(
                f"the command wrote more than {self.limit} bytes to stdout, more than a result can be under the "
                f"server's max_payload of {self.handler.nc.max_payload} bytes: it was stopped; store large results "
                "elsewhere and print a reference", code="result_too_large")
        rc = self.returncode
        if rc == 0:
            return self._result()
        message = self._stderr_text() or self._status_text()
        if rc == self.config.terminate_exit:
            raise jetbridge.Terminate(message, code=self.error_code or "terminate")
        if self.stop_reason == "shutdown":
            raise jetbridge.Retry(f"jetbridge handle shut down before the command finished: {message}",
                                  code="shutdown")
        if rc is None:
            code = "command_lost"
        elif rc > 0:
            code = f"exit_{rc}"
        else:
            code = f"signal_{_signal_name(-rc)}"
        raise jetbridge.Retry(message, code=self.error_code or code, after=self.retry_after)

    def _result(self) -> Any:
        data = bytes(self.stdout)
        ctype = self.content_type
        if ctype is not None and ctype != "application/json":
            return jetbridge.Bytes(data, ctype)
        if ctype is None and not data.strip():
            return None
        try:
            return msgspec.json.decode(data)
        except msgspec.DecodeError:
            if ctype is not None:
                raise jetbridge.Retry("the command declared content-type application/json but its stdout is not "
                                      "JSON", code="bad_result") from None
            return jetbridge.Bytes(data, "application/octet-stream")


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


# The command line ----------------------------------------------------------------------------------------------

COMMAND_META = "jetbridge.handle.command"

HANDLE_HELP = """Serve task types by running COMMAND (after --) once per task.

The payload is COMMAND's stdin (JSON text, or raw bytes). JETBRIDGE_TASK_ID, _TYPE, _QUEUE, _ATTEMPT, _MAX_ATTEMPTS, _DEADLINE, _ATTEMPT_DEADLINE, _CONTENT_TYPE, _CREATED and _BUDGET_MS are in its environment, and TRACEPARENT when the task carries a W3C trace context. Its stdout is the result: JSON if it parses, else bytes.

Exit 0 completes the task, exit 100 (--terminate-exit) terminates it, any other status retries it with the end of stderr as the error.

Lines written to fd 3: heartbeat [MSG], progress 0.4 [MSG], retry-after 5s, error-code CODE, content-type TYPE, publish SUBJECT TEXT.

--timeout 30s stops a command after 30 s (or at the attempt's budget, if sooner); every attempt is logged (attempt_done).

Example: jetbridge handle resize --concurrency 4 -- ./resize.sh
"""


class HandleCommand(TyperCommand):
    """``jetbridge handle TYPE... [OPTIONS] -- COMMAND [ARGS]...``: what follows ``--`` is the command, verbatim."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if "--" in args:
            at = args.index("--")
            ctx.meta[COMMAND_META] = list(args[at + 1:])
            args = args[:at]
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [*super().collect_usage_pieces(ctx), "-- COMMAND [ARGS]..."]


def command_from(ctx: typer.Context) -> list[str]:
    command = ctx.meta.get(COMMAND_META) or []
    if not command:
        raise typer.BadParameter("put the command to run after --, e.g. `jetbridge handle resize -- ./resize.sh`",
                                 ctx=ctx, param_hint="COMMAND")
    return list(command)


def _keep_inherited_fds_to_ourselves() -> None:
    """posix_spawn passes on every inheritable fd: mark those this process inherited (above 2) close-on-exec."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # not Linux: descriptors Python opens are close-on-exec anyway
        return
    for fd in fds:
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass


async def serve_command(settings: Any, config: HandleConfig) -> None:
    """``jetbridge handle``: connect like the other commands, print ``ready``, drain on SIGTERM or SIGINT
    (a second signal stops running commands at once)."""
    from .connect import describe, session
    from .logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    config.validate()
    _keep_inherited_fds_to_ourselves()
    async with session(settings) as (nc, settings):
        log.info("connected", server=describe(settings), max_payload=nc.max_payload)
        handler = CommandHandler(nc, config)
        async with anyio.create_task_group() as tg:
            await tg.start(handler.run)
            await nc.flush()  # the server has our subscriptions: requests sent after `ready` reach us
            print("ready", flush=True)

            async def on_signals() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        name = signal.Signals(signum).name
                        if not handler.draining:
                            log.info("signal", signal=name, action="draining", running=handler.running,
                                     grace=config.grace)
                            handler.stop()
                        else:
                            log.info("signal", signal=name, action="stopping commands now", running=handler.running)
                            handler.stop(now=True)

            tg.start_soon(on_signals)
            await handler.stopped.wait()
            tg.cancel_scope.cancel()
    log.info("stopped")


def handle_main(
    settings: Any, task_types: Sequence[str], command: Sequence[str], *, concurrency: int | None, prefix: str | None,
    grace: str, kill_grace: str, terminate_exit: int, name: str, timeout: str | None = None,
) -> None:
    """The ``jetbridge handle`` command, from its parsed options."""
    config = HandleConfig(
        command=tuple(command), task_types=tuple(task_types),
        concurrency=concurrency if concurrency is not None else default_concurrency(),
        prefix=prefix or settings.subject_prefix, grace=parse_duration(grace, what="--grace"),
        kill_grace=parse_duration(kill_grace, what="--kill-grace"), terminate_exit=terminate_exit, name=name,
        timeout=parse_duration(timeout, what="--timeout") if timeout is not None else None,
    ).validate()
    anyio.run(serve_command, settings, config)
