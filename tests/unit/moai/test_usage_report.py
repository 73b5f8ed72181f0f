"""`moai usage report`: the figures on hand-made rows, --since, the text and HTML outputs, real rows."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fakes import fake_bundled

import moai
from moai.cli import main
from moai.usage import UsageStore, monitor_for
from moai.usage.report import (
    CHARTS,
    NO_ARM,
    build_report,
    format_text,
    parse_since,
    percentile,
    read_usage,
    render_html,
    since_arg,
)

T0 = 1_750_000_000.0


def run_row(run_id: str, **row: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "run_id": run_id,
        "ts": T0,
        "mix": "m",
        "arm": None,
        "query": f"query of {run_id}",
        "selected": ["a"],
        "scores": {"a": 0.9, "b": 0.5},
        "cache_hit": 0,
        "kept": 0,
        "status": "ok",
        "models_used": ["a"],
        "cost_usd": 0.0,
        "baseline_model": "b",
        "baseline_cost_usd": 0.0,
        "finished_ts": T0 + 1.0,
    }
    return base | row


def call_row(run_id: str, model: str, **row: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "run_id": run_id,
        "ts": T0 + 0.5,
        "mix": "m",
        "arm": None,
        "node": "answer",
        "model": model,
        "provider": "fake",
        "tokens_in": 10,
        "tokens_out": 5,
        "latency_s": 0.1,
        "cost_usd": 0.001,
        "energy_wh": 0.01,
        "co2e_g": 0.004,
        "status": "ok",
        "error": None,
        "fallback_for": None,
        "usage_estimated": 0,
    }
    return base | row


def write_db(path: Path, runs: Sequence[dict[str, Any]], calls: Sequence[dict[str, Any]]) -> str:
    store = UsageStore(str(path))
    try:
        store.write([("run", r) for r in runs] + [("call", c) for c in calls])
    finally:
        store.close()
    return str(path)


def add_feedback(db: str, scores: Sequence[tuple[str, float]]) -> None:
    store = UsageStore(db)
    try:
        for run_id, score in scores:
            store.add_feedback(run_id, score)
    finally:
        store.close()


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A hand-made database: mix 'm' (arms A and B) and mix 'n', models a, b and c."""
    monkeypatch.delenv("MOAI_USAGE_DB", raising=False)
    runs = [
        # r1, r2: arm A, answered by a; r3: arm B, answered by b after a failed; r4: mix n, failed.
        run_row("r1", arm="A", cost_usd=0.01, baseline_cost_usd=0.05, cache_hit=1, finished_ts=T0 + 1.0),
        run_row("r2", arm="A", cost_usd=0.02, baseline_cost_usd=0.05, cache_hit=0, finished_ts=T0 + 3.0),
        run_row("r3", arm="B", models_used=["b"], cost_usd=0.03, baseline_cost_usd=0.04, cache_hit=1),
        run_row("r4", mix="n", status="error", models_used=None, cost_usd=None, baseline_cost_usd=None, cache_hit=0),
    ]
    calls = [
        call_row("r1", "a", arm="A", latency_s=0.1, cost_usd=0.01),
        call_row("r2", "a", arm="A", latency_s=0.2, cost_usd=0.005),
        call_row("r2", "a", arm="A", latency_s=0.3, cost_usd=0.005, node="judge"),
        call_row("r3", "a", arm="B", status="error", latency_s=9.0, cost_usd=0.0, tokens_in=0, tokens_out=0),
        call_row("r3", "b", arm="B", fallback_for="a", latency_s=0.4, cost_usd=0.03, tokens_in=20, tokens_out=7),
        call_row("r3", "c", arm="B", status="skipped", latency_s=0.0, cost_usd=0.0, tokens_in=0, tokens_out=0),
        call_row("r4", "a", mix="n", status="error", latency_s=1.0, cost_usd=0.0, co2e_g=0.0),
    ]
    path = write_db(tmp_path / "usage.db", runs, calls)
    add_feedback(path, [("r1", 1.0), ("r1", 0.5), ("r3", 0.0), ("r2", 0.25)])
    return path


def test_percentile_interpolates_between_ranks_like_numpy() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.95) == pytest.approx(3.85)
    assert percentile([0.1, 0.2, 0.3, 0.4, 1.0], 0.95) == pytest.approx(0.88)
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([], 0.5) is None


def test_model_figures(db: str) -> None:
    report = build_report(read_usage(db))
    by_name = {s.name: s for s in report.models}
    assert [s.name for s in report.models] == ["a", "b", "c"]
    a = by_name["a"]
    assert (a.runs, a.calls) == (2, 5)  # answered r1 and r2; five calls made
    assert (a.tokens_in, a.tokens_out) == (10 * 3 + 10, 5 * 3 + 5)  # the failed r3 call counted no tokens
    assert a.cost_usd == pytest.approx(0.02)
    # Latency of its ok calls only: 0.1, 0.2, 0.3.
    assert a.latency_p50_s == pytest.approx(0.2) and a.latency_p95_s == pytest.approx(0.29)
    assert a.error_rate == pytest.approx(2 / 5) and a.fallback_rate == 0.0
    # Feedback of the runs it answered: r1 (1.0 and 0.5: 0.75) and r2 (0.25).
    assert a.feedback_mean == pytest.approx(0.5) and a.feedback_runs == 2
    b = by_name["b"]
    assert (b.runs, b.calls, b.fallback_rate, b.error_rate) == (1, 1, 1.0, 0.0)
    assert b.feedback_mean == 0.0 and b.latency_p50_s == pytest.approx(0.4)
    assert a.cache_hit_rate is None and a.baseline_cost_usd is None  # mixes and arms only
    c = by_name["c"]  # only refused: listed, with no call made
    assert (c.runs, c.calls, c.error_rate, c.latency_p50_s) == (0, 0, None, None)


def test_mix_figures_savings_and_cache(db: str) -> None:
    report = build_report(read_usage(db))
    m, n = report.mixes
    assert (m.name, m.runs, m.calls, n.name, n.runs, n.calls) == ("m", 3, 5, "n", 1, 1)
    # Run latency, start to answer: 1, 3, 1 seconds.
    assert m.latency_p50_s == pytest.approx(1.0) and m.latency_p95_s == pytest.approx(2.8)
    assert m.error_rate == pytest.approx(1 / 5) and m.fallback_rate == pytest.approx(1 / 5)
    assert m.feedback_mean == pytest.approx((0.75 + 0.25 + 0.0) / 3) and m.feedback_runs == 3
    assert m.cache_hit_rate == pytest.approx(2 / 3)
    assert m.compared_cost_usd == pytest.approx(0.06) and m.baseline_cost_usd == pytest.approx(0.14)
    assert m.saved_usd == pytest.approx(0.08) and m.saved_share == pytest.approx(0.08 / 0.14)
    assert m.baseline_models == ("b",)
    # The failed run has no baseline and no latency: nothing to compare.
    assert n.saved_usd is None and n.saved_share is None and n.latency_p50_s is None and n.error_rate == 1.0
    assert report.total.runs == 4 and report.total.saved_usd == pytest.approx(0.08)


def test_arms_are_compared_side_by_side(db: str) -> None:
    report = build_report(read_usage(db))
    assert list(report.arms) == ["m"]  # mix n has no arm
    a, b = report.arms["m"]
    assert (a.name, a.runs, a.cache_hit_rate, a.feedback_mean) == ("A", 2, 0.5, pytest.approx(0.5))
    assert a.saved_share == pytest.approx(0.07 / 0.10)
    assert (b.name, b.runs, b.error_rate, b.saved_share) == ("B", 1, 0.5, pytest.approx(0.01 / 0.04))
    text = format_text(report)
    block = text[text.index("A/B arms of m") :]
    assert block.splitlines()[1].split() == ["A", "B"] and block.splitlines()[2].split() == ["mix", "m", "m"]
    assert next(line for line in block.splitlines() if line.startswith("saved")).split() == ["saved", "70.0%", "25.0%"]


def test_a_split_compares_its_arms_across_their_mixes(tmp_path: Path) -> None:
    # An A/B split records `<split>/<arm>`; its arms may be different mixes.
    runs = [
        run_row("x", mix="route", arm="ab/fast", cost_usd=0.01, baseline_cost_usd=0.04),
        run_row("y", mix="routemoa", arm="ab/full", cost_usd=0.03, baseline_cost_usd=0.04),
        run_row("z", mix="routemoa", arm="ab/full", cost_usd=0.05, baseline_cost_usd=0.04),
        run_row("w", mix="route"),  # outside the split: not an arm of it
    ]
    calls = [call_row(r["run_id"], "a", mix=r["mix"], arm=r["arm"]) for r in runs]
    report = build_report(read_usage(write_db(tmp_path / "u.db", runs, calls)))
    assert list(report.arms) == ["ab"]
    fast, full = report.arms["ab"]
    assert (fast.name, fast.runs, fast.mixes, fast.saved_share) == ("fast", 1, ("route",), pytest.approx(0.75))
    assert (full.name, full.runs, full.mixes, full.saved_share) == ("full", 2, ("routemoa",), 0.0)
    text = format_text(report)
    block = text[text.index("A/B arms of ab") :].splitlines()
    assert block[1].split() == ["fast", "full"] and block[2].split() == ["mix", "route", "routemoa"]


def test_runs_without_an_arm_get_their_own_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_db(tmp_path / "u.db", [run_row("x", arm="A"), run_row("y")], [call_row("x", "a"), call_row("y", "a")])
    report = build_report(read_usage(path))
    assert [s.name for s in report.arms["m"]] == ["A", NO_ARM]


def test_text_tables(db: str) -> None:
    text = format_text(build_report(read_usage(db)))
    lines = text.splitlines()
    assert lines[0].startswith(f"moai usage: {db}, ")
    assert lines[1].startswith("4 runs, 6 calls, $0.0500, 0.0240 g CO2e, saved 57.1% ($0.0800) against")
    header = lines[lines.index("Per model") + 1]
    assert header.split()[:3] == ["model", "runs", "calls"] and header.split()[-2:] == ["fallback", "errors"]
    row_a = lines[lines.index("Per model") + 2].split()
    assert row_a == ["a", "2", "5", "40", "20", "0.0200", "0.200", "0.290", "0.0160", "0.50", "(2)", "0.0%", "40.0%"]
    savings = lines[lines.index("Savings against each mix's dearest model, and routing cache") + 2].split()
    assert savings == ["m", "3", "0.0600", "b", "0.140", "0.0800", "57.1%", "66.7%"]
    assert "cache hits: share of runs whose routing decision came from the routing cache" in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", T0 - 7 * 86400),
        ("24h", T0 - 24 * 3600),
        ("30m", T0 - 30 * 60),
        ("2w", T0 - 14 * 86400),
        ("45s", T0 - 45),
        ("1.5h", T0 - 5400),
        (" 3D ", T0 - 3 * 86400),
        ("2025-06-01T09:30:00Z", datetime(2025, 6, 1, 9, 30, tzinfo=UTC).timestamp()),
        ("2025-06-01T09:30+02:00", datetime(2025, 6, 1, 7, 30, tzinfo=UTC).timestamp()),
        ("2025-06-01", datetime(2025, 6, 1).timestamp()),  # local midnight
        ("2025-06-01 09:30", datetime(2025, 6, 1, 9, 30).timestamp()),
    ],
)
def test_since_accepts_iso_and_ages(text: str, expected: float) -> None:
    assert parse_since(text, now=T0) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "yesterday", "7", "7y", "-3d", "2025-13-01"])
def test_since_rejects_anything_else_listing_the_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"ISO date or date-time .* or an age \(30m, 24h, 7d, 2w\)"):
        parse_since(text)
    with pytest.raises(argparse.ArgumentTypeError):
        since_arg(text)


def test_since_drops_older_runs_and_their_calls(tmp_path: Path) -> None:
    runs = [run_row("old", ts=T0 - 10 * 86400), run_row("new", ts=T0)]
    calls = [call_row("old", "a", ts=T0 - 10 * 86400), call_row("new", "b", ts=T0)]
    path = write_db(tmp_path / "u.db", runs, calls)
    add_feedback(path, [("old", 1.0), ("new", 0.5)])
    usage = read_usage(path, parse_since("7d", now=T0 + 60))
    assert [r["run_id"] for r in usage.runs] == ["new"] and [c["model"] for c in usage.calls] == ["b"]
    assert [f["run_id"] for f in usage.feedback] == ["new"]


def test_html_is_one_page_with_the_four_charts_and_the_tables(db: str) -> None:
    page = render_html(build_report(read_usage(db)))
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for name in CHARTS:
        figure = re.search(rf'<figure class="chart[^"]*" id="chart-{name}">(.*?)</figure>', page, re.S)
        assert figure is not None and figure.group(1).startswith("<svg") and "<path" in figure.group(1)
    assert page.count("<svg") == len(CHARTS) == 4
    assert "<h2>Per model</h2>" in page and "<h2>Per mix</h2>" in page and "<h2>A/B arms</h2>" in page
    # Self-contained: nothing to fetch (the SVG namespaces are names, not links).
    assert not re.search(r"""(src|href)=["']?(https?:)?//|url\(\s*["']?https?:|@import""", page)
    assert "<script" not in page
    # Ids of the four SVGs do not collide.
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))


def test_html_escapes_names(tmp_path: Path) -> None:
    path = write_db(tmp_path / "u.db", [run_row("x", mix="<b>mix</b>")], [call_row("x", "<i>m</i>", mix="<b>mix</b>")])
    page = render_html(build_report(read_usage(path)))
    assert "<b>mix</b>" not in page and "&lt;b&gt;mix&lt;/b&gt;" in page and "<i>m</i>" not in page


def test_empty_database_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.delenv("MOAI_USAGE_DB", raising=False)
    path = write_db(tmp_path / "empty.db", [], [])
    report = build_report(read_usage(path))
    assert format_text(report).startswith(f"No usage recorded in {path}: run a mix")
    assert "No usage recorded in" in render_html(report) and "<svg" not in render_html(report)
    html = tmp_path / "out" / "report.html"
    assert main(["usage", "report", "--db", path, "--html", str(html)]) == 0
    assert capsys.readouterr().out.startswith("No usage recorded in")
    assert "No usage recorded in" in html.read_text()


def test_cli_report(db: str, tmp_path: Path, capsys: Any) -> None:
    html = tmp_path / "report.html"
    assert main(["usage", "report", "--db", db, "--since", "2020-01-01", "--html", str(html)]) == 0
    out = capsys.readouterr().out
    assert "Per model" in out and "A/B arms of m" in out and out.rstrip().endswith(f"html: {html}")
    assert html.read_text().count('<figure class="chart') == 4
    # A later --since leaves nothing.
    assert main(["usage", "report", "--db", db, "--since", "2999-01-01"]) == 0
    assert capsys.readouterr().out.startswith("No usage recorded in")


def test_cli_report_bad_input_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.delenv("MOAI_USAGE_DB", raising=False)
    missing = tmp_path / "nope.db"
    assert main(["usage", "report", "--db", str(missing)]) == 2
    assert capsys.readouterr().err == (
        f"error: no usage database at {missing}: run a mix first (moai run MIX QUERY), or name one with --db\n"
    )
    assert not missing.exists()  # reading never creates a database
    with pytest.raises(SystemExit) as exit_info:
        main(["usage", "report", "--db", str(missing), "--since", "last tuesday"])
    assert exit_info.value.code == 2 and "an age (30m, 24h, 7d, 2w)" in capsys.readouterr().err
    monkeypatch.setenv("MOAI_USAGE_DB", "off")
    assert main(["usage", "report"]) == 2
    assert "the usage monitor is off" in capsys.readouterr().err


def test_the_environment_names_the_database_as_for_the_mixes(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOAI_USAGE_DB", db)
    assert main(["usage", "report", "--db", "/nonexistent/ignored.db"]) == 0


SPLIT_POOL = {
    "cheap": {"provider": "fake", "model": "cheap", "quality": 0.5, "price": {"input_per_mtok": 1}, "replies": ["c"]},
    "dear": {"provider": "fake", "model": "dear", "quality": 0.9, "price": {"input_per_mtok": 9}, "replies": ["d"]},
}


def test_report_compares_the_arms_of_a_real_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "split.db")
    monkeypatch.setenv("MOAI_USAGE_DB", path)
    for name, alpha in (("thrifty", 1.0), ("best", 0.0)):
        mix = {"name": name, "models": SPLIT_POOL, "gate": {"objective": {"alpha": alpha}}}
        (tmp_path / f"{name}.yaml").write_text(json.dumps(mix | {"steps": [{"kind": "propose", "name": "answer"}]}))
    split = {"name": "exp", "split": {"by": "user", "arms": {"a": {"mix": "thrifty.yaml"}, "b": {"mix": "best.yaml"}}}}
    (tmp_path / "exp.yaml").write_text(json.dumps(split))
    graph = moai.load_mix(tmp_path / "exp.yaml")
    results = [graph.invoke({"query": "Q"}, {"configurable": {"user_id": f"u{i}"}}) for i in range(16)]
    assert monitor_for(path).flush()
    arms = {r["run"]["arm"] for r in results}
    assert arms == {"exp/a", "exp/b"}
    report = build_report(read_usage(path))
    assert list(report.arms) == ["exp"]
    a, b = report.arms["exp"]
    assert (a.name, a.mixes, b.name, b.mixes) == ("a", ("thrifty",), "b", ("best",))
    assert a.runs + b.runs == 16
    # Arm a routes to the cheap model, arm b to the dear one (the baseline): a saves, b does not.
    assert a.saved_share is not None and a.saved_share > 0.5 and b.saved_share == 0.0


def test_report_on_real_rows_of_a_mix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "real.db")
    monkeypatch.setenv("MOAI_USAGE_DB", path)
    # gemma fails every other call: smol stands in for it (its fallback).
    graph = moai.build_mix(fake_bundled("moa", {"gemma": ["!fail down", "gemma: {query}"]}), usage_db=path).compile()
    results = [graph.invoke({"query": f"question {i}", "arm": "A" if i % 2 else "B"}) for i in range(4)]
    assert monitor_for(path).flush()
    add_feedback(path, [(results[0]["run"]["run_id"], 0.8)])
    report = build_report(read_usage(path))
    (mix,) = report.mixes
    assert (mix.name, mix.runs) == ("moa", 4)
    assert mix.calls == sum(len(r["calls"]) for r in results) - sum(
        c["status"] == "skipped" for r in results for c in r["calls"]
    )
    by_name = {s.name: s for s in report.models}
    assert set(by_name) == {"smol", "gemma"}
    assert by_name["gemma"].error_rate is not None and by_name["gemma"].error_rate > 0
    assert by_name["smol"].fallback_rate is not None and by_name["smol"].fallback_rate > 0
    assert by_name["smol"].feedback_mean == pytest.approx(0.8)
    assert [a.name for a in report.arms["moa"]] == ["A", "B"]
    assert render_html(report).count("<svg") == 4


HOSTILE = [float("inf"), float("-inf"), float("nan"), -1.0, 1e308, None]


@pytest.mark.parametrize("value", HOSTILE)
def test_the_report_survives_any_value_a_database_may_already_hold(tmp_path: Path, value: float | None) -> None:
    # Databases written before prices and figures were checked may hold infinities and NaNs; a report
    # over them still renders, and an unusable figure reads as unknown rather than breaking the page.
    runs = [
        run_row("ok1", cost_usd=0.01, baseline_cost_usd=0.02),
        run_row("bad", cost_usd=value, baseline_cost_usd=value, finished_ts=value, ts=T0 + 5),
    ]
    calls = [
        call_row("ok1", "a"),
        call_row("bad", "b", cost_usd=value, latency_s=value, energy_wh=value, co2e_g=value)
        | {"tokens_in": value, "tokens_out": value},
    ]
    db = write_db(tmp_path / "usage.db", runs, calls)
    report = build_report(read_usage(db))
    text = format_text(report)
    page = render_html(report)
    assert "inf" not in text.lower() and "nan" not in text.replace("nano", "").lower()
    assert "<svg" in page and "inf" not in page.lower().replace("info", "")
