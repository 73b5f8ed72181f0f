"""The offer a run's answering call gets (tools, tool choice, response format) and the check of its reply."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.messages import AIMessage

from moai.nodes.context import MixContext
from moai.nodes.tools import MAX_SCHEMA_BYTES, Offer, check_offer, check_reply, requires_call

TOOL = {"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}


def strict(schema: dict[str, Any]) -> Offer:
    return check_offer(
        response_format={"type": "json_schema", "json_schema": {"name": "S", "schema": schema, "strict": True}}
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"tools": "calculator"}, "tools"),
        ({"tools": [{"type": "function"}]}, "tools.0"),
        ({"tools": [{"type": "function", "function": {"name": "x", "code": "rm -rf /"}}]}, "tools.0.function"),
        ({"tools": [{"type": "function", "function": {"name": "x" * 65}}]}, "tools.0.function.name"),
        ({"tools": [{"type": "function", "function": {"name": "x", "parameters": []}}]}, "tools.0.function.parameters"),
        ({"tools": [TOOL, TOOL]}, "tools"),
        ({"tools": [TOOL], "tool_choice": "always"}, "tool_choice"),
        (
            {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "add"}}},
            "tool_choice.function.name",
        ),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "S", "strict": "yes"}}},
            "response_format.json_schema.strict",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "x", "description": "d" * MAX_SCHEMA_BYTES}}]},
            "tools",
        ),
        ({"tools": [{"type": "function", "function": {"name": "x", "parameters": {"n": float("nan")}}}]}, "tools"),
    ],
)
def test_a_malformed_offer_is_refused_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError) as err:
        check_offer(**kwargs)
    assert str(err.value).startswith(f"{field}: ")
    with pytest.raises(ValueError, match=f"^MixContext.{field}: "):
        MixContext(**kwargs)


def test_a_valid_offer() -> None:
    offer = check_offer([TOOL], {"type": "function", "function": {"name": "calculator"}}, {"type": "text"})
    assert offer and requires_call(offer) and offer.json is None
    assert not check_offer() and not requires_call(check_offer([TOOL], "auto"))
    assert MixContext(tools=[TOOL]).offer.tools == (TOOL,)


def test_check_reply_tool_calls_and_json() -> None:
    offer = check_offer([TOOL], "required")
    call = AIMessage("", tool_calls=[{"name": "calculator", "args": {}, "id": "1"}])
    forged = AIMessage("", tool_calls=[{"name": "shell", "args": {}, "id": "1"}])
    assert check_reply(call, offer) is None
    assert "not offered: ['shell']" in (check_reply(forged, offer) or "")
    assert "requires a call" in (check_reply(AIMessage("42"), offer) or "")
    json_object = check_offer(response_format={"type": "json_object"})
    assert check_reply(AIMessage('{"a": 1}'), json_object) is None
    assert "not an object" in (check_reply(AIMessage("[1]"), json_object) or "")
    assert "not JSON" in (check_reply(AIMessage('{"a": NaN}'), json_object) or "")
    assert "not JSON" in (check_reply(AIMessage("[" * 100_000), json_object) or "")


SCHEMA = {
    "type": "object",
    "$defs": {"Item": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}, "required": ["n"]}},
    "properties": {
        "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "maxItems": 2},
        "kind": {"enum": ["a", "b"]},
        "note": {"anyOf": [{"type": "string", "maxLength": 5}, {"type": "null"}]},
    },
    "required": ["items"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ({"items": [{"n": 1}], "kind": "a", "note": None}, None),
        ({"items": [{"n": 1.0}]}, None),
        ({"items": [{"n": True}]}, "$.items[0].n: expected integer"),
        ({"items": [{"n": -1}]}, "$.items[0].n: -1 is outside"),
        ({"items": [{}]}, "$.items[0]: missing ['n']"),
        ({"items": [{"n": 1}] * 3}, "$.items: 3 items"),
        ({"items": [], "kind": "c"}, "$.kind: not one of"),
        ({"items": [], "note": "too long"}, "$.note: matches none"),
        ({"items": [], "extra": 1}, "$: unexpected key 'extra'"),
        ({}, "$: missing ['items']"),
    ],
)
def test_a_strict_schema_is_checked(value: Any, why: str | None) -> None:
    found = check_reply(AIMessage(json.dumps(value)), strict(SCHEMA))
    assert (found is None) if why is None else (found is not None and why in found)


def test_a_schema_that_loops_or_cannot_be_read_fails_in_bounded_time() -> None:
    loop = {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}
    assert "go round in a loop" in (check_reply(AIMessage("1"), strict(loop)) or "")
    assert "cannot be resolved" in (check_reply(AIMessage("1"), strict({"$ref": "#/nowhere"})) or "")
    assert "cannot be checked" in (check_reply(AIMessage("1"), strict({"minimum": "zero"})) or "")
    nested = "[" * 900 + "]" * 900  # deeper than the checker's recursion may go on a small stack
    assert isinstance(check_reply(AIMessage(nested), strict({"items": {"$ref": "#"}})), str | None)


def test_the_local_models_grammar_for_json() -> None:
    pytest.importorskip("llama_cpp")
    from moai.providers.local import _grammar

    assert _grammar(None) is None and _grammar({"type": "text"}) is None
    assert _grammar({"type": "json_object"}) is not None
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    assert _grammar({"type": "json_schema", "json_schema": {"name": "P", "schema": schema}}) is not None
