"""`moai serve` against the same mix in-process: added latency, throughput and time to the first token.

The bundled `route` mix (its learned gate included) with its models swapped for scripted ones that take
0 ms or 50 ms a reply, served by `moai serve` (a real uvicorn process on 127.0.0.1, usage recorded to
SQLite) and called with the `openai` client, against `MixtureChatModel` on the same mix file in this
process (usage recorded too). In one run:

  latency   one request at a time, the two variants interleaved: p50/p95 and what the server adds
  ttft      time to the first streamed token, server (stream=True) against in-process `astream`
  load      64 concurrent clients at 50 ms a call: requests/s with 1 and 2 server workers, and in-process,
            with the CPU time each request cost the server's processes and the client's

Client and server share this 2-core machine, so the throughput figures include the client's own work;
the CPU times per request say how much of the machine each side takes, whatever else runs on it.
Usage: python bench/serve.py [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml
from openai import AsyncOpenAI

from moai import MixtureChatModel
from moai.mix_instructions import load_spec

ROOT = Path(__file__).resolve().parent.parent
MOAI = Path(sys.executable).with_name("moai")
CLIENTS = 64
QUESTION = "What is the capital of France?"
MESSAGES = [{"role": "user", "content": QUESTION}]


def write_mix(folder: Path, delay_ms: int) -> Path:
    """Write the bundled `route` mix with scripted models that take `delay_ms` a reply; return its file."""
    spec = load_spec("route")
    models = {
        name: model.model_copy(
            update={
                "provider": "fake",
                "replies": [f"{name} says: the capital of France is Paris, as the question asked."],
                "delay_s": delay_ms / 1000,
            }
        )
        for name, model in spec.models.items()
    }
    spec = spec.model_copy(update={"name": f"route_{delay_ms}ms", "models": models})
    path = folder / f"route_{delay_ms}ms.yaml"
    data = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    # The bundled checkpoint is named as the bundled file names it, so it resolves from any folder.
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """Return the CPU time (user and system) of a process and its children (uvicorn's workers); NaN off Linux."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        total = 0
        for each in [pid, *map(int, children)]:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
        return total / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


@contextmanager
def server(mixes: Path, workers: int, db: Path) -> Iterator[tuple[str, int]]:
    """Run `moai serve` on a free port until the block ends; yield its base URL and process id."""
    port = free_port()
    env = {**os.environ, "MOAI_USAGE_DB": str(db)}
    log = (mixes / f"serve-{workers}.log").open("wb")
    cmd = [str(MOAI), "serve", "--port", str(port), "--mixes", str(mixes), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"moai serve did not start: see {log.name}")
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
        errors = [line for line in Path(log.name).read_text(errors="replace").splitlines() if "rror" in line]
        for line in errors[:5]:
            print(f"  server log: {line}", file=sys.stderr)


def client(url: str) -> AsyncOpenAI:
    limits = httpx.Limits(max_connections=CLIENTS * 2, max_keepalive_connections=CLIENTS * 2)
    return AsyncOpenAI(
        base_url=f"{url}/v1", api_key="unused", max_retries=0, http_client=httpx.AsyncClient(limits=limits)
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def timed(call: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await call()
    return (time.perf_counter() - start) * 1000


async def latency(url: str, mix: Path, name: str, n: int) -> dict[str, list[float]]:
    """One request at a time, interleaved: milliseconds per request, server and in-process."""
    api, local = client(url), MixtureChatModel(mix=str(mix))
    times: dict[str, list[float]] = {"server": [], "in-process": []}
    for i in range(n + 5):
        s = await timed(lambda: api.chat.completions.create(model=name, messages=MESSAGES))  # type: ignore[arg-type]
        p = await timed(lambda: local.ainvoke(QUESTION))
        if i >= 5:  # warm-up: the first calls compile the mix and open connections
            times["server"].append(s)
            times["in-process"].append(p)
    await api.close()
    return times


async def ttft(url: str, mix: Path, name: str, n: int) -> dict[str, list[float]]:
    """Milliseconds to the first streamed token, server and in-process, interleaved."""
    api, local = client(url), MixtureChatModel(mix=str(mix))
    times: dict[str, list[float]] = {"server": [], "in-process": []}

    async def first_server() -> None:
        stream = await api.chat.completions.create(model=name, messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        await stream.close()

    async def first_local() -> None:
        async for chunk in local.astream(QUESTION):
            if chunk.text:
                break

    for i in range(n + 5):
        s, p = await timed(first_server), await timed(first_local)
        if i >= 5:
            times["server"].append(s)
            times["in-process"].append(p)
    await api.close()
    return times


async def load(
    call: Callable[[], Awaitable[Any]], total: int, pid: int | None = None
) -> tuple[float, int, float, float]:
    """Return requests/s with CLIENTS concurrent clients making `total` requests in all, the errors, and the CPU
    milliseconds a request cost the server's processes (`pid`; NaN without) and this process."""
    await asyncio.gather(*(call() for _ in range(CLIENTS)))  # warm-up
    remaining, errors = total, 0

    async def worker() -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            try:
                await call()
            except Exception as err:  # counted and reported: a benchmark must not hide a failure
                errors += 1
                print(f"  ! {type(err).__name__}: {err}", file=sys.stderr)

    server_cpu, client_cpu = cpu_seconds(pid) if pid else float("nan"), time.process_time()
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CLIENTS)))
    rate = total / (time.perf_counter() - start)
    server_ms = (cpu_seconds(pid) - server_cpu) * 1000 / total if pid else float("nan")
    return rate, errors, server_ms, (time.process_time() - client_cpu) * 1000 / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (writes no file unless --out)")
    parser.add_argument("--out", type=Path, help="where to write the table (default: bench/results/serve.md)")
    args = parser.parse_args()
    n, total = (20, 128) if args.quick else (200, 1280)
    results: dict[str, Any] = {"load average": [os.getloadavg()[0]]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["MOAI_USAGE_DB"] = str(folder / "in-process.db")
        mixes = {delay: write_mix(folder, delay) for delay in (0, 50)}
        for workers in (1, 2):
            with server(folder, workers, folder / f"server-{workers}.db") as (url, pid):
                if workers == 1:
                    for delay, mix in mixes.items():
                        name = f"route_{delay}ms"
                        results[f"latency {delay}"] = asyncio.run(latency(url, mix, name, n // (1 + delay // 25)))
                    results["ttft 50"] = asyncio.run(ttft(url, mixes[50], "route_50ms", n // 3))
                api = client(url)

                def call(api: AsyncOpenAI = api) -> Awaitable[Any]:
                    return api.chat.completions.create(model="route_50ms", messages=MESSAGES)  # type: ignore[arg-type]

                results[f"load server {workers}"] = asyncio.run(load(call, total, pid))
        local = MixtureChatModel(mix=str(mixes[50]))
        results["load in-process"] = asyncio.run(load(lambda: local.ainvoke(QUESTION), total))
    results["load average"].append(os.getloadavg()[0])
    text = report(results, n, total)
    print(text)
    out = args.out or (None if args.quick else ROOT / "bench" / "results" / "serve.md")
    if out:
        out.write_text(text)
        print(f"wrote {out}", file=sys.stderr)


def report(results: dict[str, Any], n: int, total: int) -> str:
    lines = [
        "# moai serve against the same mix in-process",
        "",
        __doc__.split("\n\n")[1].replace("\n", " "),
        "",
        f"- Machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"load average (1 min) {results['load average'][0]:.1f} at the start, {results['load average'][1]:.1f} "
        "at the end (other work on the machine)",
        "- Command: `python bench/serve.py`",
        "",
        "| measure | scripted latency | server p50 ms | in-process p50 ms | added p50 ms | server p95 ms "
        "| in-process p95 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in (("latency 0", "request"), ("latency 50", "request"), ("ttft 50", "first token")):
        times = results[key]
        s50, p50 = statistics.median(times["server"]), statistics.median(times["in-process"])
        lines.append(
            f"| {label} | {key.split()[1]} ms | {s50:.2f} | {p50:.2f} | {s50 - p50:.2f} | "
            f"{pct(times['server'], 0.95):.2f} | {pct(times['in-process'], 0.95):.2f} |"
        )
    lines += [
        "",
        f"Throughput, {CLIENTS} concurrent clients, {total} requests, 50 ms a model call:",
        "",
        "| variant | requests/s | failed requests | server CPU ms/request | client CPU ms/request |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {label} | {results[key][0]:.0f} | {results[key][1]} | {_ms(results[key][2])} | {results[key][3]:.2f} |"
            for key, label in (
                ("load server 1", "moai serve, 1 worker"),
                ("load server 2", "moai serve, 2 workers"),
                ("load in-process", "in-process MixtureChatModel"),
            )
        ),
        "",
    ]
    return "\n".join(lines)


def _ms(value: float) -> str:
    return "-" if value != value else f"{value:.2f}"  # NaN: not measured (in-process, or off Linux)


if __name__ == "__main__":
    main()
