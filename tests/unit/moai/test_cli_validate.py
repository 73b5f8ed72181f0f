"""`moai validate`: 0 for good mixes, 2 and one `error: FILE: FIELD: MESSAGE` line per broken file."""

from __future__ import annotations

from pathlib import Path

import pytest

from moai.cli import main
from moai.errors import MixError
from moai.mix_instructions import bundled_mixes, load_spec
from moai.mix_instructions.load import BUNDLED_DIR

BUNDLED_FILES = sorted(BUNDLED_DIR.glob("*.yaml"))
GOOD = """\
name: good
models:
  smol: {provider: fake, model: smol}
steps: [{kind: propose, name: answer}]
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _expected_line(path: Path, field: str) -> str:
    with pytest.raises(MixError) as caught:
        load_spec(path)
    assert caught.value.field == field
    return f"error: {path}: {field}: {caught.value.message}"


def test_bundled_files_exist() -> None:
    assert len(BUNDLED_FILES) >= 7
    assert [p.stem for p in BUNDLED_FILES] == bundled_mixes()


@pytest.mark.parametrize("path", BUNDLED_FILES, ids=lambda p: p.stem)
def test_every_bundled_mix_file_validates(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith(f"ok: {path} ({path.stem}: ")


def test_bundled_names_validate_together(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", *bundled_mixes()]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert len(out.splitlines()) == len(bundled_mixes())


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (GOOD.replace("provider: fake", "provider: anthropic"), "models.smol.provider"),
        (GOOD.replace("steps: [", "steps: [{kind: judge, name: check}, "), "steps.0.kind"),
        (GOOD + "gate: {top_k: 2}\n", "gate.top_k"),
        (GOOD + "gate: {top_kk: 1}\n", "gate.top_kk"),
    ],
    ids=["provider", "first_judge", "top_k", "misspelt"],
)
def test_broken_file_prints_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, field: str
) -> None:
    path = _write(tmp_path / "broken.yaml", text)
    expected = _expected_line(path, field)
    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert err.splitlines() == [expected]
    assert out == ""


def test_one_error_line_per_broken_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path / "good.yaml", GOOD)
    wrong_tier = _write(tmp_path / "tier.yaml", GOOD.replace("model: smol}", "model: smol, privacy: public}"))
    unparsable = _write(tmp_path / "yaml.yaml", "name: [\n  models:\n    - {\n")
    cycle = _write(tmp_path / "cycle.yml", GOOD.replace("name: answer}", "name: answer, next: answer}"))
    assert main(["validate", str(wrong_tier), str(good), str(unparsable), str(cycle)]) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 3
    assert lines[0] == _expected_line(wrong_tier, "models.smol.privacy")
    assert lines[1].startswith(f"error: {unparsable}: cannot be parsed: ")
    assert lines[2] == _expected_line(cycle, "steps.0.next")
    assert out.splitlines() == [f"ok: {good} (good: 1 models, 1 steps)"]


def test_missing_file_is_a_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nope.yaml"
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {path}: no such file"]


def test_step_named_like_a_join_is_one_line_not_a_crash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = GOOD.replace(
        "steps: [{kind: propose, name: answer}]",
        "steps: [{kind: propose, name: a}, {kind: propose, name: b}, {kind: propose, name: before_b}]",
    )
    path = _write(tmp_path / "clash.yaml", text)
    assert main(["validate", str(path)]) == 2
    # Without the check, LangGraph's own ValueError (a node named twice) escaped `validate` as a traceback.
    assert capsys.readouterr().err.splitlines() == [_expected_line(path, "steps.2.name")]


def test_a_directory_is_reported_as_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {tmp_path}: is a directory, not a mix file: give a .yaml, .yml or .json file"
    ]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        # Used to end in a 3,000-line RecursionError traceback, exit 1.
        (GOOD + "description: " + "[" * 5000 + "]" * 5000 + "\n", "description.0.0.0.0.0.0.0...: nested deeper"),
        # A second `models:` silently replaced the first.
        (GOOD + "models:\n  big: {provider: fake, model: big}\n", "models: key 'models' is written twice"),
        (GOOD.replace("smol: {", "top1: {"), "models.top1: 'top1' is a keyword where models are named"),
        (
            GOOD.replace("model: smol}", "model: smol, price: {input_per_mtok: .inf}}"),
            "models.smol.price.input_per_mtok",
        ),
    ],
    ids=["deep", "duplicate_key", "reserved_model_name", "infinite_price"],
)
def test_a_hostile_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: str) -> None:
    path = _write(tmp_path / "hostile.yaml", text)
    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"error: {path}: {line}")
