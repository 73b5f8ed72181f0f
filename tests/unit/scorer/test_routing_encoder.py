from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from routing_fakes import FakeEncoder

from moai.scorer.encoders import encoder_from_name
from moai.scorer.encoders.sentence import DEFAULT_ENCODER, SentenceEncoder, cache_dir, cached_encode


def test_cached_encode_encodes_a_text_set_once(fake_encoder: FakeEncoder, tmp_path: Path) -> None:
    texts = ["alpha beta", "gamma"]
    first = cached_encode(fake_encoder, texts, directory=tmp_path)
    second = cached_encode(fake_encoder, texts, directory=tmp_path)
    assert fake_encoder.calls == 1
    np.testing.assert_array_equal(first, second)
    assert first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    cached_encode(fake_encoder, ["gamma", "alpha beta"], directory=tmp_path)
    assert fake_encoder.calls == 2
    [folder] = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert (folder / "encoder.txt").read_text().strip() == "fake-bow-32"
    assert len(list(folder.glob("*.npy"))) == 2


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MOAI_CACHE_DIR", str(tmp_path))
    assert cache_dir() == tmp_path / "embeddings"
    monkeypatch.delenv("MOAI_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "moai" / "embeddings"


def test_encoder_names_round_trip_without_loading_a_model() -> None:
    encoder = SentenceEncoder(truncate="right")
    assert encoder.name == f"{DEFAULT_ENCODER}|truncate=right"
    again = encoder_from_name(encoder.name)
    assert (again.model, again.truncate) == (DEFAULT_ENCODER, "right")
    assert encoder_from_name("/models/x").truncate == "left"
    with pytest.raises(ValueError, match="truncate must be 'left' or 'right'"):
        SentenceEncoder(truncate="middle")  # type: ignore[arg-type]
