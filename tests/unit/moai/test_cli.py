from __future__ import annotations

import json
from pathlib import Path

import pytest

from moai.cli import main
from moai.mix_instructions import bundled_mixes, json_schema

FAKE_MIX = """
name: fake
models:
  a: {provider: fake, model: a, quality: 0.7, price: {input_per_mtok: 1, output_per_mtok: 2}, replies: ["Paris."]}
  b: {provider: fake, model: b, quality: 0.4, replies: ["!fail down"]}
gate: {top_k: 1}
steps:
  - {kind: propose, name: answer}
"""


@pytest.fixture
def fake_mix(tmp_path: Path) -> Path:
    path = tmp_path / "fake.yaml"
    path.write_text(FAKE_MIX, encoding="utf-8")
    return path


def test_run_with_a_thread_continues_the_conversation_in_sqlite(
    fake_mix: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MOAI_THREADS_DB", str(tmp_path / "threads.db"))
    runs = []
    for query in ("first question", "second question"):
        assert main(["run", str(fake_mix), query, "--thread", "t1", "--json"]) == 0
        runs.append(json.loads(capsys.readouterr().out))
    assert runs[0]["run"]["thread_id"] == "t1" and runs[0]["run"]["run_id"] != runs[1]["run"]["run_id"]
    # The second turn's prompt carries the first question and answer: 2 + 1 words more.
    assert runs[1]["calls"][0]["tokens_in"] == runs[0]["calls"][0]["tokens_in"] + 3
    assert (tmp_path / "threads.db").is_file()


def test_run_prints_the_answer_then_models_tokens_cost_and_path(
    fake_mix: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(fake_mix), "What is the capital of France?"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Paris."
    assert out[2] == "path: gate -> answer[a] -> aggregate:best"
    assert out[3].split() == ["node", "model", "status", "tokens", "in", "tokens", "out", "latency", "s", "cost", "$"]
    row = out[4].split()
    # The fake counts words: 11 of the system prompt + 6 of the question in, 1 out; 17 * $1/M + 1 * $2/M.
    assert row[:5] == ["answer", "a", "ok", "17", "1"] and row[6] == "0.000019"
    assert out[5].split()[:3] == ["total", "a", "1"]


def test_run_json_gives_the_whole_result(fake_mix: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(fake_mix), "Q", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["answer"] == "Paris." and result["models_used"] == ["a"]


def test_run_stream_prints_the_answer(fake_mix: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(fake_mix), "Q", "--stream"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "Paris."


def test_run_that_no_model_can_answer_exits_1_listing_what_was_tried(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "down.yaml"
    path.write_text(FAKE_MIX.replace('replies: ["Paris."]', 'replies: ["!fail timeout"], fallbacks: [b]'))
    assert main(["run", str(path), "Q"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: mix 'fake': no model answered; tried a at answer: error (RuntimeError: timeout); "
        "b at answer: error (RuntimeError: down)"
    )


def test_bad_mix_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(FAKE_MIX.replace("top_k: 1", "top_k: 5"))
    assert main(["run", str(path), "Q"]) == 2
    assert capsys.readouterr().err == f"error: {path}: gate.top_k: 5 exceeds the 2 candidate models (valid: 1 to 2)\n"


@pytest.mark.parametrize(
    ("flags", "field", "message"),
    [
        (["--budget", "nan"], "gate.objective.budget_usd", "must be a finite number >= 0 (got nan)"),
        (["--budget", "inf"], "gate.objective.budget_usd", "must be a finite number >= 0 (got inf)"),
        (["--budget", "-1"], "gate.objective.budget_usd", "Input should be greater than or equal to 0 (got -1.0)"),
        (["--top-k", "0"], "gate.top_k", "Input should be greater than or equal to 1 (got 0)"),
        (["--top-k", "99"], "gate.top_k", "99 exceeds the 2 candidate models (valid: 1 to 2)"),
    ],
)
def test_run_flags_are_validated_as_the_file_is(
    fake_mix: Path, capsys: pytest.CaptureFixture[str], flags: list[str], field: str, message: str
) -> None:
    # --budget nan used to spend as if there were no budget; the same values in the file were refused.
    assert main(["run", str(fake_mix), "Q", *flags]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"error: {fake_mix} with {' '.join(flags)}: {field}: {message}\n")


def test_run_flags_are_checked_against_each_arm_of_a_split(capsys: pytest.CaptureFixture[str]) -> None:
    from moai.mix_instructions.load import BUNDLED_DIR

    assert main(["run", "ab", "Q", "--top-k", "3"]) == 2
    route = BUNDLED_DIR / "route.yaml"
    assert capsys.readouterr().err == (
        f"error: {route} with --top-k 3: gate.top_k: 3 exceeds the 2 candidate models (valid: 1 to 2)\n"
    )


def test_valid_run_flags_still_apply(fake_mix: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(fake_mix), "Q", "--budget", "0"]) == 1
    assert "no model answered" in capsys.readouterr().err  # the budget refused the only call
    assert main(["run", str(fake_mix), "Q", "--budget", "1", "--top-k", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["models_used"] == ["a"]


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_run_refuses_an_empty_question(fake_mix: Path, capsys: pytest.CaptureFixture[str], query: str) -> None:
    assert main(["run", str(fake_mix), query]) == 2
    assert capsys.readouterr() == ("", "error: QUERY: the question is empty: give the text to answer\n")


def test_run_refuses_stream_with_json(fake_mix: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Both on stdout, the streamed tokens made the JSON unparsable; the JSON's "answer" holds them anyway.
    assert main(["run", str(fake_mix), "Q", "--stream", "--json"]) == 2
    assert capsys.readouterr() == (
        "",
        "error: --stream and --json cannot be combined: --json prints one JSON document\n",
    )


def test_a_flag_argparse_refuses_is_one_line(fake_mix: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(fake_mix), "Q", "--top-k", "two"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "error: moai run: argument --top-k: invalid int value: 'two' (see moai run --help)\n"
    )


@pytest.mark.parametrize("name", bundled_mixes())
def test_graph_prints_mermaid_with_every_step(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    from moai.mix_instructions import MixSpec, load_any

    assert main(["graph", name]) == 0
    out = capsys.readouterr().out
    assert out.lstrip("-\n ").startswith("config:") and "graph TD;" in out
    spec = load_any(name)
    nodes = ["gate", "aggregate", *(s.name for s in spec.steps)] if isinstance(spec, MixSpec) else list(spec.split.arms)
    for node in nodes:
        assert f"\t{node}(" in out


def test_list_names_every_bundled_mix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == bundled_mixes()


def test_shipped_json_schema_is_current(capsys: pytest.CaptureFixture[str]) -> None:
    shipped = Path(__file__).parents[3] / "mix_instructions" / "mix.schema.json"
    assert json.loads(shipped.read_text(encoding="utf-8")) == json_schema(), "run `make schema`"
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json_schema()


def test_an_override_file_points_a_bundled_mix_at_other_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    override = tmp_path / "pool.yaml"
    override.write_text(
        "models:\n"
        "  smol: {provider: fake, replies: ['from the override']}\n"
        "  gemma: {provider: fake, replies: ['unused']}\n",
        encoding="utf-8",
    )
    assert main(["run", "route", "Q", "--override", str(override)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "from the override"
    assert out[2] == "path: gate -> answer[smol] -> aggregate:best"


def test_a_wrong_override_names_both_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    override = tmp_path / "pool.yaml"
    override.write_text("models:\n  smol: {provider: openia}\n", encoding="utf-8")
    assert main(["run", "route", "Q", "--override", str(override)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"route.yaml + {override}: models.smol.provider: " in err
