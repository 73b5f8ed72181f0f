"""`read: [logprob]` against a real OpenAI-compatible server: llama-cpp-python's, which returns logprobs.

The server (`python -m llama_cpp.server`, SmolLM2-135M-Instruct, on a free loopback port) is started with
`--logits_all True`, without which it refuses a request for log-probabilities. A mix whose judge reads
logprob asks it for `logprobs` and two `top_logprobs`; the judge's score is the one the server's figures give.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python's server extra (fastapi, ...)")

from _faults import FaultProxy
from langgraph.checkpoint.memory import InMemorySaver
from test_openai_server import LlamaServer, start_server

from moai.api import build_mix
from moai.mix_instructions.load import parse_spec
from moai.scorer.logprob import logprob_score, logprob_stats

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def logprob_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    server = start_server(tmp_path_factory.mktemp("logprob_server") / "server.log", "--logits_all", "True")
    try:
        yield server
    finally:
        server.stop()


def test_the_judge_scores_the_servers_logprobs(logprob_server: LlamaServer) -> None:
    proxy = FaultProxy("127.0.0.1", logprob_server.port).start()
    try:
        spec = parse_spec(
            {
                "name": "logprob_server",
                "models": {
                    "server": {
                        "provider": "openai",
                        "model": "smollm2",
                        "base_url": f"{proxy.url}/v1",
                        "privacy": "private_cloud",
                        "max_tokens": 24,
                        "timeout_s": 60,
                    }
                },
                "gate": {"candidates": ["server"], "top_k": 1},
                "steps": [
                    {"kind": "propose", "name": "answer"},
                    {"kind": "judge", "name": "grade", "self": False, "cross": None, "read": ["logprob"]},
                ],
                "aggregate": {"mode": "best"},
            }
        )
        graph = build_mix(spec).compile(checkpointer=InMemorySaver())
        config: Any = {"configurable": {"thread_id": "t"}}

        async def go() -> dict[str, Any]:
            await asyncio.wait_for(graph.ainvoke({"query": "What is the capital of France?"}, config), 120)
            return dict((await graph.aget_state(config)).values)

        state = asyncio.run(go())
        [exchange] = proxy.chat_exchanges()
        request, response = exchange.request_json(), exchange.response_json()
    finally:
        proxy.stop()
    assert (request["logprobs"], request["top_logprobs"]) == (True, 2)
    served = response["choices"][0]["logprobs"]
    assert served["content"] and all(len(entry["top_logprobs"]) == 2 for entry in served["content"])
    [verdict] = state["verdicts"]
    expected = logprob_score(logprob_stats(served))
    assert expected is not None and 0 < expected <= 1
    assert verdict["read_scores"] == {"logprob": pytest.approx(expected)}
    assert state["proposals"][0]["logprob"] == logprob_stats(served)
