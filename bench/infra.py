"""What every scenario needs: paths, builds, a fresh nats-server, child processes and their CPU and memory.

Every child process is started in a session of its own and ended by its own pid (its process group), never by
name. CPU time comes from ``/proc/<pid>/stat`` (user + system), memory from ``/proc/<pid>/status``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD_DIR = REPO / ".build" / "bench"
GO_CACHE = REPO / ".cache" / "go"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(*parts: object) -> None:
    """Progress goes to stderr: stdout carries only the JSON result."""
    print("[bench]", *parts, file=sys.stderr, flush=True)


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (``p`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100.0 * (len(ordered) - 1))))
    return ordered[k]


# Builds ------------------------------------------------------------------------------------------------------


def go_binary() -> str | None:
    return shutil.which("go") or (p if os.path.exists(p := "/usr/local/go/bin/go") else None)


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(GOMODCACHE=str(GO_CACHE / "mod"), GOCACHE=str(GO_CACHE / "build"), GOFLAGS="-mod=readonly",
               GOTOOLCHAIN="local")
    return env


def build_go(name: str, timeout: float = 240.0) -> tuple[str | None, str | None]:
    """Build ``bench/go/<name>`` into ``.build/bench/<name>``; returns (binary, error)."""
    go = go_binary()
    if go is None:
        return None, "go not found on PATH (or /usr/local/go/bin): the Go scenarios are skipped"
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    out = BUILD_DIR / name
    try:
        proc = subprocess.run([go, "build", "-trimpath", "-o", str(out), "."], cwd=REPO / "bench" / "go" / name,
                              env=go_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"go build of bench/go/{name} took over {timeout:.0f}s"
    if proc.returncode != 0:
        return None, f"go build of bench/go/{name} failed: {proc.stderr.strip()[-2000:]}"
    return str(out), None


def go_version() -> str | None:
    go = go_binary()
    if go is None:
        return None
    try:
        return subprocess.run([go, "version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None


def _pip_install(requirement: str) -> str | None:
    try:
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", requirement],
                              capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        return f"pip install {requirement} timed out"
    return f"pip install {requirement} failed: {proc.stderr.strip()[-500:]}" if proc.returncode else None


def ensure_py_spy() -> tuple[str | None, str | None]:
    """py-spy from PyPI in this venv (installed if missing); returns (binary, error)."""
    beside = Path(sys.executable).parent / "py-spy"
    if not beside.exists():
        error = _pip_install("py-spy==0.4.3")
        if error or not beside.exists():
            return None, error or "py-spy was installed but is not beside this Python"
    return str(beside), None


def ensure_uvloop() -> str | None:
    """uvloop from PyPI in this venv (installed if missing), for the uvloop experiment; returns an error or None."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return _pip_install("uvloop==0.23.0")
    return None


# Processes ---------------------------------------------------------------------------------------------------


def proc_cpu(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (all its threads), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def child_pids(pid: int) -> list[int]:
    """The live children of ``pid``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return sorted(out)


def proc_mem_kb(pid: int) -> dict[str, int]:
    """VmHWM (peak RSS) and VmRSS of ``pid`` in KiB."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def child_env() -> dict[str, str]:
    """This environment without settings that would steer a child elsewhere."""
    return {k: v for k, v in os.environ.items() if not k.startswith("JETBRIDGE_") and k != "NATS_URL"}


class Proc:
    """A child process whose output is kept (last lines) and whose readiness is a line it prints."""

    def __init__(self, name: str, argv: list[str], *, ready: str | None = None,
                 env: dict[str, str] | None = None, cwd: Path = REPO) -> None:
        self.name = name
        self.cwd = cwd
        self.argv = argv
        self.ready_text = ready
        self.env = env if env is not None else child_env()
        self.popen: subprocess.Popen[bytes] | None = None
        self.tail: deque[str] = deque(maxlen=60)
        self._ready = threading.Event()

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def start(self, timeout: float = 30.0, *, wait: bool = True) -> Proc:
        self.popen = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        for stream in (self.popen.stdout, self.popen.stderr):
            threading.Thread(target=self._read, args=(stream,), daemon=True).start()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the ready line is printed; stops the process and raises if it exits or times out first."""
        assert self.popen is not None
        if self.ready_text is None:
            return
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not become ready (exit {self.popen.returncode}):\n"
                                   + "\n".join(self.tail))

    def _read(self, stream: object) -> None:
        for raw in stream:  # type: ignore[attr-defined]
            line = raw.decode(errors="replace").rstrip()
            self.tail.append(line)
            if self.ready_text and self.ready_text in line:
                self._ready.set()

    def cpu(self) -> float | None:
        return proc_cpu(self.pid)

    def mem_kb(self) -> dict[str, int]:
        return proc_mem_kb(self.pid)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def send(self, sig: int) -> None:
        if self.alive():
            try:
                os.killpg(self.pid, sig)  # the group this child leads (start_new_session), by its id
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 15.0, sig: int = signal.SIGTERM) -> int | None:
        if self.popen is None:
            return None
        self.send(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL)
            return self.popen.wait(5)


class Server:
    """A fresh nats-server with JetStream on a free loopback port and a temporary store directory."""

    def __init__(self) -> None:
        from bridge.embedded import NatsServer

        self.dir = Path(tempfile.mkdtemp(prefix="jetbridge-bench-"))
        self.nats = NatsServer(self.dir / "store")

    @property
    def url(self) -> str:
        return self.nats.url

    @property
    def pid(self) -> int:
        assert self.nats.proc is not None
        return self.nats.proc.pid

    def __enter__(self) -> Server:
        self.nats.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.nats.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class Children:
    """Starts processes and makes sure each is stopped, in reverse order."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(self, proc: Proc, timeout: float = 30.0, *, wait: bool = True) -> Proc:
        self.procs.append(proc)
        return proc.start(timeout, wait=wait)

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def commit_tree(commit: str) -> tuple[Path | None, str | None]:
    """The source tree of ``commit`` (``git archive``) under ``.build/bench/commit-<commit>``, made once.

    The bench runs an older dispatcher from it, on this venv, as a baseline in the same run (issue 21: "today's"
    CPU per task). Returns (path, None) or (None, why not): a shallow clone may not have the commit.
    """
    target = BUILD_DIR / f"commit-{commit}"
    stamp = target / ".complete"
    if stamp.exists():
        return target, None
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit], check=True,
                                 capture_output=True, timeout=120).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True, capture_output=True, timeout=120)
    except (subprocess.SubprocessError, OSError) as exc:
        shutil.rmtree(target, ignore_errors=True)
        detail = exc.stderr.decode(errors="replace").strip() if isinstance(exc, subprocess.CalledProcessError) else ""
        return None, f"could not extract commit {commit}: {detail or exc}"
    stamp.write_text(commit)
    return target, None


def dispatcher_proc(url: str, queue: str, concurrency: int, name: str = "dispatcher", loop: str = "cli",
                    env: dict[str, str] | None = None, processes: int = 1, root: Path | None = None) -> Proc:
    """The dispatcher as `jetbridge run` runs it (``loop="cli"``), or in-process on ``asyncio`` or ``uvloop``;
    with ``processes`` > 1, `jetbridge run --processes N` (ready once its supervisor says every process serves).

    ``env``: variables added to its environment (the tracing experiment's ``OTEL_*``). ``root``: run the dispatcher
    and SDK of another source tree (:func:`commit_tree`) instead of this one's."""
    if root is not None:
        env = {**(env or {}), "PYTHONPATH": f"{root}{os.pathsep}{root / 'sdk-python' / 'src'}"}
    if loop == "cli":
        argv = [sys.executable, "-m", "bridge", "--server", url, "run", "--queue", queue,
                "--concurrency", str(concurrency), "--log-level", "info", "--log-format", "json"]
        if processes > 1:
            return Proc(name, [*argv, "--processes", str(processes)], ready="processes_started",
                        env={**child_env(), **env} if env else None)
    else:
        argv = [sys.executable, "-m", "bench.inproc", "--server", url, "--queue", queue,
                "--concurrency", str(concurrency)] + (["--uvloop"] if loop == "uvloop" else [])
    return Proc(name, argv, ready="dispatcher_started", env={**child_env(), **env} if env else None,
                cwd=root or REPO)


def go_noop_proc(binary: str, url: str, concurrency: int = 1000) -> Proc:
    return Proc("go-noop", [binary, "-server", url, "-types", "noop", "-concurrency", str(concurrency)],
                ready="ready")


def py_noop_proc(url: str, concurrency: int = 1000) -> Proc:
    argv = [sys.executable, "-m", "bench.pyhandler", "--server", url, "--concurrency", str(concurrency)]
    return Proc("py-noop", argv, ready="ready")
