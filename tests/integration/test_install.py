"""`pip install .` adds `moai` to site-packages and nothing else: no `graphs`, `nodes`, `scorer` of ours."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_pip_install_adds_only_the_moai_package(tmp_path: Path) -> None:
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip, "--target", str(target), str(ROOT)],
        check=True,
        cwd=tmp_path,
        timeout=600,
    )
    top = {p.name for p in target.iterdir() if not p.name.endswith(".dist-info")}
    assert top == {"moai", "bin"}
    installed = target / "moai"
    for folder in ("graphs", "nodes", "scorer", "mix_instructions"):
        assert (installed / folder / "__init__.py").is_file()
    assert (installed / "mix_instructions" / "routemoa.yaml").is_file()
    assert (installed / "scorer" / "bundled" / "local-pool" / "scorer.json").is_file()
    script = "import moai.graphs, moai.scorer.predictors.knn, moai.usage.report; print(moai.graphs.__file__)"
    # PYTHONPATH comes before site-packages, where the development install's finder also maps `moai`.
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=tmp_path,
    )
    assert out.stdout.strip().startswith(str(installed))
