"""`edgesdk serve REPO`: run a real tritonserver on a model repository, bound to 127.0.0.1 by default.

The server is, in order: the `server` argument, $EDGESDK_TRITONSERVER, the environment tools/triton_env.sh
sets up ($EDGESDK_CACHE/triton/current/bin/tritonserver), or `tritonserver` on PATH. The python-backend
models import this very edgesdk: its directory goes to the server as EDGESDK_PYTHONPATH (the repository's
model.py puts it on sys.path; Triton's python stub does not read PYTHONPATH).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ...errors import BackendUnavailable, EdgeSDKError

INSTALL = "tools/triton_env.sh"
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


def env_server() -> Path:
    """Where tools/triton_env.sh puts the server's launcher."""
    cache = Path(os.environ.get("EDGESDK_CACHE") or "~/.cache/edgesdk").expanduser()
    return cache / "triton" / "current" / "bin" / "tritonserver"


def find_server(server: str | Path | None = None) -> Path:
    """The tritonserver to run, or BackendUnavailable naming the command that installs one."""
    if server is not None:
        path = Path(server)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BackendUnavailable(f"--server {path}: no such executable")
        return path
    for candidate in (os.environ.get("EDGESDK_TRITONSERVER"), env_server(), shutil.which("tritonserver")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise BackendUnavailable(f"no tritonserver found (looked at $EDGESDK_TRITONSERVER, {env_server()} and PATH); "
                             f"install it with: {INSTALL}")


def check_repository(repo: Path) -> list[str]:
    """The model names in a repository; EdgeSDKError when it is not one."""
    if not repo.is_dir():
        raise EdgeSDKError(f"{repo}: no such model repository directory")
    models = sorted(p.name for p in repo.iterdir() if p.is_dir() and (p / "config.pbtxt").is_file())
    if not models:
        raise EdgeSDKError(f"{repo}: not a Triton model repository (no <model>/config.pbtxt inside); "
                           "write one with: edgesdk package MODEL --target triton-cpu --out DIR")
    return models


def python_path(workdir: Path) -> str:
    """A directory from which the python stub imports this edgesdk, native libraries included. An editable
    install keeps edgesdk/_native*.so (and the engine libraries beside it) apart from the sources; then a
    directory of links joins the two."""
    import edgesdk
    from edgesdk import _native

    package = Path(edgesdk.__file__).resolve().parent
    native_dir = Path(_native.__file__).resolve().parent
    if native_dir == package:
        return str(package.parent)
    joined = workdir / "edgesdk"
    joined.mkdir()
    for source in (package, native_dir):
        for entry in source.iterdir():
            if entry.name != "__pycache__" and not (joined / entry.name).exists():
                (joined / entry.name).symlink_to(entry)
    return str(workdir)


def command(server: Path, repo: Path, http_port: int, grpc_port: int, host: str) -> list[str]:
    return [str(server), f"--model-repository={repo}", f"--http-address={host}", f"--http-port={http_port}",
            f"--grpc-address={host}", f"--grpc-port={grpc_port}", "--allow-metrics=false",
            f"--exit-timeout-secs={int(STOP_TIMEOUT_S)}"]


def _get(url: str, data: bytes | None = None):
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=2) as r:
        body = r.read()
    return json.loads(body) if body else None


def _die_with_parent():
    """In the server process: get SIGTERM when `edgesdk serve` dies, however it dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Server:
    """A tritonserver process on a repository. start() returns when every model is READY; stop() ends it."""

    def __init__(self, repo, http_port: int = 8000, grpc_port: int = 8001, server=None, host: str = "127.0.0.1",
                 log=None):
        self.repo = Path(repo).resolve()
        self.models = check_repository(self.repo)
        for what, port in (("--http-port", http_port), ("--grpc-port", grpc_port)):
            if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
                raise EdgeSDKError(f"{what} must be a port number 1..65535, got {port!r}")
        self.server = find_server(server)
        self.host, self.http_port, self.grpc_port = host, http_port, grpc_port
        self.log = log  # where the server's output goes (a file object); None: this process's stderr
        self.proc: subprocess.Popen | None = None
        self._workdir = None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def start(self, timeout: float = READY_TIMEOUT_S) -> "Server":
        self._workdir = tempfile.TemporaryDirectory(prefix="edgesdk-serve-")
        env = dict(os.environ, EDGESDK_PYTHONPATH=python_path(Path(self._workdir.name)))
        self.proc = subprocess.Popen(command(self.server, self.repo, self.http_port, self.grpc_port, self.host),
                                     env=env, stdin=subprocess.DEVNULL, stdout=self.log or sys.stderr,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                raise EdgeSDKError(f"tritonserver exited with code {code} before its models were ready "
                                   "(its log says why)")
            try:
                _get(f"{self.http_url}/v2/health/ready")
                break
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise EdgeSDKError(f"tritonserver did not get ready within {timeout:.0f} s (its log says why)")
            time.sleep(0.1)
        states = {m.get("name"): m.get("state") for m in _get(f"{self.http_url}/v2/repository/index", b"{}") or []}
        missing = [m for m in self.models if states.get(m) != "READY"]
        if missing:
            raise EdgeSDKError(f"models not ready: {', '.join(f'{m} ({states.get(m)})' for m in missing)}")

    def model_states(self) -> dict[str, str]:
        return {m.get("name"): m.get("state") for m in _get(f"{self.http_url}/v2/repository/index", b"{}") or []}

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (Triton finishes what is in flight), SIGKILL after `timeout`; the server's exit code."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            code = self.proc.returncode
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
        return code

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(repo, http_port: int = 8000, grpc_port: int = 8001, server=None, host: str = "127.0.0.1",
          out=sys.stdout) -> int:
    """Run until SIGINT/SIGTERM (then stop the server cleanly, 0) or until the server dies (1)."""
    srv = Server(repo, http_port, grpc_port, server, host)
    stopping = []

    def on_signal(signum, frame):
        stopping.append(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        started = time.monotonic()
        srv.start()
        print(f"tritonserver {srv.server} (pid {srv.proc.pid}) serving {srv.repo}, ready in "
              f"{time.monotonic() - started:.1f} s", file=out)
        print(f"  HTTP  {srv.http_url}   (POST /v2/models/<model>/infer)", file=out)
        print(f"  gRPC  {srv.grpc_url}", file=out)
        for name, state in sorted(srv.model_states().items()):
            print(f"  model {name}: {state}", file=out)
        out.flush()
        while not stopping and srv.proc.poll() is None:
            time.sleep(0.2)
        if not stopping:
            print(f"edgesdk: error: tritonserver exited with code {srv.proc.returncode}", file=sys.stderr)
            return 1
        code = srv.stop()
        print(f"stopped tritonserver (exit code {code})", file=out)
        return 0
    finally:
        srv.stop()
        for s, handler in old.items():
            signal.signal(s, handler)
