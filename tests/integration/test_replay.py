"""The bundled `cascade` and `routemoa` mixes, replayed on real answers of real models (RouterBench).

Their models are swapped for replay models on the shared responses file (Mistral-7B as the cheap model,
GPT-4-1106 as the strong one, keeping the mixes' model names so their gates, fallbacks and scorer apply
as shipped); each run's answer must be the recorded text of the model that gave it, and each call's cost
the recorded cost of that model on that query.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from moai.api import mix_runtime
from moai.graphs.compile import build_graph
from moai.mix_instructions import load_spec
from moai.mix_instructions.schema import MixSpec
from moai.nodes.aggregate import best_proposal

pytestmark = pytest.mark.integration

# The shared data sits beside the checkout (../shared/data); MOAI_RESPONSES_DIR points elsewhere.
DATA = Path(os.environ.get("MOAI_RESPONSES_DIR", Path(__file__).resolve().parents[2].parent / "shared/data/responses"))
RESPONSES = DATA / "routerbench_train.jsonl.gz"
CHEAP, STRONG = "mistralai/mistral-7b-chat", "gpt-4-1106-preview"
QUERIES = 12

if not RESPONSES.is_file():
    pytest.skip(f"no shared responses data at {RESPONSES} (a clone without ../shared/data)", allow_module_level=True)


@pytest.fixture(scope="module")
def recorded() -> dict[str, dict[str, dict[str, Any]]]:
    """Return the first QUERIES ids both models answered: {id: {model: line}}, read apart from moai's index."""
    by_id: dict[str, dict[str, dict[str, Any]]] = {}
    with gzip.open(RESPONSES, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["model"] in (CHEAP, STRONG):
                by_id.setdefault(row["id"], {})[row["model"]] = row
    both = [i for i, rows in by_id.items() if len(rows) == 2]
    return {i: by_id[i] for i in both[:QUERIES]}


def replayed(name: str) -> MixSpec:
    """Return the bundled mix `name` with its two models replaying Mistral-7B (cheap) and GPT-4-1106."""
    spec = load_spec(name)
    cheap, strong = list(spec.models)  # both bundled mixes: the cheaper model first
    models = {
        cheap: spec.models[cheap].model_dump()
        | {"provider": "replay", "model": CHEAP, "responses": str(RESPONSES), "price": {"input_per_mtok": 0.2}},
        strong: spec.models[strong].model_dump()
        | {
            "provider": "replay",
            "model": STRONG,
            "responses": str(RESPONSES),
            "price": {"input_per_mtok": 10.0, "output_per_mtok": 30.0},
        },
    }
    return MixSpec.model_validate(spec.model_dump(by_alias=True) | {"models": models})


@pytest.mark.parametrize("mix", ["cascade", "routemoa"])
def test_bundled_mix_replays_recorded_answers(mix: str, recorded: dict[str, dict[str, dict[str, Any]]]) -> None:
    spec = replayed(mix)
    names = {m.model: name for name, m in spec.models.items()}
    graph = build_graph(mix_runtime(spec, f"<{mix} on replay>")).compile(checkpointer=InMemorySaver())
    for qid, rows in recorded.items():
        config = {"configurable": {"thread_id": f"{mix}-{qid}"}}
        out = graph.invoke({"query": rows[CHEAP]["prompt"]}, config)
        state = graph.get_state(config).values
        # The answer is the recorded text of the proposal the mix picked, and the trace names its model.
        best = best_proposal(state, state["proposals"])
        model = spec.models[best["model"]].model
        assert out["answer"] == rows[model]["response"].strip()  # as a proposal is: its ends stripped
        assert any(f"[{best['model']}" in entry for entry in out["trace"])
        # Every answered call is charged exactly the recorded cost of its model on this query.
        for call in out["calls"]:
            if call["status"] == "ok":
                assert call["provider"] == "replay"
                assert call["cost_usd"] == pytest.approx(rows[spec.models[call["model"]].model]["cost"], rel=1e-12)
                assert call["usage_estimated"]  # the file records no token counts: chars / 4
            else:
                # Only a judge's grading prompt (cross-assessment) has no recorded answer.
                assert call["node"] != "propose" and "NoRecordedAnswer" in (call["error"] or "")
        if mix == "cascade":  # cheapest first: the replay models' prices order the cascade
            assert out["trace"][1] == f"try[{names[CHEAP]}]"
