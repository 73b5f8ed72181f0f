"""How well each answer-reading judge predicts that an answer is right: AUC per model, on real answers.

Data: the recorded responses of real models (../shared/data/responses beside the checkout, or $MOAI_RESPONSES_DIR):
`gsm8k_gpt4_mixtral_train.jsonl.gz` (659 GSM8K questions, GPT-4-1106 and Mixtral-8x7B) and
`routerbench_train.jsonl.gz` (2,218 queries x 11 models; ARC-Challenge, Winogrande, MBPP). For every
answer: the judges of `moai.scorer.answers` (the functions a judge step's `read:` runs) and the recorded
grade (right when its score is >= 0.5). Agreement is the answer's share of the other models' answers to the
same query that agree with it (on GSM8K: does the other model give the same final number), and its agreement with
GPT-4-1106's answer alone (what a two-model cascade has); form and
arithmetic read the answer alone. AUC (Mann-Whitney, ties count half) over the answers a judge scores;
'scored' is the share of answers it gives a score at all (None elsewhere). Nothing of those is trained or
tuned, so there is no split: every figure is held-out-free.

The verifier (`moai.scorer.verifier`, the judge `read: [verifier]`) is learned, so it is measured on
held-out queries only: each file is split by id (RouterBench 80/20, GSM8K 50/50, seed 0; the recipe of
`moai bench routing`), one verifier is trained on the train parts of both files (static encoder), and its
AUC is taken over the answers to the test queries ('verifier (held out)'); for comparison, the same
test answers' agreement-with-GPT-4 AUC where there is one.

Run from the repository root:  python bench/judges.py [--data DIR] [--out bench/results/judges.md]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from moai.scorer.answers import agreement, arithmetic_score, form_score, query_form
from moai.scorer.code import asks_for_code, code_score
from moai.scorer.verifier import Example, auc, read_examples, split_ids, train_verifier

JUDGES = ("agreement", "agreement with GPT-4", "form", "arithmetic", "code")
HELD_OUT = ("verifier (held out)", "agreement with GPT-4 (held out)")
PARTNER = "gpt-4-1106-preview"
FILES = ("gsm8k_gpt4_mixtral_train.jsonl.gz", "routerbench_train.jsonl.gz")
TEST_SHARE = {"gsm8k_gpt4_mixtral_train.jsonl.gz": 0.5, "routerbench_train.jsonl.gz": 0.2}
"""Share of each file's query ids held out from the verifier's training."""
SEED = 0


def read_file(path: Path) -> dict[tuple[str, str], dict[str, dict[str, object]]]:
    """Group the rows by (task, id) and model."""
    queries: dict[tuple[str, str], dict[str, dict[str, object]]] = defaultdict(dict)
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row.get("response") is None or row.get("score") is None:
                continue
            queries[(row["task"], row["id"])][row["model"]] = row
    return queries


def held_out(data: Path) -> tuple[list[Example], dict[str, set[str]]]:
    """Return the training answers of every file and each file's held-out query ids."""
    train: list[Example] = []
    test_ids: dict[str, set[str]] = {}
    for name in FILES:
        examples = read_examples([data / name])
        train_ids, test_ids[name] = split_ids((e.id for e in examples), TEST_SHARE[name], SEED, name)
        train += [e for e in examples if e.id in train_ids]
    return train, test_ids


def judge_file(
    path: Path, verifier: Any = None, test_ids: set[str] | None = None
) -> dict[tuple[str, str], dict[str, list[tuple[float | None, bool]]]]:
    """Return, per (task, model), each judge's (score, right) over the answers (the verifier's: over test ids)."""
    out: dict[tuple[str, str], dict[str, list[tuple[float | None, bool]]]] = defaultdict(lambda: defaultdict(list))
    for (task, qid), answers in read_file(path).items():
        models = sorted(answers)
        prompt = str(answers[models[0]]["prompt"])
        texts = [str(answers[m]["response"]) for m in models]
        form = query_form(prompt) or "text"
        agreed = agreement(texts, form)
        if PARTNER in answers:  # agreement with the strong model alone, as a two-model cascade sees it
            partner = str(answers[PARTNER]["response"])
            with_partner = {m: agreement([t, partner], form)[0] for m, t in zip(models, texts, strict=True)}
        for model, text, agree in zip(models, texts, agreed, strict=True):
            right = float(answers[model]["score"]) >= 0.5  # type: ignore[arg-type]
            cell = out[(task, model)]
            cell["agreement"].append((agree, right))
            if PARTNER in answers and model != PARTNER:
                cell["agreement with GPT-4"].append((with_partner[model], right))
            cell["form"].append((form_score(prompt, text), right))
            cell["arithmetic"].append((arithmetic_score(text), right))
            code = asyncio.run(code_score(prompt, text)) if asks_for_code(prompt) else None
            cell["code"].append((code, right))
        if verifier is not None and test_ids is not None and qid in test_ids:
            for model, p in zip(models, verifier.score(prompt, texts, models), strict=True):
                right = float(answers[model]["score"]) >= 0.5  # type: ignore[arg-type]
                out[(task, model)]["verifier (held out)"].append((p, right))
                if PARTNER in answers and model != PARTNER:
                    out[(task, model)]["agreement with GPT-4 (held out)"].append((with_partner[model], right))
    return out


def table(results: dict[tuple[str, str], dict[str, list[tuple[float | None, bool]]]]) -> list[str]:
    """Return the markdown table: each judge's AUC (share scored) on all answers, then the held-out ones."""
    lines = [
        "| task | model | answers | right | "
        + " | ".join(f"{j} AUC (scored)" for j in JUDGES)
        + " | "
        + " | ".join(f"{j} AUC (answers)" for j in HELD_OUT)
        + " |",
        "|---|---|---:|---:|" + "---:|" * (len(JUDGES) + len(HELD_OUT)),
    ]
    for (task, model), cell in sorted(results.items()):
        n = len(cell["form"])
        right = sum(r for _, r in cell["form"]) / n
        cells = []
        for judge in JUDGES:
            if judge not in cell:
                cells.append("")
                continue
            scored = [(s, r) for s, r in cell[judge] if s is not None]
            value = auc(scored)
            cells.append(f"{'-' if value is None else f'{value:.3f}'} ({len(scored) / n:.0%})")
        for judge in HELD_OUT:
            held = [(s, r) for s, r in cell.get(judge, []) if s is not None]
            value = auc(held) if held else None
            cells.append(f"{'-' if value is None else f'{value:.3f}'} ({len(held)})" if held else "")
        lines.append(f"| {task} | {model} | {n} | {right:.3f} | " + " | ".join(cells) + " |")
    return lines


def latency(verifier: Any, data: Path, n: int = 500) -> str:
    """Return a line with the verifier's time per answer: one answer a call, as a cascade's judge step does."""
    examples = [e for name in FILES for e in read_examples([data / name])[:n]]
    verifier.score(examples[0].prompt, [examples[0].response], [examples[0].model])  # encoder loaded
    times = []
    for e in examples:
        start = time.perf_counter()
        verifier.score(e.prompt, [e.response], [e.model])
        times.append(time.perf_counter() - start)
    times.sort()
    median, p95 = times[len(times) // 2] * 1e3, times[int(0.95 * len(times))] * 1e3
    return (
        f"Verifier time per answer (one answer a call, {len(times)} answers, static encoder, this 2-core "
        f"machine under other load): median {median:.2f} ms, p95 {p95:.2f} ms."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(
            os.environ.get("MOAI_RESPONSES_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "responses")
        ),
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/judges.md"))
    args = parser.parse_args()
    lines = [
        "# Answer-reading judges: AUC per model on recorded answers",
        "",
        "Command: `python bench/judges.py` (data: ../shared/data/responses). AUC of each judge's score as a",
        "predictor of the answer being right (recorded grade >= 0.5), over the answers it scores; in brackets",
        "the share of answers it scores (None elsewhere). '-': the judge scores none, or they are all right",
        "or all wrong. Nothing is trained or tuned on these files, so no split is needed. Agreement: the share",
        "of the other models' answers to the same query that agree after normalising (GSM8K: the other of",
        "two models; RouterBench: the other ten). 'Agreement with GPT-4': with GPT-4-1106's answer alone, as a",
        "two-model cascade (cheap model, then GPT-4) sees it. Form and arithmetic read each answer alone.",
        "Code: where the query asks for code, 1 if the answer's code parses and defines a function, 0.5 if it",
        "parses without one, 0 if none parses; RouterBench's MBPP queries state no tests, so nothing is run.",
        "",
        "The verifier is learned, so it is measured on held-out queries: each file split by id (RouterBench",
        f"80/20, GSM8K 50/50, seed {SEED}), one verifier trained on the train parts of both (static encoder,",
        "`train_verifier`), AUC over the answers to the test queries (in brackets: how many). Beside it,",
        "agreement with GPT-4 on the same test answers. The verifier reads one answer and needs no second",
        "model's answer; agreement with GPT-4 needs GPT-4 to have answered too.",
        "",
    ]
    train, test_ids = held_out(args.data)
    from moai.scorer.encoders import STATIC_ENCODER, make_encoder

    verifier = train_verifier(train, encoder=make_encoder(STATIC_ENCODER), seed=SEED)
    print(f"verifier trained on {len(train)} answers", flush=True)
    lines += [latency(verifier, args.data), ""]
    for name in FILES:
        path = args.data / name
        lines += [f"## {name}", "", *table(judge_file(path, verifier, test_ids[name])), ""]
        print(f"done {name}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
