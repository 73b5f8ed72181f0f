"""What `pip install` gets: every package folder is listed, and the lock pins every dependency in range."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def declared_packages() -> dict[str, Path]:
    """Return each package pyproject lists, with the folder its `package-dir` maps it to."""
    tool = PYPROJECT["tool"]["setuptools"]
    mapping: dict[str, str] = tool["package-dir"]
    found = {}
    for package in tool["packages"]:
        root = max((p for p in mapping if package == p or package.startswith(p + ".")), key=len)
        rest = package[len(root) :].lstrip(".").split(".") if package != root else []
        found[package] = ROOT.joinpath(mapping[root], *rest)
    return found


def test_every_package_folder_is_installed_and_only_under_moai() -> None:
    declared = declared_packages()
    assert all(name == "moai" or name.startswith("moai.") for name in declared)
    folders = {path.resolve() for path in declared.values()}
    for folder in ("moai", "graphs", "nodes", "scorer", "mix_instructions"):
        for init in (ROOT / folder).rglob("__init__.py"):
            assert init.parent.resolve() in folders, f"{init.parent} has an __init__.py but is not in packages"
    assert all((path / "__init__.py").is_file() for path in declared.values())


def pins() -> dict[str, Version]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pinned = {}
    for line in lines:
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pinned[canonicalize_name(name)] = Version(version.strip())
    return pinned


def test_the_lock_pins_every_dependency_within_its_declared_range() -> None:
    project = PYPROJECT["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        requirements += [Requirement(r) for r in extra]
    locked = pins()
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} is not in constraints.txt: run `make lock`"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"constraints.txt pins {requirement.name}=={locked[name]}, outside {requirement.specifier}"
        )
