"""Load a mix from YAML or JSON: bounded parsing, ${ENV_VAR} expansion, validation, precise errors.

A mix file may come from anywhere, so reading one is bounded before anything is built from it: its
size (`MAX_FILE_BYTES`, checked before it is read), the depth of its nesting (`MAX_DEPTH`) and the
number of values it holds once YAML aliases are expanded (`MAX_NODES`), both counted while the YAML
is composed, so a "billion laughs" file is refused after a few thousand nodes, not after expanding.
A key written twice in one mapping is an error in YAML and in JSON (both would keep the last).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from moai.errors import MixError
from moai.mix_instructions.check import check_mix
from moai.mix_instructions.schema import (
    _MODEL_NAME,
    _NAME,
    NAME_RULE,
    Arm,
    JudgeStep,
    MixSpec,
    ModelSpec,
    Proposer,
    ProposeStep,
    Split,
    SplitSpec,
)

__all__ = [
    "BUNDLED_DIR",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "bundled_mixes",
    "json_schema",
    "load_any",
    "load_spec",
    "override_spec",
    "parse_spec",
    "read_data",
    "resolve_path",
]

_Spec = TypeVar("_Spec", MixSpec, SplitSpec)

BUNDLED_DIR = Path(__file__).parent
MAX_FILE_BYTES = 1 << 20
"""Largest mix or override file read (1 MiB; the bundled mixes are about 1 KiB)."""
MAX_DEPTH = 32
"""Deepest nesting of mappings and lists in a file (a mix needs about 6 levels)."""
MAX_NODES = 20_000
"""Most keys and values in a file, counted as if every YAML alias were written out (a mix has a few hundred)."""

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}$]*))?\}")
"""${VAR} or ${VAR:-default}. A default holds no '}' nor '$', so no match scans past the next reference
(with any character allowed, a file of unclosed `${A:-` took time quadratic in its size: 55 s for 160 KB)."""
_SUFFIXES = (".yaml", ".yml", ".json")
_BUNDLED_NAME = re.compile(r"[A-Za-z0-9_\-]+")
_MERGE_TAG = "tag:yaml.org,2002:merge"


def bundled_mixes() -> list[str]:
    """Return the names of the mixes shipped with the framework."""
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.yaml"))


def resolve_path(path_or_name: str | os.PathLike[str]) -> Path:
    """Return the file of a mix given by path or by the name of a bundled mix.

    Raises:
        MixError: No such file or bundled mix, or the path is a directory or not a regular file.
    """
    path = Path(path_or_name)
    if path.suffix.lower() in _SUFFIXES or path.is_file():
        _check_file(path)
        return path
    bundled = BUNDLED_DIR / f"{path}.yaml"
    if _BUNDLED_NAME.fullmatch(str(path)) and bundled.is_file():
        return bundled  # even beside a folder of that name: `moai run route` means the bundled mix
    if _exists(path):
        _check_file(path)  # a directory or a device: say which
    raise MixError(str(path), "", f"neither a file nor a bundled mix; bundled mixes: {', '.join(bundled_mixes())}")


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def _check_file(path: Path) -> None:
    """Refuse what cannot be a mix file before opening it (a directory, a device, a pipe, a huge file)."""
    try:
        if path.is_dir():
            raise MixError(str(path), "", "is a directory, not a mix file: give a .yaml, .yml or .json file")
        if not path.exists():
            raise MixError(str(path), "", "no such file")
        if not path.is_file():
            raise MixError(str(path), "", "not a regular file (a device, pipe or socket): give a .yaml or .json file")
        size = path.stat().st_size
    except OSError as err:
        raise MixError(str(path), "", f"cannot be read: {err.strerror or err}") from None
    if size > MAX_FILE_BYTES:
        raise MixError(str(path), "", _too_large())


def _too_large() -> str:
    return f"larger than {MAX_FILE_BYTES // 1024} KiB: a mix file is a few KiB"


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
    if overrides and not isinstance(data, Mapping):  # merging would silently replace it by the override
        raise MixError(str(path), "", f"a mix is a mapping of fields, not {_kind(data)}")
    for override in overrides:
        extra = _read(Path(override))
        if not isinstance(extra, Mapping):
            raise MixError(str(override), "", f"an override is a mapping of fields, not {_kind(extra)}")
        data = _merge(data, extra)
        sources.append(str(override))
    source = " + ".join(sources)
    if isinstance(data, Mapping) and "split" in data:
        return _validate(SplitSpec, data, source)
    return parse_spec(data, source)


def override_spec(spec: MixSpec, changes: Mapping[str, Any], source: str) -> MixSpec:
    """Return `spec` with `changes` merged over it, validated exactly as a file is (schema, then `check_mix`).

    Run-time settings (the CLI's `--budget`, `--top-k`) go through here, so a value the file could not
    hold is refused with the file's own message.

    Args:
        spec: A valid mix.
        changes: Fields to replace, nested as in a file, e.g. `{"gate": {"top_k": 2}}`.
        source: What errors name as the source, e.g. `"route.yaml with --top-k 2"`.

    Raises:
        MixError: The changed mix is invalid; the message names `source` and the field.
    """
    data = _merge(spec.model_dump(by_alias=True), changes)
    try:
        changed = MixSpec.model_validate(data)
    except ValidationError as err:
        raise _mix_error(err, source, MixSpec) from None
    check_mix(changed, source)
    return changed


def read_data(path: str | os.PathLike[str]) -> Any:
    """Return the data of a YAML or JSON file (by its suffix), read within the limits of a mix file.

    Raises:
        MixError: The file is missing, not a regular file, too large, too deep, too many values, has a key
            written twice, or cannot be parsed; the message names the file and where.
    """
    return _read(Path(path))


def _read(path: Path) -> Any:
    _check_file(path)
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)  # a file may grow, or lie about its size (/proc)
    except OSError as err:
        raise MixError(str(path), "", f"cannot be read: {err.strerror or err}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise MixError(str(path), "", _too_large())
    try:
        text = raw.decode("utf-8")
        return _parse_json(text) if path.suffix.lower() == ".json" else _parse_yaml(text)
    except _Refused as err:
        raise MixError(str(path), err.field, err.message) from None
    except (UnicodeDecodeError, ValueError, yaml.YAMLError) as err:
        if "integer string conversion" in str(err):  # Python's limit on the digits of an integer
            message = f"a number longer than {sys.get_int_max_str_digits()} digits"
        else:
            message = _one_line(err)
        raise MixError(str(path), "", f"cannot be parsed: {message}") from None


class _Refused(Exception):
    """A file beyond a parsing limit, or with a key written twice, found while it was parsed."""

    def __init__(self, path: Sequence[str], message: str) -> None:
        super().__init__(message)
        # A deep path, or a long key, would fill the line.
        self.field = ".".join(_short(part) for part in path[:8]) + ("..." if len(path) > 8 else "")
        self.message = message


def _deep(line: str = "") -> str:
    return f"nested deeper than {MAX_DEPTH} levels{line}: a mix needs about 6"


def _many(line: str = "") -> str:
    return f"more than {MAX_NODES} keys and values once aliases are expanded{line}: a mix has a few hundred"


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, bounded while it composes the document, before any value is constructed.

    Every node composed counts one, and every alias counts the whole node it repeats, so the count is
    the size the document would have with its aliases written out: a file of nested aliases that would
    expand to billions of values is refused after `MAX_NODES`. Depth counts likewise.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._path: list[str] = []
        self._depth = 0
        self._nodes = 0
        self._extent: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, height) with aliases expanded
        self._keys: dict[int, dict[tuple[str, str], int]] = {}  # id(mapping) -> its keys -> line

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        if isinstance(index, yaml.ScalarNode):  # composing the value of this key
            self._path.append(index.value)
        elif isinstance(index, int):
            self._path.append(str(index))
        elif isinstance(index, yaml.Node):
            self._path.append("?")  # the value of a complex key, which no mix has
        try:
            if isinstance(parent, yaml.MappingNode) and isinstance(index, yaml.ScalarNode):
                self._check_unique(parent, index)
            if self.check_event(yaml.AliasEvent):
                node = super().compose_node(parent, index)
                extent = self._extent.get(id(node))
                if extent is None:  # its anchor's node is still being composed
                    self._refuse(f"an alias inside the node it refers to (line {mark.line + 1}): a loop")
                self._count(extent[0], self._depth + extent[1], mark)
                return node
            before = self._nodes
            self._depth += 1
            self._count(1, self._depth, mark)
            node = super().compose_node(parent, index)
            self._depth -= 1
            children: list[yaml.Node] = []
            if isinstance(node, yaml.SequenceNode):
                children = node.value
            elif isinstance(node, yaml.MappingNode):
                children = [child for pair in node.value for child in pair]
            height = 1 + max((self._extent[id(child)][1] for child in children), default=0)
            self._extent[id(node)] = (self._nodes - before, height)
            return node
        finally:
            if index is not None:
                self._path.pop()

    def _count(self, nodes: int, depth: int, mark: yaml.Mark) -> None:
        self._nodes += nodes
        if depth > MAX_DEPTH:
            self._refuse(_deep(f" (line {mark.line + 1})"))
        if self._nodes > MAX_NODES:
            self._refuse(_many(f" (line {mark.line + 1})"))

    def _check_unique(self, mapping: yaml.MappingNode, key: yaml.ScalarNode) -> None:
        if key.tag == _MERGE_TAG:
            return  # `<<: *defaults`: the keys written beside it override the merged ones, as YAML intends
        keys = self._keys.setdefault(id(mapping), {})
        name, line = (key.tag, key.value), key.start_mark.line + 1
        if name in keys:
            where = f"(lines {keys[name]} and {line})"
            self._refuse(f"key '{_short(key.value)}' is written twice in one mapping {where}: keep one")
        keys[name] = line

    def _refuse(self, message: str) -> NoReturn:
        raise _Refused(self._path, message)


def _parse_yaml(text: str) -> Any:
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _parse_json(text: str) -> Any:
    twice: dict[int, str] = {}  # id(object) -> its first key written twice

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in items:
            if key in obj:
                twice.setdefault(id(obj), key)
            obj[key] = value
        return obj

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except RecursionError:  # the C parser recurses per level and stops cleanly at Python's limit
        raise _Refused([], _deep()) from None
    # JSON has no aliases: its size is bounded by the file's, so the limits are checked once it is parsed.
    stack: list[tuple[Any, list[str]]] = [(data, [])]
    nodes = 0
    while stack:
        value, path = stack.pop()
        nodes += 1 + (len(value) if isinstance(value, dict) else 0)
        if len(path) >= MAX_DEPTH:
            raise _Refused(path, _deep())
        if nodes > MAX_NODES:
            raise _Refused(path, _many())
        if isinstance(value, dict):
            if id(value) in twice:
                key = twice[id(value)]
                raise _Refused([*path, key], f"key '{_short(key)}' is written twice in one object: keep one")
            stack.extend(reversed([(item, [*path, str(key)]) for key, item in value.items()]))
        elif isinstance(value, list):
            stack.extend(reversed([(item, [*path, str(i)]) for i, item in enumerate(value)]))
    return data


def _kind(value: Any) -> str:
    return "an empty file" if value is None else type(value).__name__


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
        raise MixError(source, "", f"a mix is a mapping of fields, not {_kind(data)}")
    _check_secrets(data, source)
    unset: list[tuple[str, str]] = []
    expanded = _expand(data, unset)
    try:
        spec = model.model_validate(expanded)
    except ValidationError as err:
        # A misspelt key comes first: the variable in it may well belong to a field under another name.
        if unset and not any(e["type"] == "extra_forbidden" for e in err.errors()):
            raise _unset_error(source, *unset[0]) from None
        raise _mix_error(err, source, model) from None
    if unset:
        raise _unset_error(source, *unset[0])
    return spec


def json_schema() -> dict[str, Any]:
    """Return the JSON Schema of mix files (and of A/B split files), for editors."""
    schema = TypeAdapter(MixSpec | SplitSpec).json_schema(by_alias=True)
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


def _expand(value: Any, unset: list[tuple[str, str]], path: tuple[str, ...] = ()) -> Any:
    """Replace ${VAR} and ${VAR:-default} in strings (the default also when VAR is empty, as in the shell).

    A variable that is unset, without a default, stays as written and is added to `unset` with its
    field, except in a model's `api_key`: a secret may stay `${VAR}`, so that a mix validates on a
    machine without it; the model that needs it says so when it is built.
    """
    if isinstance(value, str):

        def resolve(match: re.Match[str]) -> str:
            name, default = match[1], match[2]
            if os.environ.get(name):
                return os.environ[name]
            if default is not None:
                return default
            if name in os.environ:
                return ""  # set but empty, without a default: what the shell's ${VAR} gives too
            if not (len(path) == 3 and path[0] == "models" and path[2] == "api_key"):
                unset.append((".".join(path), name))
            return match[0]

        return _ENV_REF.sub(resolve, value)
    if isinstance(value, Mapping):
        return {k: _expand(v, unset, (*path, _short(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, unset, (*path, str(i))) for i, v in enumerate(value)]
    return value


def _unset_error(source: str, field: str, name: str) -> MixError:
    name = _short(name)
    return MixError(source, field, f"${{{name}}} is not set and has no default: set {name} or write ${{{name}:-...}}")


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
        message = f"unknown field '{_short(loc[-1])}'" + (f" (did you mean '{guess[0]}'?)" if guess else "")
        message += f"; valid fields: {', '.join(valid)}"
    elif first["type"] == "missing":
        message = "required field is missing"
    elif first["type"] == "union_tag_not_found":
        message = "each step needs a 'kind': propose or judge"
    elif first["type"] == "union_tag_invalid":
        message = "'kind' must be one of: propose, judge"
    elif first["type"] == "string_pattern_mismatch":
        message = _PATTERNS.get(first["ctx"]["pattern"], "{value} does not match {pattern}").format(
            value=_short(repr(first["input"])), pattern=first["ctx"]["pattern"]
        )
    elif first["type"] == "finite_number":
        message = f"must be a finite number{_bounds(root, first['loc'])} (got {_short(repr(first['input']))})"
    else:
        message = first["msg"]
        if isinstance(first.get("input"), str | int | float | bool):
            message += f" (got {_short(repr(first['input']))})"
    field = ".".join(_visible(first["loc"]))
    more = len(errors) - 1
    return MixError(source, field, message + (f" (and {more} more error{'s' * (more > 1)})" if more else ""))


_PATTERNS = {
    _NAME: "{value} is not a valid name: use " + NAME_RULE,
    _MODEL_NAME: "{value} is not a valid model name: no spaces or control characters",
    r"^https?://\S+$": "{value} is not a URL: write http://host:port/v1 or https://...",
}
"""Each pattern of the schema, in words."""


_UNION_LABELS: dict[str, type[BaseModel]] = {"propose": ProposeStep, "judge": JudgeStep, "Proposer": Proposer}
"""Labels pydantic puts into an error's location for the member of a union it tried."""


_KEYED: dict[tuple[type[BaseModel], str], type[BaseModel]] = {(MixSpec, "models"): ModelSpec, (Split, "arms"): Arm}
"""Fields that map names the user chose to models of a schema."""


def _visible(loc: tuple[int | str, ...]) -> list[str]:
    """Return an error's location as the file spells it, without pydantic's union labels."""
    return [_short(part) for part in loc if str(part) not in _UNION_LABELS and "[" not in str(part)]


def _fields_at(root: type[BaseModel], loc: list[str]) -> list[str]:
    """Return the field names valid at a location of a mix (or split) schema."""
    model = _model_at(root, loc)
    return sorted(f.alias or name for name, f in model.model_fields.items())


def _bounds(root: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """Return the range a numeric field allows, in words (e.g. ' >= 0 and <= 1'), from the schema."""
    parts = [str(part) for part in loc]
    model = _model_at(root, parts[:-1])
    field = next((f for name, f in model.model_fields.items() if parts[-1] in (name, f.alias)), None)
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    found = [
        f"{words[attr]} {getattr(meta, attr):g}"
        for meta in (field.metadata if field is not None else [])
        for attr in words
        if getattr(meta, attr, None) is not None
    ]
    return " " + " and ".join(found) if found else ""


def _model_at(root: type[BaseModel], loc: list[str]) -> type[BaseModel]:
    """Return the model of the schema that holds the fields at a location of a mix (or split)."""
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
    return model


def _short(text: object, limit: int = 60) -> str:
    """Return `text` cut to `limit` characters, so that a huge key or value cannot flood a message."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
