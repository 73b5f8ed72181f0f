"""The built-in detectors of personal data: false positives on ordinary questions, recall, and speed.

  false positives  every GSM8K question (test and train) and every MMLU test question (with its four
                   choices, one a line) through `sensitive_in` with the default rule: the share flagged,
                   and what flagged it.
  recall           1,000 values of each kind (SSN, card, email, phone, IBAN; seeded, in the formats
                   people write them) inserted at a random word of a GSM8K test question: the share
                   found sensitive.
  speed            microseconds per question for the default rule; and the pattern `^(a+)+$` on a query
                   of n a's and a '!' with Python's `re` (exponential) against RE2 (linear).

Data: ../shared/data/qa (or $MOAI_QA_DIR): gsm8k/{test,train}.jsonl, mmlu/test/*.csv.
Run from the repository root:  python bench/privacy.py [--out bench/results/privacy.md]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from moai.mix_instructions.schema import SensitiveRule
from moai.scorer.privacy import find, sensitive_in

ROOT = Path(__file__).resolve().parent.parent
QA_DIR = Path(os.environ.get("MOAI_QA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "qa"))
RULE = SensitiveRule()


def gsm8k(split: str) -> list[str]:
    with open(QA_DIR / "gsm8k" / f"{split}.jsonl") as f:
        return [json.loads(line)["question"] for line in f]


def mmlu() -> list[str]:
    out = []
    for path in sorted((QA_DIR / "mmlu" / "test").glob("*.csv")):
        with open(path, newline="") as f:
            out += [
                "\n".join([r["question"], r["choice0"], r["choice1"], r["choice2"], r["choice3"]])
                for r in csv.DictReader(f)
            ]
    return out


def false_positives(name: str, texts: list[str]) -> str:
    start = time.perf_counter()
    flagged = [t for t in texts if sensitive_in(t, RULE)]
    us = 1e6 * (time.perf_counter() - start) / len(texts)
    by = Counter(f.label for t in flagged for f in find(t, RULE))
    examples = "; ".join(repr(t[f.start : f.end]) for t in flagged[:5] for f in find(t, RULE))
    return (
        f"| {name} | {len(texts):,} | {len(flagged)} | {100 * len(flagged) / len(texts):.2f}% | "
        f"{dict(by) or '-'} {examples} | {us:.0f} |"
    )


def _luhn_complete(prefix: str) -> str:
    for d in "0123456789":
        n = prefix + d
        total = sum((v := int(c) * (2 if i % 2 else 1)) - (9 if v > 9 else 0) for i, c in enumerate(reversed(n)))
        if total % 10 == 0:
            return n
    raise AssertionError


def generators(rng: random.Random) -> dict[str, Callable[[], str]]:
    def ssn() -> str:
        area, sep = rng.choice([a for a in range(1, 900) if a != 666]), rng.choice("- ")
        return f"{area:03d}{sep}{rng.randint(1, 99):02d}{sep}{rng.randint(1, 9999):04d}"

    def card() -> str:
        n = _luhn_complete("4" + "".join(rng.choice("0123456789") for _ in range(14)))
        return rng.choice(
            [n, " ".join(n[i : i + 4] for i in range(0, 16, 4)), "-".join(n[i : i + 4] for i in range(0, 16, 4))]
        )

    def email() -> str:
        return (
            rng.choice(["jane.doe", "j_smith+tag", "bob42"])
            + "@"
            + rng.choice(["example.com", "mail.co.uk", "uni-x.edu"])
        )

    def phone() -> str:
        a, b, c = rng.randint(200, 999), rng.randint(200, 999), rng.randint(0, 9999)
        two = [rng.randint(10, 99) for _ in range(4)]
        return rng.choice(
            [
                f"({a}) {b}-{c:04d}",
                f"{a}-{b}-{c:04d}",
                f"+1 {a} {b} {c:04d}",
                f"+44 20 {rng.randint(1000, 9999)} {c:04d}",
                f"0{rng.randint(1, 9)} " + " ".join(map(str, two)),
            ]
        )

    def iban() -> str:
        bban = "".join(rng.choice("0123456789") for _ in range(18))
        check = 98 - int("".join(str(int(c, 36)) for c in bban + "DE00")) % 97
        s = f"DE{check:02d}{bban}"
        return rng.choice([s, " ".join(s[i : i + 4] for i in range(0, len(s), 4))])

    return {"ssn": ssn, "payment_card": card, "email": email, "phone": phone, "iban": iban}


def recall(questions: list[str], n: int = 1000) -> list[str]:
    rng = random.Random(0)
    rows = []
    for name, make in generators(rng).items():
        hits = 0
        for i in range(n):
            words = questions[i % len(questions)].split(" ")
            k = rng.randint(0, len(words))
            hits += sensitive_in(" ".join([*words[:k], make(), *words[k:]]), RULE)
        rows.append(f"| {name} | {n} | {hits} | {100 * hits / n:.1f}% |")
    return rows


def backtracking() -> list[str]:
    rows = []
    rule = SensitiveRule(detectors=(), patterns=["^(a+)+$"])
    python = re.compile("^(a+)+$")
    for n in (16, 20, 22, 24, 100_000):
        text = "a" * n + "!"
        start = time.perf_counter()
        sensitive_in(text, rule)
        re2_s = time.perf_counter() - start
        py = "(not run)"
        if n <= 24:
            start = time.perf_counter()
            python.search(text)
            py = f"{time.perf_counter() - start:.3f} s"
        rows.append(f"| {n:,} | {py} | {re2_s * 1e3:.2f} ms |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "privacy.md")
    args = parser.parse_args()
    test = gsm8k("test")
    lines = [
        "# Built-in detectors of personal data (`python bench/privacy.py`)",
        "",
        "False positives: ordinary questions the default rule (every detector on, no pattern) finds sensitive.",
        "",
        "| questions | n | flagged | rate | by detector, examples | us/question |",
        "|---|---|---|---|---|---|",
        false_positives("GSM8K test", test),
        false_positives("GSM8K train", gsm8k("train")),
        false_positives("MMLU test (question + choices)", mmlu()),
        "",
        "Recall: a value of each kind inserted at a random word of a GSM8K test question.",
        "",
        "| kind | n | found sensitive | rate |",
        "|---|---|---|---|",
        *recall(test),
        "",
        "The pattern `^(a+)+$` on n a's and a '!' (no match): Python's `re` against RE2, as moai matches it.",
        "",
        "| n | Python re | RE2 |",
        "|---|---|---|",
        *backtracking(),
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
