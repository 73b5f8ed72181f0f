from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _usage_db(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests never write to the user's usage database: each session records to its own file.
    monkeypatch.setenv("MOAI_USAGE_DB", str(tmp_path_factory.getbasetemp() / "usage.db"))
