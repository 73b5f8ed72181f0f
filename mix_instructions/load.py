"""Load a mix from YAML or JSON: expand ${ENV_VAR} references, validate, and report errors precisely."""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from moai.errors import MixError
from moai.mix_instructions.check import check_mix
from moai.mix_instructions.schema import Arm, JudgeStep, MixSpec, ModelSpec, Proposer, ProposeStep, Split, SplitSpec

__all__ = ["BUNDLED_DIR", "bundled_mixes", "json_schema", "load_any", "load_spec", "resolve_path"]

_Spec = TypeVar("_Spec", MixSpec, SplitSpec)

BUNDLED_DIR = Path(__file__).parent
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SUFFIXES = (".yaml", ".yml", ".json")


def bundled_mixes() -> list[str]:
    """Return the names of the mixes shipped with the framework."""
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.yaml"))


def resolve_path(path_or_name: str | os.PathLike[str]) -> Path:
    """Return the file of a mix given by path or by the name of a bundled mix."""
    path = Path(path_or_name)
    if path.suffix in _SUFFIXES or path.exists():
        if not path.is_file():
            raise MixError(str(path), "", "no such file")
        return path
    bundled = BUNDLED_DIR / f"{path}.yaml"
    if bundled.is_file():
        return bundled
    raise MixError(str(path), "", f"neither a file nor a bundled mix; bundled mixes: {', '.join(bundled_mixes())}")


def load_spec(path_or_name: str | os.PathLike[str], overrides: Sequence[str | os.PathLike[str]] = ()) -> MixSpec:
    """Read, expand and validate a mix file, with override files merged over it.

    Args:
        path_or_name: A `.yaml`/`.yml`/`.json` file, or the name of a bundled mix such as `"moa"`.
        overrides: Files whose mappings are merged, in order, over the mix: e.g. a `models:` section
            that points the pool at your own endpoints, without editing the mix.

    Raises:
        MixError: A file is missing, unparsable or invalid (or an A/B split, not a mix); the message
            names the file and the field.
    """
    spec = load_any(path_or_name, overrides)
    if isinstance(spec, SplitSpec):
        raise MixError(
            str(resolve_path(path_or_name)), "split", "an A/B split of mixes, not a mix: load it with load_mix"
        )
    return spec


def load_any(
    path_or_name: str | os.PathLike[str], overrides: Sequence[str | os.PathLike[str]] = ()
) -> MixSpec | SplitSpec:
    """Read a mix file or an A/B split file (one with a top-level `split:`); see `load_spec`."""
    path = resolve_path(path_or_name)
    data = _read(path)
    sources = [str(path)]
    for override in overrides:
        extra = _read(Path(override))
        if not isinstance(extra, Mapping):
            raise MixError(str(override), "", f"an override is a mapping of fields, not {type(extra).__name__}")
        data = _merge(data, extra)
        sources.append(str(override))
    source = " + ".join(sources)
    if isinstance(data, Mapping) and "split" in data:
        return _validate(SplitSpec, data, source)
    return parse_spec(data, source)


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as err:
        raise MixError(str(path), "", f"cannot be parsed: {_one_line(err)}") from err


def _merge(base: Any, extra: Mapping[str, Any]) -> Any:
    """Merge `extra` over `base`: mappings key by key, anything else replaced."""
    if not isinstance(base, Mapping):
        return dict(extra)
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, Mapping) and key in merged else value
    return merged


def parse_spec(data: Any, source: str = "<mix>") -> MixSpec:
    """Validate already-parsed mix data (a mapping); `source` names it in errors."""
    spec = _validate(MixSpec, data, source)
    check_mix(spec, source)
    return spec


def _validate(model: type[_Spec], data: Any, source: str) -> _Spec:
    if not isinstance(data, Mapping):
        raise MixError(source, "", f"a mix is a mapping of fields, not {type(data).__name__}")
    _check_secrets(data, source)
    try:
        return model.model_validate(_expand(data))
    except ValidationError as err:
        raise _mix_error(err, source, model) from None


def json_schema() -> dict[str, Any]:
    """Return the JSON Schema of mix files (and of A/B split files), for editors."""
    schema = TypeAdapter(MixSpec | SplitSpec).json_schema(by_alias=True)  # type: ignore[arg-type]
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Mixture-of-AI mix instruction"
    return schema


def _check_secrets(data: Mapping[str, Any], source: str) -> None:
    models = data.get("models")
    if not isinstance(models, Mapping):
        return
    for name, model in models.items():
        key = model.get("api_key") if isinstance(model, Mapping) else None
        if key is not None and not (isinstance(key, str) and _ENV_REF.fullmatch(key)):
            raise MixError(source, f"models.{name}.api_key", "write an ${ENV_VAR} reference, never the key itself")


def _expand(value: Any) -> Any:
    """Replace ${VAR} and ${VAR:-default} in strings; an unset variable without default stays as written."""
    if isinstance(value, str):
        return _ENV_REF.sub(lambda m: os.environ.get(m[1], m[2] if m[2] is not None else m[0]), value)
    if isinstance(value, Mapping):
        return {k: _expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    return value


def _mix_error(err: ValidationError, source: str, root: type[BaseModel]) -> MixError:
    errors = err.errors()
    # Report the first mistake, preferring an unknown field (a misspelt key also shows up as a missing
    # one); among the alternatives a union reports for that same place, the deepest says what was meant.
    pool = [e for e in errors if e["type"] == "extra_forbidden"] or errors
    head = _visible(pool[0]["loc"])[:2]
    first = max((e for e in pool if _visible(e["loc"])[:2] == head), key=lambda e: len(e["loc"]))
    loc = [str(part) for part in first["loc"]]
    if first["type"] == "extra_forbidden":
        valid = _fields_at(root, loc[:-1])
        guess = difflib.get_close_matches(loc[-1], valid, n=1)
        message = f"unknown field '{loc[-1]}'" + (f" (did you mean '{guess[0]}'?)" if guess else "")
        message += f"; valid fields: {', '.join(valid)}"
    elif first["type"] == "missing":
        message = "required field is missing"
    elif first["type"] == "union_tag_not_found":
        message = "each step needs a 'kind': propose or judge"
    elif first["type"] == "union_tag_invalid":
        message = "'kind' must be one of: propose, judge"
    elif first["type"] == "string_pattern_mismatch":
        message = f"{first['input']!r} is not a valid name: use letters, digits, '_' and '-'"
    else:
        message = first["msg"]
        if isinstance(first.get("input"), str | int | float | bool):
            message += f" (got {first['input']!r})"
    field = ".".join(_visible(first["loc"]))
    more = len(errors) - 1
    return MixError(source, field, message + (f" (and {more} more error{'s' * (more > 1)})" if more else ""))


_UNION_LABELS: dict[str, type[BaseModel]] = {"propose": ProposeStep, "judge": JudgeStep, "Proposer": Proposer}
"""Labels pydantic puts into an error's location for the member of a union it tried."""


_KEYED: dict[tuple[type[BaseModel], str], type[BaseModel]] = {(MixSpec, "models"): ModelSpec, (Split, "arms"): Arm}
"""Fields that map names the user chose to models of a schema."""


def _visible(loc: tuple[int | str, ...]) -> list[str]:
    """Return an error's location as the file spells it, without pydantic's union labels."""
    return [str(part) for part in loc if str(part) not in _UNION_LABELS and "[" not in str(part)]


def _fields_at(root: type[BaseModel], loc: list[str]) -> list[str]:
    """Return the field names valid at a location of a mix (or split) schema."""
    model = root
    parts = iter(loc)
    for part in parts:
        if part in _UNION_LABELS:
            model = _UNION_LABELS[part]
            continue
        field = model.model_fields.get(part)
        if field is None:
            continue  # a list index or another union label
        if (model, part) in _KEYED:
            model = _KEYED[model, part]
            next(parts, None)  # the entry's name, which may collide with a field name
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            model = field.annotation
    return sorted(f.alias or name for name, f in model.model_fields.items())


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
