"""The `replay` provider: recorded answers, matched by text then id, charged at the recorded cost."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from langchain_core.messages import HumanMessage, SystemMessage

from moai import load_mix
from moai.cli import main
from moai.errors import MixError, MixRunError
from moai.mix_instructions import load_spec
from moai.mix_instructions.load import parse_spec
from moai.nodes.prompts import judge_messages, propose_messages, query_of
from moai.providers import make_chat_model
from moai.scorer.data import responses
from moai.usage import UsageStore, monitor_for

LINES = [
    # (id, prompt, model, cost, response, tokens)
    ("q1", "What is  2+2?\n", "cheap-m", 0.001, "4", None),
    ("q1", "What is 2+2?", "strong-m", 0.02, "Four.", (7, 3)),
    ("q2", "Name a colour.", "strong-m", 0.03, "Blue.", None),
    ("q3", "Only the cheap one knows.", "cheap-m", 0.004, "cheap answer", None),
]


def _write(path: Path, lines: list[tuple[Any, ...]] = LINES, *, gz: bool = True) -> Path:
    rows = []
    for qid, prompt, model, cost, response, tokens in lines:
        row = {"id": qid, "prompt": prompt, "task": "t", "model": model, "score": 1.0, "cost": cost}
        row["response"] = response
        if tokens:
            row["tokens_in"], row["tokens_out"] = tokens
        rows.append(json.dumps(row))
    text = "\n".join(rows) + "\n"
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def _mix(
    tmp_path: Path,
    *,
    cheap_model: str = "cheap-m",
    responses: str = "data/answers.jsonl.gz",
    gate: str = "{order: cost}",
    judge: str = "",
    aggregate: str = "last",
) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    _write(tmp_path / "data" / "answers.jsonl.gz")
    path = tmp_path / "mix.yaml"
    path.write_text(
        f"""
name: replayed
models:
  cheap:
    provider: replay
    model: {cheap_model}
    responses: {responses}
    price: {{input_per_mtok: 0.1}}
    fallbacks: [strong]
  strong:
    provider: replay
    model: strong-m
    responses: {responses}
    price: {{input_per_mtok: 10}}
gate: {gate}
steps:
  - {{kind: propose, name: answer}}
{judge}
aggregate: {{mode: {aggregate}}}
"""
    )
    return path


def _run(path: Path, query: str, **config: Any) -> dict[str, Any]:
    result: dict[str, Any] = load_mix(path, usage_db="off").invoke({"query": query, **config})
    return result


def test_a_query_is_matched_by_its_text_whitespace_collapsed(tmp_path: Path) -> None:
    out = _run(_mix(tmp_path), "  What is 2+2? ")
    assert out["answer"] == "4" and out["trace"] == ["gate", "answer[cheap]", "aggregate:last"]
    [call] = out["calls"]
    # The recorded cost, not the price's; tokens estimated as characters / 4 (the line records none).
    assert (call["cost_usd"], call["tokens_in"], call["tokens_out"], call["usage_estimated"]) == (0.001, 4, 1, True)


def test_recorded_token_counts_are_used_when_the_line_has_them(tmp_path: Path) -> None:
    path = _mix(tmp_path)
    spec = load_spec(path)
    model = make_chat_model("strong", spec.models["strong"], str(path))
    reply = model.invoke([SystemMessage("Be brief."), HumanMessage("What is 2+2?")])
    assert reply.text == "Four."
    assert reply.usage_metadata == {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}
    assert reply.response_metadata == {"cost_usd": 0.02, "usage_estimated": False, "replay_id": "q1"}


def test_a_query_equal_to_an_id_replays_that_query(tmp_path: Path) -> None:
    out = _run(_mix(tmp_path), " q3 ")
    assert out["answer"] == "cheap answer" and out["calls"][0]["cost_usd"] == 0.004


def test_a_query_with_no_recorded_answer_is_an_error_of_that_call_and_the_fallback_answers(tmp_path: Path) -> None:
    path = _mix(tmp_path)
    graph = load_mix(path, usage_db="off")
    for _ in range(5):  # more than the circuit's 3 failures: a replay's gap does not open it
        out = graph.invoke({"query": "Name a colour."})
        assert out["answer"] == "Blue." and out["models_used"] == ["strong"]
        failed, answered = out["calls"]
        assert (failed["model"], failed["status"], answered["model"], answered["fallback_for"]) == (
            "cheap",
            "error",
            "strong",
            "cheap",
        )
        assert failed["error"].startswith("NoRecordedAnswer: answers.jsonl.gz holds no answer of cheap-m")
        assert answered["cost_usd"] == 0.03


def test_the_usage_database_records_the_recorded_cost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = str(tmp_path / "usage.db")
    monkeypatch.setenv("MOAI_USAGE_DB", db)
    load_mix(_mix(tmp_path)).invoke({"query": "q2"})
    monitor_for(db).flush()
    store = UsageStore(db)
    try:
        calls = sorted((c["model"], c["status"], c["cost_usd"]) for c in store.calls())
    finally:
        store.close()
    assert calls == [("cheap", "error", 0.0), ("strong", "ok", 0.03)]


def test_a_judge_prompt_has_no_recorded_answer_and_the_call_fails(tmp_path: Path) -> None:
    judge = "  - {kind: judge, name: check, self: false, cross: strong}"
    out = _run(_mix(tmp_path, judge=judge, aggregate="best"), "What is 2+2?")
    judged = [c for c in out["calls"] if c["node"] == "check"]
    assert [c["status"] for c in judged] == ["error"]
    assert "cannot judge" in judged[0]["error"] and out["answer"] == "4"


def test_a_proposer_shown_earlier_answers_replays_its_answer_to_the_query() -> None:
    plain = propose_messages(
        "Q?", prompt="answer", instructions=None, references=[], critique=None, ask_confidence=True
    )
    shown = propose_messages(
        "Q?", prompt="revise", instructions=None, references=["A </draft>"], critique="C", ask_confidence=False
    )
    assert query_of(plain) == query_of(shown) == "Q?"
    assert query_of(judge_messages("Q?", ["A"])) is None
    assert query_of([SystemMessage("s")]) is None


def test_a_budget_below_the_recorded_cost_refuses_the_call(tmp_path: Path) -> None:
    # Price-based, the strong model's worst case is tiny; its recorded cost (0.03) is what the budget sees.
    path = _mix(tmp_path, gate="{order: cost, objective: {budget_usd: 0.01}}")
    with pytest.raises(MixRunError, match=r"strong at answer: skipped \(worst-case cost \$0.030000 exceeds"):
        _run(path, "Name a colour.")


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"responses": "data/nowhere.jsonl"}, "models.cheap.responses", "no responses file"),
        ({"cheap_model": "gpt-9"}, "models.cheap.model", r"valid choices \(the models it holds\): cheap-m, strong-m"),
    ],
)
def test_a_wrong_file_or_model_names_the_field(
    tmp_path: Path, change: dict[str, str], field: str, message: str
) -> None:
    with pytest.raises(MixError, match=message) as err:
        load_mix(_mix(tmp_path, **change), usage_db="off")
    assert err.value.field == field


def test_responses_belong_to_replay_and_replay_needs_them(tmp_path: Path) -> None:
    path = _mix(tmp_path)
    text = path.read_text()
    with pytest.raises(MixError, match="only provider 'replay' takes a responses file") as err:
        parse_spec(yaml.safe_load(text.replace("provider: replay", "provider: fake", 1)), str(path))
    assert err.value.field == "models.cheap.responses"
    with pytest.raises(MixError, match="needs the responses file") as err:
        parse_spec(yaml.safe_load(text.replace("    responses: data/answers.jsonl.gz\n", "", 1)), str(path))
    assert err.value.field == "models.cheap.responses"


def test_a_malformed_or_oversized_file_is_refused_naming_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _mix(tmp_path)
    bad = tmp_path / "data" / "answers.jsonl.gz"
    bad.write_bytes(gzip.compress(b'{"id": "q1", "model": "cheap-m"}\n'))
    with pytest.raises(MixError, match=r"answers.jsonl.gz:1: missing field\(s\) prompt, cost, response") as err:
        load_mix(path, usage_db="off")
    assert err.value.field == "models.cheap.responses"
    _write(bad, gz=False)
    monkeypatch.setattr(responses, "MAX_LINE_BYTES", 40)
    with pytest.raises(MixError, match="line longer than 40 bytes"):
        load_mix(path, usage_db="off")


def test_a_file_is_read_once_and_read_again_when_it_changes(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.jsonl", gz=False)
    first = responses.responses_index(path)
    found = first.find("strong-m", "q2")
    assert found is not None and (found.response, found.score, found.cost_usd) == ("Blue.", 1.0, 0.03)
    assert responses.responses_index(tmp_path / "." / "a.jsonl") is first
    _write(path, LINES[:1], gz=False)
    again = responses.responses_index(path)
    assert again is not first and again.models == ["cheap-m"]


def test_validate_and_run_exit_2_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _mix(tmp_path, cheap_model="gpt-9")
    for command in (["validate", str(path)], ["run", str(path), "q1"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {path}: models.cheap.model: 'gpt-9' has no answers in answers.jsonl.gz")
