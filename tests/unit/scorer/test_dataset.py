from __future__ import annotations

import json
from pathlib import Path

import pytest

from moai.cli import main
from moai.scorer.verifier import read_examples

MIX = """
name: pool
models:
  right: {provider: fake, model: r, price: {input_per_mtok: 1, output_per_mtok: 1}, replies: ["Answer: B", "Answer: 4"]}
  wrong: {provider: fake, model: w, replies: ["Answer: C", "Answer: 5"], fallbacks: [right]}
steps: [{kind: propose, name: answer}]
"""


@pytest.fixture
def qa(tmp_path: Path) -> tuple[Path, Path, Path]:
    mmlu = tmp_path / "mmlu"
    mmlu.mkdir()
    (mmlu / "arith_test.csv").write_text("question,choice0,choice1,choice2,choice3,answer\n2+2?,3,4,5,6,1\n")
    gsm8k = tmp_path / "gsm8k.jsonl"
    gsm8k.write_text(json.dumps({"question": "2+2?", "answer": "2 and 2\n#### 4"}) + "\n")
    mix = tmp_path / "pool.yaml"
    mix.write_text(MIX)
    return mix, mmlu, gsm8k


def test_every_model_answers_every_question_graded_in_the_uniform_format(
    qa: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    mix, mmlu, gsm8k = qa
    out = tmp_path / "routing.jsonl"
    assert (
        main(["dataset", "build", "--mix", str(mix), "--qa", str(mmlu), str(gsm8k), "--n", "5", "--out", str(out)]) == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["task"], r["model"], r["score"]) for r in rows] == [
        ("mmlu-arith-0", "mmlu-arith", "right", 1.0),
        ("mmlu-arith-0", "mmlu-arith", "wrong", 0.0),  # graded on its own answer: no fallback stands in
        ("gsm8k-0", "gsm8k", "right", 1.0),
        ("gsm8k-0", "gsm8k", "wrong", 0.0),
    ]
    assert rows[0]["cost"] > 0 and rows[1]["cost"] == 0
    assert set(rows[0]) == {"id", "prompt", "task", "model", "score", "cost", "response"}
    assert rows[0]["prompt"].startswith("2+2?\n\nA) 3\nB) 4")
    # Each answer's text too: the file is a responses file, which train-verifier reads as it is.
    assert [r["response"] for r in rows] == ["Answer: B", "Answer: C", "Answer: 4", "Answer: 5"]
    assert [(e.model, e.response, e.score) for e in read_examples([out])] == [
        (r["model"], r["response"], r["score"]) for r in rows
    ]


def test_an_interrupted_build_resumes_without_repeating_lines(qa: tuple[Path, Path, Path], tmp_path: Path) -> None:
    mix, mmlu, _ = qa
    out = tmp_path / "routing.jsonl"
    args = ["dataset", "build", "--mix", str(mix), "--qa", str(mmlu), "--out", str(out)]
    assert main([*args, "--models", "right"]) == 0
    assert main(args) == 0
    assert [(r["id"], r["model"]) for r in map(json.loads, out.read_text().splitlines())] == [
        ("mmlu-arith-0", "right"),
        ("mmlu-arith-0", "wrong"),
    ]
