"""Every bundled mix answers a real question on the embedded local models: no key, no network."""

from __future__ import annotations

import pytest

from moai.api import load_mix
from moai.cli import main
from moai.mix_instructions import bundled_mixes

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", bundled_mixes())
async def test_bundled_mix_answers_on_the_local_pool(name: str) -> None:
    result = await load_mix(name).ainvoke({"query": "What is the capital of France?"})
    assert result["answer"].strip()
    trace = [step for step in result["trace"] if not step.startswith("split:")]  # an A/B split's arm comes first
    assert trace[0] == "gate" and trace[-1].startswith("aggregate:")
    ok = [call for call in result["calls"] if call["status"] == "ok"]
    assert ok and all(call["provider"] == "local" and call["tokens_in"] > 0 for call in ok)
    assert result["models_used"] == list(dict.fromkeys(call["model"] for call in ok))
    assert all(call["cost_usd"] == 0 for call in result["calls"])


def test_cli_streams_a_local_answer(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "route", "What is the capital of France?", "--stream"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].strip()
    assert out[2] in {"path: gate -> answer[smol] -> aggregate:best", "path: gate -> answer[gemma] -> aggregate:best"}
