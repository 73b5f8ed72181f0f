"""The usage report's page, rendered by a real browser (headless Chromium) from a database of real rows.

The rows come from real runs: fake-model mixes with prices (an A/B split of two of them, a failing model
with a fallback, users' feedback) and a few runs of the embedded local models, then spread over a week
so the charts over time have something to show. The page must render with its four charts, not blank.

`MOAI_USAGE_SCREENSHOT=docs/usage-report.png` also saves the screenshot there (the README's picture).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import moai
import moai.providers
from moai.cli import main
from moai.providers.fake import ScriptedChatModel
from moai.usage import monitor_for, record_feedback
from moai.usage.report import CHARTS

pytestmark = pytest.mark.integration

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

SUPPORT = """
name: support
models:
  mini:
    provider: fake
    model: mini
    quality: 0.55
    price: {input_per_mtok: 0.15, output_per_mtok: 0.6}
    energy_wh_per_ktok: 0.3
    fallbacks: [mid]
    replies: ["Short answer to: {query}", "!fail rate limited", "In brief: {query} -- it depends on your plan"]
  mid:
    provider: fake
    model: mid
    quality: 0.7
    price: {input_per_mtok: 1.0, output_per_mtok: 4.0}
    energy_wh_per_ktok: 1.0
    replies: ["A detailed answer to: {query}, with the steps to follow one by one and a note on each of them"]
  large:
    provider: fake
    model: large
    quality: 0.9
    price: {input_per_mtok: 5.0, output_per_mtok: 15.0}
    energy_wh_per_ktok: 4.0
    replies: ["A thorough answer to: {query}, covering the cases, the exceptions and what to do when it fails"]
gate: {top_k: 1, objective: {alpha: ALPHA}}
steps:
  - {kind: propose, name: answer}
aggregate: {mode: best}
"""
"""Routes for quality per dollar (alpha 1: the cheap model); `support-best` (alpha 0) for quality alone."""

SPLIT = """
name: support-ab
split:
  by: user
  arms:
    A: {mix: support.yaml}
    B: {mix: support-best.yaml}
"""

PANEL = """
name: panel
models:
  mini: {provider: fake, model: mini, quality: 0.55, price: {input_per_mtok: 0.15, output_per_mtok: 0.6},
         energy_wh_per_ktok: 0.3, replies: ["Short answer to: {query}"]}
  mid: {provider: fake, model: mid, quality: 0.7, price: {input_per_mtok: 1.0, output_per_mtok: 4.0},
        energy_wh_per_ktok: 1.0, fallbacks: [mini], replies: ["Detailed answer to: {query}", "!fail upstream 500"]}
  large: {provider: fake, model: large, quality: 0.9, price: {input_per_mtok: 5.0, output_per_mtok: 15.0},
          energy_wh_per_ktok: 4.0, replies: ["Thorough answer to: {query}"]}
gate: {top_k: 2}
steps:
  - {kind: propose, name: draft}
aggregate: {mode: synthesize, model: mini}
"""

TOPICS = ("refund", "invoice", "password reset", "shipping delay", "API key", "data export", "pricing", "bug report")
SPEED = {"mini": 0.03, "mid": 0.08, "large": 0.2}
"""Typical seconds per call of each fake model (each call varies around it)."""


class _Paced(ScriptedChatModel):
    """A scripted model that takes a while to answer, as a real one does."""

    pace_s: float = 0.05

    async def _agenerate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
        await asyncio.sleep(self.pace_s * random.lognormvariate(0, 0.5))
        return await super()._agenerate(messages, stop, run_manager, **kwargs)


def _paced(name: str, spec: Any) -> _Paced:
    return _Paced(
        replies=spec.replies or [f"{name}: {{query}}"], max_tokens=spec.max_tokens, pace_s=SPEED.get(name, 0.05)
    )


def _question(rng: random.Random, i: int) -> str:
    words = " ".join(rng.choice(["please", "help", "urgent", "details", "how", "why", "account"]) for _ in range(20))
    return f"{rng.choice(TOPICS)} #{i}: {words[: rng.randint(10, len(words))]}"


async def _fake_runs(tmp: Path, db: str, n: int, rng: random.Random) -> list[dict[str, Any]]:
    (tmp / "support.yaml").write_text(SUPPORT.replace("ALPHA", "1.0"), encoding="utf-8")
    best = SUPPORT.replace("ALPHA", "0.0").replace("name: support", "name: support-best")
    (tmp / "support-best.yaml").write_text(best, encoding="utf-8")
    (tmp / "panel.yaml").write_text(PANEL, encoding="utf-8")
    (tmp / "support-ab.yaml").write_text(SPLIT, encoding="utf-8")
    split = moai.load_mix(tmp / "support-ab.yaml", usage_db=db)
    panel = moai.load_mix(tmp / "panel.yaml", usage_db=db)
    jobs: list[tuple[Any, dict[str, Any], dict[str, Any]]] = []
    for i in range(n):
        if rng.random() < 0.7:
            jobs.append(
                (split, {"query": _question(rng, i)}, {"configurable": {"user_id": f"user-{rng.randrange(60)}"}})
            )
        else:
            jobs.append((panel, {"query": _question(rng, i)}, {}))
    limit = asyncio.Semaphore(12)

    async def one(graph: Any, state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
        async with limit:
            result: dict[str, Any] = await graph.ainvoke(state, config)
            return result

    return list(await asyncio.gather(*(one(*job) for job in jobs)))


def _spread(db: str, days: float, rng: random.Random) -> None:
    """Move the runs (with their calls and feedback) so they start evenly over the last `days` days."""
    con = sqlite3.connect(db)
    try:
        runs = con.execute("SELECT run_id, ts FROM runs ORDER BY ts").fetchall()
        now = time.time()
        for k, (run_id, ts) in enumerate(runs):
            shift = now - days * 86400 * (1 - k / len(runs)) + rng.uniform(0, 1800) - ts
            con.execute(
                "UPDATE runs SET ts = ts + ?, finished_ts = finished_ts + ? WHERE run_id = ?", (shift, shift, run_id)
            )
            con.execute("UPDATE calls SET ts = ts + ? WHERE run_id = ?", (shift, run_id))
            con.execute("UPDATE feedback SET ts = ts + ? WHERE run_id = ?", (shift, run_id))
        con.commit()
    finally:
        con.close()


@pytest.fixture(scope="module")
def usage_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A usage database of real runs: 240 on priced fake models, 3 on the local models, with feedback."""
    tmp = tmp_path_factory.mktemp("usage")
    db = str(tmp / "usage.db")
    rng = random.Random(7)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOAI_USAGE_DB", db)
        patch.setitem(moai.providers.PROVIDERS, "fake", _paced)
        results = asyncio.run(_fake_runs(tmp, db, 240, rng))
        local = moai.build_mix("route", usage_db=db).compile()
        for question in ("What is the capital of France?", "Name a prime number.", "What colour is the sky?"):
            results.append(local.invoke({"query": question}))
        assert monitor_for(db).flush()
        liked = {"large": 0.9, "mid": 0.75, "mini": 0.55, "smol": 0.6, "gemma": 0.5}
        for result in results:
            if rng.random() < 0.3:
                score = min(1.0, max(0.0, rng.gauss(liked[result["models_used"][0]], 0.15)))
                record_feedback(result["run"]["run_id"], round(score, 2), db=db)
    _spread(db, 7, rng)
    yield db


def _browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def _screenshot(page: Path, out: Path, height: int) -> None:
    browser = _browser()
    if browser is None:
        pytest.skip(
            f"no Chromium to render the page with: none of {', '.join(BROWSERS)} is on PATH (apt-get install chromium)"
        )
    command = [
        browser,
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-extensions",
        f"--user-data-dir={out.parent / 'chromium-profile'}",
        f"--screenshot={out}",
        f"--window-size=1280,{height}",
        page.resolve().as_uri(),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=180)
    assert out.is_file(), "Chromium wrote no screenshot"


def _pixels(path: Path) -> npt.NDArray[np.int16]:
    """Return the screenshot as an array [height, width, 3] of RGB values."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def _count_near(pixels: npt.NDArray[np.int16], colour: tuple[int, int, int], tolerance: int = 12) -> int:
    return int((np.abs(pixels - np.array(colour, dtype=np.int16)) <= tolerance).all(axis=-1).sum())


def test_report_page_renders_its_charts_in_chromium(
    usage_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("MOAI_USAGE_DB", usage_db)  # the environment names the database, as for the mixes
    page = tmp_path / "report.html"
    assert main(["usage", "report", "--db", usage_db, "--html", str(page)]) == 0
    text = capsys.readouterr().out
    assert "A/B arms of support-ab" in text and "route" in text and "smol" in text
    html = page.read_text(encoding="utf-8")
    for name in CHARTS:
        assert re.search(rf'<figure class="chart[^"]*" id="chart-{name}"><svg', html), f"chart {name} missing"
    assert html.count("<svg") == 4
    assert not re.search(r"""(src|href)=["']?(https?:)?//|url\(\s*["']?https?:|@import""", html)

    shot = tmp_path / "report.png"
    _screenshot(page, shot, height=3000)
    pixels = _pixels(shot)
    assert pixels.shape == (3000, 1280, 3)
    inked = float((pixels.min(axis=-1) < 235).mean())
    assert inked > 0.05, f"the page is nearly blank: {inked:.1%} of pixels inked"
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours > 500, f"{colours} colours: too few for a page of charts"
    # The charts' own colours (matplotlib's tab10 blue, orange and green for the models; the savings green)
    # are on screen: the SVGs were drawn, not just the tables.
    for colour in ((31, 119, 180), (255, 127, 14), (44, 160, 44), (42, 157, 92)):
        assert _count_near(pixels, colour) > 2000, f"chart colour {colour} not drawn"

    keep = os.environ.get("MOAI_USAGE_SCREENSHOT")
    if keep:
        _save_small(shot, Path(keep))


def _save_small(shot: Path, out: Path) -> None:
    """Save the page's top (cards, charts, first table) for the README: a full-colour PNG, about 200 KB."""
    from PIL import Image

    with Image.open(shot) as image:
        image.convert("RGB").crop((0, 0, 1280, 1900)).save(out, optimize=True)


def test_empty_report_page_says_so_in_chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "empty.db"
    monkeypatch.setenv("MOAI_USAGE_DB", str(db))
    sqlite3.connect(db).close()  # an empty file: the report creates the tables and finds nothing
    page = tmp_path / "empty.html"
    assert main(["usage", "report", "--html", str(page)]) == 0
    assert "No usage recorded in" in page.read_text(encoding="utf-8")
    shot = tmp_path / "empty.png"
    _screenshot(page, shot, height=600)
    inked = float((_pixels(shot).min(axis=-1) < 200).mean())
    assert 0 < inked < 0.2  # a message, not charts
