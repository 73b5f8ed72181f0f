"""`moai calibrate`: set a mix's thresholds from recorded answers, by running it on them over a grid.

The thresholds are each looping judge step's `stop_when.score_at_least` (a judge with `otherwise`, the
steps that escalate or retry) and, where the gate has a `fallback`, its `min_confidence`. Every model of
the mix is swapped for a replay of its own `model` in the responses file (so the data must hold answers of
each), the mix is run as a graph on every query of the file for each point of the grid (all judges
share one threshold; the gate's is crossed with it), and the cheapest point whose mean recorded quality
reaches the target is kept, or, under a ceiling on the strong model's share of runs, the best-quality
point within it (the strong model: the mix's dearest, by declared price). The calibrated copy is the mix
file as written, with those values set and a comment saying on what they were calibrated.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from moai.errors import MixError
from moai.mix_instructions import load_spec, resolve_path
from moai.mix_instructions.schema import JudgeStep, MixSpec
from moai.replay_run import DEFAULT_CONCURRENCY, Task, run_files
from moai.scorer.data.responses import response_lines, responses_index
from moai.scorer.select import TYPICAL_PROMPT_TOKENS, call_cost

__all__ = ["GATE_GRID", "JUDGE_GRID", "Calibration", "calibrate", "calibration_targets"]

JUDGE_GRID = tuple(round(i * 0.05, 2) for i in range(21))
"""Values tried for the judges' `stop_when.score_at_least`."""
GATE_GRID = tuple(round(i * 0.1, 1) for i in range(11))
"""Values tried for `gate.min_confidence` (where the gate has a fallback)."""
MAX_QUERIES = 100_000
"""Most queries of a responses file a calibration runs on."""


@dataclass(frozen=True)
class Calibration:
    """What a calibration chose, and the whole grid it measured."""

    judges: list[str]
    """The judge steps whose threshold was set."""
    gate: bool
    """Whether `gate.min_confidence` was set."""
    chosen: dict[str, Any]
    """The chosen point: its `threshold` / `min_confidence`, `quality`, `cost`, `strong_share`."""
    points: list[dict[str, Any]]
    strong: str
    queries: int


def calibration_targets(spec: MixSpec) -> tuple[list[str], bool]:
    """Return the judge steps with a threshold to set (those that loop) and whether the gate has one."""
    judges = [s.name for s in spec.steps if isinstance(s, JudgeStep) and s.otherwise is not None]
    return judges, spec.gate.fallback is not None


def _queries(path: Path) -> list[tuple[str, str]]:
    """Return each query of a responses file once, as (id, prompt), in order of first appearance."""
    responses_index(path)  # checks the whole file, within its bounds, before it is read again here
    seen: dict[str, str] = {}
    for _, line in response_lines(path):
        record = json.loads(line)
        seen.setdefault(record["id"], record["prompt"])
        if len(seen) >= MAX_QUERIES:
            break
    return list(seen.items())


def _replayed(spec: MixSpec, data: Path, source: str) -> dict[str, Any]:
    held = responses_index(data).models
    models: dict[str, Any] = {}
    for name, model in spec.models.items():
        if model.model not in held:
            raise MixError(
                source,
                f"models.{name}.model",
                f"--data {data.name} holds no answers of {model.model!r}; valid choices (the models it holds): "
                + ", ".join(held),
            )
        models[name] = model.model_dump(by_alias=True) | {
            "provider": "replay",
            "responses": str(data.resolve()),
            "base_url": None,
            "api_key": None,
            "replies": [],
        }
    mix: dict[str, Any] = spec.model_dump(by_alias=True)
    return mix | {"models": models}


def _set(mix: dict[str, Any], judges: Sequence[str], threshold: float | None, confidence: float | None) -> None:
    for step in mix["steps"]:
        if step.get("name") in judges and threshold is not None:
            step["stop_when"] = dict(step.get("stop_when") or {}) | {"score_at_least": threshold}
    if confidence is not None:
        mix["gate"] = dict(mix.get("gate") or {}) | {"min_confidence": confidence}


def calibrate(
    mix: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    target_quality: float | None = None,
    max_strong_share: float | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    jobs: int = 1,
) -> Calibration:
    """Run the mix on the data over the grid and return the chosen thresholds.

    Exactly one of `target_quality` (the cheapest point reaching it) and `max_strong_share` (the best
    quality with at most that share of runs calling the strong model) is given.

    Raises:
        MixError: The mix is invalid, has nothing to calibrate, or names a model the data lacks.
        ValueError: No point of the grid meets the target (the message gives the best that does).
        FileNotFoundError: No such data file.
    """
    if (target_quality is None) == (max_strong_share is None):
        raise ValueError("give exactly one of --target-quality and --max-strong-share")
    source = str(resolve_path(mix))
    spec = load_spec(mix)
    if spec.aggregate.mode == "synthesize":
        raise MixError(
            source,
            "aggregate.mode",
            "calibration scores the recorded answer a run returns, and a synthesized answer has none: "
            "calibrate a copy with aggregate mode 'best' or 'last'",
        )
    judges, gated = calibration_targets(spec)
    if not judges and not gated:
        raise MixError(
            source,
            "steps",
            "nothing to calibrate: no judge step loops (no `otherwise`) and the gate has no `fallback`",
        )
    path = Path(data)
    if not path.is_file():
        raise FileNotFoundError(f"--data: no responses file {str(path)!r}")
    replayed = _replayed(spec, path, source)
    candidates = spec.gate.candidates or list(spec.models)
    strong = max(candidates, key=lambda n: (call_cost(spec.models[n], TYPICAL_PROMPT_TOKENS, 1000), n))
    queries = _queries(path)
    grid = [(t, c) for t in (JUDGE_GRID if judges else (None,)) for c in (GATE_GRID if gated else (None,))]
    with tempfile.TemporaryDirectory(prefix="moai-calibrate-") as tmp:
        tasks: list[Task] = []
        for i, (threshold, confidence) in enumerate(grid):
            point = json.loads(json.dumps(replayed))
            _set(point, judges, threshold, confidence)
            file = Path(tmp) / f"point{i}.yaml"
            file.write_text(yaml.safe_dump(point, sort_keys=False), encoding="utf-8")
            tasks.append((str(file), queries, [strong], concurrency))
        results = run_files(tasks, jobs)
    points = [
        {"threshold": t, "min_confidence": c} | summary for (t, c), (summary, _) in zip(grid, results, strict=True)
    ]
    if target_quality is not None:
        meeting = [p for p in points if p["quality"] >= target_quality - 1e-12]
        if not meeting:
            best = max(points, key=lambda p: p["quality"])
            raise ValueError(
                f"--target-quality {target_quality:g}: no threshold reaches it on {path.name} (best "
                f"{best['quality']:.4f}); give at most {best['quality']:.4f}, or use --max-strong-share"
            )
        chosen = min(meeting, key=lambda p: (p["cost"], -p["quality"]))
    else:
        assert max_strong_share is not None
        within = [p for p in points if p["strong_share"] <= max_strong_share + 1e-12]
        if not within:
            least = min(points, key=lambda p: p["strong_share"])
            raise ValueError(
                f"--max-strong-share {max_strong_share:g}: every threshold sends more runs to {strong} on "
                f"{path.name} (least {least['strong_share']:.4f}); give at least {least['strong_share']:.4f}"
            )
        chosen = max(within, key=lambda p: (p["quality"], -p["cost"]))
    return Calibration(judges, gated, chosen, points, strong, len(queries))


def write_calibrated(
    mix: str | os.PathLike[str], result: Calibration, out: str | os.PathLike[str], comment: str
) -> Path:
    """Write the mix as written, with the chosen thresholds set, as YAML with `comment` on top; return its path.

    Raises:
        MixError: The written copy does not load (it always should).
    """
    source = resolve_path(mix)
    text = Path(source).read_text(encoding="utf-8")
    raw = json.loads(text) if Path(source).suffix == ".json" else yaml.safe_load(text)
    _set(raw, result.judges, result.chosen["threshold"], result.chosen["min_confidence"])
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    target.write_text(header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=120), encoding="utf-8")
    load_spec(target)
    return target
