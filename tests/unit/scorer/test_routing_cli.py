from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from routing_fakes import FakeEncoder, routing_lines, scorer_cli, write_lines

import moai.cli.scorer
import moai.scorer.encoders
from moai.scorer.benchmark.evaluate import METHOD_KEYS, REPORT_KEYS

pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeEncoder:
    encoder = FakeEncoder()
    monkeypatch.setattr(moai.cli.scorer, "_encoder", lambda name, truncate: encoder)
    monkeypatch.setattr(moai.scorer.encoders, "encoder_from_name", lambda name: encoder)
    return encoder


def test_bench_routing_writes_the_fixed_report(fake: FakeEncoder, tmp_path: Path, capsys: Any) -> None:
    data = write_lines(tmp_path / "routing.jsonl.gz", routing_lines(90))
    out = tmp_path / "report.json"
    argv = ["bench", "routing", "--train", str(data), "--test", str(data), "--out", str(out), "--quiet"]
    methods = ["knn", "mf", "best_single", "per_task", "random"]
    assert scorer_cli([*argv, "--methods", *methods]) == 0
    report = json.loads(out.read_text())
    assert tuple(report) == REPORT_KEYS
    assert set(report["best_single"]) == {"model", "quality", "cost", "per_task"}
    assert set(report["oracle"]) == {"quality", "cost", "per_task"}
    assert list(report["methods"]) == methods
    for entry in report["methods"].values():
        assert tuple(entry) == METHOD_KEYS
        assert {"alpha", "quality", "cost"} == set(entry["curve"][0])
    assert report["setup"]["train_queries"] == 60 and report["setup"]["test_queries"] == 30
    # 'cheap' is right on math, 'pricey' on history: routing by topic is perfect and cheaper.
    assert report["oracle"]["quality"] == 1.0
    assert report["methods"]["knn"]["quality"] == 1.0
    assert report["methods"]["knn"]["gap_recovered"] == 1.0
    # The train-best model is not the test-best one here: that baseline does not beat the bar.
    assert report["methods"]["best_single"]["beats_best_single"] is False
    table = capsys.readouterr().out
    assert "gap rec." in table and "best single (" in table
    # The same seed gives the same report.
    again = tmp_path / "again.json"
    assert scorer_cli([*argv[:-3], "--out", str(again), "--quiet", "--methods", *methods]) == 0
    first, second = json.loads(out.read_text()), json.loads(again.read_text())
    for entry in (*first["methods"].values(), *second["methods"].values()):
        entry.pop("train_s"), entry.pop("predict_s")
    first["setup"].pop("encode_s"), second["setup"].pop("encode_s")
    first["setup"].pop("load_s"), second["setup"].pop("load_s")
    assert first == second


def test_bench_routing_plots(fake: FakeEncoder, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    data = write_lines(tmp_path / "routing.jsonl", routing_lines(30))
    plot = tmp_path / "curve.png"
    argv = ["bench", "routing", "--train", str(data), "--test", str(data), "--out", str(tmp_path / "r.json")]
    assert scorer_cli([*argv, "--plot", str(plot), "--methods", "knn", "random", "--quiet"]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_routing_reports_bad_input_in_one_line(fake: FakeEncoder, tmp_path: Path, capsys: Any) -> None:
    bad = write_lines(tmp_path / "bad.jsonl", ['{"id": "q"}'])
    assert (
        scorer_cli(["bench", "routing", "--train", str(bad), "--test", str(bad), "--out", str(tmp_path / "r.json")])
        == 2
    )
    assert f"error: {bad}:1: missing field(s)" in capsys.readouterr().err


def test_scorer_train_then_add_model(fake: FakeEncoder, tmp_path: Path, capsys: Any) -> None:
    lines = routing_lines(90)
    data = write_lines(tmp_path / "pool.jsonl", [x for x in lines if x["model"] != "meh"])
    extra = write_lines(tmp_path / "meh.jsonl", [x for x in lines if x["model"] == "meh"])
    ckpt = tmp_path / "ckpt"
    assert scorer_cli(["scorer", "train", "--data", str(data), "--method", "mf", "--out", str(ckpt), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "held out (30 queries): quality" in out
    meta = json.loads((ckpt / "scorer.json").read_text())
    assert meta["models"] == ["cheap", "pricey"]
    assert meta["encoder"] == "fake-bow-32"
    assert meta["data"]["train_queries"] == 60 and len(meta["data"]["hash"]) == 16
    assert meta["metrics"]["quality"] == 1.0

    grown = tmp_path / "grown"
    argv = ["scorer", "add-model", "--ckpt", str(ckpt), "--data", str(extra), "--model", "meh", "--out", str(grown)]
    assert scorer_cli([*argv, "--quiet"]) == 0
    meta = json.loads((grown / "scorer.json").read_text())
    assert meta["models"] == ["cheap", "pricey", "meh"]
    assert "meh" in meta["metrics"]["added_models"]
    assert scorer_cli([*argv[:-4], "--model", "nobody", "--out", str(grown), "--quiet"]) == 2
    assert "model 'nobody' has no line in the data" in capsys.readouterr().err


def test_bench_routing_replays_online_and_plots_it(fake: FakeEncoder, tmp_path: Path) -> None:
    """`--methods online` runs from the command line: same seed, same replay; the plot takes its entry."""
    data = write_lines(tmp_path / "routing.jsonl", routing_lines(90))
    argv = ["bench", "routing", "--train", str(data), "--test", str(data), "--quiet", "--methods", "best_single"]
    outs = [tmp_path / "a.json", tmp_path / "b.json"]
    for out in outs:
        assert scorer_cli([*argv, "online", "--out", str(out)]) == 0
    first, second = (json.loads(out.read_text())["methods"]["online"] for out in outs)
    assert first["online"] == second["online"]
    assert first["online"]["curve"][-1]["n"] == 30
    pytest.importorskip("matplotlib")
    assert scorer_cli([*argv, "online", "--out", str(outs[0]), "--plot", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c_online.png").stat().st_size > 0


def write_descriptions(path: Path, models: dict[str, str]) -> Path:
    body = "".join(f"  {name}:\n    description: {text}\n    examples: [{text}]\n" for name, text in models.items())
    path.write_text(f"models:\n{body}", encoding="utf-8")
    return path


def test_bench_routing_runs_the_zero_shot_method_from_a_descriptions_file(
    fake: FakeEncoder, tmp_path: Path, capsys: Any
) -> None:
    data = write_lines(tmp_path / "routing.jsonl.gz", routing_lines(90))
    described = {"cheap": "sum integer divide algebra", "pricey": "king war empire century", "meh": "weather"}
    file = write_descriptions(tmp_path / "d.yaml", described)
    out = tmp_path / "report.json"
    argv = ["bench", "routing", "--train", str(data), "--test", str(data), "--out", str(out), "--quiet"]
    assert scorer_cli([*argv, "--methods", "descriptions", "best_single", "--descriptions", str(file)]) == 0
    report = json.loads(out.read_text())
    assert list(report["methods"]) == ["descriptions", "best_single"]
    assert report["setup"]["descriptions"] == str(file)
    # No training score is read: the words of each topic route it to the model right on it.
    assert report["methods"]["descriptions"]["quality"] == 1.0
    assert report["methods"]["descriptions"]["validated"] is None


def test_bench_routing_names_the_models_a_descriptions_file_lacks(
    fake: FakeEncoder, tmp_path: Path, capsys: Any
) -> None:
    data = write_lines(tmp_path / "routing.jsonl.gz", routing_lines(90))
    file = write_descriptions(tmp_path / "d.yaml", {"cheap": "sum"})
    out = tmp_path / "report.json"
    argv = ["bench", "routing", "--train", str(data), "--test", str(data), "--out", str(out), "--quiet"]
    assert scorer_cli([*argv, "--methods", "descriptions", "--descriptions", str(file)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {file} describes no pricey, meh (method 'descriptions')"
    # Unnamed, the method is left out where the file (by default the shipped RouterDC one) lacks a model.
    default = argparse.Namespace(methods=None, descriptions=None)
    methods, descriptions = moai.cli.scorer._zero_shot(default, ["cheap", "pricey"], quiet=True)
    assert "descriptions" not in methods and "knn" in methods and descriptions is None


def test_bench_routing_replays_online_from_the_descriptions_and_with_a_panel(fake: FakeEncoder, tmp_path: Path) -> None:
    """The online variants: the descriptions' prior routes each topic right from the first query; a panel
    learns every model's score; the plain replay and a missing descriptions file behave as before."""
    data = write_lines(tmp_path / "routing.jsonl", routing_lines(90))
    described = {"cheap": "sum integer divide algebra", "pricey": "king war empire century", "meh": "weather"}
    file = write_descriptions(tmp_path / "d.yaml", described)
    out = tmp_path / "r.json"
    argv = ["bench", "routing", "--train", str(data), "--test", str(data), "--quiet", "--out", str(out)]
    names = ["online", "online_described", "online_panel", "online_panel_described"]
    assert scorer_cli([*argv, "--methods", "best_single", *names, "--descriptions", str(file)]) == 0
    methods = json.loads(out.read_text())["methods"]
    assert [methods[n]["online"]["settings"]["feedback"] for n in names] == ["chosen", "chosen", "all", "all"]
    assert [methods[n]["online"]["settings"]["prior"] for n in names] == ["flat", "given", "flat", "given"]
    assert methods["online_described"]["online"]["curve"][0]["seen_gap"] == 1.0
    assert methods["online_described"]["quality"] >= methods["online"]["quality"]
    bad = write_descriptions(tmp_path / "bad.yaml", {"cheap": "sum"})
    assert scorer_cli([*argv, "--methods", "online_described", "--descriptions", str(bad)]) == 2


def test_bench_routing_reads_the_domains_of_a_descriptions_file(fake: FakeEncoder, tmp_path: Path) -> None:
    """With domains, the stated figure of the query's domain routes it, whatever the models' own texts say."""
    data = write_lines(tmp_path / "routing.jsonl", routing_lines(90))
    file = tmp_path / "d.yaml"
    file.write_text(
        "domains:\n"
        "  arithmetic: {description: sum integer divide algebra, examples: [sum integer divide algebra]}\n"
        "  history: {description: king war empire century, examples: [king war empire century]}\n"
        "models:\n"
        "  cheap: {description: weather, scores: {arithmetic: 0.9, history: 0.1}}\n"
        "  pricey: {description: weather, scores: {arithmetic: 0.1, history: 0.9}}\n"
        "  meh: {description: weather, scores: {arithmetic: 0.5, history: 0.5}}\n",
        encoding="utf-8",
    )
    out = tmp_path / "r.json"
    argv = ["bench", "routing", "--train", str(data), "--test", str(data), "--quiet", "--out", str(out)]
    assert scorer_cli([*argv, "--methods", "descriptions", "--descriptions", str(file)]) == 0
    assert json.loads(out.read_text())["methods"]["descriptions"]["quality"] == 1.0
