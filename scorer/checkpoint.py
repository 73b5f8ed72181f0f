"""Scorer checkpoints: a folder with the weights in safetensors and the metadata in JSON.

``CKPT/weights.safetensors`` holds the arrays (a neural scorer's head and model embeddings; kNN's training
embeddings and scores); ``CKPT/scorer.json`` holds the method, encoder, models, settings (K, k, ...),
training data hash, seed and held-out metrics. Both are small and need no pickle to read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from moai.scorer.predictors.base import ScorePredictor
from moai.scorer.predictors.registry import predictor_class

__all__ = ["FORMAT", "METADATA", "WEIGHTS", "load", "read_metadata", "save"]

FORMAT = "moai-scorer/1"
WEIGHTS = "weights.safetensors"
METADATA = "scorer.json"


def save(
    predictor: ScorePredictor,
    path: str | Path,
    *,
    data: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Write a predictor to the folder `path` (created; files in it are replaced).

    Args:
        predictor: A fitted predictor.
        path: The checkpoint folder.
        data: What it was trained on (files, hash, number of queries), stored as metadata.
        metrics: Held-out metrics, stored as metadata.

    Returns:
        The folder.
    """
    from safetensors.numpy import save_file

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    arrays, config = predictor.state()
    meta = {
        "format": FORMAT,
        "method": predictor.method,
        "encoder": predictor.encoder_name,
        "models": list(predictor.models),
        "seed": predictor.seed,
        "config": config,
        "data": dict(data or {}),
        "metrics": dict(metrics or {}),
    }
    tmp = folder / f".{WEIGHTS}.{os.getpid()}.tmp"
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp), metadata={"format": FORMAT})
    os.replace(tmp, folder / WEIGHTS)
    (folder / METADATA).write_text(json.dumps(meta, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    return folder


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in checkpoint metadata")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Return a checkpoint's metadata.

    Raises:
        ValueError: The folder is not a scorer checkpoint.
    """
    meta_path = Path(path) / METADATA
    if not meta_path.is_file() or not (Path(path) / WEIGHTS).is_file():
        raise ValueError(f"{path} is not a scorer checkpoint (needs {METADATA} and {WEIGHTS})")
    meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: unknown format {meta.get('format')!r}; expected {FORMAT!r}")
    return meta


def load(path: str | Path) -> ScorePredictor:
    """Rebuild the predictor saved in the folder `path` (its encoder is built when first needed)."""
    from safetensors.numpy import load_file

    meta = read_metadata(path)
    arrays = load_file(str(Path(path) / WEIGHTS))
    return predictor_class(meta["method"]).from_state(arrays, meta["config"])
