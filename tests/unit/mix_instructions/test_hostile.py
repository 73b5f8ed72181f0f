"""Hostile or careless input: refused with one MixError, in bounded time and memory, never a traceback.

The table of single mistakes is in test_errors.py; here what a table cannot hold: paths that are not
files, limits measured in memory, override files, and the rules for environment variables.
"""

from __future__ import annotations

import math
import os
import tracemalloc
from pathlib import Path

import pytest

from moai.errors import MixError
from moai.mix_instructions import bundled_mixes, json_schema, load_any, load_spec
from moai.mix_instructions import schema as schema_module
from moai.mix_instructions.load import _ENV_REF, MAX_FILE_BYTES, MAX_NODES, override_spec, parse_spec

GOOD = "name: good\nmodels:\n  s: {provider: fake, model: s}\nsteps: [{kind: propose, name: answer}]\n"


def _error(path: str | Path, *overrides: Path) -> MixError:
    with pytest.raises(MixError) as caught:
        load_spec(path, overrides)
    assert "\n" not in str(caught.value)
    return caught.value


def test_a_directory_is_reported_as_a_directory(tmp_path: Path) -> None:
    folder = tmp_path / "mixes.yaml"
    folder.mkdir()
    for given in (folder, tmp_path):
        err = _error(given)
        assert (err.source, err.field) == (str(given), "")
        assert err.message.startswith("is a directory, not a mix file")


def test_a_device_is_never_read() -> None:
    # /dev/zero never ends: reading it "to see" would never return.
    err = _error("/dev/zero")
    assert err.message.startswith("not a regular file")


def test_a_huge_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as file:
        file.truncate(8 << 30)  # sparse: 8 GiB that a read would have to hold in memory
    assert _error(path).message == "larger than 1024 KiB: a mix file is a few KiB"


def test_a_file_at_the_size_limit_loads(tmp_path: Path) -> None:
    path = tmp_path / "padded.yaml"
    path.write_text(GOOD + "#" * (MAX_FILE_BYTES - len(GOOD) - 1) + "\n", encoding="utf-8")
    assert path.stat().st_size == MAX_FILE_BYTES
    assert load_spec(path).name == "good"


def test_override_files_get_the_same_checks(tmp_path: Path) -> None:
    folder = tmp_path / "pool.yaml"
    folder.mkdir()
    err = _error("route", folder)
    assert (err.source, err.message.split(",")[0]) == (str(folder), "is a directory")
    missing = tmp_path / "missing.yaml"
    assert (_error("route", missing).source, _error("route", missing).message) == (str(missing), "no such file")
    twice = tmp_path / "twice.yaml"
    twice.write_text("models:\n  smol: {provider: fake}\n  smol: {provider: openai}\n", encoding="utf-8")
    err = _error("route", twice)
    assert (err.source, err.field) == (str(twice), "models.smol")
    assert err.message == "key 'smol' is written twice in one mapping (lines 2 and 3): keep one"
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    assert _error("route", empty).message == "an override is a mapping of fields, not an empty file"


def test_billion_laughs_is_refused_in_little_memory(tmp_path: Path) -> None:
    # 469 bytes; the loader of the last release built it, then spent 10 s and 543 MB expanding it.
    laughs = "bomb:\n  a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"  {c}: &{c} [" + ", ".join([f"*{p}"] * 9) + "]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    path = tmp_path / "laughs.yaml"
    path.write_text(GOOD + laughs, encoding="utf-8")
    tracemalloc.start()
    try:
        err = _error(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.message.startswith(f"more than {MAX_NODES} keys and values once aliases are expanded")
    assert peak < 64 << 20


def test_aliases_and_merge_keys_within_the_limits_still_work(tmp_path: Path) -> None:
    path = tmp_path / "anchors.yaml"
    path.write_text(
        "name: anchors\n"
        "models:\n"
        "  a: &local {provider: fake, model: a, privacy: local, tags: &tags [cheap, small]}\n"
        "  b: {<<: *local, model: b, tags: *tags}\n"
        "steps: [{kind: propose, name: answer, models: [a, b]}]\n",
        encoding="utf-8",
    )
    spec = load_spec(path)
    assert (spec.models["b"].model, spec.models["b"].privacy, spec.models["b"].tags) == (
        "b",
        "local",
        ["cheap", "small"],
    )


def test_every_bundled_mix_loads_with_an_empty_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        monkeypatch.delenv(name)
    for name in bundled_mixes():
        load_any(name)


def test_an_unset_api_key_stays_a_reference_but_nothing_else_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOAI_T_KEY", raising=False)
    monkeypatch.setenv("MOAI_T_EMPTY", "")
    data = {
        "name": "env",
        "models": {"gpt": {"provider": "openai", "model": "m", "api_key": "${MOAI_T_KEY}"}},
        "steps": [{"kind": "propose", "name": "answer"}],
    }
    assert parse_spec(data).models["gpt"].api_key == "${MOAI_T_KEY}"
    # Set but empty: the default applies, as ${VAR:-default} does in the shell.
    data["models"]["gpt"]["base_url"] = "${MOAI_T_EMPTY:-http://127.0.0.1:8000/v1}"
    assert parse_spec(data).models["gpt"].base_url == "http://127.0.0.1:8000/v1"
    data["description"] = "${MOAI_T_KEY}"
    with pytest.raises(MixError) as caught:
        parse_spec(data, "env.yaml")
    assert str(caught.value) == (
        "env.yaml: description: ${MOAI_T_KEY} is not set and has no default: set MOAI_T_KEY or write ${MOAI_T_KEY:-...}"
    )


def test_a_misspelt_key_is_reported_before_an_unset_variable_in_it() -> None:
    data = {
        "name": "env",
        "modles": {"gpt": {"provider": "openai", "model": "${MOAI_T_NEVER_SET}"}},
        "steps": [{"kind": "propose", "name": "answer"}],
    }
    with pytest.raises(MixError) as caught:
        parse_spec(data)
    assert caught.value.field == "modles" and "did you mean 'models'" in caught.value.message


def test_numbers_built_in_python_are_checked_too() -> None:
    data = {
        "name": "py",
        "models": {"a": {"provider": "fake", "model": "a", "price": {"output_per_mtok": math.inf}}},
        "steps": [{"kind": "propose", "name": "answer"}],
    }
    with pytest.raises(MixError) as caught:
        parse_spec(data)
    assert caught.value.field == "models.a.price.output_per_mtok"
    assert caught.value.message == "must be a finite number >= 0 and <= 10000 (got inf)"


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"gate": {"top_k": 0}}, "gate.top_k", "Input should be greater than or equal to 1 (got 0)"),
        ({"gate": {"top_k": 3}}, "gate.top_k", "3 exceeds the 2 candidate models (valid: 1 to 2)"),
        (
            {"gate": {"objective": {"budget_usd": math.nan}}},
            "gate.objective.budget_usd",
            "must be a finite number >= 0 (got nan)",
        ),
        (
            {"gate": {"objective": {"budget_usd": -1.0}}},
            "gate.objective.budget_usd",
            "Input should be greater than or equal to 0 (got -1.0)",
        ),
    ],
)
def test_an_override_is_validated_as_the_file_is(changes: dict, field: str, message: str) -> None:
    spec = load_spec("route")
    with pytest.raises(MixError) as caught:
        override_spec(spec, changes, "route.yaml with a flag")
    assert (caught.value.source, caught.value.field, caught.value.message) == ("route.yaml with a flag", field, message)


def test_a_valid_override_changes_only_what_it_names() -> None:
    spec = load_spec("routemoa")
    changed = override_spec(spec, {"gate": {"top_k": 2, "objective": {"budget_usd": 0.5}}}, "x")
    assert (changed.gate.top_k, changed.gate.objective.budget_usd) == (2, 0.5)
    assert changed.model_copy(update={"gate": spec.gate}) == spec


def test_the_caps_are_exported_and_in_the_json_schema() -> None:
    for name in ("MAX_ROUNDS", "MAX_STEPS", "MAX_MODELS", "MAX_TOKENS", "MAX_RETRIES", "MAX_CIRCUIT_FAILURES"):
        assert name in schema_module.__all__ and isinstance(getattr(schema_module, name), int)
    defs = json_schema()["$defs"]
    max_rounds = defs["StopWhen"]["properties"]["max_rounds"]
    assert max_rounds["maximum"] == schema_module.MAX_ROUNDS
    assert f"at most {schema_module.MAX_ROUNDS}" in max_rounds["description"]
    assert defs["MixSpec"]["properties"]["steps"]["maxItems"] == schema_module.MAX_STEPS


def test_a_variable_default_never_spans_another_reference(tmp_path: Path) -> None:
    # With any character allowed in a default, each unclosed `${A:-` scanned to the end of the file:
    # quadratic, 55 s for 160 KB of them. A default now stops at '$' and '}'.
    assert [m.group(0) for m in _ENV_REF.finditer("${A:-x${B}} ${C:-http://h:1/v1}")] == ["${B}", "${C:-http://h:1/v1}"]
    path = tmp_path / "unclosed.yaml"
    path.write_text(GOOD + "description: '" + "${A:-" * 100_000 + "'\n", encoding="utf-8")
    assert load_spec(path).description == "${A:-" * 100_000


def test_a_huge_key_or_value_cannot_flood_the_message(tmp_path: Path) -> None:
    for text, field in [
        (GOOD + "k" * 1000 + ": 1\n", "k" * 60 + "..."),  # YAML keys are at most 1024 characters
        (GOOD.replace("name: good", "name: '" + "é" * 100_000 + "'"), "name"),
        (GOOD + "gate: {candidates: [" + "m" * 100_000 + "]}\n", "gate.candidates.0"),
    ]:
        path = tmp_path / "huge.yaml"
        path.write_text(text, encoding="utf-8")
        err = _error(path)
        assert err.field == field and len(str(err)) < 400, str(err)[:400]


def test_a_bundled_name_beats_a_folder_of_that_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "route").mkdir()
    assert load_spec("route").name == "route"
    (tmp_path / "mine").mkdir()
    assert _error("mine").message.startswith("is a directory")


def test_an_override_never_replaces_a_mix_that_is_not_a_mapping(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    whole = tmp_path / "whole.yaml"
    whole.write_text(GOOD, encoding="utf-8")
    err = _error(empty, whole)
    assert (err.source, err.message) == (str(empty), "a mix is a mapping of fields, not an empty file")
