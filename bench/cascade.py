"""The issue's cascade benchmark, reproducibly: split both shared responses files by id, run `moai bench cascade`.

Data: ../shared/data/responses beside the checkout (or $MOAI_RESPONSES_DIR): `routerbench_train.jsonl.gz` split 80/20 by
id, `gsm8k_gpt4_mixtral_train.jsonl.gz` split 50/50 by id (`moai dataset split`, seed 0). Each is then run
through `moai bench cascade --train TRAIN --test TEST --out ... --plot ...`: everything is trained and
chosen on TRAIN; every point of every curve is a graph run on TEST. Writes
bench/results/cascade_<name>.json|png|md and bench/results/cascade.md (both tables, the targets, the run
times with the CPU time used and the load of the machine, which other jobs may share).

Targets (issue 10): RouterBench, GPT-4's quality at <= 0.65x its cost; GSM8K, >= 95% of GPT-4's accuracy
at <= 0.65x its cost. A target counts as met only at an operating point chosen on train: the best
out-of-fold quality within 0.65x the best single model's out-of-fold cost (`target_point`, from the
report's `validation_curve`), read on test. The cheapest test point of a curve that reaches the bar is
also given, as the optimistic figure it is.

Run from the repository root:  python bench/cascade.py [--data DIR] [--work DIR] [--jobs 2] [--only NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any

from moai.cli import main
from moai.scorer.benchmark.cascade import format_table

DATA = Path(os.environ.get("MOAI_RESPONSES_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "responses"))
RESULTS = Path(__file__).resolve().parent / "results"
RUNS = {
    "routerbench": ("routerbench_train.jsonl.gz", 0.2, 1.0),
    "gsm8k": ("gsm8k_gpt4_mixtral_train.jsonl.gz", 0.5, 0.95),
}
"""Each file, its test share, and its target's share of the best single model's quality."""
TARGET_COST = 0.65


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def target_point(entry: dict[str, Any], reference: dict[str, Any]) -> int:
    """Return the index of a method's target operating point, chosen on its out-of-fold curve over train.

    The point of best out-of-fold quality among those costing at most `TARGET_COST` times the best single
    model's out-of-fold cost (ties: the cheaper); the cheapest point when none does.
    """
    points = entry["validation_curve"]
    within = [i for i, p in enumerate(points) if p["cost"] <= TARGET_COST * reference["cost"] + 1e-12]
    if not within:
        return min(range(len(points)), key=lambda i: points[i]["cost"])
    return max(within, key=lambda i: (points[i]["quality"], -points[i]["cost"]))


def _targets(report: dict[str, Any], share: float) -> list[str]:
    """Return one line per method: does its target operating point (chosen on train) meet the target on test?"""
    bs = report["best_single"]
    reference = report["methods"]["best_single"]["validation_curve"][0]
    goal = f"quality >= {share * bs['quality']:.4f} ({share:.0%}) at <= {TARGET_COST}x cost"
    lines = []
    for name, m in report["methods"].items():
        if name == "best_single":
            continue
        at = target_point(m, reference)
        q, c = m["curve"][at]["quality"], m["curve"][at]["cost"]
        met = q >= share * bs["quality"] - 1e-12 and c <= TARGET_COST * bs["cost"]
        curve = m["cost_ratio_at_best_single_quality"]
        setting = {k: v for k, v in m["curve"][at].items() if k in ("threshold", "alpha", "prior_weight")}
        lines.append(
            f"| {name} | {setting} | {q:.4f} ({q / bs['quality']:.1%}) | {c / bs['cost']:.3f}x | "
            f"{'**met**' if met else 'not met'} | {'-' if curve is None else f'{curve:.3f}x'} |  <!-- {goal} -->"
        )
    return lines


def _markdown(name: str, command: str, report: dict[str, Any], share: float, timing: dict[str, Any]) -> str:
    setup = report["setup"]
    rows = "\n".join(_targets(report, share))
    return f"""# `moai bench cascade` on {name}

```
{command}
```

{setup["train_queries"]} train queries (cross-fitted over {setup["folds"]} folds), {setup["test_queries"]} test
queries; strong model {setup["strong"]}, cheap model {setup["cheap"]}; {setup["graph_runs"]} graph runs.
Run time: {timing["wall_s"]:.0f} s wall, {timing["cpu_s"]:.0f} s CPU (this process and its workers), load average
{timing["load_before"]:.1f} before and {timing["load_after"]:.1f} after on a {timing["cores"]}-core machine
shared with other jobs ({timing["machine"]}).

```
{format_table(report)}
```

Target: {share:.0%} of {setup["strong"]}'s quality at <= {TARGET_COST}x its cost. Each method's target
point is chosen on train: its best out-of-fold quality within {TARGET_COST}x the best single model's out-of-fold
cost. The last column is the cheapest test point reaching the best single model's quality, an optimistic
figure chosen on test.

| method | setting | test quality | cost vs {setup["strong"]} | target | curve: cost at best-1 quality |
|---|---|---:|---:|---|---:|
{rows}
"""


def run(name: str, data: Path, work: Path, seed: int, jobs: int) -> str:
    """Split one file, run the bench on it, write its results; return their Markdown."""
    file, test_share, share = RUNS[name]
    source = data / file
    train, test = work / f"{name}_train.jsonl.gz", work / f"{name}_test.jsonl.gz"
    split = ["dataset", "split", str(source), "--test-share", str(test_share), "--seed", str(seed)]
    if main([*split, "--out-train", str(train), "--out-test", str(test)]) != 0:
        raise SystemExit(f"could not split {source}")
    out, plot = RESULTS / f"cascade_{name}.json", RESULTS / f"cascade_{name}.png"
    args = ["bench", "cascade", "--train", str(train), "--test", str(test), "--out", str(out), "--plot", str(plot)]
    args += ["--seed", str(seed), "--jobs", str(jobs)]
    load_before, cpu0, t0 = os.getloadavg()[0], _cpu(), time.perf_counter()
    if main(args) != 0:
        raise SystemExit(f"moai bench cascade failed on {name}")
    timing = {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": _cpu() - cpu0,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "cores": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    report = json.loads(out.read_text(encoding="utf-8"))
    command = (
        f"moai dataset split {file} --test-share {test_share} --seed {seed} --out-train TRAIN --out-test TEST\n"
        f"moai bench cascade --train TRAIN --test TEST --out {out.name} --plot {plot.name} --seed {seed} --jobs {jobs}"
    )
    text = _markdown(name, command, report, share, timing)
    (RESULTS / f"cascade_{name}.md").write_text(text, encoding="utf-8")
    return text


def main_cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder of the shared responses files")
    parser.add_argument("--work", type=Path, default=Path("/tmp/moai-bench-cascade"), help="split files go here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", choices=sorted(RUNS), default=None)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    total = time.perf_counter()
    parts = [run(name, args.data, args.work, args.seed, args.jobs) for name in ([args.only] if args.only else RUNS)]
    summary = f"Both runs: {time.perf_counter() - total:.0f} s wall.\n\n" if not args.only else ""
    (RESULTS / ("cascade.md" if not args.only else f"cascade_{args.only}_only.md")).write_text(
        summary + "\n".join(parts), encoding="utf-8"
    )


if __name__ == "__main__":
    main_cli()
