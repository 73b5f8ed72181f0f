"""Recorded responses: who answered what, with the answer itself, indexed for replay.

A responses file is the uniform routing JSONL (gzip or plain) plus one field, ``response``: the model's
answer text. ``cost`` is the US dollars that answer cost (null: 0); ``score`` its graded quality (may be
null, as in a team's own recorded traffic); tokens are read from ``tokens_in`` and
``tokens_out`` where a line has them, else estimated as characters / 4 (and marked so).

An index is built once per process for each file (keyed by its resolved path, size and modification
time) and shared by every mix and model that replays it. It keeps, per model, each answer under the
query's id and under a digest of its normalised prompt (whitespace collapsed), so prompts are not held
in memory. A file is read line by line, and refused past `MAX_RESPONSES_BYTES` of text or
`MAX_LINE_BYTES` in one line, so a wrong or hostile file costs bounded time and memory.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from moai.errors import MixError
from moai.mix_instructions.schema import MixSpec
from moai.scorer.data.filecache import FileCache

__all__ = [
    "MAX_LINE_BYTES",
    "MAX_RESPONSES_BYTES",
    "Recorded",
    "ResponseIndex",
    "check_replay",
    "checked_record",
    "normalise",
    "resolve_responses",
    "response_lines",
    "responses_index",
]

MAX_RESPONSES_BYTES = 512 * 2**20
"""Most bytes of (uncompressed) text read from one responses file."""
MAX_LINE_BYTES = 8 * 2**20
"""Longest line of a responses file, in bytes."""
CHARS_PER_TOKEN = 4
"""Characters per token where a line records no token counts (a common rule of thumb for English)."""
_FIELDS = ("id", "prompt", "model", "cost", "response")


def normalise(text: str) -> str:
    """Return `text` with every run of whitespace made one space, and none at either end."""
    return " ".join(text.split())


def _digest(text: str) -> bytes:
    return hashlib.blake2b(normalise(text).encode(), digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class Recorded:
    """One model's recorded answer to one query."""

    id: str
    response: str
    score: float | None
    """Quality of the answer in [0, 1] as the file grades it (None where it has none): what a benchmark
    of a replayed mix scores its final answer by."""
    cost_usd: float
    tokens_in: int
    tokens_out: int
    estimated: bool
    """Whether the token counts are estimated (characters / 4), the line recording none."""


@dataclass
class ResponseIndex:
    """The recorded answers of one file, by model, found by normalised prompt or by id."""

    path: Path
    by_prompt: dict[str, dict[bytes, Recorded]] = field(default_factory=dict)
    by_id: dict[str, dict[str, Recorded]] = field(default_factory=dict)

    @property
    def models(self) -> list[str]:
        """Return the models the file holds answers of, in order of first appearance."""
        return list(self.by_id)

    def find(self, model: str, query: str) -> Recorded | None:
        """Return `model`'s recorded answer to the query with this text, or, failing that, this id."""
        found = self.by_prompt.get(model, {}).get(_digest(query))
        return found if found is not None else self.by_id.get(model, {}).get(query.strip())


def _open(path: Path) -> gzip.GzipFile | BinaryIO:
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _tokens(record: Mapping[str, Any], key: str) -> int | None:
    value = record.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2**31 else None


def checked_record(line: bytes, where: str, fields: tuple[str, ...]) -> dict[str, Any]:
    """Parse one line of a responses file and check what every reader of one needs of it.

    Args:
        line: The line's bytes.
        where: 'FILE:LINE', named in the errors.
        fields: The fields the line must have; `id` and `model` among them are non-empty strings,
            `prompt` and `response` strings.

    Raises:
        ValueError: The line is not such an object, naming `where` and the field.
    """
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise ValueError(f"{where}: not valid JSON ({err})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if missing := [f for f in fields if f not in record]:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)} (each line needs {', '.join(fields)})")
    for name in ("id", "model"):
        if name in fields and (not isinstance(record[name], str) or not record[name]):
            raise ValueError(f"{where}: '{name}' must be a non-empty string")
    for name in ("prompt", "response"):
        if name in fields and not isinstance(record[name], str):
            raise ValueError(f"{where}: '{name}' must be a string, got {type(record[name]).__name__}")
    return record


def _parse(line: bytes, where: str) -> tuple[str, str, Recorded]:
    """Parse and check one line; return its model, prompt and answer."""
    record = checked_record(line, where, _FIELDS)
    cost = record["cost"]
    if cost is not None and (not _number(cost) or cost < 0):
        raise ValueError(f"{where}: 'cost' must be a non-negative number or null, got {cost!r}")
    score = record.get("score")
    if score is not None and (not _number(score) or not 0.0 <= score <= 1.0):
        raise ValueError(f"{where}: 'score' must be a number in [0, 1] or null, got {score!r}")
    tokens_in, tokens_out = _tokens(record, "tokens_in"), _tokens(record, "tokens_out")
    estimated = tokens_in is None or tokens_out is None
    return (
        record["model"],
        record["prompt"],
        Recorded(
            id=record["id"],
            response=record["response"],
            score=None if score is None else float(score),
            cost_usd=float(cost or 0.0),
            tokens_in=tokens_in if tokens_in is not None else math.ceil(len(record["prompt"]) / CHARS_PER_TOKEN),
            tokens_out=tokens_out if tokens_out is not None else math.ceil(len(record["response"]) / CHARS_PER_TOKEN),
            estimated=estimated,
        ),
    )


def response_lines(path: Path) -> Iterator[tuple[str, bytes]]:
    """Yield ('FILE:LINE', line) for every non-blank line of a responses file, gzipped or not.

    Raises:
        ValueError: A line over `MAX_LINE_BYTES` (its newline included), or the file over `MAX_RESPONSES_BYTES`.
    """
    total = 0
    with _open(path) as fh:
        lineno = 0
        while line := fh.readline(MAX_LINE_BYTES + 1):
            lineno += 1
            where = f"{path}:{lineno}"
            total += len(line)
            if len(line) > MAX_LINE_BYTES:
                raise ValueError(f"{where}: line longer than {MAX_LINE_BYTES} bytes")
            if total > MAX_RESPONSES_BYTES:
                raise ValueError(f"{path}: more than {MAX_RESPONSES_BYTES} bytes of text; split the file")
            if line.strip():
                yield where, line


def _read(path: Path) -> ResponseIndex:
    index = ResponseIndex(path)
    for where, line in response_lines(path):
        model, prompt, recorded = _parse(line, where)
        # The first answer recorded for a prompt or id wins: a replay is the same on every run.
        index.by_prompt.setdefault(model, {}).setdefault(_digest(prompt), recorded)
        index.by_id.setdefault(model, {}).setdefault(recorded.id, recorded)
    return index


_INDEXES: FileCache[ResponseIndex] = FileCache(_read)


def responses_index(path: str | Path) -> ResponseIndex:
    """Return the index of a responses file, read once per process while the file is unchanged.

    Raises:
        FileNotFoundError: No such file.
        ValueError: A line is malformed (the message names file:line), or the file is over the bounds.
    """
    return _INDEXES.get(path)


def resolve_responses(ref: str, mix_file: str | None = None) -> Path:
    """Return the path of a responses file, relative to the mix file's folder unless absolute."""
    path = Path(ref).expanduser()
    if not path.is_absolute() and mix_file and Path(mix_file).is_file():
        path = Path(mix_file).parent / path
    return path


def check_replay(spec: MixSpec, source: str = "<mix>") -> None:
    """Raise MixError if a replay model's responses file cannot be read or holds no answers of its model."""
    for name, model in spec.models.items():
        if model.provider != "replay" or model.responses is None:
            continue
        path = resolve_responses(model.responses, source)
        if not path.is_file():
            raise MixError(source, f"models.{name}.responses", f"no responses file {str(path)!r}")
        try:
            index = responses_index(path)
        except (OSError, ValueError, EOFError, gzip.BadGzipFile) as err:
            raise MixError(source, f"models.{name}.responses", f"cannot be read: {err}") from None
        if model.model not in index.by_id:
            held = ", ".join(index.models) or "none"
            raise MixError(
                source,
                f"models.{name}.model",
                f"{model.model!r} has no answers in {path.name}; valid choices (the models it holds): {held}",
            )
