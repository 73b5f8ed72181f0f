"""A fault-injection reverse proxy for tests against a real HTTP server on 127.0.0.1.

`FaultProxy` listens on a free loopback port and forwards each request to the upstream server; a test
switches its mode while it runs:

- `pass`: forward the request and pipe the response back as it comes, chunk by chunk (streams included);
- `slow`: wait `delay_s` before forwarding (a client that gives up meanwhile is dropped, not forwarded);
- `error`: answer `status` with an OpenAI-style JSON error body, without forwarding;
- `down`: stop listening (new connections are refused) and abort the connections open at that moment.

`fail_after(n)` forwards the next `n` chat-completion requests and then goes `down` at once, so the
server disappears in the middle of a run; `fail_next(n)` answers the next `n` with an error, then
forwards again. Every request gets its own upstream connection and is answered with `Connection: close`,
so no pooled connection outlives a mode switch. The proxy runs its own event loop in a daemon thread;
every wait is bounded, and `stop()` ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal

__all__ = ["Exchange", "FaultProxy", "Mode"]

Mode = Literal["pass", "slow", "error", "down"]

IO_TIMEOUT_S = 60.0
"""Longest wait for one read from a client or the upstream server."""
CONTROL_TIMEOUT_S = 10.0
"""Longest wait for the proxy's loop to carry out a command of the test's thread."""
CAPTURE_LIMIT = 1 << 20
"""Bytes of each response kept for the test to inspect."""


@dataclass
class Exchange:
    """One request the proxy received, and what became of it."""

    method: str
    path: str
    body: bytes
    mode: Mode
    status: int | None = None
    """The status sent back; None when the connection was dropped before any answer."""
    response: bytearray = field(default_factory=bytearray)
    """The raw response (head and body) as sent to the client, up to `CAPTURE_LIMIT` bytes."""

    def request_json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def response_body(self) -> bytes:
        head, _, body = bytes(self.response).partition(b"\r\n\r\n")
        if b"transfer-encoding: chunked" in head.lower():
            body = _dechunk(body)
        return body

    def response_json(self) -> Any:
        return json.loads(self.response_body())

    def sse_data(self) -> list[Any]:
        """The JSON payloads of a server-sent-event stream, without the final `[DONE]`."""
        events = []
        for line in self.response_body().decode(errors="replace").splitlines():
            if line.startswith("data:") and (data := line[5:].strip()) and data != "[DONE]":
                events.append(json.loads(data))
        return events


def _dechunk(body: bytes) -> bytes:
    out, rest = bytearray(), body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2 :]
    return bytes(out)


def _response_head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class FaultProxy:
    """A reverse proxy in front of `upstream_host:upstream_port`, on 127.0.0.1, with switchable faults."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = "127.0.0.1"
        self.port = 0  # a free port, chosen at the first start and kept across down/up
        self.mode: Mode = "pass"
        self.delay_s = 0.0
        self.status = 503
        self.exchanges: list[Exchange] = []
        self._fail_after: int | None = None
        self._errors_left = 0
        self._chat_requests = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._open: dict[asyncio.StreamWriter, Exchange | None] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- control, from the test's thread --------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        self._run(self._listen())
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._run(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(CONTROL_TIMEOUT_S)
            if not self._thread.is_alive():
                self._loop.close()

    def set(self, mode: Mode, *, delay_s: float | None = None, status: int | None = None) -> None:
        """Switch the mode; `down` closes the listener and the open connections, leaving `down` listens again."""
        with self._lock:
            self.mode = mode
            self._fail_after = None
            self._errors_left = 0
            if delay_s is not None:
                self.delay_s = delay_s
            if status is not None:
                self.status = status
        self._run(self._go_down(spare_forwarded=False) if mode == "down" else self._listen())

    def fail_after(self, n: int) -> None:
        """Forward the next `n` chat-completion requests (in `pass` mode), then go down at the next one.

        Going down spares the requests already being forwarded; the one that arrives next, and every
        connection not yet read, is aborted.
        """
        self.set("pass")
        with self._lock:
            self._fail_after = self._chat_requests + n

    def fail_next(self, n: int, *, status: int = 503) -> None:
        """Answer the next `n` chat-completion requests with `status` (as `error` does), then forward again."""
        self.set("pass", status=status)
        with self._lock:
            self._errors_left = n

    def reset(self) -> None:
        """Back to `pass`, listening, with no recorded exchanges."""
        self.set("pass", delay_s=0.0, status=503)
        with self._lock:
            self.exchanges.clear()

    def chat_exchanges(self) -> list[Exchange]:
        with self._lock:
            return [e for e in self.exchanges if e.path.rstrip("/").endswith("/chat/completions")]

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CONTROL_TIMEOUT_S)

    # -- the proxy, on its own loop ------------------------------------------------------------

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, self.host, self.port, reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]

    async def _go_down(self, *, spare_forwarded: bool) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer, exchange in list(self._open.items()):
            if not (spare_forwarded and exchange is not None and exchange.mode != "down"):
                writer.transport.abort()  # the client sees a reset, as from a server that died

    async def _shutdown(self) -> None:
        await self._go_down(spare_forwarded=False)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=CONTROL_TIMEOUT_S)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._open[writer] = None
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            pass  # a client or upstream that went away, or a malformed request: drop the connection
        finally:
            self._open.pop(writer, None)
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT_S)
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _version = request_line.split(" ", 2)
        headers = [tuple(part.strip() for part in line.split(":", 1)) for line in header_lines if ":" in line]
        names = {name.lower(): value for name, value in headers}
        if "chunked" in names.get("transfer-encoding", "").lower():
            raise ValueError("chunked request bodies are not supported")
        body = await asyncio.wait_for(reader.readexactly(int(names.get("content-length", "0"))), IO_TIMEOUT_S)

        with self._lock:
            mode, delay_s, status = self.mode, self.delay_s, self.status
            going_down = False
            if path.rstrip("/").endswith("/chat/completions"):
                self._chat_requests += 1
                if self._fail_after is not None and self._chat_requests > self._fail_after:
                    mode, self.mode, self._fail_after, going_down = "down", "down", None, True
                elif self._errors_left > 0:
                    mode, self._errors_left = "error", self._errors_left - 1
            exchange = Exchange(method=method, path=path, body=body, mode=mode)
            self.exchanges.append(exchange)
        self._open[writer] = exchange

        if mode == "down":
            if going_down:  # the requests already forwarded complete; this one and later ones fail
                await self._go_down(spare_forwarded=True)
            writer.transport.abort()
            return
        if mode == "slow":
            # Wait, but notice a client that gives up meanwhile: it is not forwarded (the server stays free).
            with contextlib.suppress(TimeoutError):
                if await asyncio.wait_for(reader.read(1), delay_s) == b"":
                    return
        if mode == "error":
            payload = json.dumps(
                {
                    "error": {
                        "message": f"injected fault: HTTP {status}",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                }
            ).encode()
            reply = _response_head(
                status,
                {"Content-Type": "application/json", "Content-Length": str(len(payload)), "Connection": "close"},
            )
            exchange.status = status
            exchange.response += reply + payload
            writer.write(reply + payload)
            await writer.drain()
            return
        await self._forward(writer, exchange, request_line, headers, body)

    async def _forward(
        self,
        writer: asyncio.StreamWriter,
        exchange: Exchange,
        request_line: str,
        headers: list[tuple[str, ...]],
        body: bytes,
    ) -> None:
        up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.upstream), IO_TIMEOUT_S)
        try:
            kept = [(k, v) for k, v in headers if k.lower() not in {"connection", "keep-alive", "host"}]
            upstream_host = f"{self.upstream[0]}:{self.upstream[1]}"
            lines = [request_line, f"Host: {upstream_host}", *(f"{k}: {v}" for k, v in kept), "Connection: close"]
            up_writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            await up_writer.drain()
            # The upstream closes after this one response: pipe its bytes as they come, chunked streams included.
            while chunk := await asyncio.wait_for(up_reader.read(65536), IO_TIMEOUT_S):
                if exchange.status is None and chunk.startswith(b"HTTP/"):
                    exchange.status = int(chunk.split(b" ", 2)[1])
                if len(exchange.response) < CAPTURE_LIMIT:
                    exchange.response += chunk
                writer.write(chunk)
                await writer.drain()
        finally:
            up_writer.transport.abort()
