"""`moai serve` as real processes on 127.0.0.1 for integration tests: start, wait for /health, stop.

Each server is `python -c "... moai.cli.main()" serve --port P ...` in a session of its own, with
`MOAI_USAGE_DB` set to the usage store (a SQLite file or a PostgreSQL URL) and its output in a log file.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

__all__ = ["Servers", "free_port", "moai_serve"]

_MAIN = "import sys; from moai.cli import main; sys.exit(main())"


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Servers:
    """`moai serve` processes on one usage store (`db`): their base URLs, processes and logs."""

    db: str
    bases: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def start(self, args: Sequence[str], log: Path) -> str:
        """Start `moai serve --port <free> ARGS`, its output in `log`; return its base URL (not yet waited for)."""
        port = free_port()
        self.logs.append(log)
        with log.open("w") as out:
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-c", _MAIN, "serve", "--port", str(port), *args],
                    env={**os.environ, "MOAI_USAGE_DB": self.db},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        self.bases.append(f"http://127.0.0.1:{port}")
        return self.bases[-1]

    def wait_healthy(self, tries: int) -> None:
        """Wait until every server answers /health (about `tries` tenths of a second at most); fail if one exits."""
        for _ in range(tries):
            for process in self.processes:
                if process.poll() is not None:
                    pytest.fail(f"moai serve exited {process.returncode}:\n{self.log()}")
            try:
                if all(httpx.get(f"{base}/health", timeout=1).status_code == 200 for base in self.bases):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"moai serve did not answer /health:\n{self.log()}")

    def stop(self) -> list[int]:
        """Stop every server by its PID (SIGTERM: uvicorn drains, the usage monitor flushes); return the codes."""
        for process in self.processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
        codes = []
        for process in self.processes:
            try:
                codes.append(process.wait(timeout=30))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: nothing of it outlives the test
                codes.append(process.wait())
        return codes

    def log(self) -> str:
        """Return the end of every server's log."""
        return "\n".join(f"--- {path.name}\n{path.read_text()[-4000:]}" for path in self.logs)


@contextmanager
def moai_serve(folder: Path, mixes: Path, db: str | None = None) -> Iterator[str]:
    """Run one `moai serve --mixes MIXES` (usage in `db`, default FOLDER/usage.db); yield its base URL."""
    servers = Servers(db or str(folder / "usage.db"))
    try:
        base = servers.start(["--mixes", str(mixes)], folder / "server.log")
        servers.wait_healthy(tries=600)  # at most a minute to import and bind
        yield base
    finally:
        servers.stop()
