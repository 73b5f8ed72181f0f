from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from routing_fakes import FakeEncoder


@pytest.fixture
def fake_encoder() -> FakeEncoder:
    return FakeEncoder()


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Never touch the user's embedding cache from a test.
    monkeypatch.setenv("MOAI_CACHE_DIR", str(tmp_path / "cache"))
    yield
