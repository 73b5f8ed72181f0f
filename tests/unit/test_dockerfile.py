"""The Dockerfile, read as text (no Docker daemon here): the lock, the pinned CPU torch, every package
folder, a non-root user, a health check on /health, and `moai serve` on all interfaces."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def instructions() -> list[tuple[str, str]]:
    """Return the Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, rest = (pending + line).strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation line"
    return out


def stages() -> list[list[tuple[str, str]]]:
    """Return the instructions of each stage (a FROM starts one)."""
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, rest))
    return found


def lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and not line.startswith("#"):
            pins[name.strip().lower()] = version.strip()
    return pins


def test_it_builds_in_a_stage_and_runs_slim() -> None:
    build, final = stages()
    assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim AS build", build[0][1])
    assert final[0][1] == "python:${PYTHON_VERSION}-slim"
    default = next(rest for keyword, rest in instructions() if keyword == "ARG" and rest.startswith("PYTHON_VERSION="))
    low = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, default.split("=")[1].split("."))) >= tuple(map(int, low.split(".")))
    assert not any(keyword == "RUN" and "apt-get" in rest for keyword, rest in final)  # no compilers in the image
    assert ("COPY", "--from=build /opt/venv /opt/venv") in final


def test_every_install_is_from_the_lock_with_its_cpu_torch_first() -> None:
    build = stages()[0]
    installs = [
        part.strip()
        for keyword, rest in build
        if keyword == "RUN"
        for part in rest.split("&&")
        if "pip install" in part
    ]
    assert installs and all("-c constraints.txt" in part for part in installs)
    torch = lock()["torch"]
    assert torch.endswith("+cpu")  # the lock's torch is the CPU build, as the Makefile installs it
    version = torch.removesuffix("+cpu")
    [first_torch] = [i for i, part in enumerate(installs) if f"torch=={version}" in part]
    project = next(i for i, part in enumerate(installs) if '".[' in part)
    assert first_torch < project
    assert f"torch=={version}" in (ROOT / "Makefile").read_text()  # the same pin as `make setup`
    assert ("COPY", "pyproject.toml constraints.txt README.md ./") in build


def test_every_package_folder_is_copied_into_the_build() -> None:
    copied = {rest.split()[0] for keyword, rest in stages()[0] if keyword == "COPY" and "--from" not in rest}
    folders = set(PYPROJECT["tool"]["setuptools"]["package-dir"].values())
    assert folders <= copied, folders - copied
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv"} <= ignored and not (folders | {"pyproject.toml", "constraints.txt"}) & ignored


def test_it_serves_as_a_user_on_all_interfaces_with_a_health_check() -> None:
    final = stages()[-1]
    keywords = [keyword for keyword, _ in final]
    [user] = [rest.split(":")[0] for keyword, rest in final if keyword == "USER"]
    assert user not in ("root", "0") and keywords.index("USER") < keywords.index("ENTRYPOINT")
    assert any(keyword == "RUN" and "useradd" in rest and user in rest for keyword, rest in final)
    [entry] = [json.loads(rest) for keyword, rest in final if keyword == "ENTRYPOINT"]
    assert entry[:2] == ["moai", "serve"] and entry[entry.index("--host") + 1] == "0.0.0.0"
    port = entry[entry.index("--port") + 1]
    assert ("EXPOSE", port) in final
    [check] = [rest for keyword, rest in final if keyword == "HEALTHCHECK"]
    command = json.loads(check[check.index("CMD") + 3 :])
    assert f"http://127.0.0.1:{port}/health" in shlex.join(command)
