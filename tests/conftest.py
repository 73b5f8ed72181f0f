from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def _usage_db(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests never write to the user's usage database: each session records to its own file.
    monkeypatch.setenv("MOAI_USAGE_DB", str(tmp_path_factory.getbasetemp() / "usage.db"))
