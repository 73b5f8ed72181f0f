"""`moai usage export` and `moai feedback`, and the learning loop: feedback -> export -> train -> gate."""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import fake_bundled

import moai
import moai.cli.scorer
import moai.scorer.predictors.base
from moai.cli import main
from moai.scorer.checkpoint import load, read_metadata
from moai.scorer.data.routing import load as load_routing
from moai.usage import UsageStore, monitor_for, record_feedback
from moai.usage.export import feedback_lines
from moai.usage.report import read_usage

T0 = 1_750_000_000.0


class BagOfWords:
    """A deterministic hashing encoder (no weights) standing in for the sentence encoder."""

    name = "test-bow-32"

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), 32), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i] += np.random.default_rng(zlib.crc32(word.encode())).normal(size=32).astype(np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = str(tmp_path / "usage.db")
    monkeypatch.setenv("MOAI_USAGE_DB", path)
    monkeypatch.setenv("MOAI_CACHE_DIR", str(tmp_path / "cache"))  # never the user's embedding cache
    return path


def write(db: str, runs: Sequence[dict[str, Any]], calls: Sequence[dict[str, Any]]) -> None:
    store = UsageStore(db)
    try:
        store.write([("run", r) for r in runs] + [("call", c) for c in calls])
    finally:
        store.close()


def run_row(run_id: str, used: list[str] | None, ts: float = T0, mix: str = "m") -> dict[str, Any]:
    return {"run_id": run_id, "ts": ts, "mix": mix, "query": f"q {run_id}", "status": "ok", "models_used": used}


def call_row(run_id: str, model: str, cost: float, status: str = "ok", ts: float = T0) -> dict[str, Any]:
    return {"run_id": run_id, "ts": ts, "mix": "m", "model": model, "status": status, "cost_usd": cost}


@pytest.fixture
def hand_made(db: str) -> str:
    runs = [
        run_row("r1", ["a", "b"]),
        run_row("r2", ["b"], ts=T0 + 1),
        run_row("r3", ["a"], ts=T0 + 2),  # no feedback: not exported
        run_row("r4", None, ts=T0 + 3, mix="n"),  # an unfinished run: the models with an ok call answered
    ]
    calls = [
        call_row("r1", "a", 0.01),
        call_row("r1", "a", 0.002),
        call_row("r1", "b", 0.03),
        call_row("r2", "a", 0.004, status="error"),  # failed: a did not answer r2
        call_row("r2", "b", 0.02),
        call_row("r3", "a", 0.01),
        call_row("r4", "c", 0.5),
    ]
    write(db, runs, calls)
    for run_id, score in [("r1", 1.0), ("r1", 0.5), ("r2", 0.0), ("r4", 0.25)]:
        record_feedback(run_id, score, db=db)
    return db


def test_one_line_per_run_and_answering_model(hand_made: str) -> None:
    lines = feedback_lines(read_usage(hand_made))
    assert lines == [
        {"id": "r1", "prompt": "q r1", "task": "m", "model": "a", "score": 0.75, "cost": pytest.approx(0.012)},
        {"id": "r1", "prompt": "q r1", "task": "m", "model": "b", "score": 0.75, "cost": 0.03},
        {"id": "r2", "prompt": "q r2", "task": "m", "model": "b", "score": 0.0, "cost": 0.02},
        {"id": "r4", "prompt": "q r4", "task": "n", "model": "c", "score": 0.25, "cost": 0.5},
    ]
    assert [list(line) for line in lines] == [["id", "prompt", "task", "model", "score", "cost"]] * 4


def test_cli_export_writes_routing_jsonl_the_scorer_reads(
    hand_made: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "data" / "routing.jsonl"
    assert main(["usage", "export", "--feedback", "--out", str(out)]) == 0
    assert capsys.readouterr().err == f"wrote 4 routing lines to {out}\n"
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(x["id"], x["model"]) for x in lines] == [("r1", "a"), ("r1", "b"), ("r2", "b"), ("r4", "c")]
    data = load_routing(out)
    assert data.ids == ("r1", "r2", "r4") and data.models == ("a", "b", "c") and data.tasks == ("m", "m", "n")
    assert np.isnan(data.scores[1, 0]) and data.scores[0, 1] == 0.75
    # --feedback is the default; standard output without --out; --since filters by run start.
    assert main(["usage", "export", "--since", "2020-01-01"]) == 0
    assert capsys.readouterr().out == out.read_text()
    assert main(["usage", "export", "--since", "2999-01-01", "--out", str(out)]) == 0
    assert "no run in this period has feedback yet" in capsys.readouterr().err and out.read_text() == ""


def test_cli_export_without_a_database_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.delenv("MOAI_USAGE_DB", raising=False)
    assert main(["usage", "export", "--db", str(tmp_path / "nope.db")]) == 2
    assert capsys.readouterr().err.startswith(f"error: no usage database at {tmp_path / 'nope.db'}")


def test_feedback_cli_stores_the_score(hand_made: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["feedback", "r3", "0.9", "--comment", "good answer"]) == 0
    assert capsys.readouterr().out == "recorded feedback 0.9 for run r3\n"
    store = UsageStore(hand_made)
    try:
        row = store.feedback()[-1]
    finally:
        store.close()
    assert (row["run_id"], row["score"], row["comment"]) == ("r3", 0.9, "good answer")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nope", "0.5"], "error: no run 'nope' in the usage database {db}\n"),
        (["r1", "1.5"], "error: feedback score must be in [0, 1], got 1.5\n"),
        (["r1", "-0.1"], "error: feedback score must be in [0, 1], got -0.1\n"),
        (["r1", "nan"], "error: feedback score must be in [0, 1], got nan\n"),
    ],
)
def test_feedback_cli_bad_input_exits_2_in_one_line(
    hand_made: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["feedback", *argv]) == 2
    assert capsys.readouterr().err == message.format(db=hand_made)


def test_feedback_cli_rejects_a_score_that_is_not_a_number(hand_made: str, capsys: Any) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["feedback", "r1", "great"])
    assert exit_info.value.code == 2 and "invalid float value: 'great'" in capsys.readouterr().err


def test_feedback_cli_with_the_monitor_off(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv("MOAI_USAGE_DB", "off")
    assert main(["feedback", "r1", "0.5"]) == 2
    assert "the usage monitor is off" in capsys.readouterr().err


MATH = ["sum", "integer", "divide", "algebra", "fraction"]
HISTORY = ["king", "war", "empire", "century", "treaty"]


def test_learning_loop_feedback_export_train_and_route(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Real runs, users' feedback, export, `moai scorer train`, and the trained checkpoint back in a gate."""
    encoder = BagOfWords()
    monkeypatch.setattr(moai.cli.scorer, "_encoder", lambda name, truncate: encoder)
    monkeypatch.setattr(moai.scorer.predictors.base, "encoder_from_name", lambda name: encoder)
    # smol answers everything; gemma fails on every third call (smol stands in): its runs still differ.
    spec = fake_bundled("moa", {"gemma": ["gemma: {query}", "gemma: {query}", "!fail down"]})
    graph = moai.build_mix(spec, usage_db=db).compile()
    rng = np.random.default_rng(0)
    for i in range(40):
        topic = MATH if i % 2 == 0 else HISTORY
        result = graph.invoke({"query": " ".join(rng.choice(topic, size=5)) + f" #{i}"})
        assert monitor_for(db).flush()
        # Users like the answers to math questions and dislike the others.
        assert main(["feedback", result["run"]["run_id"], "0.9" if topic is MATH else "0.1"]) == 0
    data = tmp_path / "routing.jsonl"
    assert main(["usage", "export", "--out", str(data)]) == 0
    lines = [json.loads(line) for line in data.read_text().splitlines()]
    assert len({x["id"] for x in lines}) == 40 and {x["model"] for x in lines} == {"smol", "gemma"}
    assert {x["task"] for x in lines} == {"moa"} and {x["score"] for x in lines} == {0.9, 0.1}

    ckpt = tmp_path / "ckpt"
    argv = ["scorer", "train", "--data", str(data), "--method", "knn", "--out", str(ckpt), "--quiet"]
    assert main(argv) == 0
    assert f"checkpoint: {ckpt}" in capsys.readouterr().out
    meta = read_metadata(ckpt)
    assert meta["method"] == "knn" and set(meta["models"]) == {"smol", "gemma"}
    predictor = load(ckpt)
    math_q, history_q = "algebra sum integer divide fraction", "war empire treaty century king"
    (math_scores, history_scores) = predictor.predict([math_q, history_q], ["smol", "gemma"])
    assert math_scores[0] > 0.6 > 0.4 > history_scores[0]

    # The checkpoint is a gate's scorer: the mix now predicts from what users said.
    routed = spec.model_copy(update={"gate": spec.gate.model_copy(update={"scorer": str(ckpt)})})
    graph = moai.build_mix(routed, usage_db=db).compile()
    run_ids = [graph.invoke({"query": q})["run"]["run_id"] for q in (math_q, history_q)]
    assert monitor_for(db).flush()
    runs = {r["run_id"]: r for r in read_usage(db).runs}
    assert runs[run_ids[0]]["scores"]["smol"] > 0.6 > 0.4 > runs[run_ids[1]]["scores"]["smol"]
