"""`moai bench cascade`, `moai calibrate` and `moai dataset split` on tiny synthetic responses files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from routing_fakes import FakeEncoder

import moai.calibrate
import moai.cascade_bench as bench
from moai.calibrate import calibrate
from moai.cli import main
from moai.mix_instructions import load_spec
from moai.replay_run import run_mix, summarise
from moai.scorer.data.split import fold_of, is_test_id, split_file

CHEAP_A, CHEAP_B, STRONG = "cheap-a", "cheap-b", "strong"
COSTS = {CHEAP_A: 0.0001, CHEAP_B: 0.0002, STRONG: 0.01}


def _lines(n: int) -> list[dict[str, Any]]:
    """Return n two-choice queries answered by three models: strong always right, the cheap ones 2 in 3."""
    rows = []
    for i in range(n):
        gold, wrong = ("A", "B") if i % 2 else ("B", "A")
        prompt = f"Question {i}: which one is number {i}?\nA) left {i}\nB) right {i}\nAnswer:"
        right = {CHEAP_A: i % 3 != 0, CHEAP_B: i % 3 != 1, STRONG: True}
        for model, ok in right.items():
            rows.append(
                {
                    "id": f"q{i}",
                    "prompt": prompt,
                    "task": "toy",
                    "model": model,
                    "score": 1.0 if ok else 0.0,
                    "cost": COSTS[model],
                    "response": f"Answer: {gold if ok else wrong}",
                }
            )
    return rows


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    whole = tmp_path / "all.jsonl.gz"
    with gzip.open(whole, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row) + "\n" for row in _lines(90))
    train, test = tmp_path / "train.jsonl.gz", tmp_path / "test.jsonl"
    split_file(whole, train, test, 0.3, seed=0)
    return train, test


@pytest.fixture
def small_grids(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeEncoder:
    monkeypatch.setattr(bench, "THRESHOLDS", (0.0, 0.6, 1.0))
    monkeypatch.setattr(bench, "ALPHAS", (0.0, 1.0))
    monkeypatch.setattr(bench, "PRIOR_WEIGHTS", (0.5,))
    monkeypatch.setattr(bench, "AGREEMENT_THRESHOLDS", (0.0, 1.0))
    monkeypatch.setattr(bench, "COMBINED_THRESHOLDS", (0.6, 1.0))
    monkeypatch.setenv("MOAI_CACHE_DIR", str(tmp_path / "cache"))
    encoder = FakeEncoder()
    # the gate's checkpoint names its encoder; the mix rebuilds it by name: the fake, here
    monkeypatch.setattr("moai.scorer.predictors.base.encoder_from_name", lambda name: encoder)
    monkeypatch.setattr("moai.scorer.encoders.encoder_from_name", lambda name: encoder)  # the verifier's
    monkeypatch.setattr(bench, "VERIFIER_THRESHOLDS", (0.0, 0.5, 1.0))
    return encoder


def _ids(path: Path) -> set[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return {json.loads(line)["id"] for line in fh if line.strip()}


def test_split_never_puts_one_id_in_both_parts_and_is_reproducible(tmp_path: Path) -> None:
    whole = tmp_path / "all.jsonl"
    whole.write_text("".join(json.dumps(row) + "\n" for row in _lines(200)), encoding="utf-8")
    a = split_file(whole, tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz", 0.2, seed=3)
    train, test = _ids(tmp_path / "a.jsonl"), _ids(tmp_path / "b.jsonl.gz")
    assert not train & test and train | test == {f"q{i}" for i in range(200)}
    assert a == (len(train), len(test)) and 20 <= len(test) <= 60
    assert test == {i for i in train | test if is_test_id(i, 0.2, 3)}
    # every line of a test id went to test: three models' lines each
    with gzip.open(tmp_path / "b.jsonl.gz", "rt") as fh:
        assert sum(1 for _ in fh) == 3 * len(test)
    split_file(whole, tmp_path / "c.jsonl", tmp_path / "d.jsonl.gz", 0.2, seed=3)
    assert (tmp_path / "d.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()


def test_folds_are_fixed_by_seed_and_id_and_about_equal() -> None:
    ids = [f"q{i}" for i in range(4000)]
    folds = [fold_of(i, 4, seed=0) for i in ids]
    assert folds == [fold_of(i, 4, seed=0) for i in ids] and folds != [fold_of(i, 4, seed=1) for i in ids]
    assert all(900 < folds.count(f) < 1100 for f in range(4))
    # salted apart from the test split: a train side still fills every fold
    train = [i for i in ids if not is_test_id(i, 0.5, seed=0)]
    assert {fold_of(i, 4, seed=0) for i in train} == {0, 1, 2, 3}


def test_bench_report_has_the_routing_keys_and_is_deterministic(
    data: tuple[Path, Path], small_grids: FakeEncoder, tmp_path: Path
) -> None:
    train, test = data
    first = bench.cascade_bench([train], [test], tmp_path / "w1", seed=0, jobs=1, concurrency=8, encoder=small_grids)
    second = bench.cascade_bench([train], [test], tmp_path / "w2", seed=0, jobs=1, concurrency=8, encoder=small_grids)
    assert set(first) >= {"setup", "models", "best_single", "oracle", "methods"}
    assert first["best_single"] == {"model": STRONG, "quality": 1.0, "cost": COSTS[STRONG]}
    assert first["oracle"]["quality"] == 1.0
    judges = {"form", "arithmetic", "code", "verifier", "combined"}
    assert set(first["methods"]) == {"best_single", "gate", "agreement"} | judges
    for entry in first["methods"].values():
        for key in ("quality", "cost", "curve", "cost_at_best_single_quality", "quality_at_best_single_cost", "mix"):
            assert key in entry
    # the agreement cascade: the cheap pair agree on a third of the queries (both right), else the strong model
    agreement = first["methods"]["agreement"]
    top = next(p for p in agreement["curve"] if p["threshold"] == 1.0)
    assert top["quality"] == 1.0 and top["cost"] < COSTS[STRONG]
    assert agreement["beats_best_single"] is (agreement["cost"] < COSTS[STRONG] and agreement["quality"] == 1.0)

    def stable(report: dict[str, Any]) -> dict[str, Any]:
        out = json.loads(json.dumps(report))
        for key in [k for k in out["setup"] if k.endswith("_s")] + ["scorer", "verifier"]:
            out["setup"].pop(key)
        for entry in out["methods"].values():
            entry.pop("run_s")
            entry["mix"] = entry["mix"].replace(str(tmp_path / "w2"), str(tmp_path / "w1"))
        return out

    assert stable(first) == stable(second)


def test_every_training_query_is_validated_by_what_never_saw_it(
    data: tuple[Path, Path], small_grids: FakeEncoder, tmp_path: Path
) -> None:
    train, test = data
    work = tmp_path / "w"
    report = bench.cascade_bench([train], [test], work, jobs=1, encoder=small_grids, quiet=True)
    n = report["setup"]["train_queries"]
    assert n == len(_ids(train)) and report["setup"]["folds"] == bench.FOLDS

    def taught(folder: str) -> int:
        return int(json.loads((work / folder / "verifier.json").read_text())["data"]["queries"])

    # each training query is in the training data of every fold's verifier but its own; the final one has all
    assert sum(taught(f"verifier-fold{f}") for f in range(bench.FOLDS)) == (bench.FOLDS - 1) * n
    assert taught("verifier") == n
    for entry in report["methods"].values():
        assert len(entry["validation_curve"]) == len(entry["curve"])
        assert all(0.0 <= p["quality"] <= 1.0 for p in entry["validation_curve"])


def test_a_method_mix_reruns_as_written(data: tuple[Path, Path], small_grids: FakeEncoder, tmp_path: Path) -> None:
    train, test = data
    report = bench.cascade_bench([train], [test], tmp_path / "w", jobs=1, encoder=small_grids, quiet=True)
    entry = report["methods"]["agreement"]
    mix = tmp_path / "agreement.yaml"
    mix.write_text(entry["mix"], encoding="utf-8")
    assert load_spec(mix).models[STRONG].provider == "replay"
    queries = [(qid, prompt) for qid, prompt in _queries(test)]
    again = summarise(run_mix(mix, queries), [STRONG])
    assert again["quality"] == pytest.approx(entry["quality"]) and again["cost"] == pytest.approx(entry["cost"])


def _queries(path: Path) -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        seen.setdefault(row["id"], row["prompt"])
    return list(seen.items())


@pytest.fixture(autouse=True)
def small_calibration_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(moai.calibrate, "JUDGE_GRID", (0.0, 0.25, 0.5, 0.75, 1.0))


def _cascade_mix(tmp_path: Path) -> Path:
    mix = {
        "name": "toy",
        "models": {
            "a": {"provider": "openai", "model": CHEAP_A, "price": {"input_per_mtok": 0.1}, "quality": 0.66},
            "b": {"provider": "openai", "model": CHEAP_B, "price": {"input_per_mtok": 0.2}, "quality": 0.66},
            "s": {"provider": "openai", "model": STRONG, "price": {"input_per_mtok": 10.0}, "quality": 1.0},
        },
        "gate": {"order": "cost", "top_k": 2},
        "steps": [
            {"kind": "propose", "name": "try"},
            {
                "kind": "judge",
                "name": "check",
                "self": False,
                "cross": None,
                "read": ["agreement"],
                "prior_weight": 0,
                "stop_when": {"score_at_least": 0.5, "max_rounds": 2},
                "otherwise": "try",
                "then_select": "next",
            },
        ],
        "aggregate": {"mode": "last"},
    }
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(mix), encoding="utf-8")
    return path


def test_calibrate_picks_the_cheapest_threshold_meeting_the_target(
    data: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "unused")  # the mix's own models are never called: all replayed
    _, test = data
    result = calibrate(_cascade_mix(tmp_path), test, target_quality=1.0)
    assert result.judges == ["check"] and not result.gate and result.strong == "s"
    assert result.chosen["quality"] == 1.0
    meeting = [p for p in result.points if p["quality"] >= 1.0]
    assert result.chosen["cost"] == min(p["cost"] for p in meeting)
    assert result.chosen["threshold"] > 0  # threshold 0 never escalates: the cheap pair alone is wrong at times
    share = calibrate(_cascade_mix(tmp_path), test, max_strong_share=0.0)
    assert share.chosen["strong_share"] == 0.0


def test_calibrate_cli_writes_a_calibrated_copy(
    data: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "unused")
    _, test = data
    out = tmp_path / "calibrated.yaml"
    assert (
        main(
            ["calibrate", str(_cascade_mix(tmp_path)), "--data", str(test), "--target-quality", "1", "--out", str(out)]
        )
        == 0
    )
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Calibrated by moai calibrate on test.jsonl")
    spec = load_spec(out)
    assert spec.models["s"].provider == "openai"  # the copy is the mix as written, thresholds set
    assert spec.steps[1].stop_when.score_at_least == pytest.approx(float(text.split("score_at_least ")[1].split()[0]))
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["bench", "cascade", "--train", "nope.jsonl", "--test", "x.jsonl", "--out", "r.json"], "--train"),
        (
            ["bench", "cascade", "--train", "{train}", "--test", "{train}", "--out", "{tmp}/r.json"],
            "both --train and --test",
        ),
        (["bench", "cascade", "--train", "{train}", "--test", "{test}", "--out", "r.json", "--jobs", "0"], "--jobs"),
        (["calibrate", "{mix}", "--data", "nope.jsonl", "--target-quality", "0.5"], "--data"),
        (["calibrate", "{mix}", "--data", "{test}", "--target-quality", "1.5"], "--target-quality"),
        (
            ["calibrate", "{mix}", "--data", "{test}", "--target-quality", "0.5", "--max-strong-share", "0.1"],
            "not allowed",
        ),
        (["calibrate", "{mix}", "--data", "{test}"], "one of the arguments"),
        (["calibrate", "{bad}", "--data", "{test}", "--target-quality", "0.5"], "valid choices"),
        (["calibrate", "{synth}", "--data", "{test}", "--target-quality", "0.5"], "aggregate.mode"),
        (["dataset", "split", "{test}", "--test-share", "1.5", "--out-train", "a", "--out-test", "b"], "--test-share"),
        (
            ["dataset", "split", "{test}", "--test-share", "0.5", "--out-train", "{test}", "--out-test", "b"],
            "different",
        ),
    ],
)
def test_cli_errors_exit_2_naming_the_flag(
    argv: list[str],
    named: str,
    data: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "unused")
    train, test = data
    mix = _cascade_mix(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(mix.read_text().replace(f"model: {STRONG}", "model: gpt-9"), encoding="utf-8")
    synth = tmp_path / "synth.yaml"
    synth.write_text(mix.read_text().replace("mode: last", "mode: synthesize\n  model: s"), encoding="utf-8")
    values = {"train": train, "test": test, "tmp": tmp_path, "mix": mix, "bad": bad, "synth": synth}
    args = [a.format(**values) for a in argv]
    with pytest.raises(SystemExit) if named in ("not allowed", "one of the arguments") else _nothing() as exited:
        code = main(args)
    if exited is not None and isinstance(exited, pytest.ExceptionInfo):
        code = exited.value.code
    assert code == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False
