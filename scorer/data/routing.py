"""Routing data: who answered what, loaded from the uniform routing JSONL, and split by query id.

One line per (query, model): ``{"id", "prompt", "task", "model", "score", "cost"}`` (see the shared data's
README). Lines are gathered into one row per query and one column per model; a model without a line for
a query leaves a hole (NaN) in the score and cost matrices, and every metric works over what exists.

A query is identified by its source file and its id: ids are unique inside one file only.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

__all__ = ["RoutingData", "load", "split", "split_rows"]

FloatArray = npt.NDArray[np.float64]

_FIELDS = ("id", "prompt", "task", "model", "score", "cost")
TEST_FRACTION = 0.2
"""Share of a file's ids that a seeded split sends to test when the ids do not say train/test."""


@dataclass(frozen=True)
class RoutingData:
    """Queries x models: prompts, tasks, and the score and cost matrices (NaN where a line is missing).

    Attributes:
        ids: Query id, unique within its source file.
        sources: The file each query came from (as given to `load`).
        prompts: The query text as the models saw it.
        tasks: Benchmark or sub-task name of each query.
        models: Model names, one per column.
        scores: Quality in [0, 1], shape [queries, models]; NaN where the model has no line.
        costs: US dollars, shape [queries, models]; NaN where unknown.
    """

    ids: tuple[str, ...]
    sources: tuple[str, ...]
    prompts: tuple[str, ...]
    tasks: tuple[str, ...]
    models: tuple[str, ...]
    scores: FloatArray
    costs: FloatArray

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_costs(self) -> bool:
        """Whether any model has a known cost on any query."""
        return bool(np.isfinite(self.costs).any())

    def subset(self, rows: Sequence[int] | npt.NDArray[np.intp]) -> RoutingData:
        """Return the queries at these row indices, in that order, with every model."""
        idx = np.asarray(rows, dtype=np.intp)
        return RoutingData(
            ids=tuple(self.ids[i] for i in idx),
            sources=tuple(self.sources[i] for i in idx),
            prompts=tuple(self.prompts[i] for i in idx),
            tasks=tuple(self.tasks[i] for i in idx),
            models=self.models,
            scores=self.scores[idx],
            costs=self.costs[idx],
        )

    def select_models(self, models: Sequence[str]) -> RoutingData:
        """Return the same queries with only these model columns, in this order.

        Raises:
            ValueError: A name is not one of the data's models.
        """
        cols = [_index_of(self.models, m) for m in models]
        return RoutingData(
            ids=self.ids,
            sources=self.sources,
            prompts=self.prompts,
            tasks=self.tasks,
            models=tuple(models),
            scores=self.scores[:, cols],
            costs=self.costs[:, cols],
        )

    def fingerprint(self) -> str:
        """Return a short hash of the queries, models and scores (for checkpoint metadata)."""
        h = hashlib.sha256()
        for part in (self.ids, self.models, self.tasks):
            h.update("\x1f".join(part).encode())
            h.update(b"\x1e")
        h.update(np.ascontiguousarray(self.scores).tobytes())
        return h.hexdigest()[:16]


def _index_of(names: Sequence[str], name: str) -> int:
    try:
        return list(names).index(name)
    except ValueError:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(names)}") from None


def _open(path: Path) -> IO[str]:
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _parse(line: str, where: str) -> dict[str, Any]:
    """Parse and check one line; raise ValueError naming file:line and what is wrong."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [f for f in _FIELDS if f not in record]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)} (each line needs {', '.join(_FIELDS)})")
    for name in ("id", "model"):
        if not isinstance(record[name], str) or not record[name]:
            raise ValueError(f"{where}: '{name}' must be a non-empty string, got {record[name]!r}")
    for name in ("prompt", "task"):
        if not isinstance(record[name], str):
            raise ValueError(f"{where}: '{name}' must be a string, got {type(record[name]).__name__}")
    score = record["score"]
    if not _number(score) or not 0.0 <= score <= 1.0:
        raise ValueError(f"{where}: 'score' must be a number in [0, 1], got {score!r}")
    cost = record["cost"]
    if cost is not None and (not _number(cost) or cost < 0):
        raise ValueError(f"{where}: 'cost' must be a non-negative number or null, got {cost!r}")
    return record


def load(paths: str | Path | Iterable[str | Path]) -> RoutingData:
    """Load one or more routing JSONL files (gzip or plain) into one `RoutingData`.

    A file given twice is read once. Models are the union over all files, in order of first appearance;
    a model without a line for a query leaves NaN in its score and cost.

    Raises:
        ValueError: A line is malformed (the message names file:line and what is wrong), an (id, model)
            pair repeats within a file, or no line was found at all.
        FileNotFoundError: A file does not exist.
    """
    files = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    seen: set[Path] = set()
    models: dict[str, int] = {}
    keys: dict[tuple[str, str], int] = {}
    ids: list[str] = []
    sources: list[str] = []
    texts: list[Counter[tuple[str, str]]] = []
    cells: list[tuple[int, int, float, float]] = []
    for path in files:
        resolved = path.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        where_seen: dict[tuple[str, str], int] = {}
        with _open(path) as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                record = _parse(line, where)
                key = (str(path), record["id"])
                row = keys.get(key)
                if row is None:
                    row = keys[key] = len(ids)
                    ids.append(record["id"])
                    sources.append(str(path))
                    texts.append(Counter())
                # Real data has a few queries whose lines disagree (e.g. a prompt pasted twice on one
                # model's line): the prompt and task most of its lines carry win.
                texts[row][(record["prompt"], record["task"])] += 1
                col = models.setdefault(record["model"], len(models))
                pair = (record["id"], record["model"])
                if pair in where_seen:
                    raise ValueError(
                        f"{where}: model {record['model']!r} already has a line for id {record['id']!r} "
                        f"(line {where_seen[pair]})"
                    )
                where_seen[pair] = lineno
                cost = math.nan if record["cost"] is None else float(record["cost"])
                cells.append((row, col, float(record["score"]), cost))
    if not ids:
        raise ValueError(f"no routing lines in {', '.join(str(p) for p in files)}")
    prompts = [t.most_common(1)[0][0][0] for t in texts]
    tasks = [t.most_common(1)[0][0][1] for t in texts]
    scores = np.full((len(ids), len(models)), np.nan)
    costs = np.full((len(ids), len(models)), np.nan)
    if cells:
        r, c, s, k = (np.asarray(v) for v in zip(*cells, strict=True))
        rows, cols = r.astype(np.intp), c.astype(np.intp)
        scores[rows, cols] = s
        costs[rows, cols] = k
    return RoutingData(
        ids=tuple(ids),
        sources=tuple(sources),
        prompts=tuple(prompts),
        tasks=tuple(tasks),
        models=tuple(models),
        scores=scores,
        costs=costs,
    )


def _side(query_id: str) -> str | None:
    lowered = query_id.lower()
    is_train, is_test = "train" in lowered, "test" in lowered
    if is_train == is_test:
        return None
    return "train" if is_train else "test"


def split(
    data: RoutingData,
    train_files: Sequence[str | Path],
    test_files: Sequence[str | Path],
    seed: int = 0,
) -> tuple[RoutingData, RoutingData]:
    """Split queries into train and test by id, never by line (see `split_rows` for the rules)."""
    train_rows, test_rows = split_rows(data, train_files, test_files, seed)
    return data.subset(train_rows), data.subset(test_rows)


def split_rows(
    data: RoutingData,
    train_files: Sequence[str | Path],
    test_files: Sequence[str | Path],
    seed: int = 0,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Return the row indices of `data` that train and that test; queries are split by id, never by line.

    - A file on both sides: when its ids name both 'train' and 'test' (case-insensitive, e.g.
      ``mmlu_train-3`` / ``mmlu_test-17``), ids with 'train' go to train and ids with 'test' to test
      (ids naming neither, or both, are dropped); otherwise a seeded 80/20 split of its ids.
    - A file on one side only: all its queries go to that side; test ids that also occur in train are
      dropped, so no query is judged on what it was trained on.

    Args:
        data: Loaded from (at least) every file named here.
        train_files: Files whose queries train.
        test_files: Files whose queries test.
        seed: Seed of the 80/20 split.

    Raises:
        ValueError: A file is not part of `data`, or a side comes out empty.

    Returns:
        (train rows, test rows), each in `data`'s order.
    """
    by_file: dict[Path, list[int]] = {}
    for i, source in enumerate(data.sources):
        by_file.setdefault(Path(source).resolve(), []).append(i)
    train_set = {Path(p).resolve() for p in train_files}
    test_set = {Path(p).resolve() for p in test_files}
    for path in sorted(train_set | test_set):
        if path not in by_file:
            raise ValueError(f"{path} is not among the loaded files: {', '.join(sorted(map(str, by_file)))}")
    train_rows: list[int] = []
    test_rows: list[int] = []
    for path in sorted(train_set | test_set):
        rows = by_file[path]
        if path in train_set and path in test_set:
            sides = [_side(data.ids[i]) for i in rows]
            if "train" in sides and "test" in sides:
                train_rows += [i for i, s in zip(rows, sides, strict=True) if s == "train"]
                test_rows += [i for i, s in zip(rows, sides, strict=True) if s == "test"]
            else:
                ordered = sorted(rows, key=lambda i: data.ids[i])
                random.Random(f"{seed}:{path.name}").shuffle(ordered)
                n_test = round(len(ordered) * TEST_FRACTION)
                test_rows += sorted(ordered[:n_test])
                train_rows += sorted(ordered[n_test:])
        elif path in train_set:
            train_rows += rows
        else:
            test_rows += rows
    train_ids = {data.ids[i] for i in train_rows}
    test_rows = [i for i in test_rows if data.ids[i] not in train_ids]
    if not train_rows or not test_rows:
        raise ValueError(f"split left {len(train_rows)} train and {len(test_rows)} test queries: both must be > 0")
    return np.asarray(sorted(train_rows), dtype=np.intp), np.asarray(sorted(test_rows), dtype=np.intp)
