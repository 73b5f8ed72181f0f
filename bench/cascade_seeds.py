"""One split is noisy: `moai bench cascade` on GSM8K over several 50/50 splits by id, each with its own seed.

With 310 training and 349 test queries, one split's figures move by a few points of GPT-4's accuracy
from one seed to the next (a point of accuracy is 3.5 test queries), which is the size of the margin the
issue's GSM8K target asks about. So this runs the whole bench (split, cross-fitting, every method's
graph runs) for each seed and reports, per seed and on average, each method's target point (chosen on
train by `bench/cascade.py`'s `target_point`: its best out-of-fold quality within 0.65x the best single
model's out-of-fold cost) read on test. Nothing is chosen across seeds. Writes
bench/results/cascade_seeds.md.

Run from the repository root:  python bench/cascade_seeds.py [--seeds 0 1 2 3 4] [--name gsm8k] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

# The cascade benchmark's own pieces: `python bench/cascade_seeds.py` runs with bench/ on the path.
from cascade import DATA, RESULTS, RUNS, TARGET_COST, target_point

from moai.cli import main


def _run(name: str, seed: int, work: Path, jobs: int) -> dict[str, Any]:
    file, share, _ = RUNS[name]
    train, test, out = work / f"train{seed}.jsonl.gz", work / f"test{seed}.jsonl.gz", work / f"report{seed}.json"
    split = ["dataset", "split", str(DATA / file), "--test-share", str(share), "--seed", str(seed)]
    if main([*split, "--out-train", str(train), "--out-test", str(test)]) != 0:
        raise SystemExit(f"could not split {file}")
    bench = ["bench", "cascade", "--train", str(train), "--test", str(test), "--out", str(out), "--seed", str(seed)]
    if main([*bench, "--jobs", str(jobs)]) != 0:
        raise SystemExit(f"moai bench cascade failed on seed {seed}")
    report: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return report


def main_cli() -> None:
    """Run the bench once per seed and write the per-seed and mean target points."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--name", choices=sorted(RUNS), default="gsm8k")
    parser.add_argument("--work", type=Path, default=Path("/tmp/moai-bench-cascade-seeds"))
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    share = RUNS[args.name][2]
    start = time.perf_counter()
    rows: dict[str, list[tuple[int, float, float, bool]]] = {}
    for seed in args.seeds:
        report = _run(args.name, seed, args.work, args.jobs)
        best = report["best_single"]
        reference = report["methods"]["best_single"]["validation_curve"][0]
        for method, entry in report["methods"].items():
            if method == "best_single":
                continue
            point = entry["curve"][target_point(entry, reference)]
            q, c = point["quality"] / best["quality"], point["cost"] / best["cost"]
            rows.setdefault(method, []).append((seed, q, c, q >= share - 1e-12 and c <= TARGET_COST))
    lines = [
        f"# `moai bench cascade` on {args.name} over {len(args.seeds)} splits (`python bench/cascade_seeds.py`)\n",
        f"Target: {share:.0%} of the best single model's test quality at <= {TARGET_COST}x its test cost, at each "
        "method's target point chosen on train (best out-of-fold quality within "
        f"{TARGET_COST}x the best single model's out-of-fold cost). Seeds {', '.join(map(str, args.seeds))}; "
        f"{time.perf_counter() - start:.0f} s wall.\n",
        "| method | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean | met |",
        "|---|" + "---:|" * (len(args.seeds) + 2),
    ]
    for method, points in rows.items():
        cells = [f"{q:.1%} @ {c:.3f}x" for _, q, c, _ in points]
        mean_q = statistics.fmean(q for _, q, _, _ in points)
        mean_c = statistics.fmean(c for _, _, c, _ in points)
        met = sum(m for *_, m in points)
        lines.append(f"| {method} | {' | '.join(cells)} | {mean_q:.1%} @ {mean_c:.3f}x | {met} of {len(points)} |")
    text = "\n".join(lines) + "\n"
    print(text)
    (RESULTS / "cascade_seeds.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main_cli()
