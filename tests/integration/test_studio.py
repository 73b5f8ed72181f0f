"""The graphs of `langgraph.json` served by `langgraph dev` (the in-memory LangGraph server behind Studio).

A module-scoped fixture writes a `langgraph.json` in a temporary folder that lists every graph of the
project's `langgraph.json` (absolute paths) plus `fake_moa`, a mix of scripted `fake` models, starts
`langgraph dev` on a free loopback port, fully offline, and stops it by its process group at teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("langgraph_api", reason="needs langgraph-cli[inmem]")

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROJECT_CONFIG = ROOT / "langgraph.json"

STARTUP_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 30.0
RUN_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0

FAKE_ID = "fake_moa"
QUERY = "What is 2+2?"
AGGREGATOR_REPLY = "The answer is 4."
FAKE_TRACE = ["gate", "layer1[a]", "layer1[b]", "layer1[c]", "aggregate:synthesize"]

FAKE_GRAPH_SOURCE = textwrap.dedent(
    f'''
    """fake_moa: three scripted proposers and a scripted aggregator (no model, no network)."""

    from moai.mix_instructions import MixSpec
    from moai.api import build_mix

    SPEC = MixSpec.model_validate(
        {{
            "name": "{FAKE_ID}",
            "description": "Mixture-of-Agents of scripted models, for tests of the server.",
            "models": {{
                "a": {{"provider": "fake", "model": "fake-a", "replies": ["A: 2+2 is 4."]}},
                "b": {{"provider": "fake", "model": "fake-b", "replies": ["B: four."]}},
                "c": {{"provider": "fake", "model": "fake-c", "replies": ["C: 4"]}},
                "agg": {{"provider": "fake", "model": "fake-agg", "replies": [{AGGREGATOR_REPLY!r}]}},
            }},
            "steps": [{{"kind": "propose", "name": "layer1", "models": ["a", "b", "c"]}}],
            "aggregate": {{"mode": "synthesize", "model": "agg"}},
        }}
    )

    {FAKE_ID} = build_mix(SPEC).compile(name="{FAKE_ID}")
    '''
)


def _project_graph_ids() -> list[str]:
    return sorted(json.loads(PROJECT_CONFIG.read_text())["graphs"])


GRAPH_IDS = [*_project_graph_ids(), FAKE_ID]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _absolute_graph(ref: str) -> str:
    path, _, attr = ref.rpartition(":")
    return f"{(ROOT / path).resolve()}:{attr}"


def _offline_env() -> dict[str, str]:
    env = dict(os.environ)
    env["LANGGRAPH_CLI_NO_ANALYTICS"] = "1"
    env["LANGGRAPH_NO_VERSION_CHECK"] = "true"
    env["LANGSMITH_TRACING"] = "false"
    for key in ("LANGSMITH_API_KEY", "LANGCHAIN_API_KEY", "LANGCHAIN_TRACING_V2", "LANGSMITH_ENDPOINT"):
        env.pop(key, None)
    # The server process must import the project (moai, graphs, nodes, ...) whether or not it is installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _log_tail(log: Path, chars: int = 4000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "<no log>"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the process group: the server's workers and reloader too
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)


@dataclass(frozen=True)
class Server:
    url: str
    client: httpx.Client
    log: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("studio")
    fake_file = workdir / "fake_graph.py"
    fake_file.write_text(FAKE_GRAPH_SOURCE)

    project = json.loads(PROJECT_CONFIG.read_text())
    graphs = {name: _absolute_graph(ref) for name, ref in project["graphs"].items()}
    graphs[FAKE_ID] = f"{fake_file}:{FAKE_ID}"
    config = workdir / "langgraph.json"
    # `langgraph dev` resolves "dependencies" against its working directory: give the project's root.
    config.write_text(json.dumps({"dependencies": [str(ROOT)], "graphs": graphs, "env": {}}, indent=2))

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / "server.log"
    cmd = [
        sys.executable, "-m", "langgraph_cli", "dev",
        "--config", str(config),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--no-browser",
        "--no-reload",
    ]  # fmt: skip
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=workdir, env=_offline_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    client = httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S)
    try:
        deadline = started + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"langgraph dev exited with {proc.returncode}:\n{_log_tail(log)}")
            try:
                if client.get("/ok", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"langgraph dev not ready after {STARTUP_TIMEOUT_S:.0f} s:\n{_log_tail(log)}")
            time.sleep(0.5)
        yield Server(url=url, client=client, log=log)
    finally:
        client.close()
        _stop(proc)


@pytest.fixture(scope="module")
def assistants(server: Server) -> dict[str, str]:
    """graph_id -> assistant_id of the default assistant of each graph."""
    response = server.client.post("/assistants/search", json={"limit": 100})
    assert response.status_code == 200, response.text
    found: dict[str, str] = {}
    for assistant in response.json():
        found.setdefault(assistant["graph_id"], assistant["assistant_id"])
    return found


def test_assistants_list_every_graph(assistants: dict[str, str]) -> None:
    assert set(GRAPH_IDS) <= set(assistants), sorted(set(GRAPH_IDS) - set(assistants))


@pytest.mark.parametrize("graph_id", GRAPH_IDS)
def test_schemas(server: Server, assistants: dict[str, str], graph_id: str) -> None:
    response = server.client.get(f"/assistants/{assistants[graph_id]}/schemas")
    assert response.status_code == 200, response.text
    schemas = response.json()
    assert schemas["graph_id"] == graph_id
    assert "query" in schemas["input_schema"]["properties"]
    assert "query" in schemas["input_schema"].get("required", [])
    assert "answer" in schemas["output_schema"]["properties"]
    assert {"models_used", "calls", "trace"} <= set(schemas["output_schema"]["properties"])
    assert "budget_usd" in schemas["context_schema"]["properties"]


@pytest.mark.parametrize("graph_id", GRAPH_IDS)
def test_graph_nodes(server: Server, assistants: dict[str, str], graph_id: str) -> None:
    response = server.client.get(f"/assistants/{assistants[graph_id]}/graph")
    assert response.status_code == 200, response.text
    nodes = {node["id"] for node in response.json()["nodes"]}
    # An A/B split's graph is the split node and one subgraph node per arm.
    assert {"gate", "aggregate"} <= nodes or {"split", "route", "routemoa"} <= nodes, nodes


def test_fake_moa_stateless_run(server: Server, assistants: dict[str, str]) -> None:
    response = server.client.post(
        "/runs/wait",
        json={"assistant_id": assistants[FAKE_ID], "input": {"query": QUERY}},
        timeout=RUN_TIMEOUT_S,
    )
    assert response.status_code == 200, f"{response.text}\n{_log_tail(server.log)}"
    output = response.json()
    assert output.get("answer") == AGGREGATOR_REPLY, f"{output}\n{_log_tail(server.log)}"
    assert output["trace"] == FAKE_TRACE
    assert output["models_used"] == ["a", "b", "c", "agg"]
    assert [(call["node"], call["model"], call["status"]) for call in output["calls"]] == [
        ("layer1", "a", "ok"),
        ("layer1", "b", "ok"),
        ("layer1", "c", "ok"),
        ("aggregate", "agg", "ok"),
    ]
    assert output["run"]["mix"] == "fake_moa" and output["run"]["run_id"]
    assert set(output) <= {
        "answer",
        "tool_calls",
        "answered_by",
        "models_used",
        "calls",
        "trace",
        "run",
    }  # the output schema, not the full state
