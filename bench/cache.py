"""The gate with and without the routing cache, side by side in one run, on the bundled `route` mix.

Traffic: a stream of N queries drawn from D distinct MMLU test questions (from ../shared/data/qa/mmlu
or $MOAI_QA_DIR) with Zipf-like popularity (weight 1/rank^s), as real traffic repeats its popular
questions; a share of the repeats are near-duplicates (case, spacing and punctuation changed), which only
the similarity tier can catch. A second stream of N all-distinct questions shows what the cache costs
when it never hits. Each stream goes through `moai.nodes.gate.decide` on two `MixRuntime`s of the same mix
(shipped learned scorer, same encoder): `gate.cache: null` and `gate.cache: {similarity 0.95}`, in
alternation, so machine noise falls on both alike. Reported: p50 and mean time per query, their ratio,
hit rate (exact and near), and how often a cached decision picks the model a fresh one picks.

Run from the repository root:  python bench/cache.py [--n 2000] [--distinct 400] [--out bench/results/cache.md]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import statistics
import time
from pathlib import Path

from moai.api import mix_runtime
from moai.mix_instructions import load_spec
from moai.mix_instructions.schema import RoutingCache
from moai.nodes.gate import decide
from moai.nodes.runtime import MixRuntime

ROOT = Path(__file__).resolve().parent.parent

QA_DIR = Path(os.environ.get("MOAI_QA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "qa"))


def _questions(n: int, seed: int) -> list[str]:
    rows = []
    for path in sorted((QA_DIR / "mmlu" / "test").glob("*.csv")):
        with path.open(encoding="utf-8") as handle:
            rows += [row[0] for row in csv.reader(handle)]
    return random.Random(seed).sample(rows, n)


def _near(text: str, rng: random.Random) -> str:
    """A near-duplicate: what users type differently when they ask the same thing."""
    edits = [str.lower, lambda t: "  ".join(t.split()), lambda t: t.rstrip("?.") + "?", lambda t: t + " "]
    return rng.choice(edits)(text)


def _stream(distinct: list[str], n: int, zipf_s: float, near_share: float, seed: int) -> list[str]:
    rng = random.Random(seed)
    weights = [1 / (rank + 1) ** zipf_s for rank in range(len(distinct))]
    seen: set[str] = set()
    out = []
    for text in rng.choices(distinct, weights, k=n):
        out.append(_near(text, rng) if text in seen and rng.random() < near_share else text)
        seen.add(text)
    return out


def _run(stream: list[str], plain: MixRuntime, cached: MixRuntime) -> dict[str, float]:
    times: dict[str, list[float]] = {"off": [], "on": []}
    hits = agree = 0
    for i, query in enumerate(stream):
        order = (("off", plain), ("on", cached)) if i % 2 else (("on", cached), ("off", plain))
        for name, mix in order:
            start = time.perf_counter()
            decision = decide(mix, query, False)
            times[name].append(time.perf_counter() - start)
            if name == "on":
                hit, chosen = decision["cache_hit"], decision["selected"]
            else:
                fresh = decision["selected"]
        hits += hit
        agree += hit and chosen == fresh
    p50 = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    mean = {name: statistics.fmean(t) * 1e3 for name, t in times.items()}
    return {
        "p50_off_ms": p50["off"],
        "p50_on_ms": p50["on"],
        "mean_off_ms": mean["off"],
        "mean_on_ms": mean["on"],
        "hit_rate": hits / len(stream),
        "agreement": agree / hits if hits else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="queries per stream")
    parser.add_argument("--distinct", type=int, default=400, help="distinct questions of the repeating stream")
    parser.add_argument("--zipf", type=float, default=1.0, help="popularity exponent s (weight 1/rank^s)")
    parser.add_argument("--near", type=float, default=0.3, help="share of repeats typed differently")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cache.md")
    args = parser.parse_args()

    spec = load_spec("route")
    off = spec.model_copy(update={"gate": spec.gate.model_copy(update={"cache": None})})
    on = spec.model_copy(update={"gate": spec.gate.model_copy(update={"cache": RoutingCache(size=1024)})})
    questions = _questions(args.distinct + args.n, args.seed)
    streams = {
        f"repeating ({args.distinct} distinct, Zipf s={args.zipf:g}, {args.near:.0%} of repeats retyped)": _stream(
            questions[: args.distinct], args.n, args.zipf, args.near, args.seed
        ),
        "all distinct (the cache never hits)": questions[args.distinct :],
    }
    warm = mix_runtime(off)
    for query in questions[:20]:
        decide(warm, query, False)  # load the encoder and the scorer once, outside the timings
    lines = [
        "# The gate with and without the routing cache",
        "",
        f"`python bench/cache.py --n {args.n} --distinct {args.distinct} --zipf {args.zipf:g} --near {args.near:g}`,"
        f" bundled `route` mix (scorer `{spec.gate.scorer}`, encoder `{warm.scorer.encoder_name}`),"  # type: ignore[attr-defined]
        f" {args.n} queries per stream, cache on and off in alternation.",
        "",
        "| traffic | p50 off ms | p50 on ms | p50 ratio on/off | mean off ms | mean on ms | mean ratio | hit rate "
        "| cached = fresh pick |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, stream in streams.items():
        r = _run(stream, mix_runtime(off), mix_runtime(on))
        lines.append(
            f"| {label} | {r['p50_off_ms']:.2f} | {r['p50_on_ms']:.2f} | {r['p50_on_ms'] / r['p50_off_ms']:.2f} "
            f"| {r['mean_off_ms']:.2f} | {r['mean_on_ms']:.2f} | {r['mean_on_ms'] / r['mean_off_ms']:.2f} "
            f"| {r['hit_rate']:.1%} | {r['agreement']:.1%} |"
        )
        print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
