from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from routing_fakes import routing_lines, write_lines

from moai.scorer.data.routing import load, split, split_rows
from moai.scorer.data.texts import query_texts, shared_prefix


def line(qid: str, model: str, score: float = 1.0, cost: float | None = None, **kw: object) -> dict[str, object]:
    return {"id": qid, "prompt": f"prompt {qid}", "task": "t", "model": model, "score": score, "cost": cost, **kw}


def test_loads_gzip_and_plain_files_into_one_matrix(tmp_path: Path) -> None:
    a = write_lines(tmp_path / "a.jsonl.gz", [line("q1", "m1", 0.5, 0.01), line("q1", "m2", 1.0, 0.02)])
    b = write_lines(tmp_path / "b.jsonl", [line("q1", "m2", 0.0), line("q2", "m3", 0.25)])
    data = load([a, b])
    assert data.ids == ("q1", "q1", "q2")
    assert data.sources == (str(a), str(b), str(b))
    assert data.models == ("m1", "m2", "m3")
    np.testing.assert_array_equal(data.scores, [[0.5, 1.0, np.nan], [np.nan, 0.0, np.nan], [np.nan, np.nan, 0.25]])
    np.testing.assert_array_equal(data.costs[0], [0.01, 0.02, np.nan])
    assert np.isnan(data.costs[1:]).all()
    assert data.has_costs


def test_holes_stay_nan_and_a_file_given_twice_is_read_once(tmp_path: Path) -> None:
    f = write_lines(tmp_path / "d.jsonl", [line("q1", "m1"), line("q1", "m2", 0.0), line("q2", "m1", 0.0)])
    data = load([f, f])
    assert len(data) == 2
    assert np.isnan(data.scores[1, 1])
    assert not data.has_costs


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"id": "q", "prompt": "p", "task": "t", "model": "m", "score": 1}), "missing field(s) cost"),
        (json.dumps(line("q9", "m", 1.5)), "'score' must be a number in [0, 1]"),
        (json.dumps(line("q9", "m", True)), "'score' must be a number in [0, 1]"),
        (json.dumps(line("q9", "m", 1.0, -1.0)), "'cost' must be a non-negative number or null"),
        (json.dumps(line("", "m")), "'id' must be a non-empty string"),
        (json.dumps(line("q1", "m1")), "already has a line for id 'q1' (line 1)"),
    ],
)
def test_a_malformed_line_names_file_line_and_problem(tmp_path: Path, bad: str, message: str) -> None:
    f = write_lines(tmp_path / "bad.jsonl.gz", [line("q1", "m1"), "", bad])
    with pytest.raises(ValueError) as err:
        load(f)
    assert f"{f}:3: " in str(err.value)
    assert message in str(err.value)


def test_an_empty_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no routing lines"):
        load(write_lines(tmp_path / "empty.jsonl", []))


def test_lines_that_disagree_on_the_prompt_keep_the_majority(tmp_path: Path) -> None:
    f = write_lines(
        tmp_path / "d.jsonl",
        [line("q1", "m1", prompt="doubled doubled"), line("q1", "m2", prompt="once"), line("q1", "m3", prompt="once")],
    )
    assert load(f).prompts == ("once",)


def test_ids_naming_train_and_test_split_the_file_by_id(tmp_path: Path) -> None:
    f = write_lines(
        tmp_path / "d.jsonl",
        [line(q, m) for q in ("mmlu_train-3", "MMLU_TEST-17", "gsm8k-test-1", "mbpp-4", "train_test-5") for m in "ab"],
    )
    train, test = split(load(f), [f], [f], seed=0)
    assert train.ids == ("mmlu_train-3",)
    assert test.ids == ("MMLU_TEST-17", "gsm8k-test-1")


def test_other_ids_split_80_20_by_id_seeded(tmp_path: Path) -> None:
    f = write_lines(tmp_path / "d.jsonl", routing_lines(100, ids="plain"))
    data = load(f)
    train, test = split(data, [f], [f], seed=1)
    assert (len(train), len(test)) == (80, 20)
    assert not set(train.ids) & set(test.ids)
    again = split(data, [f], [f], seed=1)[1].ids
    other = split(data, [f], [f], seed=2)[1].ids
    assert again == test.ids
    assert other != test.ids
    # Every line of a query goes where its id goes: no query is split across sides.
    assert not np.isnan(test.scores).any()


def test_different_files_train_on_one_and_drop_test_ids_seen_in_train(tmp_path: Path) -> None:
    a = write_lines(tmp_path / "a.jsonl", [line(q, "m") for q in ("q1", "q2")])
    b = write_lines(tmp_path / "b.jsonl", [line(q, "m") for q in ("q2", "q3")])
    data = load([a, b])
    train_rows, test_rows = split_rows(data, [a], [b])
    assert [data.ids[i] for i in train_rows] == ["q1", "q2"]
    assert [data.ids[i] for i in test_rows] == ["q3"]
    with pytest.raises(ValueError, match="not among the loaded files"):
        split(load(a), [a], [b])


def test_query_texts_drop_the_few_shot_blocks_a_task_shares() -> None:
    shots = "Q: 1+1?\nA: 2\n\nQ: 2+2?\nA: 4\n\n"
    prompts = [shots + "Q: 3+3?\nA:", shots + "Q: 5+5?\nA:", "Question: alone", "Question: too"]
    tasks = ["math", "math", "other", "other"]
    assert shared_prefix(prompts[:2]) == shots
    assert query_texts(prompts, tasks) == ["Q: 3+3?\nA:", "Q: 5+5?\nA:", "Question: alone", "Question: too"]
    assert query_texts([shots], ["solo"]) == [shots]
