"""Split a routing or responses file into train and test by query id, reproducibly.

Each id goes to test when a hash of (seed, id) falls below the test share: the same id always lands on
the same side for a seed, whatever the order or the other lines of the file, so one query's lines (one
per model) are never on both sides, and adding queries to a file never moves the old ones.
Lines are copied byte for byte (a gzip file in gives gzip files out when the output name ends in .gz).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO

__all__ = ["MAX_SPLIT_BYTES", "fold_of", "is_test_id", "split_file"]

MAX_SPLIT_BYTES = 2 * 2**30
"""Most bytes of (uncompressed) text read from one file to split."""
_MAX_LINE = 64 * 2**20


def is_test_id(query_id: str, test_share: float, seed: int = 0) -> bool:
    """Return whether the query with this id goes to test.

    Args:
        query_id: The query's id.
        test_share: Share of ids that go to test, in [0, 1].
        seed: Seed of the split: another seed, another (equally sized) split.
    """
    return _unit(f"{seed}\x1f{query_id}") < test_share


def fold_of(query_id: str, folds: int, seed: int = 0) -> int:
    """Return the fold (0 to `folds` - 1) of the query with this id, for cross-fitting on training queries.

    Salted apart from `is_test_id`: with the same seed, the folds of a train side are still equally sized.
    """
    return min(int(_unit(f"fold:{seed}\x1f{query_id}") * folds), folds - 1)


def _unit(key: str) -> float:
    """Return a number in [0, 1) that the key fixes (the same on every machine and Python)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64


def _reader(path: Path) -> gzip.GzipFile | BinaryIO:
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


@contextlib.contextmanager
def _writer(path: Path) -> Iterator[IO[bytes]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw:
        if not path.name.endswith(".gz"):
            yield raw
            return
        # no name and mtime 0 in the header: the same split gives byte-identical .gz files
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed:
            yield packed  # type: ignore[misc]


def split_file(
    path: str | Path, out_train: str | Path, out_test: str | Path, test_share: float, seed: int = 0
) -> tuple[int, int]:
    """Write the lines of `path` whose id goes to train to `out_train`, the others to `out_test`.

    Returns:
        The number of distinct ids written to (train, test).

    Raises:
        ValueError: The share is not in (0, 1), a line is not a JSON object with a string `id`, the file
            is over `MAX_SPLIT_BYTES`, an output is the input, or a side comes out empty.
        FileNotFoundError: No such file.
    """
    if not (math.isfinite(test_share) and 0 < test_share < 1):
        raise ValueError(f"--test-share must be between 0 and 1 (exclusive), got {test_share}")
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"no file {str(source)!r} to split")
    train_path, test_path = Path(out_train), Path(out_test)
    if len({source.resolve(), train_path.resolve(), test_path.resolve()}) < 3:
        raise ValueError("the input and the two outputs must be three different files")
    ids: tuple[set[str], set[str]] = (set(), set())
    total = 0
    with _reader(source) as fh, _writer(train_path) as train, _writer(test_path) as test:
        lineno = 0
        while line := fh.readline(_MAX_LINE + 1):
            lineno += 1
            total += len(line)
            if total > MAX_SPLIT_BYTES or (len(line) > _MAX_LINE and not line.endswith(b"\n")):
                raise ValueError(f"{source}:{lineno}: file or line too large to split")
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ValueError(f"{source}:{lineno}: not valid JSON ({err})") from None
            query_id = record.get("id") if isinstance(record, dict) else None
            if not isinstance(query_id, str) or not query_id:
                raise ValueError(f"{source}:{lineno}: each line needs a non-empty string 'id'")
            side = is_test_id(query_id, test_share, seed)
            ids[side].add(query_id)
            (test if side else train).write(line if line.endswith(b"\n") else line + b"\n")
    if not ids[0] or not ids[1]:
        raise ValueError(f"{source}: the split left {len(ids[0])} train and {len(ids[1])} test ids: both must be > 0")
    return len(ids[0]), len(ids[1])
