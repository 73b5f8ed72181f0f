"""The verifier: a small learned model of (query, answer, model) -> P(the answer is right).

A logistic regression over features that are computed from the texts, never obeyed:

- what the answer-reading judges read (`moai.scorer.answers`): the form the query asks for and whether the
  answer has it, the share of its written arithmetic that is right (each with a missing-indicator);
- plain facts of the answer: its length (log), lines, hedging and refusal phrases, a final-answer marker,
  a code block and whether its Python parses, how much of it repeats the query, whether its final number
  is whole, was worked out before the end and is the result of the last equation of the working, the
  share of the query's numbers it uses, the share of its calculator annotations ('<<2*3=6>>') that are
  right (with a missing-indicator); each also times the form the query asks for (choice, number, none),
  since what tells a right answer differs by task;
- the model's identity (one-hot over the models it was trained on; an unknown model gets none, and an
  'unknown' flag that training learns by hiding the identity of a share of its rows);
- the **prior**: how often this model was right on the training queries nearest to this one (a kNN over
  the query embeddings, shrunk to the model's mean), and the same over all models (how hard such queries
  are). The query is embedded by the encoder (the static one by default: well under a millisecond on a
  CPU). At training time each query's prior is computed leave-one-out, and the training embeddings and
  scores are stored in the checkpoint, so that the prior is computed the same way at run time.

So its output is the learned combination of the answer-reading judges with a prior, with weights fitted
on training data (the L2 strength chosen by cross-validation over the training queries), not hand-set.

A checkpoint is a folder: `verifier.json` (format, features, models, encoder, settings, training data,
held-out metrics) and `verifier.safetensors` (the weights; fp16 where size matters). Both are read with
bounds and checked, so a corrupt or hostile folder is refused with a message that names the file. A
checkpoint names the features its weights are over, and any of this release's `FEATURES` will do: one
written by an earlier release, with fewer features, is read and scores as it did.
"""

from __future__ import annotations

import ast
import gzip
import json
import math
import os
import random
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from moai.errors import MixError
from moai.mix_instructions.schema import MixSpec
from moai.scorer.answers import annotation_score, arithmetic_score, form_score, normalise, query_form
from moai.scorer.data.filecache import FileCache
from moai.scorer.data.responses import checked_record, response_lines

__all__ = [
    "BUNDLED_VERIFIER",
    "FEATURES",
    "FORMAT",
    "METADATA",
    "READS",
    "TEXT_FEATURES",
    "WEIGHTS",
    "Example",
    "Verifier",
    "answer_features",
    "auc",
    "bundled_verifiers",
    "cached_verifier",
    "check_verifiers",
    "evaluate",
    "load_verifier",
    "model_names",
    "read_examples",
    "resolve_verifier",
    "save_verifier",
    "split_ids",
    "train_verifier",
]

FORMAT = "moai-verifier/1"
METADATA = "verifier.json"
WEIGHTS = "verifier.safetensors"
BUNDLED_VERIFIER = "bundled:verifier"
"""The verifier a judge step uses unless it names another: trained on the shared responses data."""

MAX_METADATA_BYTES = 4 * 2**20
"""Largest `verifier.json` read (the stripped few-shot prefixes make up most of it)."""
MAX_WEIGHTS_BYTES = 256 * 2**20
"""Largest `verifier.safetensors` read."""
MAX_PREFIXES = 256
"""Few-shot prefixes a checkpoint may store (one per task of its training data)."""
ANSWER_CHARS = 4_000
"""Characters of an answer (the last ones) that are read for its features."""
QUERY_CHARS = 4_000
"""Characters of a query (after its known few-shot prefix, the last ones) that are embedded."""
CODE_CHARS = 10_000
"""Characters of code that are parsed to tell whether it is valid Python."""
MAX_NUMBERS = 500
"""Numbers of a query, and of an answer, that are compared (the query's last ones, the answer's last ones)."""
K = 20
"""Neighbours of the kNN prior where no cross-validation chooses them."""
K_GRID = (10, 25, 50, 100)
"""Neighbours of the kNN prior tried by cross-validation over the training queries."""
PSEUDO = 2.0
"""Pseudo-count of the model's mean in the kNN prior (shrinks a prior read from few neighbours)."""
HIDE_SHARE = 0.15
"""Share of the training rows whose model identity is hidden, so the verifier learns the unknown-model case."""
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
"""Inverse L2 strengths tried by cross-validation over the training queries."""
FOLDS = 3

_HEDGES = re.compile(
    r"\b(?:not sure|unsure|i think|i believe|probably|possibly|perhaps|maybe|might be|may be|unclear|"
    r"approximately|roughly|it seems|likely|assum(?:e|ing)|however|cannot be determined|not enough information)\b",
    re.IGNORECASE,
)
_REFUSAL = re.compile(
    r"\b(?:i(?: a|')m sorry|i apologi[sz]e|i can(?:no|')t (?:help|answer|provide|determine)|as an ai|"
    r"i am unable|i'm unable|unable to (?:answer|determine))\b",
    re.IGNORECASE,
)
_FINAL = re.compile(r"####|\\boxed|\bthe (?:final )?answer is\b|\banswer\s*[:=]", re.IGNORECASE)
_FENCE = re.compile(r"```[ \t]{0,4}([A-Za-z0-9_+-]{0,20})[ \t]*\n(.*?)```", re.DOTALL)
_CODE_HINT = re.compile(r"^\s{0,8}(?:def|class|import|from)\s", re.MULTILINE)
_WORD = re.compile(r"[^\W_]{1,40}")
_NUMBER = re.compile(r"\d{1,30}")
# A number as written in a text, thousands groups and decimals included (longer digit runs are cut).
_AMOUNT = r"\d{1,30}(?:,\d{3}){0,10}(?:\.\d{1,30})?"
_NUMBER_TEXT = re.compile(rf"(?<![\d.]){_AMOUNT}")
# The result of an equation or calculator annotation: '= 75', '= $75', '<<150/10*5=75>>'.
_RESULT = re.compile(rf"=[ \t]{{0,4}}\$?[ \t]{{0,2}}(-?{_AMOUNT})")

_PLAIN: tuple[str, ...] = (
    "answer_chars",
    "answer_lines",
    "query_chars",
    "asks_choice",
    "asks_number",
    "asks_none",
    "form",
    "form_missing",
    "arithmetic",
    "arithmetic_missing",
    "hedges",
    "refusal",
    "final_marker",
    "code_block",
    "code_parses",
    "code_missing",
    "numbers",
    "query_overlap",
    "empty",
    "final_integer",
    "final_in_work",
    "equations",
    "final_is_last_result",
    "query_numbers_used",
    "annotations",
    "annotations_missing",
)
_ASKS = ("asks_choice", "asks_number", "asks_none")
TEXT_FEATURES: tuple[str, ...] = (
    *_PLAIN,
    *(f"{ask}*{name}" for ask in _ASKS for name in _PLAIN if name not in _ASKS),
)
"""The features of the texts alone (see `answer_features`), in the order the weights use: each plain one,
then each times the form the query asks for."""
PRIOR_FEATURES = ("prior_logit", "prior_all_logit", "model_unknown")
READS = ("form", "arithmetic")
"""The answer-reading judges whose scores are features of the verifier: beside it they add nothing."""
FEATURES = (*TEXT_FEATURES, *PRIOR_FEATURES)
"""Named features this release computes; the model one-hot follows. A verifier uses these or some of them."""
_FEATURE_INDEX = {name: i for i, name in enumerate(FEATURES)}

FloatArray = npt.NDArray[np.float64]


# --------------------------------------------------------------------------- features of the texts


def _python_parses(code: str) -> bool:
    try:
        ast.parse(code[:CODE_CHARS])
    except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError):
        return False
    return True


def _code(answer: str) -> tuple[float, float, float]:
    """Return (has a code block, its Python parses, no code at all) for an answer."""
    blocks = [m[2] for m in _FENCE.finditer(answer) if m[1].lower() in ("", "python", "py", "python3")]
    if blocks:
        return 1.0, float(all(_python_parses(b) for b in blocks[:4])), 0.0
    if "```" in answer:
        return 1.0, 0.0, 0.0
    if _CODE_HINT.search(answer):
        return 0.0, float(_python_parses(answer)), 0.0
    return 0.0, 0.0, 1.0


def _final_number(answer: str, key: str | None) -> tuple[float, float]:
    """Return (the final number is whole, it is written more than once) for the final number `key`."""
    if key is None:
        return 0.0, 0.0
    whole = float("." not in key)
    shown = re.compile(rf"(?<![\d.]){re.escape(key)}(?![\d])")
    # Worked out: written at least twice (as a result in the working, then as the final answer).
    return whole, float(len(shown.findall(answer.replace(",", ""), 0)) >= 2)


def _decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None


def _numbers(text: str) -> set[Decimal]:
    """Return the distinct values of the last `MAX_NUMBERS` numbers written in a text."""
    return {v for v in map(_decimal, _NUMBER_TEXT.findall(text)[-MAX_NUMBERS:]) if v is not None}


def _worked(tail: str, key: str | None, query: str) -> tuple[float, float]:
    """Return (the final number `key` is the working's last result, the share of the query's numbers used).

    The working is all but the last line; its last result is the number after its last '=' (an equation's
    or a calculator annotation's). The share counts the query's distinct numbers that the answer writes
    (1.0 when the query has none): a solution that leaves a given out has often misread the question.
    """
    text = tail.rstrip()
    working = text[: text.rfind("\n") + 1]
    last_result = None
    for match in _RESULT.finditer(working):
        last_result = match[1]
    final = _decimal(key) if key is not None else None
    asked = _numbers(query[-ANSWER_CHARS:])
    return (
        float(final is not None and last_result is not None and _decimal(last_result) == final),
        len(asked & _numbers(tail)) / len(asked) if asked else 1.0,
    )


def answer_features(query: str, answer: str) -> list[float]:
    """Return the features of an answer's text (`TEXT_FEATURES`), each bounded, for any input.

    Only the last `ANSWER_CHARS` characters of the answer are read, and the query's first ones; what the
    answer says is counted and parsed, never followed: a line claiming the answer is right is a few
    more words, nothing else.

    Args:
        query: The user's query.
        answer: A model's answer.
    """
    tail = answer[-ANSWER_CHARS:]
    head = query[:ANSWER_CHARS]
    form = query_form(query)
    read_form = form_score(query, tail)
    read_arithmetic = arithmetic_score(tail)
    read_annotations = annotation_score(tail)
    code_block, code_parses, code_missing = _code(tail)
    words = {w.lower() for w in _WORD.findall(tail)}
    query_words = {w.lower() for w in _WORD.findall(head)}
    overlap = len(words & query_words) / len(words) if words else 0.0
    # The final number, where the query asks for one.
    key = normalise(tail, "number") if form == "number" else None
    out = [
        math.log1p(len(answer)) / 10,
        math.log1p(tail.count("\n")) / 5,
        math.log1p(len(query)) / 10,
        float(form == "choice"),
        float(form == "number"),
        float(form is None),
        read_form or 0.0,
        float(read_form is None),
        read_arithmetic or 0.0,
        float(read_arithmetic is None),
        min(len(_HEDGES.findall(tail)), 5) / 5,
        float(_REFUSAL.search(tail) is not None),
        float(_FINAL.search(tail) is not None),
        code_block,
        code_parses,
        code_missing,
        min(math.log1p(len(_NUMBER.findall(tail))), 5.0) / 5,
        overlap,
        float(not tail.strip()),
        *_final_number(tail, key),
        min(math.log1p(tail.count("=")), 4.0) / 4,
        *_worked(tail, key, query),
        read_annotations or 0.0,
        float(read_annotations is None),
    ]
    # Each feature also times the form the query asks for: what tells a right answer differs by task.
    asks = out[3:6]
    plain = out[:3] + out[6:]
    return out + [a * f for a in asks for f in plain]


def _logit(p: FloatArray) -> FloatArray:
    q = np.clip(p, 0.02, 0.98)
    return np.asarray(np.log(q / (1 - q)))


# --------------------------------------------------------------------------- the model


@dataclass
class Verifier:
    """A trained verifier: scores (query, answer, model) triples with P(the answer is right).

    Attributes:
        models: The models it knows by identity (the columns of `scores`).
        encoder_name: The encoder of its embeddings ('none': no embedding, the prior is the model's mean).
        coef: Weights over the standardised features; `intercept` the bias.
        mean, scale: The standardisation of the features.
        train_emb: The training queries' embeddings (kNN prior), [queries, dim]; empty with no encoder.
        scores: Their recorded scores, [queries, models], NaN where a model has none.
        prefixes: Few-shot prefixes of the training tasks, stripped from a query before it is embedded.
        features: The named features its weights are over, in their order (the model one-hot follows):
            all of `FEATURES` when trained by this release, fewer when read from an earlier one.
        meta: What the checkpoint records besides (data, metrics, settings).
    """

    models: tuple[str, ...]
    encoder_name: str
    coef: FloatArray
    intercept: float
    mean: FloatArray
    scale: FloatArray
    train_emb: npt.NDArray[np.float32]
    scores: FloatArray
    prefixes: tuple[str, ...] = ()
    features: tuple[str, ...] = FEATURES
    k: int = K
    pseudo: float = PSEUDO
    meta: dict[str, Any] = field(default_factory=dict)
    encoder: Any = None
    """The encoder itself, built from `encoder_name` on first use (or handed in: tests)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _prior_tables: Any = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        """Embedding width (0 without an encoder)."""
        return int(self.train_emb.shape[1]) if self.train_emb.ndim == 2 else 0

    def _encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if not self.dim:
            return np.zeros((len(texts), 0), dtype=np.float32)
        if self.encoder is None:
            with self._lock:
                if self.encoder is None:
                    from moai.scorer.encoders import encoder_from_name

                    self.encoder = encoder_from_name(self.encoder_name)
        out = np.asarray(self.encoder.encode(list(texts)), dtype=np.float32)
        if out.shape != (len(texts), self.dim):
            raise ValueError(f"encoder {self.encoder_name!r} gave shape {out.shape}; the verifier needs dim {self.dim}")
        return out

    def query_text(self, query: str) -> str:
        """Return what of a query is embedded: without a known few-shot prefix, at most `QUERY_CHARS`."""
        for prefix in self.prefixes:
            if query.startswith(prefix) and query[len(prefix) :].strip():
                return query[len(prefix) :][-QUERY_CHARS:]
        return query[-QUERY_CHARS:]

    def priors(self, query_emb: npt.NDArray[np.float32], exclude: Sequence[int] | None = None) -> FloatArray:
        """Return, per query, each model's kNN prior and then the all-models one: [queries, models + 1].

        Args:
            query_emb: Query embeddings [queries, dim].
            exclude: Per query, a training row left out of its neighbours (leave-one-out at training).
        """
        train, filled, known, model_mean, row_mean, all_mean = self._tables()
        n = len(query_emb)
        out = np.empty((n, len(self.models) + 1))
        out[:, :-1] = model_mean
        out[:, -1] = all_mean
        k = min(self.k, len(self.train_emb) - (1 if exclude is not None else 0))
        if not self.dim or k <= 0:
            return out
        for start in range(0, n, 512):
            chunk = query_emb[start : start + 512].astype(np.float32)
            # One query (the judge's case) is summed by numpy's own loop: waking BLAS threads for so small
            # a product costs more than the product on a busy machine (25 ms against 0.5 ms, measured).
            sims = np.einsum("qd,nd->qn", chunk, train) if len(chunk) == 1 else chunk @ train.T
            if exclude is not None:
                sims[np.arange(len(sims)), np.asarray(exclude[start : start + 512])] = -np.inf
            # The prior is a sum over the k nearest: their order does not matter, only which they are.
            near = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            s, m = filled[near], known[near]
            out[start : start + 512, :-1] = (s.sum(1) + self.pseudo * model_mean) / (m.sum(1) + self.pseudo)
            out[start : start + 512, -1] = (row_mean[near].sum(1) + self.pseudo * all_mean) / (k + self.pseudo)
        return out

    def _tables(self) -> tuple[Any, FloatArray, npt.NDArray[np.bool_], FloatArray, FloatArray, float]:
        """Return what every prior reads, computed once: the embeddings in float32, scores, means."""
        if self._prior_tables is None:
            with self._lock:
                if self._prior_tables is None:
                    known = np.isfinite(self.scores)
                    filled = np.where(known, self.scores, 0.0)
                    row_mean = filled.sum(1) / np.maximum(known.sum(1), 1)
                    self._prior_tables = (
                        np.ascontiguousarray(self.train_emb, dtype=np.float32),
                        filled,
                        known,
                        filled.sum(0) / np.maximum(known.sum(0), 1),
                        row_mean,
                        float(row_mean.mean()) if len(row_mean) else 0.5,
                    )
        tables: tuple[Any, FloatArray, npt.NDArray[np.bool_], FloatArray, FloatArray, float] = self._prior_tables
        return tables

    def design(
        self,
        texts: FloatArray,
        priors: FloatArray,
        model_cols: Sequence[int | None],
    ) -> FloatArray:
        """Return the feature matrix: the verifier's `features` (out of `texts` and the priors), model one-hot.

        Args:
            texts: Rows of `answer_features` (all of `TEXT_FEATURES`).
            priors: Rows of `priors`, one per text.
            model_cols: Each row's model column, None for an unknown model.
        """
        n = len(texts)
        onehot = np.zeros((n, len(self.models)))
        prior = np.empty(n)
        unknown = np.zeros(n)
        for i, col in enumerate(model_cols):
            if col is None:
                prior[i], unknown[i] = priors[i, -1], 1.0
            else:
                onehot[i, col], prior[i] = 1.0, priors[i, col]
        x = np.hstack(
            [
                texts,
                _logit(prior)[:, None],
                _logit(priors[:, -1])[:, None],
                unknown[:, None],
                onehot,
            ]
        )
        if self.features == FEATURES:
            return x
        # A checkpoint's weights are over the features it names: take those columns, by name.
        columns = [_FEATURE_INDEX[name] for name in self.features]
        return x[:, [*columns, *range(len(FEATURES), x.shape[1])]]

    def probability(self, x: FloatArray) -> FloatArray:
        """Return P(right) for rows of a design matrix."""
        z = ((x - self.mean) / self.scale) @ self.coef + self.intercept
        return np.asarray(1 / (1 + np.exp(-np.clip(z, -30, 30))))

    def score(self, query: str, answers: Sequence[str], models: Sequence[str | None]) -> list[float]:
        """Return P(right) of each answer to one query, given who wrote it.

        Args:
            query: The user's query.
            answers: The answers.
            models: Each answer's model, by the name the verifier knows (an unknown name or None: the
                unknown-model case, scored by the all-models prior).
        """
        if len(answers) != len(models):
            raise ValueError(f"{len(answers)} answers but {len(models)} models")
        if not answers:
            return []
        texts = np.asarray([answer_features(query, a) for a in answers], dtype=np.float64)
        priors = np.repeat(self.priors(self._encode([self.query_text(query)])), len(answers), axis=0)
        index = {m: i for i, m in enumerate(self.models)}
        cols = [index.get(m) if m is not None else None for m in models]
        x = self.design(texts, priors, cols)
        return [float(p) for p in self.probability(x)]


# --------------------------------------------------------------------------- training data


@dataclass(frozen=True)
class Example:
    """One graded answer of a responses file."""

    source: str
    id: str
    prompt: str
    task: str
    model: str
    response: str
    score: float


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read_examples(paths: Iterable[str | Path]) -> list[Example]:
    """Read the graded answers of responses files (lines with a null score are skipped).

    Each line needs `id`, `prompt`, `model`, `response` and `score` (a number in [0, 1] or null); `task`
    is optional. A file is read line by line within the bounds of `moai.scorer.data.responses.response_lines`.

    Raises:
        ValueError: A line is malformed (the message names file:line), or nothing graded was found.
        FileNotFoundError: A file does not exist.
    """
    out: list[Example] = []
    files = list(dict.fromkeys(Path(p) for p in paths))
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"no responses file {str(path)!r}")
        seen: set[tuple[str, str]] = set()
        try:
            for where, line in response_lines(path):
                example = _example(line, where, str(path))
                if example is not None and (example.id, example.model) not in seen:
                    seen.add((example.id, example.model))
                    out.append(example)
        except (OSError, EOFError, gzip.BadGzipFile) as err:
            raise ValueError(f"{path}: cannot be read ({err})") from None
    if not out:
        raise ValueError(f"no graded answers (lines with a score) in {', '.join(map(str, files))}")
    return out


def _example(line: bytes, where: str, source: str) -> Example | None:
    record = checked_record(line, where, ("id", "prompt", "model", "response", "score"))
    task = record.get("task", "")
    if not isinstance(task, str):
        raise ValueError(f"{where}: 'task' must be a string, got {type(task).__name__}")
    score = record["score"]
    if score is None:
        return None
    if not _finite(score) or not 0.0 <= score <= 1.0:
        raise ValueError(f"{where}: 'score' must be a number in [0, 1] or null, got {score!r}")
    return Example(source, record["id"], record["prompt"], task, record["model"], record["response"], float(score))


def split_ids(ids: Iterable[str], test_fraction: float, seed: int, name: str) -> tuple[set[str], set[str]]:
    """Split a file's query ids into (train, test): sorted, shuffled by `Random(f"{seed}:{name}")`.

    The recipe of `moai.scorer.data.routing.split_rows` (`name` is the file's name), so the same seed
    gives the same split everywhere.
    """
    ordered = sorted(set(ids))
    random.Random(f"{seed}:{name}").shuffle(ordered)
    n_test = round(len(ordered) * test_fraction)
    return set(ordered[n_test:]), set(ordered[:n_test])


# --------------------------------------------------------------------------- training


def _queries(examples: Sequence[Example]) -> tuple[list[tuple[str, str]], dict[tuple[str, str], int]]:
    keys = list(dict.fromkeys((e.source, e.id) for e in examples))
    return keys, {key: i for i, key in enumerate(keys)}


def train_verifier(
    examples: Sequence[Example],
    *,
    encoder: Any = None,
    seed: int = 0,
    k: int | None = None,
    progress: Any = None,
) -> Verifier:
    """Fit a verifier on graded answers.

    The kNN prior of each training answer is computed leave-one-out (its own query is not its
    neighbour); its k is chosen from `K_GRID`, then the L2 strength from `C_GRID`, by `FOLDS`-fold
    cross-validation grouped by query (log loss); then the model is refitted on all the examples.
    Deterministic for a seed.

    Args:
        examples: Graded answers (`read_examples`).
        encoder: The text encoder (None: no embeddings; the prior is each model's mean).
        seed: Seed of the hidden identities and of the folds.
        k: Neighbours of the kNN prior; None: chosen from `K_GRID` by the same cross-validation (at C=1).
        progress: Called with a line of progress text, or None.
    """
    from moai.scorer.data.texts import query_texts

    if len({e.score >= 0.5 for e in examples}) < 2:
        raise ValueError("the answers are all right or all wrong: a verifier needs both to learn from")
    say = progress or (lambda _: None)
    keys, row_of = _queries(examples)
    models = tuple(dict.fromkeys(e.model for e in examples))
    col_of = {m: i for i, m in enumerate(models)}
    scores = np.full((len(keys), len(models)), np.nan)
    prompts: dict[int, tuple[str, str]] = {}
    for e in examples:
        row = row_of[(e.source, e.id)]
        scores[row, col_of[e.model]] = e.score
        prompts.setdefault(row, (e.prompt, e.task))
    prompt_list = [prompts[i][0] for i in range(len(keys))]
    task_list = [prompts[i][1] for i in range(len(keys))]
    stripped = query_texts(prompt_list, task_list)
    prefixes = sorted(
        {p[: len(p) - len(s)] for p, s in zip(prompt_list, stripped, strict=True) if len(s) < len(p)},
        key=len,
        reverse=True,
    )[:MAX_PREFIXES]
    if encoder is not None:
        say(f"embedding {len(keys)} queries with {encoder.name}")
        query_emb = np.asarray(encoder.encode([s[-QUERY_CHARS:] for s in stripped]), dtype=np.float32)
    else:
        query_emb = np.zeros((len(keys), 0), dtype=np.float32)
    verifier = Verifier(
        models=models,
        encoder_name=encoder.name if encoder is not None else "none",
        coef=np.zeros(0),
        intercept=0.0,
        mean=np.zeros(0),
        scale=np.ones(0),
        # Stored as fp16 in the checkpoint: train on what run time will see.
        train_emb=query_emb.astype(np.float16).astype(np.float32),
        scores=scores,
        prefixes=tuple(prefixes),
        encoder=encoder,
    )
    rows = np.asarray([row_of[(e.source, e.id)] for e in examples])
    rng = np.random.default_rng(seed)
    hidden = rng.random(len(examples)) < HIDE_SHARE
    cols: list[int | None] = [None if h else col_of[e.model] for e, h in zip(examples, hidden, strict=True)]
    texts = np.asarray([answer_features(e.prompt, e.response) for e in examples], dtype=np.float64)
    y = np.asarray([e.score >= 0.5 for e in examples], dtype=np.int64)
    exclude = list(range(len(keys))) if verifier.dim else None

    def standardised(neighbours: int) -> tuple[FloatArray, FloatArray, FloatArray]:
        verifier.k = neighbours
        x = verifier.design(texts, verifier.priors(verifier.train_emb, exclude=exclude)[rows], cols)
        mean, spread = x.mean(0), x.std(0)
        scale = np.where(spread > 1e-9, spread, 1.0)
        return (x - mean) / scale, mean, scale

    from threadpoolctl import threadpool_limits

    fold = _folds(rows, y, seed)
    k_losses: dict[str, float] = {}
    # One BLAS thread: on matrices this small, waking more costs more than it gives (measured 10x on 2 cores).
    with threadpool_limits(1):
        if k is None and verifier.dim and fold is not None:
            say("kNN priors (leave-one-out) for k in " + ", ".join(map(str, K_GRID)))
            k_losses = {str(n): _cv_loss(standardised(n)[0], y, fold, 1.0) for n in K_GRID}
            k = int(min(k_losses, key=lambda n: (k_losses[n], int(n))))
            say("cross-validated log loss by k (C=1): " + ", ".join(f"{n}: {v:.4f}" for n, v in k_losses.items()))
        z, mean, scale = standardised(k or K)
        losses = {f"{c:g}": _cv_loss(z, y, fold, c) for c in C_GRID} if fold is not None else {}
        c = float(min(losses, key=lambda n: (losses[n], -float(n)))) if losses else 1.0
        model = _fit(z, y, c)
    say("cross-validated log loss by C: " + ", ".join(f"{n}: {v:.4f}" for n, v in losses.items()) + f" -> C={c:g}")
    verifier.coef = np.asarray(model.coef_[0], dtype=np.float64)
    verifier.intercept = float(model.intercept_[0])
    verifier.mean, verifier.scale = mean, scale
    verifier.meta = {
        "C": c,
        "k": verifier.k,
        "cv_log_loss": losses,
        "cv_log_loss_by_k": k_losses,
        "hidden_share": HIDE_SHARE,
    }
    return verifier


def _fit(z: FloatArray, y: npt.NDArray[np.int64], c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=2000, tol=1e-6).fit(z, y)


def _folds(groups: npt.NDArray[Any], y: npt.NDArray[np.int64], seed: int) -> npt.NDArray[np.intp] | None:
    """Return each example's fold (`FOLDS`, grouped by query, seeded); None when too few to cross-validate."""
    unique = np.unique(groups)
    if len(unique) < FOLDS or len(set(y.tolist())) < 2:
        return None
    order = np.random.default_rng(seed).permutation(unique)
    fold_of = {int(g): i % FOLDS for i, g in enumerate(order)}
    return np.asarray([fold_of[int(g)] for g in groups], dtype=np.intp)


def _cv_loss(z: FloatArray, y: npt.NDArray[np.int64], fold: npt.NDArray[np.intp], c: float) -> float:
    """Return the mean log loss of out-of-fold predictions at inverse L2 strength `c`."""
    total = 0.0
    for f in range(FOLDS):
        train, test = fold != f, fold == f
        if len(set(y[train].tolist())) < 2:
            continue
        p = np.clip(_fit(z[train], y[train], c).predict_proba(z[test])[:, 1], 1e-6, 1 - 1e-6)
        total += float(-(y[test] * np.log(p) + (1 - y[test]) * np.log(1 - p)).sum())
    return total / len(y)


def evaluate(verifier: Verifier, examples: Sequence[Example]) -> dict[str, dict[str, float | int | None]]:
    """Return, per model, the AUC of the verifier's P(right) over held-out answers, with their counts."""
    by_query: dict[tuple[str, str], list[Example]] = {}
    for e in examples:
        by_query.setdefault((e.source, e.id), []).append(e)
    pairs: dict[str, list[tuple[float, bool]]] = {}
    for group in by_query.values():
        probs = verifier.score(group[0].prompt, [e.response for e in group], [e.model for e in group])
        for e, p in zip(group, probs, strict=True):
            pairs.setdefault(e.model, []).append((p, e.score >= 0.5))
    return {
        model: {"answers": len(v), "right": sum(r for _, r in v) / len(v), "auc": auc(v)}
        for model, v in sorted(pairs.items())
    }


def auc(pairs: Iterable[tuple[float, bool]]) -> float | None:
    """Return the AUC of scores for right answers over wrong ones (ties count half); None without both."""
    ranked = sorted(pairs)
    positives = sum(1 for _, right in ranked if right)
    negatives = len(ranked) - positives
    if not positives or not negatives:
        return None
    rank_sum = 0.0
    i = 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        rank_sum += (i + j + 1) / 2 * sum(1 for _, right in ranked[i:j] if right)
        i = j
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


# --------------------------------------------------------------------------- checkpoints


def save_verifier(verifier: Verifier, path: str | Path, *, data: Mapping[str, Any] | None = None) -> Path:
    """Write a verifier to the folder `path` (created; its two files are replaced)."""
    from safetensors.numpy import save_file

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "coef": verifier.coef.astype(np.float32),
        "mean": verifier.mean.astype(np.float32),
        "scale": verifier.scale.astype(np.float32),
        "train_emb": verifier.train_emb.astype(np.float16),
        "scores": verifier.scores.astype(np.float16),
    }
    meta = {
        "format": FORMAT,
        "encoder": verifier.encoder_name,
        "models": list(verifier.models),
        "features": [*verifier.features, *(f"model={m}" for m in verifier.models)],
        "dim": verifier.dim,
        "intercept": verifier.intercept,
        "k": verifier.k,
        "pseudo": verifier.pseudo,
        "prefixes": list(verifier.prefixes),
        "data": dict(data or {}),
        "training": verifier.meta,
    }
    tmp = folder / f".{WEIGHTS}.{os.getpid()}.tmp"
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp), metadata={"format": FORMAT})
    os.replace(tmp, folder / WEIGHTS)
    (folder / METADATA).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return folder


def _read_bounded(path: Path, limit: int) -> bytes:
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path}: larger than {limit} bytes; not a verifier checkpoint")
    return data


def _check_meta(meta: Any, where: Path) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: expected a JSON object")
    fmt = meta.get("format")
    if fmt != FORMAT:
        if isinstance(fmt, str) and fmt.startswith("moai-scorer/"):
            raise ValueError(
                f"{where}: a gate scorer checkpoint, not a verifier (train one: moai scorer train-verifier)"
            )
        raise ValueError(
            f"{where}: format {fmt!r} is not {FORMAT!r} (written by another release of moai): "
            "retrain it with `moai scorer train-verifier`"
        )
    models = meta.get("models")
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ValueError(f"{where}: 'models' must be a list of names")
    if not isinstance(meta.get("encoder"), str):
        raise ValueError(f"{where}: 'encoder' must be a name")
    for name, low, high in (("dim", 0, 8192), ("k", 1, 10_000)):
        value = meta.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"{where}: '{name}' must be an integer in [{low}, {high}]")
    for name in ("intercept", "pseudo"):
        if not _finite(meta.get(name)):
            raise ValueError(f"{where}: '{name}' must be a finite number")
    features = meta.get("features")
    one_hot = [f"model={m}" for m in models]
    if (
        not isinstance(features, list)
        or not all(isinstance(f, str) for f in features)
        or len(features) < len(one_hot)
        or features[len(features) - len(one_hot) :] != one_hot
    ):
        raise ValueError(
            f"{where}: 'features' must list its features, then 'model=<name>' for each of 'models': "
            "retrain it with `moai scorer train-verifier`"
        )
    named = features[: len(features) - len(one_hot)]
    unknown = [f for f in named if f not in _FEATURE_INDEX]
    if unknown:
        shown = ", ".join(repr(f[:40]) for f in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        raise ValueError(
            f"{where}: feature(s) {shown} are not computed by this release of moai: "
            "retrain it with `moai scorer train-verifier`"
        )
    if len(set(named)) != len(named):
        raise ValueError(f"{where}: 'features' names a feature twice: retrain it with `moai scorer train-verifier`")
    prefixes = meta.get("prefixes", [])
    if not isinstance(prefixes, list) or len(prefixes) > MAX_PREFIXES or not all(isinstance(p, str) for p in prefixes):
        raise ValueError(f"{where}: 'prefixes' must be a list of at most {MAX_PREFIXES} strings")
    return meta


def load_verifier(path: str | Path, *, encoder: Any = None) -> Verifier:
    """Read the verifier in the folder `path`, checking every part of it.

    Args:
        path: The checkpoint folder.
        encoder: Its encoder, if already built (tests); by default built from its name on first use.

    Raises:
        ValueError: The folder is no verifier checkpoint, or a file of it is corrupt, too large or of
            another format; the message names the file.
    """
    from safetensors.numpy import load

    folder = Path(path)
    meta_path, weights_path = folder / METADATA, folder / WEIGHTS
    for needed in (meta_path, weights_path):
        if not needed.is_file():
            raise ValueError(f"{folder} is not a verifier checkpoint (no {needed.name})")
    try:
        meta = _check_meta(json.loads(_read_bounded(meta_path, MAX_METADATA_BYTES)), meta_path)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise ValueError(f"{meta_path}: not valid JSON ({err})") from None
    try:
        arrays = load(_read_bounded(weights_path, MAX_WEIGHTS_BYTES))
    except ValueError:
        raise
    except Exception as err:  # safetensors raises its own error type on a corrupt file
        raise ValueError(f"{weights_path}: not a readable safetensors file ({err})") from None
    n_models, dim = len(meta["models"]), meta["dim"]
    named = tuple(meta["features"][: len(meta["features"]) - n_models])
    width = len(named) + n_models
    expected = {"coef": (width,), "mean": (width,), "scale": (width,)}
    for name, shape in expected.items():
        if name not in arrays or arrays[name].shape != shape:
            got = arrays[name].shape if name in arrays else "none"
            raise ValueError(f"{weights_path}: '{name}' must have shape {shape}, has {got}")
    emb, scores = arrays.get("train_emb"), arrays.get("scores")
    if emb is None or scores is None or emb.ndim != 2 or scores.ndim != 2:
        raise ValueError(f"{weights_path}: needs 2-d 'train_emb' and 'scores'")
    if emb.shape[1] != dim or scores.shape != (emb.shape[0], n_models):
        raise ValueError(f"{weights_path}: 'train_emb' {emb.shape} and 'scores' {scores.shape} do not fit dim {dim}")
    for name in ("coef", "mean", "scale", "train_emb"):
        if not np.isfinite(arrays[name]).all():
            raise ValueError(f"{weights_path}: '{name}' holds a non-finite number")
    if (arrays["scale"] <= 0).any():
        raise ValueError(f"{weights_path}: 'scale' must be positive")
    known = scores[np.isfinite(scores)]
    if ((known < 0) | (known > 1)).any():
        raise ValueError(f"{weights_path}: 'scores' must lie in [0, 1]")
    return Verifier(
        models=tuple(meta["models"]),
        encoder_name=meta["encoder"],
        coef=arrays["coef"].astype(np.float64),
        intercept=float(meta["intercept"]),
        mean=arrays["mean"].astype(np.float64),
        scale=arrays["scale"].astype(np.float64),
        train_emb=emb.astype(np.float32),
        scores=scores.astype(np.float64),
        prefixes=tuple(meta["prefixes"]),
        features=named,
        k=meta["k"],
        pseudo=float(meta["pseudo"]),
        meta={k: meta[k] for k in ("data", "training") if k in meta},
        encoder=encoder if dim else None,
    )


# --------------------------------------------------------------------------- where a mix's `verifier` points


def _bundled() -> Path:
    return Path(__file__).parent / "bundled"


def bundled_verifiers() -> list[str]:
    """Return the names of the shipped verifiers."""
    return sorted(p.name for p in _bundled().iterdir() if (p / METADATA).is_file())


def resolve_verifier(ref: str, mix_file: str | None = None) -> Path:
    """Return the folder of `bundled:<name>` or of a path (relative to the mix file's folder).

    Raises:
        ValueError: No verifier there; the message lists the valid choices.
    """
    shipped = bundled_verifiers()
    choices = ", ".join([*(f"bundled:{name}" for name in shipped), "a verifier checkpoint folder"])
    if ref.startswith("bundled:"):
        name = ref.removeprefix("bundled:")
        # Only a shipped folder's name: never a path out of the package ('bundled:../x').
        if name not in shipped:
            raise ValueError(f"no verifier {ref!r} is shipped; valid choices: {choices}")
        return _bundled() / name
    path = Path(ref).expanduser()
    if not path.is_absolute() and mix_file and Path(mix_file).is_file():
        path = Path(mix_file).parent / path
    if not (path / METADATA).is_file():
        raise ValueError(f"no verifier {ref!r} (no {METADATA} in {path}); valid choices: {choices}")
    return path


_VERIFIERS: FileCache[Verifier] = FileCache(load_verifier, (METADATA, WEIGHTS))


def cached_verifier(path: Path) -> Verifier:
    """Return the verifier in `path`, read once per process while its files are unchanged."""
    return _VERIFIERS.get(path)


def model_names(spec: MixSpec) -> dict[str, str]:
    """Return the name a verifier knows each pool member by: its model id at the provider.

    A replay model answers as the recorded model (`model:`), which is what a verifier trained on
    those recordings knows; so does a served model. The verifier matches the mix's name first.
    """
    return {name: model.model for name, model in spec.models.items()}


def check_verifiers(spec: MixSpec, source: str = "<mix>") -> dict[str, Verifier]:
    """Return the verifier of each judge step that reads with one (`read: [verifier]`), by step name.

    Each is read once per process (`cached_verifier`), here when the mix is loaded, never per call.

    Raises:
        MixError: A step's `verifier` names no verifier, or a corrupt one; the message names the field,
            the file and the valid choices.
    """
    out: dict[str, Verifier] = {}
    for i, step in enumerate(spec.steps):
        if step.kind != "judge" or "verifier" not in step.read:
            continue
        try:
            out[step.name] = cached_verifier(resolve_verifier(step.verifier, source))
        except (ValueError, OSError) as err:
            raise MixError(source, f"steps.{i}.verifier", str(err)) from None
    return out
