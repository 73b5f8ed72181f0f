"""Tools and structured output: what a run's answering call is offered, and the check of what it returns.

A caller's tools, tool choice and response format (OpenAI's shapes) travel in the run's context as an
`Offer`. Only the call that gives the run's answer gets them: the proposers where one model's answer is
the mix's (aggregate `best` or `last`), the aggregator in a `synthesize` mix. Model output stays data: a
tool call's arguments are parsed as JSON by the model's integration and handed back, never executed here.

A chat model that cannot take tools (its `bind_tools` is LangChain's default, which raises) answers in
text when the choice allows it (`auto`, `none`): that is an answer `auto` permits. When the choice requires
a call (`required`, or a named function), the call fails with a `ProviderError`, so its fallbacks apply.

The response format goes to the models that take it (OpenAI-compatible ones; a chat model class that
sets `accepts_response_format = True`). Whatever the model, an answer that is not JSON, or that breaks a
`strict` schema, counts as a failed call: the model's fallbacks are tried, and a run in which none gives
valid JSON fails, listing the attempts.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable

from moai.errors import ProviderError

__all__ = [
    "MAX_SCHEMA_BYTES",
    "MAX_TOOLS",
    "Offer",
    "check_offer",
    "check_reply",
    "offered_to",
    "requires_call",
]

MAX_TOOLS = 128
"""The most tools one run may be offered (OpenAI's own limit)."""
MAX_SCHEMA_BYTES = 256 * 1024
"""The most bytes the tools and the response format may take, written as JSON."""
_MAX_REFS = 64
"""The most `$ref`s followed in a row without reaching a value's own schema (a self-referring one loops)."""
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CHOICES = ("auto", "none", "required")
_FORMATS = ("text", "json_object", "json_schema")


@dataclass(frozen=True)
class Offer:
    """What the answering call of a run gets besides its messages (each part validated by `check_offer`)."""

    tools: tuple[dict[str, Any], ...] = ()
    """Tools in OpenAI's shape: `{"type": "function", "function": {"name", "description", "parameters"}}`."""
    tool_choice: str | dict[str, Any] | None = None
    """`auto`, `none`, `required`, or `{"type": "function", "function": {"name": ...}}`; None: `auto`."""
    response_format: dict[str, Any] | None = None
    """`{"type": "json_object"}` or `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`."""
    resuming: bool = False
    """The call carries the results of the tools a model called: only a model that takes tools may answer it."""

    def __bool__(self) -> bool:
        return bool(self.tools) or self.json is not None

    @property
    def json(self) -> dict[str, Any] | None:
        """Return the response format when it asks for JSON; None for text."""
        fmt = self.response_format
        return fmt if fmt is not None and fmt.get("type") != "text" else None


def _fail(field: str, message: str) -> ValueError:
    return ValueError(f"{field}: {message}")


def _check_tool(i: int, tool: Any) -> dict[str, Any]:
    where = f"tools.{i}"
    if not isinstance(tool, Mapping) or tool.get("type") != "function" or not isinstance(tool.get("function"), Mapping):
        raise _fail(where, 'a tool is {"type": "function", "function": {"name": ..., "parameters": {...}}}')
    function = tool["function"]
    unknown = set(function) - {"name", "description", "parameters", "strict"}
    if unknown:
        raise _fail(
            f"{where}.function", f"unknown keys {sorted(unknown)}; valid: name, description, parameters, strict"
        )
    name = function.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise _fail(f"{where}.function.name", "1 to 64 letters, digits, '_' or '-'")
    if not isinstance(function.get("description", ""), str):
        raise _fail(f"{where}.function.description", "must be a string")
    if not isinstance(function.get("parameters", {}), Mapping):
        raise _fail(f"{where}.function.parameters", "must be a JSON schema (an object)")
    if not isinstance(function.get("strict", False), bool | None):
        raise _fail(f"{where}.function.strict", "must be true or false")
    return {"type": "function", "function": dict(function)}


def _check_choice(choice: Any, names: Sequence[str]) -> str | dict[str, Any] | None:
    if choice is None or choice in _CHOICES:
        if choice == "required" and not names:
            raise _fail("tool_choice", "'required' needs tools")
        return choice  # type: ignore[no-any-return]
    if isinstance(choice, Mapping) and choice.get("type") == "function" and isinstance(choice.get("function"), Mapping):
        name = choice["function"].get("name")
        if name in names:
            return {"type": "function", "function": {"name": name}}
        raise _fail("tool_choice.function.name", f"{str(name)[:64]!r} is not a tool offered; the tools: {list(names)}")
    raise _fail("tool_choice", f"one of {', '.join(_CHOICES)}, or {{'type': 'function', 'function': {{'name': ...}}}}")


def _check_format(fmt: Any) -> dict[str, Any] | None:
    if fmt is None:
        return None
    if not isinstance(fmt, Mapping) or fmt.get("type") not in _FORMATS:
        raise _fail("response_format.type", f"one of {', '.join(_FORMATS)}")
    if fmt["type"] != "json_schema":
        return {"type": fmt["type"]}
    spec = fmt.get("json_schema")
    if not isinstance(spec, Mapping):
        raise _fail("response_format.json_schema", "give {'name': ..., 'schema': {...}, 'strict': true|false}")
    if not isinstance(spec.get("name"), str) or not _NAME.fullmatch(spec["name"]):
        raise _fail("response_format.json_schema.name", "1 to 64 letters, digits, '_' or '-'")
    if not isinstance(spec.get("schema", {}), Mapping):
        raise _fail("response_format.json_schema.schema", "must be a JSON schema (an object)")
    if not isinstance(spec.get("strict", False), bool | None):
        raise _fail("response_format.json_schema.strict", "must be true or false")
    return {"type": "json_schema", "json_schema": dict(spec)}


def check_offer(tools: Any = None, tool_choice: Any = None, response_format: Any = None) -> Offer:
    """Validate a caller's tools, tool choice and response format; return them as an `Offer`.

    Raises:
        ValueError: A part is malformed, too many or too large; the message starts with the field.
    """
    if tools is None:
        tools = []
    if not isinstance(tools, Sequence) or isinstance(tools, str | bytes):
        raise _fail("tools", "must be a list of tools")
    if len(tools) > MAX_TOOLS:
        raise _fail("tools", f"{len(tools)} tools; at most {MAX_TOOLS}")
    checked = tuple(_check_tool(i, tool) for i, tool in enumerate(tools))
    names = [tool["function"]["name"] for tool in checked]
    if len(set(names)) != len(names):
        raise _fail("tools", f"two tools have the same name: {sorted({n for n in names if names.count(n) > 1})}")
    choice = _check_choice(tool_choice, names)
    fmt = _check_format(response_format)
    try:
        size = len(json.dumps([checked, fmt], allow_nan=False).encode())
    except (TypeError, ValueError, RecursionError) as err:
        raise _fail("tools", f"not JSON-serialisable: {str(err)[:200]}") from err
    if size > MAX_SCHEMA_BYTES:
        raise _fail("tools", f"the tools and response format take {size} bytes as JSON; at most {MAX_SCHEMA_BYTES}")
    return Offer(tools=checked, tool_choice=choice, response_format=fmt)


def requires_call(offer: Offer) -> bool:
    """Say whether the offer's tool choice makes a tool call the only acceptable answer."""
    return bool(offer.tools) and (offer.tool_choice == "required" or isinstance(offer.tool_choice, dict))


def offered_to(model: BaseChatModel, name: str, offer: Offer) -> Runnable[LanguageModelInput, Any]:
    """Return the model with the offer bound: its tools, and the response format where it takes one.

    Raises:
        ProviderError: The model cannot take tools and the choice requires a call.
    """
    runnable: Runnable[LanguageModelInput, Any] = model
    if offer.tools and offer.tool_choice != "none":
        try:
            # Chat models take OpenAI's dict choice though BaseChatModel's signature says str.
            runnable = model.bind_tools(list(offer.tools), tool_choice=offer.tool_choice)  # type: ignore[arg-type]
        except NotImplementedError:
            if requires_call(offer) or offer.resuming:
                why = "this turn carries tool results" if offer.resuming else "tool_choice requires a call"
                raise ProviderError(f"model '{name}' ({type(model).__name__}) cannot take tools, and {why}") from None
    if offer.json is not None and _takes_response_format(model):
        runnable = runnable.bind(response_format=offer.json)
    return runnable


def _takes_response_format(model: BaseChatModel) -> bool:
    if getattr(type(model), "accepts_response_format", False):
        return True
    try:
        from langchain_openai.chat_models.base import BaseChatOpenAI
    except ImportError:  # pragma: no cover - langchain-openai is a dependency
        return False
    return isinstance(model, BaseChatOpenAI)


def check_reply(reply: AIMessage, offer: Offer) -> str | None:
    """Return why a reply does not meet the offer (no call where one is required, text that is not the
    JSON asked for), or None when it does."""
    if reply.tool_calls:
        names = {tool["function"]["name"] for tool in offer.tools}
        unknown = [call["name"] for call in reply.tool_calls if call["name"] not in names]
        if unknown:
            return f"the reply calls tools that were not offered: {unknown[:8]}"
        return None
    if requires_call(offer):
        return "the reply calls no tool, and tool_choice requires a call"
    fmt = offer.json
    if fmt is None:
        return None
    try:
        value = json.loads(reply.text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:
        return f"the reply is not JSON ({str(err)[:120]})"
    if fmt["type"] == "json_object" and not isinstance(value, dict):
        return "the reply is JSON but not an object"
    spec = fmt.get("json_schema") or {}
    if fmt["type"] == "json_schema" and spec.get("strict"):
        try:
            why = _mismatch(value, spec.get("schema", {}))
        except (TypeError, RecursionError) as err:  # a bound of the wrong type, a value nested past the stack
            why = f"it cannot be checked ({type(err).__name__})"
        if why is not None:
            return f"the reply does not match the schema '{spec['name']}': {why}"
    return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "null": (type(None),),
}


def _is(value: Any, kind: str) -> bool:
    if kind == "integer" and isinstance(value, float):
        return math.isfinite(value) and value.is_integer()
    if kind in ("number", "integer") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES.get(kind, (object,)))


def _mismatch(value: Any, schema: Any, root: Any = None, at: str = "$") -> str | None:
    """Return where and why `value` breaks `schema`, or None.

    The subset of JSON Schema that OpenAI's strict mode takes: type, enum, const, properties, required,
    additionalProperties, items, anyOf/oneOf, local `$ref`s, and the common bounds. Other keywords are
    not checked. Recursion follows the value, which is finite, and `$ref` chains are bounded.
    """
    root = schema if root is None else root
    for _ in range(_MAX_REFS):
        if not isinstance(schema, Mapping) or "$ref" not in schema:
            break
        schema = _resolve(root, schema["$ref"])
        if schema is None:
            return f"{at}: the schema's $ref cannot be resolved"
    else:
        return f"{at}: the schema's $refs go round in a loop"
    if not isinstance(schema, Mapping):
        return None if schema is not False else f"{at}: no value is allowed here"
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is(value, kind) for kind in kinds):
            return f"{at}: expected {' or '.join(map(str, kinds))}, got {type(value).__name__}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{at}: not one of the values the schema allows"
    if "const" in schema and value != schema["const"]:
        return f"{at}: not the value the schema requires"
    for keyword in ("anyOf", "oneOf"):
        if keyword in schema and all(_mismatch(value, s, root, at) for s in schema[keyword]):
            return f"{at}: matches none of the schema's {keyword} alternatives"
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        missing = [key for key in schema.get("required", []) if key not in value]
        if missing:
            return f"{at}: missing {missing[:8]}"
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            sub = properties.get(key, extra)
            if sub is False:
                return f"{at}: unexpected key {key[:64]!r}"
            if (why := _mismatch(item, sub, root, f"{at}.{key[:64]}")) is not None:
                return why
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", math.inf):
            return f"{at}: {len(value)} items, outside the schema's bounds"
        for i, item in enumerate(value):
            if (why := _mismatch(item, schema.get("items", True), root, f"{at}[{i}]")) is not None:
                return why
    if isinstance(value, str) and not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", math.inf):
        return f"{at}: a string of {len(value)} characters, outside the schema's bounds"
    if _is(value, "number") and not schema.get("minimum", -math.inf) <= value <= schema.get("maximum", math.inf):
        return f"{at}: {value} is outside the schema's bounds"
    return None


def _resolve(root: Any, ref: Any) -> Any:
    """Return the part of the schema a local `$ref` ('#/$defs/Name') points to, or None."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    node = root
    for part in filter(None, ref[1:].split("/")):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node
