"""A real `tripwire serve` in a subprocess, on a free loopback port, for tests and benchmarks.

    server = ServerProcess(rules, data_dir)
    server.start()            # returns once /readyz answers 200
    httpx.post(server.url("/v1/batch"), json=..., auth=server.write_auth)
    server.kill()             # SIGKILL: a crash
    server.start()            # the same data folder and port: recovery
    server.stop()             # SIGTERM: drain, commit, exit 0

The server's stdout and stderr go to a log file beside the data folder, so a failing
test can show what the server said (`server.log_tail()`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import httpx

WRITE_KEY = "test-write-key"
ADMIN_TOKEN = "test-admin-token"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """One `python -m tripwire serve` process at a time over one data folder."""

    def __init__(
        self,
        rules: Path,
        data_dir: Path,
        *,
        port: int | None = None,
        write_key: str = WRITE_KEY,
        admin_token: str = ADMIN_TOKEN,
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
        log_level: str = "warning",
        module: str = "tripwire",
        args: tuple[str, ...] = (),
    ) -> None:
        self.rules = Path(rules)
        self.data_dir = Path(data_dir)
        self.port = port if port is not None else free_port()
        self.write_key = write_key
        self.admin_token = admin_token
        self.log_path = log_path if log_path is not None else self.data_dir.with_name(self.data_dir.name + ".log")
        self.extra_env = env or {}
        self.log_level = log_level
        self.module = module  # what `python -m` runs: tripwire, or a wrapper such as a profiler
        self.args = args  # more flags for serve (--cluster ...)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log: IO[bytes] | None = None

    # -- addresses and credentials -------------------------------------------------------

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    @property
    def write_auth(self) -> httpx.BasicAuth:
        """Segment's way: the write key as the Basic user name, empty password."""
        return httpx.BasicAuth(self.write_key, "")

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> float:
        """Start the server and wait until /readyz is 200; returns the seconds it took."""
        assert self.proc is None or self.proc.poll() is not None, "the server is already running"
        env = {
            **os.environ,
            "TRIPWIRE_WRITE_KEYS": self.write_key,
            "TRIPWIRE_ADMIN_TOKEN": self.admin_token,
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log.write(f"--- start {self.starts + 1} ---\n".encode())
        self._log.flush()
        command = [sys.executable, "-m", self.module, "serve", "--rules", str(self.rules), "--data", str(self.data_dir),
                   "--host", "127.0.0.1", "--port", str(self.port), "--log-level", self.log_level]  # fmt: skip
        command += self.args
        began = time.monotonic()
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.starts += 1
        deadline = began + timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = self.proc.poll()
                if code is not None:
                    raise RuntimeError(f"the server exited with {code} while starting:\n{self.log_tail()}")
                try:
                    if client.get(self.url("/readyz")).status_code == 200:
                        return time.monotonic() - began
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"the server was not ready within {timeout}s:\n{self.log_tail()}")
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would: nothing is flushed or closed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._close_log()

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait for the clean exit; returns the exit code."""
        assert self.proc is not None, "the server was never started"
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                self._close_log()
                raise RuntimeError(
                    f"the server did not stop within {timeout}s of SIGTERM:\n{self.log_tail()}"
                ) from None
        self._close_log()
        code = self.proc.returncode
        assert code is not None
        return code

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        if self.running():
            try:
                self.stop()
            except RuntimeError:
                self.kill()
